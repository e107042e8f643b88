"""Database set-up: the Tortoise configuration, an isolated context per app, migrations (R-53)."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from tortoise.context import TortoiseContext, _current_context
from tortoise.migrations.api import migrate as migrate_api

from models import MODEL_MODULES

APP_LABEL = "models"


def connection_name(database_url: str) -> str:
    """Named after the dialect: Tortoise caches generated SQL per connection name
    (EXECUTOR_CACHE), so a SQLite and a PostgreSQL database opened one after the other in one
    process (as the tests do) must not share a name, or PostgreSQL gets SQLite's `?` markers."""
    return database_url.split(":", 1)[0].replace("postgresql", "postgres")


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise configuration for one database URL (sqlite://path or postgres://...)."""
    name = connection_name(database_url)
    return {
        "connections": {name: database_url},
        "apps": {
            APP_LABEL: {
                "models": list(MODEL_MODULES),
                "default_connection": name,
                "migrations": "models.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


@asynccontextmanager
async def open_database(database_url: str) -> AsyncIterator[TortoiseContext]:
    """Open an isolated Tortoise context; it is closed on exit (aiosqlite hangs otherwise)."""
    ctx = TortoiseContext()
    token = activate(ctx)
    try:
        await ctx.init(config=tortoise_config(database_url))
        yield ctx
    finally:
        await ctx.close_connections()
        deactivate(token)


def activate(ctx: TortoiseContext) -> contextvars.Token[TortoiseContext | None]:
    """Make `ctx` the current Tortoise context for the running task.

    Tortoise resolves connections through a context variable; aiohttp runs each request in its
    own task, so the request middleware and background tasks activate the app's context
    themselves instead of relying on a process-wide global.
    """
    return _current_context.set(ctx)


def deactivate(token: contextvars.Token[TortoiseContext | None]) -> None:
    _current_context.reset(token)


async def migrate(
    database_url: str,
    target: str | None = None,
    progress: Callable[[str, str, str], object] | None = None,
) -> None:
    """Apply (or with a target, roll back to) migrations. `target` e.g. "models.__first__"."""
    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(database_url), _create_db=False)
        await migrate_api(
            config=tortoise_config(database_url),
            target=target,
            direction="both" if target is None else "backward",
            progress=progress,
        )


# Used only by Tortoise's own CLI to write new migration files (`tortoise makemigrations`).
MAKEMIGRATIONS_CONFIG = tortoise_config("sqlite://:memory:")

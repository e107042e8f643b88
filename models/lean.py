"""Hand-written SQL for the few queries on the hottest paths (issue 14).

Tortoise builds every query anew: resolving the filters and rendering them through pypika
costs 350-500 µs of CPU for `Model.filter(...).first()`, where the same statement written out
costs about 70 µs. On the WeChat message endpoint and the customer's requests that was the
largest part of a request's CPU, so the queries those run on every request are written here,
once, with `?` placeholders (turned into `$1, $2, ...` for PostgreSQL). Rows become model
instances exactly as the ORM's own executor makes them (`Model._init_from_db`), so callers get
the same objects, field conversions included. Everything else keeps using the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

M = TypeVar("M", bound=Model)


@functools.cache
def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$n` (the SQL here never has a literal `?`)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def _dialect_sql(conn: BaseDBAsyncClient, sql: str) -> str:
    return sql if conn.capabilities.dialect == "sqlite" else _numbered(sql)


async def rows(model: type[Model], sql: str, params: Sequence[Any],
               conn: BaseDBAsyncClient | None = None) -> list[dict[str, Any]]:
    """The rows of `sql` as dicts, on `conn` or the model's connection."""
    db = conn or model._meta.db
    return list(await db.execute_query_dict(_dialect_sql(db, sql), list(params)))


async def fetch(model: type[M], sql: str, params: Sequence[Any],
                conn: BaseDBAsyncClient | None = None) -> list[M]:
    """Instances of `model` from a `SELECT *` (every column of its table)."""
    return [model._init_from_db(**row) for row in await rows(model, sql, params, conn)]


async def fetch_one(model: type[M], sql: str, params: Sequence[Any],
                    conn: BaseDBAsyncClient | None = None) -> M | None:
    found = await fetch(model, sql, params, conn)
    return found[0] if found else None


async def exists(model: type[Model], sql: str, params: Sequence[Any],
                 conn: BaseDBAsyncClient | None = None) -> bool:
    """Whether `sql` (a `SELECT 1 ... LIMIT 1`) finds a row."""
    return bool(await rows(model, sql, params, conn))


async def insert_all(instances: Sequence[Model], conn: BaseDBAsyncClient | None = None) -> None:
    """New rows of one model in a single multi-row INSERT (one statement: all or none, in their
    order), values converted by each field as the ORM does. The generated keys are not read
    back: for rows nobody reads again in the same request (`bulk_create` ran BEGIN, the
    statement and COMMIT as three round trips on SQLite)."""
    if not instances:
        return
    model = type(instances[0])
    meta = model._meta
    db = conn or meta.db
    fields_map = meta.fields_map
    columns = [(name, column) for name, column in meta.fields_db_projection.items()
               if column not in meta.generated_db_fields]
    values: list[Any] = []
    for instance in instances:
        values += [fields_map[name].to_db_value(getattr(instance, name), instance)
                   for name, _ in columns]
    row = "(" + ", ".join("?" * len(columns)) + ")"
    # Names from the model's metadata, values as parameters.
    sql = (f'INSERT INTO "{meta.db_table}" ('  # noqa: S608
           + ", ".join(f'"{c}"' for _, c in columns)
           + ") VALUES " + ", ".join([row] * len(instances)))
    await db.execute_query(_dialect_sql(db, sql), values)


def param(model: type[Model], field: str, value: Any) -> Any:
    """`value` as the database takes it for `model.field` (a UUID is text on SQLite)."""
    return model._meta.fields_map[field].to_db_value(value, model)


@functools.cache
def _by_pk_sql(table: str, pk_column: str, lock: bool, dialect: str) -> str:
    sql = f'SELECT * FROM "{table}" WHERE "{pk_column}" = ? LIMIT 1'  # noqa: S608 (metadata)
    if lock and dialect != "sqlite":  # SQLite has no row locks (it serialises writers)
        sql += " FOR UPDATE"
    return sql if dialect == "sqlite" else _numbered(sql)


async def by_pk(model: type[M], pk: Any, conn: BaseDBAsyncClient | None = None,
                for_update: bool = False) -> M | None:
    """`model.get_or_none(pk=...)`, optionally `select_for_update()` (inside a transaction)."""
    meta = model._meta
    db = conn or meta.db
    sql = _by_pk_sql(meta.db_table, meta.db_pk_column, for_update, db.capabilities.dialect)
    found = await db.execute_query_dict(sql, [param(model, meta.pk_attr, pk)])
    return model._init_from_db(**found[0]) if found else None

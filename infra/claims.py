"""Claiming due rows of a queue table (an outbox) so that concurrent workers never take the
same row: one transaction selects the due rows `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite
serialises writers and ignores the clause) and marks each as claimed before it commits, by
moving its `next_attempt_at` past a lease. A worker that dies mid-send leaves its rows to be
claimed again once the lease has passed. Used by the channels' outbox (bot/outbox.py) and the
insurers' webhooks (archive/insurer.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

M = TypeVar("M", bound=Model)


async def claim_due(due: QuerySet[M], order_by: Sequence[str], limit: int,
                    mark: Callable[[M], Sequence[str]]) -> list[M]:
    """Claims up to `limit` rows of `due` (a filter of the rows that are due) in `order_by`
    order; `mark` changes a row so that it is no longer due (its lease) and returns the names
    of the fields it changed, which are saved before the claim commits."""
    async with in_transaction() as conn:
        rows = await (due.order_by(*order_by).limit(limit)
                      .select_for_update(skip_locked=True).using_db(conn))
        for row in rows:
            await row.save(using_db=conn, update_fields=list(mark(row)))
    return list(rows)

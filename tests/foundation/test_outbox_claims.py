"""One way to claim outbox rows (issue 18 item 4): `infra.claims.claim_due`, used by the
channels' outbox and the insurers' webhooks. Two concurrent claimers never take the same row:
on PostgreSQL the first claimer's transaction is held open while the second claims (SKIP
LOCKED passes over its rows instead of waiting for them or taking them too); SQLite serialises
the claims."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

from infra.claims import claim_due
from infra.database import open_database
from models.archive import WebhookDelivery, WebhookStatus

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def _mark(row: WebhookDelivery) -> list[str]:
    row.next_attempt_at = NOW + LEASE
    return ["next_attempt_at"]


async def _claim(limit: int) -> set[int]:
    rows = await claim_due(WebhookDelivery.filter(status=WebhookStatus.PENDING,
                                                  next_attempt_at__lte=NOW),
                           ("id",), limit, _mark)
    return {row.id for row in rows}


# The claims take well under a second; the bound also covers the session's template
# databases when this test is the first to need them (migrations, slow on a loaded machine).
@pytest.mark.timeout(120)
async def test_two_concurrent_claimers_never_take_the_same_row_R43(database_url: str) -> None:
    async with open_database(database_url):
        for i in range(8):
            await WebhookDelivery.create(client_id="core", event="application.status_changed",
                                         body={"n": i}, next_attempt_at=NOW - timedelta(
                                             seconds=i), created_at=NOW)
        if database_url.startswith("sqlite"):
            first, second = await asyncio.gather(_claim(5), _claim(5))
        else:
            holding, release = asyncio.Event(), asyncio.Event()

            async def first_claimer() -> set[int]:
                # The claim's locks stay held until this outer transaction commits.
                async with in_transaction():
                    claimed = await _claim(5)
                    holding.set()
                    await release.wait()
                return claimed

            task = asyncio.create_task(first_claimer())
            await holding.wait()
            # Waits for nothing (a plain FOR UPDATE would block here until the first commits)
            # and takes none of the first claimer's rows.
            second = await asyncio.wait_for(_claim(5), timeout=10)
            release.set()
            first = await task
        assert len(first) == 5 and len(second) == 3 and not first & second
        # Claimed rows are leased: nothing is due until the lease has passed.
        assert await _claim(5) == set()
        leased = await WebhookDelivery.all().values_list("next_attempt_at", flat=True)
        assert all(at == NOW + LEASE for at in leased)

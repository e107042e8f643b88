"""Retention (R-42): when each session may be deleted, and the deletion itself.

A session is kept at least 10 years (policies over one year; 5 otherwise) from the end of its
contract, and at least 2 years after the last dispute on its order ended; while a dispute is
open it is on legal hold. A contract that has not ended — in force, pending, or simply never
reported by the insurer — keeps the session indefinitely: nothing is deleted on a guess.

Deleting writes, in one transaction, a tombstone (the manifest, every file's hash, the row
counts and the retention basis) and an audit entry, and removes the session's records; the
files are removed after the commit, and the tombstone remembers any that could not be yet.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from archive.settings import ArchiveSettings
from models.archive import (
    ENDED_STATES,
    ArchivedObject,
    Dispute,
    PolicyStatus,
    RetentionRecord,
    Tombstone,
)
from models.qa import QaCheckReport, QaDismissal, QaFinding, QaTask, Rectification
from models.sales import Order, Product
from models.sessions import (
    Acknowledgement,
    Consent,
    IdentityCheck,
    IdentityUpload,
    QaReview,
    Recording,
    RecordingSession,
    SessionEvent,
    Signature,
)
from security import audit
from security.audit import Actor
from storage import ObjectStore
from workflow.core import WorkflowDeps
from workflow.states import CALL_STATES

log = logging.getLogger(__name__)


def add_years(day: date, years: int) -> date:
    """`day` plus whole years; 29 February becomes 28 February in a common year."""
    year = day.year + years
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))


@dataclass(frozen=True)
class Retention:
    retain_until: date | None
    on_hold: bool
    basis: dict[str, Any]


def compute(product: Product, status: PolicyStatus | None, disputes: list[Dispute],
            settings: ArchiveSettings) -> Retention:
    """The retention of the sessions of one order (they share its contract and disputes)."""
    years = (settings.retention_years_long_term if product.term_years > 1
             else settings.retention_years_short_term)
    basis: dict[str, Any] = {"years": years, "term_years": product.term_years,
                             "policy_state": status.state.value if status else None,
                             "contract_end": None, "disputes": []}
    open_disputes = [d for d in disputes if d.closed_on is None]
    basis["disputes"] = [{"reference": d.reference, "opened_on": d.opened_on.isoformat(),
                          "closed_on": d.closed_on.isoformat() if d.closed_on else None}
                         for d in disputes]
    if open_disputes:
        basis["reason"] = "legal hold: dispute open"
        return Retention(None, True, basis)
    if status is None or status.state not in ENDED_STATES or status.ended_on is None:
        basis["reason"] = "contract not ended (or not reported): kept"
        return Retention(None, False, basis)
    basis["contract_end"] = status.ended_on.isoformat()
    until = add_years(status.ended_on, years)
    for d in disputes:
        assert d.closed_on is not None
        until = max(until, add_years(d.closed_on, settings.dispute_extra_years))
    basis["reason"] = "contract ended"
    return Retention(until, False, basis)


async def recompute_order(deps: WorkflowDeps, order_id: int, settings: ArchiveSettings) -> int:
    """Recomputes the retention of every session of an order (after a status or dispute
    change); returns how many records changed."""
    order = await Order.get(id=order_id)
    product = await Product.get(id=order.product_id)
    status = await PolicyStatus.get_or_none(order_id=order_id)
    disputes = await Dispute.filter(order_id=order_id).order_by("id")
    result = compute(product, status, disputes, settings)
    changed = 0
    now = deps.clock()
    for session in await RecordingSession.filter(order_id=order_id):
        record = await RetentionRecord.get_or_none(session_id=session.id)
        if record is None:
            await RetentionRecord.create(session_id=session.id, retain_until=result.retain_until,
                                         on_hold=result.on_hold, basis=result.basis,
                                         computed_at=now)
            changed += 1
        elif record.purged_at is None and (record.retain_until != result.retain_until
                                           or record.on_hold != result.on_hold
                                           or record.basis != result.basis):
            record.retain_until = result.retain_until
            record.on_hold = result.on_hold
            record.basis = result.basis
            record.computed_at = now
            await record.save()
            changed += 1
    return changed


async def compute_missing(deps: WorkflowDeps, settings: ArchiveSettings,
                          limit: int = 500) -> int:
    """Sessions without a retention record yet (new ones) get one."""
    known = Subquery(RetentionRecord.all().values("session_id"))
    orders = await RecordingSession.exclude(id__in=known).limit(limit).values_list(
        "order_id", flat=True)
    done = 0
    for order_id in sorted({int(str(o)) for o in orders}):
        done += await recompute_order(deps, order_id, settings)
    return done


@dataclass(frozen=True)
class PurgeResult:
    purged: list[UUID]
    files_deleted: int
    files_pending: int


async def due(today: date, limit: int) -> list[RetentionRecord]:
    return await RetentionRecord.filter(
        retain_until__lt=today, on_hold=False, purged_at=None,
    ).order_by("retain_until", "id").limit(limit)


async def purge_due(deps: WorkflowDeps, store: ObjectStore, settings: ArchiveSettings,
                    today: date | None = None) -> PurgeResult:
    """Deletes exactly what is past retention and not on hold (R-42)."""
    day = today or deps.clock().date()
    purged: list[UUID] = []
    deleted = pending = 0
    for record in await due(day, settings.purge_batch):
        session = await RecordingSession.get(id=record.session_id)
        if session.state in CALL_STATES:
            continue  # never under a live call (cannot happen with an ended contract)
        # The hold is re-read inside `_purge_one` under the transaction; this is the fast path.
        tombstone = await _purge_one(deps, record, session, day)
        if tombstone is None:
            continue
        purged.append(session.id)
        d, p = await delete_files(deps, store, tombstone)
        deleted += d
        pending += p
    # Files a previous run could not delete are tried again.
    for tombstone in await Tombstone.filter(files_pending=True).exclude(
            session_id__in=purged):
        d, p = await delete_files(deps, store, tombstone)
        deleted += d
        pending += p
    return PurgeResult(purged, deleted, pending)


async def _purge_one(deps: WorkflowDeps, record: RetentionRecord, session: RecordingSession,
                     day: date) -> Tombstone | None:
    order = await Order.get(id=session.order_id)
    sid = session.id
    async with in_transaction() as conn:
        fresh = await RetentionRecord.select_for_update().using_db(conn).get(id=record.id)
        if fresh.purged_at is not None or fresh.on_hold or fresh.retain_until is None \
                or fresh.retain_until >= day:
            return None
        if await Dispute.filter(order_id=order.id, closed_on=None).using_db(conn).exists():
            return None  # a dispute opened since the last computation
        files: list[dict[str, Any]] = []
        for r in await Recording.filter(session_id=sid).using_db(conn).order_by("kind",
                                                                                 "segment"):
            files.append({"kind": f"recording:{r.kind}:{r.segment}", "path": r.path,
                          "sha256": r.sha256, "size_bytes": r.size_bytes, "deleted": False})
        for s in await Signature.filter(session_id=sid).using_db(conn).order_by("id"):
            files.append({"kind": "signature", "path": s.image_path, "sha256": s.image_sha256,
                          "size_bytes": None, "deleted": False})
        for u in await IdentityUpload.filter(session_id=sid).using_db(conn).order_by("id"):
            files.append({"kind": f"identity:{u.kind}", "path": u.path, "sha256": u.sha256,
                          "size_bytes": u.size_bytes, "deleted": False})
        archived = await ArchivedObject.filter(session_id=sid).using_db(conn)
        keys = sorted({a.key for a in archived} - {f["path"] for f in files})
        files += [{"kind": "archived", "path": k, "sha256": "", "size_bytes": None,
                   "deleted": False} for k in keys]
        rows = await _delete_rows(conn, sid)
        manifest = session.manifest
        session.steps = []
        session.manifest = None
        session.pause_reason = ""
        await session.save(using_db=conn, update_fields=["steps", "manifest", "pause_reason"])
        now = deps.clock()
        fresh.purged_at = now
        await fresh.save(using_db=conn, update_fields=["purged_at"])
        entry = await audit.record(
            conn, Actor.system("retention"), "retention.purged", object_type="session",
            object_id=str(sid),
            details={"application_no": order.application_no,
                     "retain_until": fresh.retain_until.isoformat(), "files": len(files),
                     "rows": rows, "chain": (manifest or {}).get("chain")},
        )
        tombstone = await Tombstone.create(
            session_id=sid, order_id=order.id, application_no=order.application_no,
            manifest=manifest, files=files, rows=rows,
            retention={"retain_until": fresh.retain_until.isoformat(), **fresh.basis},
            audit_hash=entry.hash, deleted_at=now, files_pending=bool(files), using_db=conn,
        )
    return tombstone


async def _delete_rows(conn: Any, sid: UUID) -> dict[str, int]:
    """The session's records, children first (every foreign key is RESTRICT)."""
    rows: dict[str, int] = {}
    tasks = QaTask.filter(session_id=sid).using_db(conn)
    rows["qa_task"] = await tasks.delete()
    rows["qa_dismissal"] = await QaDismissal.filter(session_id=sid).using_db(conn).delete()
    rows["qa_finding"] = await QaFinding.filter(session_id=sid).using_db(conn).delete()
    rows["qa_check_report"] = await QaCheckReport.filter(session_id=sid).using_db(conn).delete()
    await Rectification.filter(new_session_id=sid).using_db(conn).update(new_session_id=None)
    rows["qa_rectification"] = await Rectification.filter(
        original_session_id=sid).using_db(conn).delete()
    for name, model in (("qa_review", QaReview), ("acknowledgement", Acknowledgement),
                        ("signature", Signature), ("recording", Recording),
                        ("identity_upload", IdentityUpload), ("identity_check", IdentityCheck),
                        ("consent", Consent), ("session_event", SessionEvent),
                        ("archived_object", ArchivedObject)):
        rows[name] = await model.filter(session_id=sid).using_db(conn).delete()
    try:  # the channels' stored conversation, when that package is installed
        from models.channels import ConversationMessage
    except ImportError:
        return rows
    rows["conversation_message"] = await ConversationMessage.filter(
        session_id=sid).using_db(conn).delete()
    return rows


async def delete_files(deps: WorkflowDeps, store: ObjectStore,
                       tombstone: Tombstone) -> tuple[int, int]:
    deleted = pending = 0
    files = [dict(f) for f in tombstone.files]
    for f in files:
        if f["deleted"]:
            continue
        try:
            # The evidence store (every version on S3), and a separate archive copy if any.
            await deps.storage.delete(f["path"])
            if store is not deps.storage:
                await store.delete(f["path"])
            f["deleted"] = True
            deleted += 1
        except Exception:
            log.exception("could not delete %s of session %s", f["path"], tombstone.session_id)
            pending += 1
    tombstone.files = files
    tombstone.files_pending = pending > 0
    await tombstone.save(update_fields=["files", "files_pending"])
    return deleted, pending


def tombstone_view(t: Tombstone) -> dict[str, Any]:
    return {"session_id": str(t.session_id), "application_no": t.application_no,
            "deleted_at": t.deleted_at.isoformat(), "files": t.files, "rows": t.rows,
            "retention": t.retention, "audit_hash": t.audit_hash,
            "manifest_chain": (t.manifest or {}).get("chain"),
            "files_pending": t.files_pending}

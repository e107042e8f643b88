"""Archiving sealed sessions: each evidence file (recording segments, signature images,
identity uploads) is put into the archive store under its own path and its hash verified there
against the sealed record. With the local default the files are already in place and only
verified; with S3 they are copied."""

from __future__ import annotations

import logging
from uuid import UUID

from tortoise.expressions import Subquery

from archive.storage import ObjectStore, StoreError
from models.archive import ArchivedObject, RetentionRecord
from models.sessions import IdentityUpload, Recording, RecordingSession, SessionState, Signature
from security import audit
from security.audit import Actor
from workflow.core import WorkflowDeps

log = logging.getLogger(__name__)
SEALED_STATES = (SessionState.QA_PENDING, SessionState.QA_PASSED, SessionState.QA_REJECTED)


async def evidence_files(session_id: UUID) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file of the session."""
    files = [(r.path, r.sha256) for r in await Recording.filter(session_id=session_id)]
    files += [(s.image_path, s.image_sha256) for s in await Signature.filter(
        session_id=session_id)]
    files += [(u.path, u.sha256) for u in await IdentityUpload.filter(session_id=session_id)]
    return files


async def archive_session(deps: WorkflowDeps, store: ObjectStore, session_id: UUID) -> int:
    """Idempotent; raises StoreError when an object does not verify (nothing is recorded as
    archived then, and the next sweep tries again)."""
    done = set(await ArchivedObject.filter(session_id=session_id).values_list("key", flat=True))
    count = 0
    for path, expected in await evidence_files(session_id):
        if path in done:
            continue
        stored = await store.put_file(path, deps.storage.root / path)
        actual = await store.sha256(path)
        if stored.sha256 != expected or actual != expected:
            raise StoreError(f"{path}: archived object does not match the sealed hash")
        await ArchivedObject.create(session_id=session_id, key=path, sha256=expected,
                                    size_bytes=stored.size_bytes, backend=store.backend,
                                    archived_at=deps.clock())
        count += 1
    if count:
        await audit.record_alone(Actor.system("archive"), "archive.stored", object_type="session",
                                 object_id=str(session_id),
                                 details={"objects": count, "backend": store.backend})
    return count


async def archive_sealed(deps: WorkflowDeps, store: ObjectStore, limit: int = 50) -> int:
    """Sealed sessions not archived yet (and not purged)."""
    purged = Subquery(RetentionRecord.exclude(purged_at=None).values("session_id"))
    archived = Subquery(ArchivedObject.all().values("session_id"))
    candidates = await RecordingSession.filter(state__in=SEALED_STATES).exclude(
        id__in=purged).exclude(id__in=archived).limit(limit).values_list("id", flat=True)
    total = 0
    for session_id in candidates:
        try:
            total += await archive_session(deps, store, session_id)  # type: ignore[arg-type]
        except (StoreError, OSError) as exc:
            log.warning("archiving session %s failed: %s", session_id, exc)
    return total

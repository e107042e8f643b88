"""Archiving sealed sessions: each evidence object (recording segments, signature images,
identity uploads) is put into the archive store under its own key and its hash verified there
against the sealed record. By default the archive store is the evidence store itself (local
folder or S3): the objects are already in place and only verified (re-read and hashed); a
separately configured archive store (`archive_store`) gets a streamed copy."""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import UUID

from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from archive.settings import ArchiveSettings
from models.archive import ArchivedObject, RetentionRecord
from models.sessions import IdentityUpload, Recording, RecordingSession, SessionState, Signature
from security import audit
from security.audit import Actor
from storage import (
    ObjectStore,
    S3ObjectStore,
    S3Settings,
    StoredObject,
    StoreError,
    open_store,
)
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


def archive_store(settings: ArchiveSettings, evidence: ObjectStore) -> ObjectStore:
    """The configured archive store; the evidence store itself unless another is named."""
    if settings.storage_url:
        return open_store(settings.storage_url, settings.local_root or Path("archive"),
                          scratch=evidence.scratch)
    if settings.backend == "s3":
        return S3ObjectStore(S3Settings(
            bucket=settings.s3_bucket, prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
            access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
            create_bucket=settings.s3_create_bucket), scratch=evidence.scratch)
    return evidence


def _copy(source: ObjectStore, target: ObjectStore, key: str, expected: str) -> StoredObject:
    """Blocking: one object from the evidence store into a separate archive store."""
    with source.local_copy_sync(key) as path:
        return target.put_file_sync(key, path, sha256=expected)


async def archive_session(deps: WorkflowDeps, store: ObjectStore, session_id: UUID) -> int:
    """Idempotent; raises StoreError when an object does not verify. The session's objects are
    recorded as archived together, in one transaction, once every one of them verified: a
    pass that fails partway records nothing, so the session stays a candidate and the next
    sweep tries it again (copies already made are kept; storing the same content again is a
    no-op in a write-once store)."""
    done = set(await ArchivedObject.filter(session_id=session_id).values_list("key", flat=True))
    verified: list[ArchivedObject] = []
    for path, expected in await evidence_files(session_id):
        if path in done:
            continue
        if store is not deps.storage:
            await deps.storage.run(_copy, deps.storage, store, path, expected)
        info = await store.stat(path)
        actual = await store.sha256(path)  # the content as it is now, re-read
        if info is None or actual != expected:
            raise StoreError(f"{path}: archived object does not match the sealed hash")
        verified.append(ArchivedObject(session_id=session_id, key=path, sha256=expected,
                                       size_bytes=info.size_bytes, backend=store.backend,
                                       archived_at=deps.clock()))
    if verified:
        async with in_transaction() as conn:
            await ArchivedObject.bulk_create(verified, using_db=conn)
            await audit.record(conn, Actor.system("archive"), "archive.stored",
                               object_type="session", object_id=str(session_id),
                               details={"objects": len(verified), "backend": store.backend})
    return len(verified)


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

"""Archiving sealed evidence (R-42): by default in place, in the evidence store itself (the
archive pass only re-reads and verifies every object); or a second copy in a separately
configured store, here S3 on a real S3-speaking HTTP server on loopback (moto's server), and
deleted from both at the end of retention. (The store's own contract: test_store_contract.)"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from uuid import UUID

import pytest

from api.routes_qa import AFTER_CALL
from archive import archival, retention
from archive.archival import archive_store
from archive.policies import StatusReport, report_status
from archive.settings import ArchiveSettings
from models.archive import ArchivedObject, PolicyState, Tombstone
from models.sales import Order
from models.sessions import Recording, RecordingSession, Signature
from security.audit import Actor
from storage import LocalFolderStore, S3ObjectStore, StoreError, open_store
from tests.harness import Harness
from tests.qa.simulate import MediaKit, Scenario, record_session
from tests.s3server import bucket_url

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sealed_session_archived_in_place_and_an_altered_object_refused_R42(
        harness: Harness, media_kit: MediaKit) -> None:
    h = harness
    rt = h.app[AFTER_CALL]
    assert rt.store is h.deps.storage  # the default: the evidence store itself
    rec = await record_session(h, media_kit, Scenario())
    recordings = await Recording.filter(session_id=rec.session_id).order_by("kind", "segment")
    files = await archival.evidence_files(UUID(rec.session_id))
    # An object changed after sealing is not recorded as archived; nor is anything before it
    # (the last in order is changed: a pass that fails partway records nothing, so the
    # session is tried again by the next sweep).
    victim = h.deps.storage.local_path(files[-1][0])
    assert victim is not None and len(files) > 1
    original = victim.read_bytes()
    victim.write_bytes(b"changed")
    with pytest.raises(StoreError):
        await archival.archive_session(h.deps, rt.store, UUID(rec.session_id))
    assert await archival.archive_sealed(h.deps, rt.store) == 0  # refused again, logged
    assert not await ArchivedObject.filter(session_id=rec.session_id).exists()
    victim.write_bytes(original)
    assert await archival.archive_sealed(h.deps, rt.store) == len(files) == len(recordings) + 1
    objects = await ArchivedObject.filter(session_id=rec.session_id)
    assert {o.backend for o in objects} == {"local"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sealed_session_copied_to_s3_and_deleted_there_at_retention_end_R42(
        harness: Harness, media_kit: MediaKit, s3_endpoint: str,
        tmp_path: Path) -> None:
    h = harness
    rt = h.app[AFTER_CALL]
    rt.store = open_store(bucket_url(s3_endpoint, prefix="archive"), tmp_path)
    rec = await record_session(h, media_kit, Scenario())
    signatures = await Signature.filter(session_id=rec.session_id)
    recordings = await Recording.filter(session_id=rec.session_id)
    expected = len(recordings) + len(signatures)
    assert await archival.archive_sealed(h.deps, rt.store) == expected
    assert await archival.archive_sealed(h.deps, rt.store) == 0  # idempotent
    objects = await ArchivedObject.filter(session_id=rec.session_id)
    assert {o.backend for o in objects} == {"s3"}
    keys = await rt.store.keys(f"{rec.session_id}/")
    assert keys == sorted(r.path for r in recordings)
    for r in recordings:
        assert await rt.store.sha256(r.path) == r.sha256

    session = await RecordingSession.get(id=rec.session_id)
    order = await Order.get(id=session.order_id)
    await report_status(h.deps, order, StatusReport(PolicyState.CANCELLED_COOLING_OFF,
                                                    ended_on=date(2000, 1, 10)),
                        Actor.system("test"), rt.archive)
    result = await retention.purge_due(h.deps, rt.store, rt.archive)
    assert result.purged == [UUID(rec.session_id)] and result.files_pending == 0
    assert await rt.store.keys(f"{rec.session_id}/") == []
    for r in recordings:  # gone from the evidence store too
        assert not await h.deps.storage.exists(r.path)
    tomb = await Tombstone.get(session_id=rec.session_id)
    assert {f["path"] for f in tomb.files} >= {r.path for r in recordings}
    await rt.store.close()


def test_archive_store_from_configuration(tmp_path: Path) -> None:
    evidence = LocalFolderStore(tmp_path)
    assert archive_store(ArchiveSettings(), evidence) is evidence
    legacy = archive_store(ArchiveSettings(backend="s3", s3_endpoint_url="http://127.0.0.1:9",
                                           s3_bucket="b"), evidence)
    assert isinstance(legacy, S3ObjectStore) and legacy.bucket == "b"
    named = archive_store(ArchiveSettings(
        storage_url="s3://offsite/shuanglu?endpoint=http://127.0.0.1:9"), evidence)
    assert isinstance(named, S3ObjectStore) and named.prefix == "shuanglu/"

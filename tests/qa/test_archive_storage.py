"""The archive store (R-42): the local folder default and S3-compatible object storage, the
latter against a real S3-speaking HTTP server on loopback (moto in server mode)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from uuid import UUID

import pytest

from api.routes_qa import AFTER_CALL
from archive import archival, retention
from archive.policies import StatusReport, report_status
from archive.storage import LocalFolderStore, ObjectStore, S3ObjectStore, StoreError, build_store
from models.archive import ArchivedObject, PolicyState, Tombstone
from models.sales import Order
from models.sessions import Recording, RecordingSession
from security.audit import Actor
from tests.harness import Harness
from tests.qa.simulate import MediaKit, Scenario, record_session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _s3(endpoint: str, bucket: str) -> S3ObjectStore:
    store = S3ObjectStore(bucket=bucket, endpoint_url=endpoint, region="us-east-1",
                          access_key="test-key", secret_key="test-secret", prefix="shuanglu")
    store.ensure_bucket()
    return store


async def _exercise(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "segment.webm"
    source.write_bytes(b"evidence " * 1000)
    other = tmp_path / "other.webm"
    other.write_bytes(b"something else")
    stored = await store.put_file("s1/customer_av/00001.webm", source)
    assert stored.size_bytes == 9000
    assert await store.sha256("s1/customer_av/00001.webm") == stored.sha256
    # Write-once: the same content again is an idempotent retry, other content is refused.
    assert (await store.put_file("s1/customer_av/00001.webm", source)).sha256 == stored.sha256
    with pytest.raises(StoreError):
        await store.put_file("s1/customer_av/00001.webm", other)
    with pytest.raises(StoreError):
        await store.put_file("../escape", source)
    assert await store.get_bytes("s1/customer_av/00001.webm") == source.read_bytes()
    assert await store.keys("s1/") == ["s1/customer_av/00001.webm"]
    assert await store.delete("s1/customer_av/00001.webm") is True
    assert await store.delete("s1/customer_av/00001.webm") is False
    assert await store.sha256("s1/customer_av/00001.webm") is None
    with pytest.raises(StoreError):
        await store.get_bytes("s1/customer_av/00001.webm")


async def test_local_folder_store_R42(tmp_path: Path) -> None:
    await _exercise(LocalFolderStore(tmp_path / "store"), tmp_path)


async def test_s3_compatible_store_R42(s3_endpoint: str, tmp_path: Path) -> None:
    await _exercise(_s3(s3_endpoint, "unit"), tmp_path)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sealed_session_archived_to_s3_and_deleted_there_at_retention_end_R42(
        harness: Harness, media_kit: MediaKit, s3_endpoint: str) -> None:
    h = harness
    rt = h.app[AFTER_CALL]
    rt.store = _s3(s3_endpoint, "archive")
    rec = await record_session(h, media_kit, Scenario())
    assert await archival.archive_sealed(h.deps, rt.store) == 10  # 9 segments + signature
    assert await archival.archive_sealed(h.deps, rt.store) == 0  # idempotent
    objects = await ArchivedObject.filter(session_id=rec.session_id)
    assert {o.backend for o in objects} == {"s3"}
    keys = await rt.store.keys(f"{rec.session_id}/")
    recordings = await Recording.filter(session_id=rec.session_id)
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
    tomb = await Tombstone.get(session_id=rec.session_id)
    assert {f["path"] for f in tomb.files} >= {r.path for r in recordings}


def test_backend_from_configuration(tmp_path: Path) -> None:
    from archive.settings import ArchiveSettings

    store = build_store(ArchiveSettings(), tmp_path)
    assert isinstance(store, LocalFolderStore) and store.root == tmp_path
    s3 = build_store(ArchiveSettings(backend="s3", s3_endpoint_url="http://127.0.0.1:9",
                                     s3_bucket="b"), tmp_path)
    assert isinstance(s3, S3ObjectStore) and s3.bucket == "b"

"""The evidence store's contract (issue 13 item 2, R-31, R-42), run against both backends: the
local folder and S3 — a real S3 HTTP endpoint (moto's server on loopback), not patched calls."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from storage import (
    LocalFolderStore,
    ObjectExists,
    ObjectMissing,
    ObjectStore,
    S3ObjectStore,
    StoreError,
    open_store,
)
from storage.config import s3_settings
from tests.s3server import bucket_url

pytestmark = pytest.mark.timeout(300)
KEY = "s1/customer_av/00001.webm"


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        made: ObjectStore = LocalFolderStore(tmp_path / "files")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        made = open_store(bucket_url(endpoint), tmp_path / "unused")
    try:
        yield made
    finally:
        await made.close()


async def test_put_get_stat_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "segment.webm"
    source.write_bytes(b"evidence " * 1000)
    stored = await store.put_file(KEY, source)
    assert (stored.key, stored.path, stored.size_bytes) == (KEY, KEY, 9000)
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert await store.sha256(KEY) == stored.sha256
    assert await store.exists(KEY)
    info = await store.stat(KEY)
    assert info is not None and info.size_bytes == 9000
    assert info.sha256 in (None, stored.sha256)  # recorded where the backend can
    assert await store.get_bytes(KEY) == source.read_bytes()
    assert source.exists()  # put_file copies unless told to move
    small = await store.put_bytes("s1/signature-1.png", b"\x89PNG image")
    assert small.sha256 == hashlib.sha256(b"\x89PNG image").hexdigest()
    assert await store.keys("s1/") == ["s1/customer_av/00001.webm", "s1/signature-1.png"]
    assert await store.keys("s1/customer_av/") == [KEY]
    assert await store.keys("s2/") == []
    # Deleting (the retention purge) removes it; a second delete finds nothing.
    assert await store.delete(KEY) is True
    assert await store.delete(KEY) is False
    assert await store.sha256(KEY) is None and not await store.exists(KEY)
    assert await store.stat(KEY) is None
    with pytest.raises(ObjectMissing):
        await store.get_bytes(KEY)
    with pytest.raises(ObjectMissing):
        async for _ in store.stream(KEY):
            pass


async def test_write_once_refuses_other_content_and_accepts_a_retry(
        store: ObjectStore, tmp_path: Path) -> None:
    first = await store.put_bytes(KEY, b"the recording")
    assert (await store.put_bytes(KEY, b"the recording")).sha256 == first.sha256  # a retry
    with pytest.raises(ObjectExists):
        await store.put_bytes(KEY, b"something else")
    other = tmp_path / "other.webm"
    other.write_bytes(b"something else")
    with pytest.raises(ObjectExists):
        await store.put_file(KEY, other)
    assert await store.get_bytes(KEY) == b"the recording"
    # A file whose content is not what the caller hashed is not stored.
    with pytest.raises(StoreError):
        await store.put_file("s1/tts/00001.webm", other, sha256="0" * 64)
    assert not await store.exists("s1/tts/00001.webm")
    for bad in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(StoreError):
            await store.put_bytes(bad, b"x")
    # A derived object (the playback copy's sidecar) may be replaced when asked.
    await store.put_bytes("s1/playback/playback.json", b"{}", replace=True, retain=False)
    await store.put_bytes("s1/playback/playback.json", b'{"v":2}', replace=True, retain=False)
    assert await store.get_bytes("s1/playback/playback.json") == b'{"v":2}'


async def test_range_reads_for_serving_video(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    await store.put_bytes(KEY, data)

    async def read(start: int = 0, end: int | None = None, chunk: int = 1 << 20) -> bytes:
        return b"".join([c async for c in store.stream(KEY, start, end, chunk_size=chunk)])

    assert await read() == data
    assert await read(100, 612) == data[100:612]
    assert await read(10_000) == data[10_000:]
    assert await read(5, 5) == b""
    assert await read(len(data) + 10) == b""
    chunks = [c async for c in store.stream(KEY, 0, 3000, chunk_size=1000)]
    assert [len(c) for c in chunks] == [1000, 1000, 1000]


async def test_moving_a_file_in_consumes_it_and_local_copy(store: ObjectStore,
                                                           tmp_path: Path) -> None:
    spool = tmp_path / "spool" / "00001.webm"
    spool.parent.mkdir()
    spool.write_bytes(b"segment bytes")
    digest = hashlib.sha256(b"segment bytes").hexdigest()
    stored = await store.put_file(KEY, spool, sha256=digest, move=True)
    assert stored.sha256 == digest and not spool.exists()
    async with store.local_copy(KEY) as path:
        assert path.read_bytes() == b"segment bytes"
    if store.local_path(KEY) is None:
        assert not path.exists()  # the temporary download is gone again
    with pytest.raises(ObjectMissing):
        async with store.local_copy("s1/none.webm"):
            pass


async def test_a_large_object_is_streamed_with_bounded_memory(store: ObjectStore,
                                                              tmp_path: Path) -> None:
    """64 MiB up and down (multipart above 8 MiB on S3): Python's peak allocation stays a
    fraction of the object."""
    big = tmp_path / "big.webm"
    digest = hashlib.sha256()
    with big.open("wb") as out:
        for i in range(64):
            block = os.urandom(1 << 16) * 16  # 1 MiB, different each time
            digest.update(block)
            out.write(block)
            del block, i
    tracemalloc.start()
    try:
        stored = await store.put_file("s1/big.webm", big)
        read = hashlib.sha256()
        size = 0
        async for chunk in store.stream("s1/big.webm"):
            read.update(chunk)
            size += len(chunk)
        rehashed = await store.sha256("s1/big.webm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.sha256 == digest.hexdigest() == read.hexdigest() == rehashed
    assert size == stored.size_bytes == 64 << 20
    assert peak < 24 << 20, f"peak {peak / (1 << 20):.1f} MiB for a 64 MiB object"


async def test_two_writers_of_one_key_on_s3_one_wins(s3_endpoint: str,
                                                     tmp_path: Path) -> None:
    """If-None-Match: * on the PUT: when two writers race past the HEAD check, the service
    refuses the second; exactly one content ends up stored."""
    store = open_store(bucket_url(s3_endpoint), tmp_path)
    assert isinstance(store, S3ObjectStore)
    barrier = threading.Barrier(2)
    original = store._existing

    def both_see_no_object(key: str, digest: str, size: int) -> object:
        found = original(key, digest, size)
        barrier.wait(timeout=10)  # both past the check before either writes
        return found

    store._existing = both_see_no_object  # type: ignore[method-assign,assignment]
    results = await asyncio.gather(store.put_bytes(KEY, b"writer A"),
                                   store.put_bytes(KEY, b"writer B"), return_exceptions=True)
    store._existing = original  # type: ignore[method-assign]
    refused = [r for r in results if isinstance(r, ObjectExists)]
    stored = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1 and len(stored) == 1, results
    assert hashlib.sha256(await store.get_bytes(KEY)).hexdigest() == stored[0].sha256
    await store.close()


async def test_object_lock_keeps_evidence_until_its_date_R42(s3_endpoint: str,
                                                             tmp_path: Path) -> None:
    """With a COMPLIANCE lock the purge cannot delete before the date (a StoreError the
    retention pass records as pending); GOVERNANCE with bypass lets the purge through;
    derived objects get no lock."""
    locked = open_store(bucket_url(s3_endpoint, lock="COMPLIANCE", lock_days="1"), tmp_path)
    await locked.put_bytes(KEY, b"sealed evidence")
    await locked.put_bytes("s1/playback/playback.json", b"{}", replace=True, retain=False)
    with pytest.raises(StoreError):
        await locked.delete(KEY)
    assert await locked.get_bytes(KEY) == b"sealed evidence"
    assert await locked.delete("s1/playback/playback.json") is True
    governed = open_store(bucket_url(s3_endpoint, lock="GOVERNANCE", lock_days="1",
                                     bypass_governance="true"), tmp_path)
    await governed.put_bytes(KEY, b"sealed evidence")
    assert await governed.delete(KEY) is True
    assert await governed.keys("s1/") == [] and not await governed.exists(KEY)
    await locked.close()
    await governed.close()


def test_the_storage_url(tmp_path: Path) -> None:
    local = open_store(None, tmp_path / "files")
    assert isinstance(local, LocalFolderStore) and local.root == tmp_path / "files"
    assert isinstance(open_store("file:///srv/evidence", tmp_path), LocalFolderStore)
    s = s3_settings("s3://evidence/shuanglu/prod?endpoint=http://127.0.0.1:9000"
                    "&region=cn-east-1&lock=governance&lock_days=3650&part_mb=16")
    assert (s.bucket, s.prefix, s.endpoint_url, s.region) == (
        "evidence", "shuanglu/prod", "http://127.0.0.1:9000", "cn-east-1")
    assert (s.lock_mode, s.lock_days, s.part_size, s.write_once) == (
        "GOVERNANCE", 3650, 16 << 20, "if-none-match")
    with pytest.raises(ValueError, match="credentials"):
        s3_settings("s3://key:secret@evidence/")
    with pytest.raises(ValueError, match="unknown"):
        s3_settings("s3://evidence/?endpont=http://x")
    with pytest.raises(ValueError):
        open_store("ftp://x/y", tmp_path)

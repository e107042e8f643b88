"""A media worker registers a segment it stored (POST /sessions/{id}/recordings, R-30): only an
object the store holds with exactly that SHA-256 is accepted; a path that is not a valid
object key is a 422 like any other mismatch, never a 500."""

from __future__ import annotations

import hashlib

import pytest

from tests.harness import Harness

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


async def test_registering_a_segment_checks_the_stored_object_R30(harness: Harness) -> None:
    h = harness
    walk = await h.walk_to("in_call")
    sid = walk.session_id
    data = b"a segment a media worker stored"
    key = f"{sid}/customer_av/00001.webm"
    await h.deps.storage.put_bytes(key, data)
    body = {"kind": "customer_av", "segment": 1, "path": key,
            "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "duration_ms": 1000, "started_at": "2026-01-01T00:00:00+00:00"}
    for path, sha in ((f"{sid}/customer_av/00002.webm", body["sha256"]),  # not stored
                      (key, "0" * 64),  # other content
                      ("../../etc/passwd", body["sha256"]),  # not an object key
                      (f"{sid}//x.webm", body["sha256"])):
        r = await h.as_("engine01", "POST", f"/sessions/{sid}/recordings",
                        json={**body, "path": path, "sha256": sha})
        assert r.status == 422 and r.body["code"] == "recording_file_mismatch", (path, r.body)
    r = await h.as_("engine01", "POST", f"/sessions/{sid}/recordings", json=body)
    assert r.status == 201, r.body

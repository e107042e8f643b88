"""R-31 (and R-42): each institution seals with its own Ed25519 key, rotation keeps older
manifests verifiable, and an exported archive verifies offline, naming what was altered."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cli import main as cli_main
from archive.offline import verify_archive
from infra.config import PROJECT_ROOT
from models.audit import AuditEntry
from models.org import Institution, InstitutionKind
from models.seal_keys import SealKey, SealKeyStatus
from models.sessions import RecordingSession, Signature
from security.audit import Actor
from security.seal_manifest import (
    BODY_FIELDS_V1,
    TrustedKey,
    canonical_json,
    public_key_b64,
    sign,
)
from tests.harness import Harness, Walk
from workflow import call
from workflow.expiry import sweep
from workflow.sealing import verify_manifest

SEGMENT = b"\x1aE\xdf\xa3" + bytes(range(256)) * 40  # stands in for a WebM segment
FIRST = 100  # segment numbers clear of those the harness registers for the walk itself
ALTERED = f"recording:customer_av:{FIRST + 1}"


@pytest.fixture
def cli_env(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI opens the harness's database and data folder (same secrets file)."""
    monkeypatch.setenv("SHUANGLU_PROFILE", "test")
    monkeypatch.setenv("SHUANGLU_DATA_DIR", str(harness.config.data_dir))
    monkeypatch.setenv("DATABASE_URL", harness.config.database_url)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, list(args))


async def sealed_with_recordings(harness: Harness, institution: Institution | None = None,
                                 segments: int = 2) -> Walk:
    """A session really sealed by the sweep, with recording segments registered as the call hub
    registers them; optionally belonging to another institution."""
    walk = await harness.walk_to("in_call")
    sid = UUID(walk.session_id)
    for n in range(FIRST, FIRST + segments):
        stored = harness.deps.storage.put(f"sessions/{sid}/recordings/customer_av/{n:05d}.webm",
                                          SEGMENT + bytes([n % 256]))
        now = harness.deps.clock()
        await call.register_recording(harness.deps, Actor.system("media"), sid, call.NewRecording(
            kind="customer_av", segment=n, path=stored.path, sha256=stored.sha256,
            size_bytes=stored.size_bytes, duration_ms=60_000, started_at=now, ended_at=now))
    await harness.walk_to("completed", walk=walk)
    if institution is not None:
        # Sold by another institution (its staff would walk it the same way).
        await RecordingSession.filter(id=sid).update(institution_id=institution.id)
    assert sid in (await sweep(harness.deps)).sealed
    return walk


async def other_institution(code: str = "OTHER-BANK") -> Institution:
    return await Institution.create(code=code, name="另一银行", full_name="另一银行股份有限公司",
                                    kind=InstitutionKind.BANK, accepted=True)


async def manifest_of(walk: Walk) -> dict[str, object]:
    session = await RecordingSession.get(id=walk.session_id)
    assert session.manifest is not None
    return session.manifest


async def test_two_institutions_sign_with_their_own_keys_R31(harness: Harness) -> None:
    other = await other_institution()
    a = await sealed_with_recordings(harness, segments=1)
    b = await sealed_with_recordings(harness, other, segments=1)
    ma, mb = await manifest_of(a), await manifest_of(b)
    assert (ma["version"], ma["institution"], mb["institution"]) == (3, "DEMO-BANK", "OTHER-BANK")
    assert (ma["complete"], ma["end"], ma["missing"]) == (True, "completed", [])
    assert ma["key_id"] != mb["key_id"] and ma["public_key"] != mb["public_key"]
    assert await verify_manifest(harness.deps, UUID(a.session_id)) == []
    assert await verify_manifest(harness.deps, UUID(b.session_id)) == []
    # One key each, created on first use and audited; the private half is stored encrypted.
    demo = await Institution.get(code="DEMO-BANK")
    keys = await SealKey.all().order_by("id")
    assert [(k.institution_id, k.status) for k in keys] == [
        (demo.id, SealKeyStatus.ACTIVE), (other.id, SealKeyStatus.ACTIVE)]
    created = await AuditEntry.filter(action="seal_key.create").order_by("id")
    assert [e.object_id for e in created] == ["DEMO-BANK", "OTHER-BANK"]
    for key in keys:
        raw = harness.deps.cipher.decrypt_bytes(bytes.fromhex(key.private_key_enc),
                                                f"seal_key.private:{key.key_id}")
        assert public_key_b64(Ed25519PrivateKey.from_private_bytes(raw)) == key.public_key
        assert base64.b64encode(raw).decode() not in key.private_key_enc
    # A manifest moved to the other institution's session no longer verifies there.
    await RecordingSession.filter(id=b.session_id).update(manifest=ma)
    problems = await verify_manifest(harness.deps, UUID(b.session_id))
    assert f"manifest was signed with key {ma['key_id']} of DEMO-BANK, which is not a trusted " \
           "key" in problems


async def test_rotation_keeps_old_manifests_verifiable_R31(
    harness: Harness, cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await sealed_with_recordings(harness, segments=1)
    assert await cli("seal-keys", "rotate", "DEMO-BANK") == 0
    # The walk steps the workflow clock ahead of the wall clock the CLI keeps (documents are
    # "read" by moving it on): date the retirement on the workflow's clock, as one deployment's
    # processes share one time.
    await SealKey.filter(status=SealKeyStatus.RETIRED).update(retired_at=harness.deps.clock())
    second = await sealed_with_recordings(harness, segments=1)
    m1, m2 = await manifest_of(first), await manifest_of(second)
    assert m1["key_id"] != m2["key_id"]
    keys = {k.key_id: k for k in await SealKey.filter(institution__code="DEMO-BANK")}
    assert keys[str(m1["key_id"])].status == SealKeyStatus.RETIRED
    assert keys[str(m2["key_id"])].status == SealKeyStatus.ACTIVE
    assert await AuditEntry.filter(action="seal_key.rotate", object_id="DEMO-BANK").count() == 1
    assert await verify_manifest(harness.deps, UUID(first.session_id)) == []
    assert await verify_manifest(harness.deps, UUID(second.session_id)) == []
    # Offline, the published keyring (retired key included) verifies the older archive.
    published = (await harness.request("GET", "/institutions/DEMO-BANK/seal-keys")).body
    assert [k["status"] for k in published["keys"]] == ["retired", "active"]
    keyring = tmp_path / "keyring.json"
    keyring.write_text(json.dumps(published), encoding="utf-8")
    assert await cli("export", first.session_id, str(tmp_path / "first")) == 0
    capsys.readouterr()
    assert await cli("verify-archive", str(tmp_path / "first"), "--keyring", str(keyring)) == 0
    out = capsys.readouterr().out
    assert f"key {m1['key_id']}: INTACT" in out and "self-asserted" not in out
    assert await cli("seal-keys", "list", "DEMO-BANK") == 0
    listing = capsys.readouterr().out
    assert f"{m1['key_id']}  retired" in listing and f"{m2['key_id']}  active" in listing
    # A key retired before the seal time cannot have signed it.
    retired = keys[str(m1["key_id"])]
    early = [TrustedKey(retired.public_key, retired.key_id, "DEMO-BANK",
                        datetime(2000, 1, 1, tzinfo=UTC).isoformat())]
    assert any("after it was retired" in p
               for p in verify_archive(tmp_path / "first", early).problems)


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


async def test_an_export_verifies_offline_and_names_each_alteration_R31(
    harness: Harness, cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walk = await sealed_with_recordings(harness)
    manifest = await manifest_of(walk)
    export = tmp_path / "export"
    assert await cli("export", walk.session_id, str(export)) == 0
    assert await AuditEntry.filter(action="archive.export", object_id=walk.session_id).exists()
    index = json.loads((export / "index.json").read_text())
    names = {i["name"] for i in manifest["items"]}  # type: ignore[attr-defined]
    assert set(index["items"]) == names and ALTERED in names
    assert {"README.txt", "keys/DEMO-BANK.json", "manifest.json"} <= {
        p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    readme = (export / "README.txt").read_text(encoding="utf-8")
    assert "verify-archive" in readme and "离线核验" in readme
    capsys.readouterr()
    assert await cli("verify-archive", str(export)) == 0
    out = capsys.readouterr().out
    assert "INTACT" in out and "self-asserted" in out  # no trusted key given: said plainly

    # One byte flipped in a recording segment.
    flipped = _copy(export, tmp_path / "flipped")
    segment = flipped / index["items"][ALTERED]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    # The timeline edited (one IP address).
    edited = _copy(export, tmp_path / "timeline")
    timeline = json.loads((edited / "timeline.json").read_bytes())
    assert canonical_json(timeline) == (edited / "timeline.json").read_bytes()
    timeline[2]["ip"] = "10.9.9.9"
    (edited / "timeline.json").write_bytes(canonical_json(timeline))
    # The signature image deleted.
    unsigned = _copy(export, tmp_path / "unsigned")
    signature = await Signature.get(session_id=walk.session_id)
    (unsigned / index["items"][f"signature:{signature.image_path}"]).unlink()
    # The manifest body edited (without re-signing).
    forged = _copy(export, tmp_path / "forged")
    body = json.loads((forged / "manifest.json").read_text())
    body["script_hash"] = "sha256:" + "0" * 64
    (forged / "manifest.json").write_text(json.dumps(body))
    # A file slipped in.
    extra = _copy(export, tmp_path / "extra")
    (extra / "recordings" / "customer_av" / "00009.webm").write_bytes(SEGMENT)

    cases = [
        (flipped, [], f"{ALTERED} was altered"),
        (edited, [], "timeline was altered"),
        (unsigned, [], f"signature:{signature.image_path} is missing"),
        (forged, [], "manifest signature does not verify (the manifest was altered"),
        (extra, [], "extra file recordings/customer_av/00009.webm is not in the manifest"),
        (export, ["--public-key", public_key_b64(Ed25519PrivateKey.generate())],
         "manifest signature does not verify against the trusted key"),
    ]
    for path, options, expected in cases:
        assert await cli("verify-archive", str(path), *options) == 1, expected
        out = capsys.readouterr().out
        assert "ALTERED" in out and f"  - {expected}" in out, out
    # Only the altered item is named for the flipped byte.
    assert verify_archive(flipped).problems == [f"{ALTERED} was altered"]
    # The genuine export with the right trusted key.
    assert await cli("verify-archive", str(export), "--public-key",
                     str(manifest["public_key"])) == 0


async def test_a_zip_export_verifies_and_a_changed_member_is_named_R31(
    harness: Harness, cli_env: None, tmp_path: Path
) -> None:
    walk = await sealed_with_recordings(harness, segments=1)
    archive = tmp_path / "session.zip"
    assert await cli("export", walk.session_id, str(archive)) == 0
    assert verify_archive(archive).ok
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "acknowledgements.json":
                data = data.replace(b"affirmative", b"negative", 1)
            dst.writestr(info, data)
    assert verify_archive(tampered).problems == ["acknowledgements was altered"]
    assert await cli("verify-archive", str(tampered)) == 1


async def test_verify_archive_needs_no_database_config_or_secrets_R31(
    harness: Harness, cli_env: None, tmp_path: Path
) -> None:
    walk = await sealed_with_recordings(harness, segments=1)
    assert await cli("export", walk.session_id, str(tmp_path / "a")) == 0
    # The prod profile refuses to start without secrets; verify-archive never loads them.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SHUANGLU_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SHUANGLU_PROFILE="prod", SHUANGLU_DATA_DIR=str(tmp_path / "empty"))
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app", "verify-archive", str(tmp_path / "a"),
                         "--keyring", str(tmp_path / "a" / "keys" / "DEMO-BANK.json")],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INTACT" in done.stdout
    assert not (tmp_path / "empty").exists()
    # The verification logic imports neither aiohttp nor the ORM.
    probe = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", "import sys, archive.offline; "
                         "print(sorted(m for m in ('aiohttp', 'tortoise') if m in sys.modules))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]", probe.stderr


async def test_a_version_1_manifest_still_verifies_R31(
    harness: Harness, cli_env: None, tmp_path: Path
) -> None:
    walk = await sealed_with_recordings(harness, segments=1)
    v2 = await manifest_of(walk)
    # What the sealer wrote before institution keys: the platform key, outside the body.
    platform = Ed25519PrivateKey.from_private_bytes(harness.deps.seal_key)
    body = {k: v2[k] for k in BODY_FIELDS_V1} | {"version": 1}
    v1 = sign(body, platform.sign) | {"public_key": public_key_b64(platform)}
    await RecordingSession.filter(id=walk.session_id).update(manifest=v1)
    assert await verify_manifest(harness.deps, UUID(walk.session_id)) == []
    assert await cli("export", walk.session_id, str(tmp_path / "v1")) == 0
    report = verify_archive(tmp_path / "v1", [TrustedKey(public_key_b64(platform))])
    assert report.ok and report.version == 1
    # Signed by some other key that claims to be the platform's: refused in both paths.
    impostor = Ed25519PrivateKey.generate()
    forged = sign(body, impostor.sign) | {"public_key": public_key_b64(impostor)}
    await RecordingSession.filter(id=walk.session_id).update(manifest=forged)
    assert await verify_manifest(harness.deps, UUID(walk.session_id)) == [
        "manifest signature does not verify against the trusted key (signed by another key)"]
    assert await cli("export", walk.session_id, str(tmp_path / "impostor")) == 0
    assert verify_archive(tmp_path / "impostor", [TrustedKey(public_key_b64(platform))]).problems \
        == ["manifest signature does not verify against the trusted key (signed by another key)"]
    # Without a trusted key it only proves integrity, and says so.
    report = verify_archive(tmp_path / "impostor")
    assert report.ok and "self-asserted" in report.notes[0]


async def test_the_key_endpoint_publishes_public_keys_only_R31(harness: Harness) -> None:
    walk = await sealed_with_recordings(harness, segments=1)
    manifest = await manifest_of(walk)
    r = await harness.request("GET", "/institutions/DEMO-BANK/seal-keys")  # no login needed
    assert r.status == 200
    assert r.body["institution"]["code"] == "DEMO-BANK" and r.body["algorithm"] == "Ed25519"
    [key] = r.body["keys"]
    assert set(key) == {"key_id", "algorithm", "public_key", "status", "created_at",
                        "retired_at"}
    assert (key["key_id"], key["public_key"], key["status"]) == (
        manifest["key_id"], manifest["public_key"], "active")
    stored = await SealKey.get(key_id=key["key_id"])
    raw = harness.deps.cipher.decrypt_bytes(bytes.fromhex(stored.private_key_enc),
                                            f"seal_key.private:{stored.key_id}")
    text = json.dumps(r.body)
    assert stored.private_key_enc not in text
    assert base64.b64encode(raw).decode() not in text and raw.hex() not in text
    r = await harness.request("GET", "/institutions/NO-SUCH/seal-keys")
    assert r.status == 404 and r.body["code"] == "institution_not_found"
    doc = (await harness.request("GET", "/api/v1/openapi.json")).body
    assert "/api/v1/institutions/{code}/seal-keys" in doc["paths"]


async def test_qa_and_auditors_download_an_audited_archive_R31(
    harness: Harness, tmp_path: Path
) -> None:
    walk = await sealed_with_recordings(harness, segments=1)
    for username in ("qa01", "auditor01"):
        r = await harness.as_(username, "GET", f"/archive/sessions/{walk.session_id}/export")
        assert r.status == 200 and r.content_type == "application/zip", r.body
        target = tmp_path / f"{username}.zip"
        target.write_bytes(r.body)
        assert verify_archive(target).ok
    exports = await AuditEntry.filter(action="archive.export", object_id=walk.session_id)
    assert len(exports) == 2 and all(e.actor_kind == "user" for e in exports)
    r = await harness.as_("agent01", "GET", f"/archive/sessions/{walk.session_id}/export")
    assert r.status == 403
    unsealed = await harness.walk_to("in_call")
    r = await harness.as_("qa01", "GET", f"/archive/sessions/{unsealed.session_id}/export")
    assert r.status == 409 and r.body["code"] == "session_not_sealed"

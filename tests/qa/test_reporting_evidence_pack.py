"""The acceptance evidence pack (R-02): one command, one zip with an index page; it lists every
R-xx of the catalogue and every Ningbo article with the code and the tests that cover it and how
they ran in the given report, counts only what that report records, names the tests that did not
run, derives its known limitations from facts, carries one sealed sample session verified again
offline, is tied to the git commit and signed with the institution's seal key, and says 已通过
only when the institution's acceptance record does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from archive.export import plan_export, write_archive
from infra.config import PROJECT_ROOT, Config
from media.identity.config import AntiSpoofConfig, IdentityConfig
from media.identity.weights import FASNET_FILES
from models.audit import AuditEntry
from models.org import Institution
from reporting.catalogue import NINGBO_ARTICLES, REQUIREMENTS
from reporting.evidence_pack import build_pack, redact
from reporting.facts import engines, limitations
from reporting.pack_verify import verify_pack
from reporting.requirements_map import not_run, read_junit, scan_tests, source_tests
from reporting.sample_session import SampleInput
from security.seal_manifest import trusted_keys_from_keyring
from tests.harness import Harness
from workflow.expiry import sweep

CLEAN = "tests/qa/test_qa_checks.py::test_clean_session_passes_every_automated_check_R40"
QUEUE = "tests/qa/test_qa_queue.py::test_remote_sessions_are_all_reviewed_by_default_R40"
THIS = "tests/qa/test_reporting_evidence_pack.py"
# passed (two cases of one function), failed, error, skipped — and a header that agrees.
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="commit-{commit}" errors="1" failures="1" skipped="1" tests="5"
 time="12.5" timestamp="2026-11-27T10:00:00">
<testcase classname="tests.qa.test_qa_checks"
 name="test_clean_session_passes_every_automated_check_R40[sqlite]" time="2.0"/>
<testcase classname="tests.qa.test_qa_checks"
 name="test_clean_session_passes_every_automated_check_R40[postgres]" time="2.0"/>
<testcase classname="tests.qa.test_qa_queue"
 name="test_remote_sessions_are_all_reviewed_by_default_R40[sqlite]" time="1.0">
 <failure message="boom">trace</failure></testcase>
<testcase classname="tests.qa.test_reporting_evidence_pack" name="test_redaction_of_secrets"
 time="0.1"><error message="fixture broke">trace</error></testcase>
<testcase classname="tests.qa.test_qa_checks"
 name="test_skipped_step_is_found_where_the_step_started_R23_R40[sqlite]" time="0.0">
 <skipped type="pytest.skip" message="no espeak-ng">skip</skipped></testcase>
</testsuite></testsuites>
"""
SKIPPED = "tests/qa/test_qa_checks.py::test_skipped_step_is_found_where_the_step_started_R23_R40"


def _head() -> str:
    done = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def _junit(tmp_path: Path, commit: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT.format(commit=commit), encoding="utf-8")
    return path


def _read(pack: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(pack) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rewrite(pack: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the pack with members replaced, added, or (None) removed."""
    files = {**_read(pack), **change}
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            if data is not None:
                z.writestr(name, data)
    return out


async def _sealed_export(harness: Harness, folder: Path) -> tuple[str, Path]:
    """A session walked to completion, sealed by the sweep and exported as a zip (as `python -m
    app export` writes it)."""
    walk = await harness.walk_to("completed")
    sid = UUID(walk.session_id)
    assert sid in (await sweep(harness.deps)).sealed
    plan = await plan_export(harness.deps, sid, datetime.now(UTC))
    archive = write_archive(plan, folder / "archive.zip")
    return walk.session_id, archive


def test_the_map_reads_ids_from_test_names_docstrings_and_modules_R02() -> None:
    found = scan_tests(PROJECT_ROOT)
    r40 = {ref.node_id: ref.how for ref in found["R-40"]}
    assert r40[CLEAN] == "name"
    r23 = {ref.node_id: ref.how for ref in found["R-23"]}
    assert r23[SKIPPED] == "name"
    # A test named for nothing inherits its module docstring's ids.
    r02 = {ref.node_id: ref.how for ref in found["R-02"]}
    assert r02[f"{THIS}::test_redaction_of_secrets"] == "module"


def test_redaction_of_secrets() -> None:
    data = redact({"secret_key": "abc", "api_secret": None, "database_url":
                   "postgres://u:pw@db:5432/x", "nested": {"s3_access_key": "k"}})
    assert data == {"secret_key": "[set]", "api_secret": "[not set]",
                    "database_url": "postgres://[redacted]@db:5432/x",
                    "nested": {"s3_access_key": "[set]"}}


def test_counts_come_from_the_report_and_what_did_not_run_is_listed_R02(tmp_path: Path) -> None:
    run = read_junit(_junit(tmp_path, "ab12" * 10 + "-dirty"))
    assert run.counts == {"passed": 2, "failed": 1, "error": 1, "skipped": 1}
    assert run.tests == 5 and run.totals_agree
    assert run.commit == ("ab12" * 10, True)
    assert run.outcomes[CLEAN] == "passed" and run.outcomes[QUEUE] == "failed"
    assert run.outcomes[f"{THIS}::test_redaction_of_secrets"] == "error"

    tests = source_tests(PROJECT_ROOT)
    missing = {m["test"]: m for m in not_run(run, tests)}
    skipped = missing[f"{SKIPPED}[sqlite]"]
    assert (skipped["reason"], skipped["message"]) == ("skipped", "no espeak-ng")
    assert skipped["requirements"] == ["R-23", "R-40"]
    # A test in the source that the report does not mention (this one) is listed; those the
    # report ran (passed, failed or errored) are not.
    this = missing[f"{THIS}::test_counts_come_from_the_report_and_what_did_not_run_is_listed_R02"]
    assert this["reason"] == "absent from the report" and this["requirements"] == ["R-02"]
    assert CLEAN not in missing and QUEUE not in missing
    assert len(missing) == len(tests) - 4 + 1  # 4 functions in the report; 1 case skipped

    # A header that disagrees with its cases is noticed; a report without a commit says so.
    odd = tmp_path / "odd.xml"
    odd.write_text(JUNIT.replace('tests="5"', 'tests="9"').replace("commit-{commit}", "pytest"),
                   encoding="utf-8")
    odd_run = read_junit(odd)
    assert not odd_run.totals_agree and odd_run.commit == (None, None)
    assert odd_run.counts == run.counts  # counted from the cases, never from the header
    assert all(m["reason"] == "no report" for m in not_run(None, tests))


def test_limitations_name_a_missing_engine_R02(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.config import Settings, load_config

    config: Config = load_config(Settings(profile="test", data_dir=tmp_path / "data",
                                          tts_engines="espeak"))
    weights = tmp_path / "fasnet"
    weights.mkdir()
    for name in FASNET_FILES:
        (weights / name).write_bytes(b"onnx")
    with_weights = IdentityConfig(anti_spoof=AntiSpoofConfig(weights_dir=weights))

    def codes(identity: IdentityConfig) -> dict[str, str]:
        facts = engines(config, PROJECT_ROOT, identity)
        return {x.code: x.fact for x in limitations(config, facts, seal_custody=["db-aesgcm"],
                                                    institution_code="DEMO-BANK")}

    found = codes(IdentityConfig())
    assert "anti_spoofing_not_configured" in found  # the app's IdentityConfig() has no weights
    assert "anti_spoofing_not_configured" not in codes(with_weights)
    assert "tts_none_available" not in found  # espeak-ng is installed on the test machines
    assert {"production_secrets_missing", "seal_key_in_database",
            "acceptance_record_without_who"} <= set(found)
    assert ("database_sqlite" in found) is config.database_url.startswith("sqlite")
    # espeak-ng gone from PATH: the only configured TTS engine is named as unavailable.
    monkeypatch.setenv("PATH", str(tmp_path))
    found = codes(IdentityConfig())
    assert "espeak-ng not found on PATH" in found["tts_engine_unavailable"]
    assert found["tts_none_available"] == "configured: espeak"


async def test_evidence_pack_maps_articles_and_requirements_to_tests_and_is_signed_R02(
        harness: Harness, tmp_path: Path) -> None:
    async with asyncio.timeout(240):
        head = _head()
        junit = _junit(tmp_path, head)
        sid, archive = await _sealed_export(harness, tmp_path)
        qa_report = tmp_path / "qa-report.json"
        qa_report.write_text(json.dumps({
            "session_id": sid, "report": {"passed": True, "counts": {"critical": 0},
                                          "engines": {"vad": "silero-vad-onnx"}},
            "findings": [{"severity": "info", "code": "recording_interrupted",
                          "requirement": "R-30", "message": "通话中断一次"}]}),
            encoding="utf-8")
        out = tmp_path / "pack.zip"
        result = await build_pack(harness.config, "DEMO-BANK", out, junit=junit,
                                  sample=SampleInput.from_path(archive, qa_report))
        data = _read(out)
    names = set(data)
    assert {"index.html", "acceptance.json", "limitations.json", "configuration.json",
            "requirements.json", "ningbo.json", "tests/summary.json", "tests/junit.xml",
            "audit/samples.json", "manifest.json", "scripts/index.json", "keys/DEMO-BANK.json",
            f"sample-session/session-{sid}.zip", "sample-session/qa-report.json",
            "sample-session/verification.txt"} <= names

    # Tied to the commit, every file hashed, signed with the institution's seal key.
    manifest = json.loads(data["manifest.json"])
    assert manifest["commit"]["id"] == head and isinstance(manifest["commit"]["dirty"], bool)
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert all(hashlib.sha256(data[n]).hexdigest() == h for n, h in manifest["files"].items())
    published = (await harness.request("GET", "/institutions/DEMO-BANK/seal-keys")).body
    assert manifest["key_id"] in {k["key_id"] for k in published["keys"]}
    check = verify_pack(out, trusted_keys_from_keyring(published))
    assert check.ok and check.signed and check.files_checked == len(names) - 1, check.problems

    # Test evidence: the report's numbers only; its commit compared with the pack's.
    tests = json.loads(data["tests/summary.json"])
    assert tests["counts"] == {"passed": 2, "failed": 1, "error": 1, "skipped": 1}
    assert tests["commit"] == {"id": head, "dirty": False, "matches_pack": True}
    assert {f["test"] for f in tests["failed"]} == {
        f"{QUEUE}[sqlite]", f"{THIS}::test_redaction_of_secrets"}
    listed = {m["test"]: m["reason"] for m in tests["not_run"]}
    assert listed[f"{SKIPPED}[sqlite]"] == "skipped" and CLEAN not in listed
    assert tests == result.tests

    requirements = {r["id"]: r for r in json.loads(data["requirements.json"])}
    assert set(REQUIREMENTS) <= set(requirements)
    tests40 = {t["test"]: t["outcome"] for t in requirements["R-40"]["tests"]}
    assert tests40[CLEAN] == "passed" and tests40[QUEUE] == "failed"
    assert tests40[SKIPPED] == "skipped"
    assert "a test failed" in requirements["R-40"]["gaps"]
    # Nothing named R-41 ran in this report: a gap, not a pass.
    assert "no test passed in the report" in requirements["R-41"]["gaps"]
    for rid in ("R-13", "R-24", "R-30", "R-41", "R-42", "R-43", "R-55"):
        assert requirements[rid]["tests"] and requirements[rid]["code"], rid

    ningbo = json.loads(data["ningbo.json"])
    assert [a["article"] for a in ningbo] == [a.ref for a in NINGBO_ARTICLES]
    assert len([a for a in ningbo if a["article"].endswith("条")]) == 16
    by_ref = {a["article"]: a for a in ningbo}
    assert by_ref["第十条"]["status"] == "not mapped"
    assert [r["id"] for r in by_ref["第六条"]["requirements"]] == ["R-12"]
    assert by_ref["通知第三项"]["requirements"][0]["id"] == "R-02"

    # Known limitations from facts; the sample session verified again by the pack itself.
    limits = {x["code"] for x in json.loads(data["limitations.json"])["limitations"]}
    assert "anti_spoofing_not_configured" in limits
    assert ("database_sqlite" in limits) is harness.config.database_url.startswith("sqlite")
    sample = json.loads(data["sample-session/summary.json"])
    assert sample["ok"] and sample["session_id"] == sid, sample
    assert sample["verification"]["exit_code"] == 0
    assert sample["verification"]["trust"] == "database" and sample["from_this_installation"]
    assert "INTACT" in data["sample-session/verification.txt"].decode()
    assert sample["qa"]["passed"] is True and sample["qa"]["findings"][0]["code"] == \
        "recording_interrupted"
    assert not any("自动质检" in m for m in result.acceptance["missing"])

    # The seed marks DEMO-BANK accepted without a date: not an acceptance record.
    index = data["index.html"].decode()
    acceptance = json.loads(data["acceptance.json"])
    assert acceptance["status"] == "record_incomplete" and manifest["acceptance_status"] == \
        "record_incomplete"
    for text in (index, data["acceptance.json"].decode(), data["tests/summary.json"].decode(),
                 data["limitations.json"].decode(), data["ningbo.json"].decode()):
        assert "已通过" not in text
    assert "待验收" in index
    assert any("1 项失败、1 项错误" in m for m in acceptance["missing"])
    assert any("第一条" in m and "第十条" in m for m in acceptance["missing"])
    for rid in REQUIREMENTS:
        assert f"<tr id='{rid}'>" in index
    assert "远程双录系统验收材料包" in index and "甬江银行" in index and head in index

    scripts = json.loads(data["scripts/index.json"])
    assert {s["product"] for s in scripts} == {"YA-ZSS-001", "YA-NJF-002", "YA-TL-003"}
    assert all(s["errors"] == 0 and s["file"] in names for s in scripts)
    secrets = [line.split("=", 1)[1] for line in (harness.config.data_dir / "secrets.env")
               .read_text().splitlines() if "=" in line]
    assert len(secrets) == 3
    for name, raw in data.items():
        if not name.endswith(".zip"):
            assert not any(value in raw.decode(errors="ignore") for value in secrets), name
    config = json.loads(data["configuration.json"])
    assert config["settings"]["secret_key"] in ("[set]", "[not set]")
    audit = json.loads(data["audit/samples.json"])
    assert audit["chain"]["ok"] is True and audit["entries"]
    exported = await AuditEntry.filter(action="acceptance.pack_exported").order_by("-id").first()
    assert exported is not None and exported.details["key_id"] == manifest["key_id"]
    assert exported.details["commit"] == head

    # With an acceptance record (flag and date) the pack says 已通过, and nothing else changes.
    await Institution.filter(code="DEMO-BANK").update(
        accepted_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    async with asyncio.timeout(120):
        again = await build_pack(harness.config, "DEMO-BANK", tmp_path / "accepted.zip",
                                 junit=junit)
    accepted = _read(tmp_path / "accepted.zip")
    assert again.acceptance["status"] == "accepted"
    assert "已通过验收（2026-11-30T09:00:00+00:00）" in accepted["index.html"].decode()
    assert not again.sample["present"]
    assert "未附封存样例会话" in again.acceptance["missing"]
    # Not accepted at all: 待验收, and the record is named as missing.
    await Institution.filter(code="DEMO-BANK").update(accepted=False, accepted_at=None)
    async with asyncio.timeout(120):
        pending = await build_pack(harness.config, "DEMO-BANK", tmp_path / "pending.zip")
    assert pending.acceptance["label"] == "待验收"
    assert "已通过" not in _read(tmp_path / "pending.zip")["index.html"].decode()
    assert pending.acceptance["missing"][0] == "机构尚无验收通过记录（accepted = false）"
    assert pending.tests["problem"] == "no report was given"


async def test_the_pack_signature_fails_when_a_file_changes_R02(
        harness: Harness, tmp_path: Path) -> None:
    async with asyncio.timeout(180):
        out = tmp_path / "pack.zip"
        await build_pack(harness.config, "DEMO-BANK", out)
        published = (await harness.request("GET", "/institutions/DEMO-BANK/seal-keys")).body
        trusted = trusted_keys_from_keyring(published)
        assert verify_pack(out, trusted).ok
        self_asserted = verify_pack(out)
        assert self_asserted.ok and "self-asserted" in self_asserted.notes[0]
        data = _read(out)
        index = data["index.html"].replace("待验收".encode(), "已通过".encode())

        altered = verify_pack(_rewrite(out, tmp_path / "a.zip", {"index.html": index}), trusted)
        assert altered.problems == ["index.html was altered"]
        removed = verify_pack(_rewrite(out, tmp_path / "r.zip", {"ningbo.json": None}), trusted)
        assert removed.problems == ["ningbo.json is missing"]
        extra = verify_pack(_rewrite(out, tmp_path / "e.zip", {"extra.txt": b"x"}), trusted)
        assert extra.problems == ["extra file extra.txt is not in the manifest"]
        # Re-hashing the changed file into the manifest breaks the signature instead.
        manifest = json.loads(data["manifest.json"])
        manifest["files"]["index.html"] = hashlib.sha256(index).hexdigest()
        forged = _rewrite(out, tmp_path / "f.zip", {"index.html": index,
                                                    "manifest.json": json.dumps(manifest).encode()})
        assert verify_pack(forged, trusted).problems == [
            "manifest signature does not verify against the trusted key"]
        assert verify_pack(forged).problems == [
            "manifest signature does not verify (the manifest was altered after signing)"]

        # An unsigned pack says so and never passes as signed.
        unsigned = tmp_path / "unsigned.zip"
        result = await build_pack(harness.config, "DEMO-BANK", unsigned, sign=False)
        assert result.manifest["signature"] is None
        assert "未签名" in _read(unsigned)["index.html"].decode()
        assert "材料包未签名" in result.acceptance["missing"]
        assert verify_pack(unsigned).problems == [
            "the pack is not signed: signing was turned off"]

        # The offline command: 0 intact, 1 with the problem named, 2 not a pack.
        keyring = tmp_path / "keyring.json"
        keyring.write_text(json.dumps(published), encoding="utf-8")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "reporting.pack_verify", *args], cwd=PROJECT_ROOT,
                env={**os.environ, "SHUANGLU_DATA_DIR": str(tmp_path / "none")},
                capture_output=True, text=True, timeout=120)

        good = await asyncio.to_thread(cli, str(out), "--keyring", str(keyring))
        assert good.returncode == 0 and "INTACT" in good.stdout, good.stdout + good.stderr
        bad = await asyncio.to_thread(cli, str(tmp_path / "a.zip"), "--keyring", str(keyring))
        assert bad.returncode == 1 and "  - index.html was altered" in bad.stdout, bad.stdout
        junk = tmp_path / "junk.zip"
        junk.write_bytes(b"not a zip")
        assert (await asyncio.to_thread(cli, str(junk))).returncode == 2


async def test_the_sample_session_is_verified_again_by_the_pack_R02_R31(
        harness: Harness, tmp_path: Path) -> None:
    async with asyncio.timeout(240):
        sid, archive = await _sealed_export(harness, tmp_path)
        folder = tmp_path / "sample-session"  # as the whole-session browser test writes it
        folder.mkdir()
        (folder / "archive.zip").write_bytes(archive.read_bytes())
        (folder / "qa-report.json").write_text(json.dumps(
            {"session_id": "00000000-0000-0000-0000-000000000000", "report": {"passed": False},
             "findings": []}), encoding="utf-8")
        (folder / "verify-archive.txt").write_text(f"session {sid}: INTACT\n", encoding="utf-8")
        # The timeline in the archive changed after it was exported.
        members = _read(archive)
        timeline = members["timeline.json"].replace(b'"type":"completed"', b'"type":"aborted"')
        assert timeline != members["timeline.json"]
        _rewrite(archive, folder / "archive.zip", {"timeline.json": timeline})

        result = await build_pack(harness.config, "DEMO-BANK", tmp_path / "pack.zip",
                                  sample=SampleInput.from_path(folder))
    sample = result.sample
    assert not sample["ok"]
    assert sample["verification"]["exit_code"] == 1
    assert "timeline was altered" in sample["verification"]["output"]
    assert sample["recorded_output_agrees"] is False
    assert f"the QA report is for session 00000000-0000-0000-0000-000000000000, not {sid}" in \
        sample["problems"]
    assert "封存样例会话核验未通过或材料不全，见第 9 节" in result.acceptance["missing"]
    assert "样例会话的自动质检发现严重或重大问题，见第 9 节" in result.acceptance["missing"]
    index = _read(tmp_path / "pack.zip")["index.html"].decode()
    assert "timeline was altered" in index and "不一致" in index


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_one_command_writes_the_pack_R02(harness: Harness, tmp_path: Path) -> None:
    out = tmp_path / "cli-pack.zip"
    env = {**os.environ, "SHUANGLU_PROFILE": "test",
           "SHUANGLU_DATA_DIR": str(harness.config.data_dir),
           "DATABASE_URL": harness.config.database_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reporting.evidence_pack", *args], cwd=PROJECT_ROOT,
            env=env, capture_output=True, text=True, timeout=180)

    done = await asyncio.to_thread(
        run, "--institution", "DEMO-BANK", "--out", str(out), "--junit",
        str(tmp_path / "none.xml"), "--sample-session", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "signed with key" in done.stdout and "status record_incomplete" in done.stdout
    assert "none.xml does not exist" in done.stdout
    assert "sample session: missing or not verified" in done.stdout
    assert verify_pack(out).ok
    bad = await asyncio.to_thread(run, "--institution", "NOPE", "--out", str(tmp_path / "x.zip"),
                                  "--sample-session", str(tmp_path))
    assert bad.returncode == 2 and "no institution" in bad.stderr
    missing = await asyncio.to_thread(run, "--institution", "DEMO-BANK", "--out",
                                      str(tmp_path / "y.zip"), "--sample-session",
                                      str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr

"""The acceptance evidence pack (R-02): one command, one zip with an index page; it lists every
R-xx of the catalogue with the code and the tests that cover it and how they last ran."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT
from models.audit import AuditEntry
from reporting.catalogue import REQUIREMENTS
from reporting.evidence_pack import build_pack, redact
from reporting.requirements_map import read_junit, scan_tests
from tests.harness import Harness

CLEAN = "tests/qa/test_qa_checks.py::test_clean_session_passes_every_automated_check_R40"
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="3" time="12.5"
 timestamp="2026-11-27T10:00:00">
<testcase classname="tests.qa.test_qa_checks"
 name="test_clean_session_passes_every_automated_check_R40[sqlite]" time="2.0"/>
<testcase classname="tests.qa.test_qa_checks"
 name="test_clean_session_passes_every_automated_check_R40[postgres]" time="2.0"/>
<testcase classname="tests.qa.test_qa_queue"
 name="test_remote_sessions_are_all_reviewed_by_default_R40[sqlite]" time="1.0">
 <failure message="boom">trace</failure></testcase>
</testsuite></testsuites>
"""


def test_the_map_reads_ids_from_test_names_docstrings_and_modules_R02() -> None:
    found = scan_tests(PROJECT_ROOT)
    r40 = {ref.node_id: ref.how for ref in found["R-40"]}
    assert r40[CLEAN] == "name"
    r23 = {ref.node_id: ref.how for ref in found["R-23"]}
    assert r23["tests/qa/test_qa_checks.py::"
               "test_skipped_step_is_found_where_the_step_started_R23_R40"] == "name"
    # A test named for nothing inherits its module docstring's ids.
    r02 = {ref.node_id: ref.how for ref in found["R-02"]}
    assert r02["tests/qa/test_reporting_evidence_pack.py::test_redaction_of_secrets"] == "module"


def test_redaction_of_secrets() -> None:
    data = redact({"secret_key": "abc", "api_secret": None, "database_url":
                   "postgres://u:pw@db:5432/x", "nested": {"s3_access_key": "k"}})
    assert data == {"secret_key": "[set]", "api_secret": "[not set]",
                    "database_url": "postgres://[redacted]@db:5432/x",
                    "nested": {"s3_access_key": "[set]"}}


async def test_evidence_pack_lists_every_requirement_with_its_tests_R02(
        harness: Harness, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT, encoding="utf-8")
    run = read_junit(junit)
    assert run.outcomes[CLEAN] == "passed" and run.tests == 3
    out = tmp_path / "pack.zip"
    result = await build_pack(harness.config, "DEMO-BANK", out, junit=junit)
    with zipfile.ZipFile(out) as pack:
        names = set(pack.namelist())
        data = {n: pack.read(n) for n in names}
    assert {"index.html", "configuration.json", "requirements.json", "audit/samples.json",
            "tests/junit.xml", "manifest.json", "scripts/index.json"} <= names
    manifest = json.loads(data["manifest.json"])["files"]
    assert set(manifest) == names - {"manifest.json"}
    assert all(hashlib.sha256(data[n]).hexdigest() == h for n, h in manifest.items())

    requirements = {r["id"]: r for r in json.loads(data["requirements.json"])}
    assert set(REQUIREMENTS) <= set(requirements)
    tests40 = {t["test"]: t["outcome"] for t in requirements["R-40"]["tests"]}
    assert tests40[CLEAN] == "passed"
    assert tests40["tests/qa/test_qa_queue.py::"
                   "test_remote_sessions_are_all_reviewed_by_default_R40"] == "failed"
    for rid in ("R-13", "R-24", "R-30", "R-41", "R-42", "R-43", "R-55"):
        assert requirements[rid]["tests"], rid
        assert requirements[rid]["code"], rid
    index = data["index.html"].decode()
    for rid in REQUIREMENTS:
        assert f"<tr id='{rid}'>" in index
    assert "远程双录系统验收材料包" in index and "甬江银行" in index

    scripts = json.loads(data["scripts/index.json"])
    assert {s["product"] for s in scripts} == {"YA-ZSS-001", "YA-NJF-002", "YA-TL-003"}
    assert all(s["errors"] == 0 for s in scripts)
    assert all(f"{s['file']}" in names for s in scripts)
    secrets = [line.split("=", 1)[1] for line in (harness.config.data_dir / "secrets.env")
               .read_text().splitlines() if "=" in line]
    assert len(secrets) == 3
    for raw in data.values():
        assert not any(value in raw.decode(errors="ignore") for value in secrets)
    config = json.loads(data["configuration.json"])
    assert config["settings"]["secret_key"] in ("[set]", "[not set]")
    audit = json.loads(data["audit/samples.json"])
    assert audit["chain"]["ok"] is True and audit["entries"]
    assert await AuditEntry.filter(action="acceptance.pack_exported").exists()
    assert len(result.requirements) >= len(REQUIREMENTS)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_one_command_writes_the_pack_R02(harness: Harness, tmp_path: Path) -> None:
    out = tmp_path / "cli-pack.zip"
    env = {**os.environ, "SHUANGLU_PROFILE": "test",
           "SHUANGLU_DATA_DIR": str(harness.config.data_dir),
           "DATABASE_URL": harness.config.database_url}
    done = subprocess.run(  # noqa: ASYNC221 - a command-line run, seconds
        [sys.executable, "-m", "reporting.evidence_pack", "--institution", "DEMO-BANK",
         "--out", str(out), "--junit", str(tmp_path / "none.xml")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "requirements covered by tests" in done.stdout
    assert zipfile.is_zipfile(out)
    bad = subprocess.run(  # noqa: ASYNC221
        [sys.executable, "-m", "reporting.evidence_pack", "--institution", "NOPE",
         "--out", str(tmp_path / "x.zip")], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, timeout=120)
    assert bad.returncode == 2 and "no institution" in bad.stderr

"""The sealed sample session of the acceptance evidence pack (R-02, R-31): one session archive
as `python -m app export` / `GET /archive/sessions/{id}/export` writes it, its automated QA
report (R-40), and the offline verification, which the pack runs again itself (`python -m app
verify-archive`, archive/offline.py) rather than trusting an output saved earlier.

Where a sample comes from: the whole-session browser test (tests/h5/test_call_e2e.py) saves its
export, the keyring the server published, its QA report and its verify-archive output into
test-artifacts/sample-session/ (the names below); or any export zip and QA report JSON given on
the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archive.offline import MANIFEST, ArchiveError, open_archive
from infra.config import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "test-artifacts" / "sample-session"
ARCHIVE_NAME = "archive.zip"
QA_REPORT_NAME = "qa-report.json"
KEYRING_NAME = "keyring.json"
SAVED_OUTPUT_NAME = "verify-archive.txt"
PACK_DIR = "sample-session"


@dataclass(frozen=True)
class SampleInput:
    archive: Path
    qa_report: Path | None = None
    keyring: Path | None = None
    saved_output: Path | None = None

    @classmethod
    def from_path(cls, path: Path, qa_report: Path | None = None,
                  keyring: Path | None = None) -> SampleInput | None:
        """A folder as the browser test writes it, or an export zip (with the QA report and
        keyring given separately). None when the folder holds no archive."""
        if path.is_dir():
            archive = path / ARCHIVE_NAME
            if not archive.is_file():
                return None

            def optional(name: str) -> Path | None:
                candidate = path / name
                return candidate if candidate.is_file() else None

            return cls(archive, qa_report or optional(QA_REPORT_NAME),
                       keyring or optional(KEYRING_NAME), optional(SAVED_OUTPUT_NAME))
        return cls(path, qa_report, keyring)


def manifest_of(archive: Path) -> dict[str, Any]:
    """The archive's manifest (raises ArchiveError when the path is no archive)."""
    try:
        manifest = json.loads(open_archive(archive).read(MANIFEST))
    except (KeyError, FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{archive} has no readable {MANIFEST}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArchiveError(f"{archive}: {MANIFEST} is not a manifest")
    return manifest


def run_offline_verification(archive: Path, keyring: Path | None) -> tuple[int, str]:
    """`python -m app verify-archive` itself, in a child process: the check an auditor runs
    (no database, configuration or secret), its exact output and exit code (0 intact, 1
    altered, 2 not an archive; others as that command documents)."""
    command = [sys.executable, "-m", "app", "verify-archive", str(archive)]
    if keyring is not None:
        command += ["--keyring", str(keyring)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,  # noqa: S603
                          timeout=600, check=False)
    return done.returncode, done.stdout + done.stderr


def _qa_summary(raw: bytes, session_id: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        problems.append("the QA report is not valid JSON")
        return None
    report = data.get("report") if isinstance(data, dict) else None
    if not isinstance(report, dict):
        problems.append("the QA report has no 'report' (GET /qa/sessions/{id}/report body)")
        return None
    named = data.get("session_id")
    if named is None:
        problems.append("the QA report does not name its session")
    elif str(named) != session_id:
        problems.append(f"the QA report is for session {named}, not {session_id}")
    findings = [{"severity": f.get("severity"), "code": f.get("code"),
                 "requirement": f.get("requirement"), "message": f.get("message")}
                for f in data.get("findings") or [] if isinstance(f, dict)]
    return {"passed": report.get("passed"), "counts": report.get("counts"),
            "engines": report.get("engines"), "finished_at": report.get("finished_at"),
            "recorded_ms": report.get("recorded_ms"), "findings": findings}


def build_sample(sample: SampleInput, database_keys: dict[str, Any] | None
                 ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The sample's section (summary) and the files it adds to the pack. Blocking (a child
    process hashes the archive): run it in a thread. `database_keys`: the keyring this
    installation's database publishes for the archive's institution, when it holds the
    archive's key; otherwise the keyring given with the sample, else the archive's own key."""
    files: dict[str, bytes] = {}
    problems: list[str] = []
    try:
        manifest = manifest_of(sample.archive)
    except ArchiveError as exc:
        return {"present": True, "ok": False, "problems": [str(exc)]}, files
    session_id = str(manifest.get("session_id", ""))
    if database_keys is not None:
        keys: bytes | None = json.dumps(database_keys, ensure_ascii=False, indent=2).encode()
        trust = "database"
    elif sample.keyring is not None:
        keys, trust = sample.keyring.read_bytes(), "supplied keyring"
    else:
        keys, trust = None, "self-asserted"
    with tempfile.TemporaryDirectory(prefix="pack-keys-") as folder:
        keyring = None
        if keys is not None:
            keyring = Path(folder) / KEYRING_NAME
            keyring.write_bytes(keys)
            files[f"{PACK_DIR}/{KEYRING_NAME}"] = keys
        code, output = run_offline_verification(sample.archive, keyring)
    archive_name = f"{PACK_DIR}/session-{session_id}.zip"
    files[archive_name] = sample.archive.read_bytes()
    files[f"{PACK_DIR}/verification.txt"] = output.encode()
    qa = None
    if sample.qa_report is None:
        problems.append("no QA report was given with the sample session")
    else:
        raw = sample.qa_report.read_bytes()
        files[f"{PACK_DIR}/{QA_REPORT_NAME}"] = raw
        qa = _qa_summary(raw, session_id, problems)
    recorded_agrees = None
    if sample.saved_output is not None:
        saved = sample.saved_output.read_text(encoding="utf-8", errors="replace")
        files[f"{PACK_DIR}/verify-archive.recorded.txt"] = saved.encode()
        # The verdict line (session, key, INTACT / ALTERED ...) of the same command.
        recorded_agrees = saved.strip().splitlines()[:1] == output.strip().splitlines()[:1]
        if not recorded_agrees:
            problems.append("the verify-archive output saved with the sample disagrees with "
                            "the pack's own verification")
    summary = {
        "present": True, "session_id": session_id,
        "institution": manifest.get("institution"), "key_id": manifest.get("key_id"),
        "sealed_at": manifest.get("sealed_at"), "archive": archive_name,
        "verification": {"ok": code == 0, "exit_code": code, "trust": trust,
                         "output": output},
        "recorded_output_agrees": recorded_agrees, "qa": qa, "problems": problems,
        "ok": code == 0 and not problems,
        "from_this_installation": trust == "database",
    }
    return summary, files

"""The product owners' command line: `python -m scripts_library validate|diff|render|hash`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts_library.catalogue import LIBRARY_DIR
from scripts_library.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_validate_the_whole_library_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(LIBRARY_DIR)]) == 0
    out = capsys.readouterr().out
    assert out.count("0 个错误，0 个警告 —— 可以发布") == 3


def test_validate_prints_findings_and_exits_one_on_errors(
    tmp_path: Path,
    sample_data: Callable[[str], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = sample_data("YA-NJF-002")
    data["steps"] = [s for s in data["steps"] if s["kind"] != "cooling_off"]
    path = tmp_path / "v2.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:" in out
    assert "error [missing-mandatory-step] 缺少必备环节「犹豫期」" in out
    assert "1 个错误，0 个警告 —— 不能发布" in out


def test_validate_reports_load_errors_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("schema_version: 1\nscript: [1, 2]\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    assert f"{path}:2: error [load] script：应为映射" in capsys.readouterr().out


def test_validate_json_output_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--json", str(LIBRARY_DIR / "YA-TL-003" / "v1.yaml")]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["findings"] == []
    assert entry["content_hash"].startswith("sha256:")


def test_render_previews_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    values = json.dumps(
        {
            "customer_name": "王建国",
            "agent_name": "李丽",
            "agent_licence_no": "02000133010080001234",
            "institution_full_name": "甬江银行股份有限公司宁波鄞州支行",
            "payment_mode": "年交",
            "payment_term": "10年",
            "premium": 12000,
            "sum_insured": 200000,
        },
        ensure_ascii=False,
    )
    path = str(LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml")
    assert main(["render", path, "--age", "66", "--values", values]) == 0
    out = capsys.readouterr().out
    assert "elderly-intro" in out
    assert "每期保险费为人民币12,000元" in out
    assert main(["render", path, "--age", "66", "--values", "{}"]) == 1
    assert "缺少以下变量的取值" in capsys.readouterr().out


def test_hash_and_diff_commands(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml")
    assert main(["hash", path]) == 0
    assert capsys.readouterr().out.startswith("sha256:")
    assert main(["diff", path, path]) == 0
    assert "两个版本内容相同" in capsys.readouterr().out


def test_module_entry_point_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "scripts_library", "validate", str(LIBRARY_DIR)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "可以发布" in completed.stdout

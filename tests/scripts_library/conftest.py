"""Fixtures for the script-library tests: the sample scripts, order values, YAML round trips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts_library import ScriptDocument, load_script, load_script_text
from scripts_library.catalogue import LIBRARY_DIR, script_files

SAMPLE_FILES = script_files([LIBRARY_DIR])

# Realistic order values per sample product, as the order system would supply them.
COMMON_VALUES: dict[str, object] = {
    "customer_name": "王建国",
    "insured_name": "王小明",
    "agent_name": "李丽",
    "agent_licence_no": "02000133010080001234",
}
ORDER_VALUES: dict[str, dict[str, object]] = {
    "YA-ZSS-001": {
        **COMMON_VALUES,
        "institution_full_name": "甬江银行股份有限公司宁波鄞州支行",
        "payment_mode": "年交",
        "payment_term": "10年",
        "premium": 12000,
        "sum_insured": "200000",
    },
    "YA-NJF-002": {
        **COMMON_VALUES,
        "institution_full_name": "甬安人寿保险股份有限公司宁波分公司",
        "payment_mode": "年交",
        "payment_term": "5年",
        "premium": "50000.00",
        "annuity_start_age": 60,
        "annual_annuity": 8800,
    },
    "YA-TL-003": {
        **COMMON_VALUES,
        "institution_full_name": "甬安人寿保险股份有限公司宁波分公司",
        "premium": 300000,
        "account_allocation": "稳健型账户百分之七十、进取型账户百分之三十",
        "risk_assessment_result": "平衡型",
    },
}


def sample_path(product_code: str) -> Path:
    return LIBRARY_DIR / product_code / "v1.yaml"


@pytest.fixture(params=SAMPLE_FILES, ids=lambda path: path.parent.name)
def sample_file(request: pytest.FixtureRequest) -> Path:
    """Each sample script file in turn."""
    path: Path = request.param
    return path


@pytest.fixture
def sample() -> Callable[[str], ScriptDocument]:
    """Load a sample script by product code."""
    return lambda product_code: load_script(sample_path(product_code))


@pytest.fixture
def sample_data() -> Callable[[str], dict[str, Any]]:
    """A sample script as plain YAML data, for tests that edit it."""

    def read(product_code: str) -> dict[str, Any]:
        data = yaml.safe_load(sample_path(product_code).read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    return read


@pytest.fixture
def from_data() -> Callable[[dict[str, Any], str], ScriptDocument]:
    """Write edited data back to YAML and load it, so that line numbers stay meaningful."""

    def load(data: dict[str, Any], source_name: str = "edited.yaml") -> ScriptDocument:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)
        return load_script_text(text, source_name)

    return load


@pytest.fixture
def order_values() -> Callable[[str], dict[str, object]]:
    return lambda product_code: dict(ORDER_VALUES[product_code])

"""What a quiet (-q) run says while it runs: each failure and each slow test, by name, at once.

A CI run that is cut off at its time limit prints only dots; nobody can tell which test failed
or which one took the time. This plugin writes one line per failed or erroring test phase and
per test slower than SLOW_S as it happens, and the slowest tests of the run to
test-artifacts/durations.txt at the end (the whole list, not only the top of --durations).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

SLOW_S = float(os.environ.get("PROGRESS_SLOW_S", "60"))
_durations: dict[str, float] = {}
_phases: dict[str, dict[str, float]] = {}
_started = time.monotonic()


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    _phases.setdefault(report.nodeid, {})[report.when] = report.duration
    config = _config.get("config")
    if config is None:
        return
    clock = f"[{(time.monotonic() - _started) / 60:5.1f} min]"
    if report.failed:
        _say(config, f"{clock} {report.when.upper()} FAILED {report.nodeid}")
    if report.when == "teardown" and _durations[report.nodeid] > SLOW_S:
        _say(config, f"{clock} SLOW {_durations[report.nodeid]:.0f} s {report.nodeid}")


_config: dict[str, pytest.Config] = {}


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist only the controlling process reports (it receives every worker's
    # reports); the workers stay quiet and write nothing.
    if not hasattr(config, "workerinput"):
        _config["config"] = config


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _durations or "config" not in _config:
        return
    folder = Path(str(session.config.rootpath)) / "test-artifacts"
    folder.mkdir(exist_ok=True)
    ranked = sorted(_durations.items(), key=lambda item: -item[1])
    total = sum(_durations.values())
    lines = [f"{seconds:8.1f} s  ({_phase_text(nodeid)})  {nodeid}"
             for nodeid, seconds in ranked]
    (folder / "durations.txt").write_text(
        f"{total / 60:.1f} min in {len(ranked)} tests\n" + "\n".join(lines) + "\n",
        encoding="utf-8")


def _phase_text(nodeid: str) -> str:
    phases = _phases.get(nodeid, {})
    return " ".join(f"{when[0]}{phases[when]:.1f}" for when in ("setup", "call", "teardown")
                    if when in phases)

"""The test run ends when its tests end.

A CI run printed its summary (1,166 tests in 40 min) and then never exited: the interpreter waits
at exit for every non-daemon thread (each executor's workers among them), and one worker blocked
in a call that never returns holds the process until CI's limit. This plugin bounds that wait:
if the process is still alive GRACE_S after pytest is done, it prints which threads are left and
where each one is (the diagnosis), then exits with pytest's own status. A C-level watchdog
(faulthandler) covers a hang past the point where Python threads still run.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import pytest

GRACE_S = float(os.environ.get("EXIT_GUARD_S", "60"))
_status: dict[str, int] = {}


def lingering_threads() -> list[threading.Thread]:
    """The threads that would hold the interpreter's exit (non-daemon, other than this one)."""
    return [t for t in threading.enumerate()
            if not t.daemon and t is not threading.current_thread()
            and t is not threading.main_thread()]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status["exit"] = int(exitstatus)


def _guard() -> None:
    time.sleep(GRACE_S)  # a daemon thread: it dies with a process that exits in time
    names = ", ".join(t.name for t in lingering_threads()) or "none (a hang in finalization)"
    sys.stderr.write(f"\nexit_guard: the process did not exit {GRACE_S:.0f} s after the tests "
                     f"ended; threads holding it: {names}\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(_status.get("exit", 1))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        # A pytest-xdist worker lives on in execnet's loop until the controlling process
        # lets it go: its lifetime is the controller's to bound (this guard runs there).
        return
    threading.Thread(target=_guard, name="exit-guard", daemon=True).start()
    # Past interpreter finalization, Python threads no longer run: faulthandler's own thread
    # prints the stacks and exits (status 1) if even that stage hangs.
    faulthandler.dump_traceback_later(3 * GRACE_S, exit=True)

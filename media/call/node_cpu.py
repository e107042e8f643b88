"""What a call costs the node, for admission control (issue 16 item 3): cumulative CPU seconds.

- :class:`NodeCpu` — this process (every thread: the relay and recording in the event loop, the
  video samplers, the audio listeners, the spoken-answer recogniser) plus its helper processes
  (the presence monitor's child, :mod:`media.identity.presence_host`), read from
  ``/proc/<pid>/stat``. A helper that is restarted (a new pid) keeps what its predecessor used, so
  the total never runs backwards.
- :class:`InterpreterCpu` — the event loop's thread plus the worker threads that run Python
  beside it (named by their pool's prefix): they take turns on one interpreter lock, so their
  sum, not the loop thread alone, is what one core must hold. Read in the loop's thread.

- :class:`MachineCpu` — every process on the cores the node may use (``/proc/stat``), for a node
  that shares its machine (``AdmissionConfig.count_machine``): what others take is not there
  for the calls.

Linux only for the helpers, the workers and the machine (``/proc``, ``pthread_getcpuclockid``);
elsewhere they count nothing and the process's own CPU time remains.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

# The hub's and the application's worker pools whose threads run Python beside the loop.
INTERPRETER_THREAD_PREFIXES = ("audio-listener", "spoken-answers", "video-sampler")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far; None when it is gone (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NodeCpu:
    """Cumulative CPU seconds of this process and its helper processes (module docstring)."""

    def __init__(self, own: Callable[[], float] = time.process_time,
                 read: Callable[[int], float | None] = process_cpu_seconds) -> None:
        self._own = own
        self._read = read
        self._helpers: list[Callable[[], int | None]] = []
        self._seen: dict[int, float] = {}  # pid → its CPU seconds when last read

    def add_helper(self, pid: Callable[[], int | None]) -> None:
        """Count the process ``pid()`` names from now on (None: not running now)."""
        self._helpers.append(pid)

    def helpers(self) -> float:
        for source in self._helpers:
            pid = source()
            if pid is not None and (seconds := self._read(pid)) is not None:
                self._seen[pid] = seconds
        return sum(self._seen.values())

    def __call__(self) -> float:
        return self._own() + self.helpers()


class InterpreterCpu:
    """Cumulative CPU seconds of the calling (event loop) thread and of the live threads named
    with ``prefixes`` (module docstring); threads that ended keep what they used."""

    def __init__(self, prefixes: tuple[str, ...] = INTERPRETER_THREAD_PREFIXES) -> None:
        self._prefixes = prefixes
        self._live: dict[threading.Thread, float] = {}  # its CPU seconds when last read
        self._ended = 0.0  # what the threads that ended used

    def workers(self) -> float:
        now: dict[threading.Thread, float] = {}
        for thread in threading.enumerate():
            if thread.ident is None or not thread.name.startswith(self._prefixes):
                continue
            try:
                now[thread] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (AttributeError, OSError):  # not Linux, or the thread just ended
                if thread in self._live:
                    now[thread] = self._live[thread]
        self._ended += sum(v for t, v in self._live.items() if t not in now)
        self._live = now
        return self._ended + sum(now.values())

    def __call__(self) -> float:
        return time.thread_time() + self.workers()


class MachineCpu:
    """Cumulative busy CPU seconds of the cores this process may run on, every process's
    (``/proc/stat``: all but idle and iowait); 0 where there is no ``/proc/stat``."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self._stat = stat
        try:
            self._cores = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        except AttributeError:  # not Linux
            self._cores = set()

    def __call__(self) -> float:
        try:
            lines = self._stat.read_text().splitlines()
        except OSError:
            return 0.0
        busy = 0
        for line in lines:
            name, *ticks = line.split()
            if name in self._cores:
                values = [int(v) for v in ticks[:8]]
                busy += sum(values) - values[3] - values[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")

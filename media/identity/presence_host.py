"""Presence monitors (R-13) in a child process, for the call hub's process.

Face detection and embedding (dlib) hold the GIL while they run (~0.045 and ~0.075–0.14 CPU-s;
most samples of a steady call need neither and cost ~2 ms, see media/identity/presence.py). Run
in a thread of the call hub's process they stall its event loop, which relays and paces every
call's media: measured here (with the former 0.5–0.8 s per sample), loop lags up to 0.33 s (p99
89 ms) while a thread analysed frames. A child process has its own interpreter and GIL; the
hub's sampling thread waits on a pipe (which releases the GIL) while the child works.

One child per :class:`PresenceHost`, started on first use as ``python -m
media.identity.presence_host`` (not forked: the hub's process has threads and an event loop;
not ``multiprocessing`` spawn either, which re-runs the parent's main script), talking pickled
requests over two pipes, and holding one :class:`PresenceMonitor` per key (a call room) and
one :class:`~media.identity.liveness.LivenessRun` per live liveness challenge (``live_*``, fed
by :mod:`media.call.live_liveness`). Calls
are blocking and serialised: make them from a worker thread. If the child dies, the next call
starts a new one and re-creates the monitors from their references (their debounce state and
samples so far are lost, which is logged). Sending a 480×640 frame costs ~1 ms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.identity.config import IdentityConfig

if TYPE_CHECKING:  # the parent stays light: the engines load in the child only
    from media.identity.imaging import Frame
    from media.identity.results import (
        ChallengePlan,
        LivenessResult,
        PresenceMark,
        PresenceReport,
    )

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS = 5.0


class PresenceHostError(RuntimeError):
    """The child refused a request (e.g. no face in the reference) or died during it."""


def _serve(requests: Connection, replies: Connection) -> None:
    """The child's loop: the configuration first, then requests ``(op, key, args)``, each
    answered ``(ok, result or message)``. Ends at "stop" or when the parent goes away."""
    from media.identity.imaging import as_frame
    from media.identity.liveness import LivenessRun
    from media.identity.presence import PresenceMonitor
    from media.identity.service import IdentityService

    try:
        config_json = requests.recv()
    except (EOFError, OSError):
        return
    service = IdentityService(IdentityConfig.model_validate_json(config_json))
    monitors: dict[str, PresenceMonitor] = {}
    runs: dict[str, LivenessRun] = {}
    while True:
        try:
            op, key, args = requests.recv()
        except (EOFError, OSError):
            return
        if op == "stop":
            return
        try:
            result: Any
            if op == "open":
                reference, start_t, origin = args
                monitors[key] = service.presence_monitor(reference, start_t)
                if origin is not None:  # starts now that it can sample (the engines loaded)
                    monitors[key].start_t = max(time.time() - origin, 0.0)
                result = monitors[key].config.sample_fps
            elif op == "reference":
                monitors[key].replace_reference(as_frame(args[0]))
                result = None
            elif op == "add":
                result = monitors[key].add_frame(*args)
            elif op == "finish":
                result = monitors.pop(key).finish(*args)
            elif op == "drop":
                result = monitors.pop(key, None) is not None
            elif op == "live_open":  # a liveness challenge judged on the call's frames
                runs[key] = service.start_liveness(*args)
                result = None
            elif op == "live_prime":
                result = runs[key].prime(*args)
            elif op == "live_add":
                result = runs[key].add_frame(*args).finished
            elif op == "live_finish":
                result = runs.pop(key).finish()
            elif op == "live_drop":
                result = runs.pop(key, None) is not None
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as error:
            replies.send((False, f"{type(error).__name__}: {error}"))
        else:
            replies.send((True, result))


class PresenceHost:
    """The parent's handle on the child; thread-safe, blocking."""

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self._config_json = (config or IdentityConfig()).model_dump_json()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._opened: dict[str, tuple[bytes, float, float | None]] = {}

    def pid(self) -> int | None:
        """The child's process id, None while none runs (for admission control's CPU count)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def open(self, key: str, reference: bytes, start_t: float = 0.0,
             origin: float | None = None) -> float:
        """Start a monitor for ``key`` from the reference face (JPEG); returns its sample_fps.
        With ``origin`` (POSIX, the zero of the samples' times) the monitor's start is the
        moment it is ready (``start_t`` ignored): the time the engines took to load is not
        time the monitor failed to sample. Raises PresenceHostError when the reference has no
        face."""
        fps = float(self._call("open", key, (reference, start_t, origin)))
        with self._lock:
            self._opened[key] = (reference, start_t, origin)
        return fps

    def replace_reference(self, key: str, reference: bytes) -> None:
        """The monitor of ``key`` compares faces with this reference (JPEG) from now on, its
        state kept (`PresenceMonitor.replace_reference`); a restarted child opens it with this
        one. PresenceHostError when it holds no face (the old reference stays)."""
        self._call("reference", key, (reference,))
        with self._lock:
            opened = self._opened.get(key)
            if opened is not None:
                self._opened[key] = (reference, *opened[1:])

    def add_frame(self, key: str, t: float, image: Frame) -> list[PresenceMark]:
        result: list[PresenceMark] = self._call("add", key, (t, image))
        return result

    def finish(self, key: str, end_t: float | None = None) -> PresenceReport:
        with self._lock:
            self._opened.pop(key, None)
        result: PresenceReport = self._call("finish", key, (end_t,))
        return result

    def drop(self, key: str) -> None:
        with self._lock:
            self._opened.pop(key, None)
        self._call("drop", key, ())

    # -- live liveness challenges (the call's frames, media/call/live_liveness.py) ----------

    def live_open(self, key: str, plan: ChallengePlan, portrait: bytes | None = None) -> None:
        """Start judging ``plan`` (one challenge) on frames to come; with the verified card
        ``portrait`` (JPEG), the run's best frame must match it too (``LivenessResult.
        face_match``). Not re-created when the child dies: the run then fails
        (PresenceHostError) and the server may ask again."""
        self._call("live_open", key, (plan, portrait))

    def live_prime(self, key: str, image: Frame) -> bool:
        """A frame from before the challenge was sent: the neutral baseline only."""
        return bool(self._call("live_prime", key, (image,)))

    def live_add(self, key: str, t: float, image: Frame) -> bool:
        """A frame ``t`` s after the challenge was sent; True once the run has decided."""
        return bool(self._call("live_add", key, (t, image)))

    def live_finish(self, key: str) -> LivenessResult:
        result: LivenessResult = self._call("live_finish", key, ())
        return result

    def live_drop(self, key: str) -> None:
        self._call("live_drop", key, ())

    def shutdown(self) -> None:
        with self._lock:
            self._stop_child()

    # -- the child -------------------------------------------------------------------------

    def _call(self, op: str, key: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start_child(restart=self._process is not None)
            assert self._requests is not None and self._replies is not None
            try:
                self._requests.send((op, key, args))
                ok, result = self._replies.recv()
            except (EOFError, OSError) as error:
                self._stop_child()
                raise PresenceHostError(f"the presence process died: {error!r}") from error
        if not ok:
            raise PresenceHostError(result)
        return result

    def _start_child(self, restart: bool) -> None:
        self._stop_child()
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds `media`
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "media.identity.presence_host",
                 str(to_child), str(from_child)],
                pass_fds=(to_child, from_child), env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child)
            os.close(from_child)
        self._process = process
        self._requests = Connection(from_parent, readable=False)
        self._replies = Connection(to_parent, writable=False)
        self._requests.send(self._config_json)
        if restart:
            logger.error("the presence process died; restarted, %d monitors start over",
                         len(self._opened))
        for key, opened in self._opened.items():
            self._requests.send(("open", key, opened))
            ok, result = self._replies.recv()
            if not ok:
                logger.error("presence monitor %s not re-created: %s", key, result)

    def _stop_child(self) -> None:
        process, requests, replies = self._process, self._requests, self._replies
        self._process = self._requests = self._replies = None
        if requests is not None:
            with contextlib.suppress(OSError, ValueError):
                requests.send(("stop", "", ()))
            requests.close()
        if replies is not None:
            replies.close()
        if process is not None:
            try:
                process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":  # the child: python -m media.identity.presence_host IN OUT
    _serve(Connection(int(sys.argv[1]), writable=False),
           Connection(int(sys.argv[2]), readable=False))

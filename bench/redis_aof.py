"""What the embedded Redis' AOF costs: single-use nonce claims (SET NX EX, as the bank channel
does for every signed request) with `appendfsync` always, everysec and no persistence at all.

    .venv/bin/python -m bench.redis_aof [--clients 1,16,64] [--seconds 3] [--dir PATH]

`--dir` should be on the disk the data folder lives on (a tmpfs makes fsync free). Prints one
line per mode and concurrency: operations per second and p50/p99 latency of one claim.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from infra.redis_server import EmbeddedRedis


async def _client(url: str, stop_at: float, latencies: list[float]) -> None:
    client = aioredis.from_url(url)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await client.set(f"bank:nonce:bench:{secrets.token_hex(16)}", 1, nx=True, ex=900)
            latencies.append(time.perf_counter() - started)
    finally:
        await client.aclose()


async def _run(folder: Path, mode: str, clients: int, seconds: float) -> str:
    shutil.rmtree(folder, ignore_errors=True)
    embedded = EmbeddedRedis(folder, appendfsync=mode if mode != "off" else "no")
    url = await embedded.start()
    try:
        if mode == "off":
            admin = aioredis.from_url(url)
            await admin.config_set("appendonly", "no")
            await admin.aclose()
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_client(url, stop_at, latencies) for _ in range(clients)))
    finally:
        embedded.stop()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    return (f"{mode:9} clients={clients:3}  {len(latencies) / seconds:8.0f} claims/s  "
            f"p50 {statistics.median(latencies) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="redis-aof-", dir=Path.cwd()))
    try:
        for clients in (int(c) for c in args.clients.split(",")):
            for mode in ("off", "everysec", "always"):
                print(await _run(base / mode, mode, clients, args.seconds), flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

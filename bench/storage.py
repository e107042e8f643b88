"""Evidence storage on loopback (issue 13 item 2): upload and download throughput of the S3
backend against moto's standalone server, and the client CPU that storing a recorded
call-minute costs (compare bench/call.py: the recorder's own CPU per call-minute).

    python -m bench.storage [--mib 64] [--call-minutes 10] [--video-kbps 600]

A recorded call-minute is three segments (60 s each by default): customer and agent at
``video-kbps`` + 32 kbps Opus, and the TTS track at 32 kbps — what the recorder hands the spool.
CPU is this process's (all threads: hashing, boto3, HTTP); the S3 server's own CPU (moto here,
MinIO or Ceph in production) is not counted. Random content: nothing compresses.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from storage import ObjectStore, open_store
from tests.s3server import CREDENTIALS, _free_port, start_moto


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


async def _throughput(store: ObjectStore, folder: Path, mib: int) -> dict[str, float]:
    source = folder / "big.bin"
    _random_file(source, mib << 20)
    cpu, wall = time.process_time(), time.perf_counter()
    await store.put_file("bench/big.bin", source)
    up_wall, up_cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu, wall = time.process_time(), time.perf_counter()
    size = 0
    async for chunk in store.stream("bench/big.bin"):
        size += len(chunk)
    down_wall, down_cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu, wall = time.process_time(), time.perf_counter()
    await store.sha256("bench/big.bin")
    hash_wall = time.perf_counter() - wall
    assert size == mib << 20
    await store.delete("bench/big.bin")
    return {"upload_mib_s": mib / up_wall, "upload_cpu_s_per_gib": up_cpu / mib * 1024,
            "download_mib_s": mib / down_wall, "download_cpu_s_per_gib": down_cpu / mib * 1024,
            "rehash_mib_s": mib / hash_wall}


async def _call_minutes(store: ObjectStore, folder: Path, minutes: int,
                        video_kbps: int) -> dict[str, float]:
    """Stores what `minutes` recorded call-minutes leave in the spool, as the recorder's
    spool does (the segment's hash is known, the spool file is consumed)."""
    party = (video_kbps + 32) * 1000 // 8 * 60
    sizes = {"customer_av": party, "agent_av": party, "tts": 32_000 // 8 * 60}
    templates = {kind: (folder / f"{kind}.tmpl", _random_file(folder / f"{kind}.tmpl", size))
                 for kind, size in sizes.items()}
    cpu_total = wall_total = 0.0
    for minute in range(1, minutes + 1):
        spool = []
        for kind, (template, digest) in templates.items():
            target = folder / f"{kind}-{minute:05d}.webm"
            shutil.copyfile(template, target)  # the recorder's file (not counted)
            spool.append((f"bench/s/{kind}/{minute:05d}.webm", target, digest))
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(store.put_file(key, path, sha256=digest, move=True)
                               for key, path, digest in spool))
        cpu_total += time.process_time() - cpu
        wall_total += time.perf_counter() - wall
    for key in await store.keys("bench/s/"):
        await store.delete(key)
    return {"mb_per_call_min": sum(sizes.values()) / 1e6,
            "cpu_s_per_call_min": cpu_total / minutes, "wall_s_per_call_min": wall_total / minutes}


async def run(args: argparse.Namespace) -> None:
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    moto = start_moto(port)
    folder = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        stores = {
            "s3 (moto, loopback)": open_store(
                f"s3://bench/e?endpoint=http://127.0.0.1:{port}&create_bucket=true", folder),
            "local folder": open_store(None, folder / "files"),
        }
        for name, store in stores.items():
            t = await _throughput(store, folder, args.mib)
            c = await _call_minutes(store, folder, args.call_minutes, args.video_kbps)
            print(f"{name}: {args.mib} MiB object: upload {t['upload_mib_s']:.0f} MiB/s "
                  f"({t['upload_cpu_s_per_gib']:.2f} CPU-s/GiB), download "
                  f"{t['download_mib_s']:.0f} MiB/s ({t['download_cpu_s_per_gib']:.2f} "
                  f"CPU-s/GiB), re-hash {t['rehash_mib_s']:.0f} MiB/s")
            print(f"{name}: storing a call-minute ({c['mb_per_call_min']:.1f} MB in 3 "
                  f"segments): {c['cpu_s_per_call_min']:.3f} CPU-s, "
                  f"{c['wall_s_per_call_min']:.3f} s wall (mean of {args.call_minutes})")
            await store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        moto.terminate()
        moto.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--call-minutes", type=int, default=10)
    parser.add_argument("--video-kbps", type=int, default=600)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

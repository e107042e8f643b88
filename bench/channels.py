"""Benchmark of the WeChat message endpoint: throughput and latency (p50/p95/p99) of signed,
AES-encrypted (or plain) text messages answered with a passive reply, on loopback.

A server process (the real app: SQLite, its own redis-server child, channel worker off) is
started on 127.0.0.1; the load loop (aiohttp, a fixed number of connections) sends distinct
messages (new MsgId each, 200 users) built and encrypted beforehand with wechatpy, as WeChat
would, and checks every reply decrypts to the FAQ answer. Bounded in count and time.

    python -m bench.channels [--requests 2000] [--concurrency 32] [--seconds 60] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import xmltodict
from wechatpy.crypto import WeChatCrypto

APP_ID = "wxbench000000000a"
TOKEN = "benchToken2026"  # noqa: S105 - a throwaway callback token for the bench server
AES_KEY = base64.b64encode(hashlib.sha256(b"bench").digest()).decode()[:43]
QUESTION = "什么是远程双录"
EXPECTED = "同步录音录像"


def _serve(port: int, data_dir: str) -> None:
    """The server process: migrate, seed, run the real app until terminated."""
    from aiohttp import web

    from app.factory import create_app
    from app.seed import seed_demo
    from infra.config import Settings, load_config
    from infra.database import migrate, open_database

    settings = Settings(profile="test", data_dir=Path(data_dir), port=port,
                        run_worker_in_process=False, log_level="WARNING")
    config = load_config(settings)

    async def prepare() -> None:
        await migrate(config.database_url)
        async with open_database(config.database_url):
            await seed_demo()

    asyncio.run(prepare())
    web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _message(crypto: WeChatCrypto, n: int, encrypted: bool) -> tuple[dict[str, str], bytes]:
    user = "o" + hashlib.sha256(f"bench-user-{n % 200}".encode()).hexdigest()[:27]
    xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
           f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}"
           f"</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           f"<Content><![CDATA[{QUESTION}]]></Content><MsgId>{10**15 + n}</MsgId></xml>")
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    joined = "".join(sorted([TOKEN, timestamp, nonce])).encode()
    query = {"signature": hashlib.sha1(joined, usedforsecurity=False).hexdigest(),
             "timestamp": timestamp, "nonce": nonce, "openid": user}
    if not encrypted:
        return query, xml.encode()
    packed = xmltodict.parse(crypto.encrypt_message(xml, nonce, timestamp))["xml"]
    query.update(encrypt_type="aes", msg_signature=packed["MsgSignature"])
    body = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
            f"<Encrypt><![CDATA[{packed['Encrypt']}]]></Encrypt></xml>")
    return query, body.encode()


def _reply_ok(crypto: WeChatCrypto, text: str) -> bool:
    outer = xmltodict.parse(text)["xml"]
    if "Encrypt" in outer:
        outer = xmltodict.parse(crypto.decrypt_message(
            text, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]))["xml"]
    return EXPECTED in str(outer.get("Content", ""))


async def _load(url: str, payloads: list[tuple[dict[str, str], bytes]], concurrency: int,
                seconds: float, crypto: WeChatCrypto) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
    for item in payloads:
        queue.put_nowait(item)
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty() and time.monotonic() < deadline:
            query, body = queue.get_nowait()
            started = time.perf_counter()
            try:
                async with session.post(url, params=query, data=body,
                                        headers={"Content-Type": "text/xml"}) as resp:
                    text = await resp.text()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok, text = False, ""
            latencies.append(time.perf_counter() - started)
            if not ok or not _reply_ok(crypto, text):
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        await asyncio.gather(*[worker(session) for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


async def _wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not start")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop sending after this")
    parser.add_argument("--plain", action="store_true", help="plain mode instead of AES")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1])
        return 0

    requests = max(1, min(args.requests, 100_000))
    port = _free_port()
    env = {**os.environ, "SHUANGLU_WECHAT_APP_ID": APP_ID, "SHUANGLU_WECHAT_TOKEN": TOKEN,
           "SHUANGLU_WECHAT_ENCODING_AES_KEY": AES_KEY,
           "SHUANGLU_WECHAT_MESSAGE_MODE": "compatible",
           # Measure the endpoint, not the limiters: one loopback IP sends everything.
           "SHUANGLU_WECHAT_IP_REQUESTS_PER_MINUTE": "10000000",
           "SHUANGLU_WECHAT_OPENID_MESSAGES_PER_MINUTE": "10000000",
           "SHUANGLU_CHANNELS_RUN_WORKER": "false"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    print(f"building {requests} {'plain' if args.plain else 'AES'} messages…", flush=True)
    payloads = [_message(crypto, n, not args.plain) for n in range(requests)]
    with tempfile.TemporaryDirectory(prefix="bench-channels-") as data_dir:
        server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve",
                                   str(port), data_dir], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_for(base + "/"))
            # Warm-up: first requests pay for imports, connections and the token cache.
            asyncio.run(_load(base + "/api/v1/wechat/callback",
                              [_message(crypto, 10**6 + n, not args.plain) for n in range(50)],
                              8, 30, crypto))
            latencies, errors, elapsed = asyncio.run(_load(
                base + "/api/v1/wechat/callback", payloads, args.concurrency, args.seconds,
                crypto))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    done = len(latencies)
    ms = [v * 1000 for v in latencies]
    print(f"mode {'plain' if args.plain else 'AES safe mode'}, {done} requests, "
          f"{args.concurrency} connections, {elapsed:.1f} s on loopback (2 cores shared with "
          f"the load generator)")
    print(f"throughput {done / elapsed:.0f} req/s; latency ms p50 {statistics.median(ms):.1f} "
          f"p95 {_percentile(ms, 0.95):.1f} p99 {_percentile(ms, 0.99):.1f} "
          f"max {max(ms):.1f}; errors {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

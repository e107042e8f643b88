"""Issue 14: the event loop never stalls on CPU work, Redis saturation sheds load with 503
instead of failing with 500, and login throttling cannot be beaten by concurrency (R-50)."""

from __future__ import annotations

import asyncio
import io
import random
import statistics
import time
from datetime import date
from typing import Any

import pytest
from PIL import Image

import security.passwords
import workflow.identity
from security.cpu import CpuPool
from tests.harness import PASSWORDS, Harness, Walk

pytestmark = pytest.mark.timeout(300)


def _png(width: int, height: int) -> bytes:
    """A PNG that is small on disk and costs a full decode (a gradient compresses well), with
    a card's emblem side on it (a photo without a card is refused on upload, issue 15)."""
    import cv2

    from testing import identity_material as synth

    row = Image.linear_gradient("L").resize((width, 1))
    image = Image.new("RGB", (width, height))
    image.paste(row.convert("RGB").resize((width, height)))
    card = synth.draw_back(synth.random_identity(random.Random(width), today=date(2026, 6, 1)))
    image.paste(Image.fromarray(cv2.cvtColor(card, cv2.COLOR_BGR2RGB)).resize(
        (width // 2, width // 2 * card.shape[0] // card.shape[1])), (width // 4, height // 6))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _bomb_png() -> bytes:
    """The tester's file: 6000×6600 of one colour, about 128 KB."""
    out = io.BytesIO()
    Image.new("RGB", (6000, 6600), (250, 250, 250)).save(out, format="PNG")
    return out.getvalue()


def _p99(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.99) - 1)]


async def _health_latencies(harness: Harness, until: asyncio.Event,
                            every: float = 0.02) -> list[float]:
    samples: list[float] = []
    while not until.is_set():
        start = time.perf_counter()
        r = await harness.request("GET", "/health")
        samples.append(time.perf_counter() - start)
        assert r.status == 200
        await asyncio.sleep(every)
    return samples


async def _upload(harness: Harness, walk: Walk, data: bytes, kind: str = "id_back") -> Any:
    return await harness.request("POST", f"/customer/identity/uploads/{kind}",
                                 token=walk.customer_token, data=data,
                                 headers={"Content-Type": "image/png"})


FORWARDED = {"trust_forwarded_for": True}


@pytest.mark.parametrize("settings_overrides", [{**FORWARDED, "cpu_max_waiting": 64}])
async def test_health_stays_fast_while_logins_and_large_uploads_run(harness: Harness) -> None:
    """40 logins with unknown names (the tester's 31.6 s in a row, /health at 2.66 s) and
    several large PNG uploads at once: the hashing and decoding run in the CPU pool, so the
    event loop keeps answering /health."""
    walks = [await harness.walk_to("consented") for _ in range(3)]
    large = await asyncio.to_thread(_png, 4000, 3000)  # 12 megapixels, decoded for real
    bomb = await asyncio.to_thread(_bomb_png)
    assert len(large) < 8 * 1024 * 1024 and len(bomb) < 200_000

    idle = asyncio.Event()
    baseline_task = asyncio.create_task(_health_latencies(harness, idle))
    await asyncio.sleep(1.0)
    idle.set()
    baseline = await baseline_task

    done = asyncio.Event()
    probe = asyncio.create_task(_health_latencies(harness, done))
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    logins = [harness.request("POST", "/auth/login",
                              json={"username": f"nobody{n:03d}", "password": "wrong-password"},
                              headers={"X-Forwarded-For": f"10.0.{n}.1"})
              for n in range(40)]
    uploads = [_upload(harness, w, large) for w in walks] + [_upload(harness, walks[0], bomb)]
    results = await asyncio.gather(*logins, *uploads)
    heavy_seconds = time.perf_counter() - started
    done.set()
    loaded = await probe

    login_statuses = [r.status for r in results[:40]]
    upload_statuses = [r.status for r in results[40:]]
    assert login_statuses == [401] * 40, login_statuses
    assert upload_statuses[:3] == [201, 201, 201], [r.body for r in results[40:]]
    assert results[-1].status == 422 and results[-1].body["code"] == "image_too_large"
    print(f"\n/health idle p50 {statistics.median(baseline) * 1000:.1f} ms "
          f"p99 {_p99(baseline) * 1000:.1f} ms ({len(baseline)}); under load p50 "
          f"{statistics.median(loaded) * 1000:.1f} ms p99 {_p99(loaded) * 1000:.1f} ms "
          f"max {max(loaded) * 1000:.1f} ms ({len(loaded)} probes over {heavy_seconds:.1f} s)")
    assert len(loaded) >= 10
    # The tester saw 2.66 s; on this loaded 2-core machine the idle p99 is a few ms.
    assert _p99(loaded) < 0.2, sorted(loaded)[-5:]


async def test_a_huge_png_is_refused_from_its_header_and_a_wrong_state_before_decoding(
    harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[int] = []
    real_clean = workflow.identity.clean_image

    def spy(data: bytes) -> Any:
        decoded.append(len(data))
        return real_clean(data)

    monkeypatch.setattr(workflow.identity, "clean_image", spy)
    bomb = await asyncio.to_thread(_bomb_png)
    consented = await harness.walk_to("consented")
    r = await _upload(harness, consented, bomb)
    assert r.status == 422 and r.body["code"] == "image_too_large"
    assert decoded == []  # refused from the header's 39.6 megapixels
    # A session that does not take uploads now refuses before anything is read or decoded.
    opened = await harness.walk_to("opened")
    small = await asyncio.to_thread(_png, 800, 600)
    r = await _upload(harness, opened, small)
    assert r.status == 409, r.body
    assert decoded == []
    r = await _upload(harness, consented, small)
    assert r.status == 201 and decoded == [len(small)]


async def test_concurrent_wrong_passwords_check_at_most_the_limit_R50(
    harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str | None] = []
    real_verify = security.passwords.verify_password

    def counting(password_hash: str | None, password: str) -> bool:
        checked.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(security.passwords, "verify_password", counting)
    body = {"username": "agent01", "password": "wrong-password"}
    results = await asyncio.gather(*[harness.request("POST", "/auth/login", json=body)
                                     for _ in range(30)])
    statuses = sorted(r.status for r in results)
    limit = harness.config.settings.login_max_failures
    assert statuses == [401] * limit + [429] * (30 - limit)
    assert len(checked) == limit  # the tester saw all 30 checked
    throttled = [r for r in results if r.status == 429]
    window = harness.config.settings.login_failure_window_seconds
    for r in throttled:
        assert 0 < int(r.headers["Retry-After"]) <= window
        assert r.body["retry_after"] == int(r.headers["Retry-After"])


@pytest.mark.parametrize("settings_overrides", [{
    **FORWARDED, "login_max_attempts_per_ip": 6, "login_max_attempts_per_user": 4}])
async def test_unknown_names_cost_a_check_and_count_per_address_and_per_name_R50(
    harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str | None] = []
    real_verify = security.passwords.verify_password

    def counting(password_hash: str | None, password: str) -> bool:
        checked.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(security.passwords, "verify_password", counting)
    per_ip = harness.config.settings.login_max_attempts_per_ip
    per_user = harness.config.settings.login_max_attempts_per_user

    async def login(name: str, ip: str) -> Any:
        return await harness.request("POST", "/auth/login",
                                     json={"username": name, "password": "wrong-password"},
                                     headers={"X-Forwarded-For": ip})

    # One address trying many unknown names.
    statuses = [(await login(f"ghost{n}", "10.9.9.9")).status for n in range(per_ip + 1)]
    assert statuses == [401] * per_ip + [429]
    assert checked == [None] * per_ip  # every unknown name was verified against the dummy
    # Many addresses trying one name.
    statuses = [(await login("target", f"10.8.{n}.1")).status for n in range(per_user + 1)]
    assert statuses == [401] * per_user + [429]
    # The right password from a fresh address still works for another account.
    ok = await harness.request("POST", "/auth/login", headers={"X-Forwarded-For": "10.7.7.7"},
                               json={"username": "qa01", "password": PASSWORDS["qa01"]})
    assert ok.status == 200


@pytest.mark.parametrize("settings_overrides", [{"redis_max_connections": 10,
                                                 "redis_pool_timeout_seconds": 5.0}])
async def test_400_concurrent_requests_on_a_small_redis_pool_get_no_500(
    harness: Harness,
) -> None:
    """The tester saw 267 × 500 of 400 (redis-py's pool failing at its size); the pool now
    waits for a free connection: 400 at once on 10 connections all succeed."""
    token = await harness.login("qa01")
    results = await asyncio.gather(*[harness.request("GET", "/auth/me", token=token)
                                     for _ in range(400)])
    statuses = [r.status for r in results]
    assert 500 not in statuses
    assert statuses.count(200) == 400, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.parametrize("settings_overrides", [{"redis_max_connections": 4,
                                                 "redis_pool_timeout_seconds": 0.5}])
async def test_a_saturated_redis_pool_is_503_with_retry_after(harness: Harness) -> None:
    """When no connection frees within the wait, the request is shed (503 + Retry-After)."""
    token = await harness.login("qa01")
    pool = harness.redis.connection_pool
    size = pool.max_connections
    # Hold every connection of the pool with blocking reads.
    holders = [asyncio.create_task(harness.redis.blpop([f"never:{n}"], timeout=10))
               for n in range(size)]
    await asyncio.sleep(0.3)
    try:
        r = await harness.request("GET", "/auth/me", token=token)
        assert r.status == 503, r.body
        assert r.body["code"] == "service_unavailable"
        assert int(r.headers["Retry-After"]) > 0
    finally:
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)


def test_the_cpu_pool_sheds_when_its_line_is_full() -> None:
    async def run() -> None:
        pool = CpuPool(threads=1, max_waiting=1)
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def block() -> int:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
            return 1

        first = asyncio.create_task(pool.run(block))
        second = asyncio.create_task(pool.run(block))
        await asyncio.sleep(0.05)
        from security.cpu import CpuBusy

        with pytest.raises(CpuBusy) as busy:
            await pool.run(block)
        assert busy.value.retry_after >= 1
        gate.set()
        assert await first == 1 and await second == 1
        assert pool.pending == 0
        pool.shutdown()

    asyncio.run(run())

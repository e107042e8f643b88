"""Benchmark: from opening the invitation link to the first speech the customer hears (issue 17,
goal ≤ 20 s with instant taps; R-10, R-12, R-23).

The system starts as the browser tests start it (tests/conftest.py, tests/h5/): a real Redis, a
migrated and seeded SQLite database, the app with its call hub and the job receiver, the
offline identity engines (paddleocr, dlib) and espeak-ng speech. Each run:

- the agent creates an order for a synthetic ID card, a session and the invitation link through
  the API (not measured: it happens before the customer has the link);
- the customer, in a real headless Chromium on a 390×844 phone with a WeChat user agent and the
  fake camera and microphone of the browser tests (tests/h5/fake_customer.py), opens the link
  and taps each control as soon as it can be tapped: 开始, both consents, the two card photos,
  the liveness clip (the page paces its prompts: 1.5 s + 4 s per action), 提交核验;
- the agent (an aiortc party speaking the page's call contract, media/call/client.py) starts
  the call the moment the identity is verified, joins it, and starts the script as soon as the
  server accepts it (the script cannot start before both parties are recorded and every step's
  speech is rendered, workflow/call.py call_readiness);
- the first speech is the first audio energy arriving on the page's speech line (getStats
  totalAudioEnergy, sampled every 50 ms), and also the server's `tts_started` event.

Printed per run and as the median of N runs (default 3): each phase's seconds and share of the
total, the total, and the load average each run started under (the machine is shared: figures
measured under load are inflated). The time the test rig spends writing the fake camera's next
scene (a person starting to act) is left out of the phases and printed as "rig".

    python -m bench.first_speech [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("SHUANGLU_TESTDATA_DOWNLOAD", "0")  # the photos come from bin/setup

PHASES = {
    "page_load": "打开链接到欢迎页可点",
    "consent": "开始 → 两项同意 → 身份核验页",
    "id_uploads": "身份证正反面上传",
    "liveness": "动作视频录制与上传",
    "verification": "提交核验到通过（OCR、人脸、活体）",
    "call_connect": "通过到客户通话接通",
    "script_start": "接通到话术开始（双方录制、语音就绪）",
    "first_speech": "话术开始到客户听到声音",
}

# Samples the energy arriving on the page's speech line (the receive-only audio line), every
# 50 ms; window.__firstSpeech is the epoch ms of the first sample with energy.
HEAR_SPEECH = """
  window.__firstSpeech = null;
  const Original = RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__pc = pc;
    let mid = null;
    pc.addEventListener("track", (e) => {
      const line = e.transceiver;
      if (e.track.kind === "audio" && line.direction === "recvonly") mid = line.mid;
    });
    const sample = async () => {
      if (pc.connectionState === "closed" || window.__firstSpeech) return;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio" && s.mid === mid
            && (s.totalAudioEnergy || 0) > 1e-6 && !window.__firstSpeech) {
          window.__firstSpeech = Date.now();
        }
      });
      setTimeout(sample, 50);
    };
    setTimeout(sample, 50);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
"""


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.asynccontextmanager
async def _system(folder: Path) -> AsyncIterator[Any]:
    """The app as the browser tests run it (tests/conftest.py `harness`), jobs running."""
    from app.seed import seed_demo
    from infra.config import Settings, load_config
    from infra.database import migrate, open_database
    from infra.redis_server import EmbeddedRedis
    from tests.harness import start_harness

    database_url = f"sqlite://{folder / 'bench.sqlite3'}"
    await migrate(database_url)
    async with open_database(database_url):
        await seed_demo()
    embedded = EmbeddedRedis(folder / "redis", appendfsync="no")
    redis_url = await embedded.start()
    try:
        settings = Settings(profile="test", data_dir=folder / "data", database_url=database_url,
                            redis_url=redis_url, run_worker_in_process=False,
                            tts_engines="espeak", run_jobs_in_process=False)
        harness = await start_harness(load_config(settings))
        try:
            async with harness.jobs_running():
                yield harness
        finally:
            await harness.close()
    finally:
        embedded.stop()


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float,
                 every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(every_s)
    return result


async def _invite(harness: Any, card: Any, n: int) -> tuple[str, str]:
    """Order, session and link through the API as agent01; returns (session id, link path)."""
    from tests.harness import HERE

    r = await harness.as_("agent01", "POST", "/orders", json={
        "application_no": f"APP-BENCH-{n:03d}-{random.randrange(10**6):06d}",
        "product_code": "YA-ZSS-001",
        "customer": {"name": card.name, "id_number": card.id_number, "phone": "13812345678"},
        "premium": "5000", "payment_years": 10, "sum_insured": "100000"})
    assert r.status == 201, r.body
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": r.body["id"], "location": HERE})
    assert r.status == 201, r.body
    sid = r.body["id"]
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/invitation",
                          json={"channel": "link"})
    assert r.status == 201, r.body
    return sid, "/h5/invite/" + r.body["url"].split("/h5/invite/", 1)[1]


class _Agent:
    """The agent: starts the call once the identity is verified, joins with pre-encoded media,
    and starts the script as soon as the server accepts it; notes when each happened."""

    def __init__(self, harness: Any, sid: str, media: Any) -> None:
        self.harness, self.sid, self.media = harness, sid, media
        self.times: dict[str, float] = {}
        self.client: Any = None

    async def state(self) -> str:
        r = await self.harness.as_("agent01", "GET", f"/sessions/{self.sid}")
        return str(r.body["state"])

    async def run(self) -> None:
        from media.call.client import CallClient
        from testing.call_media import PrerecordedTrack
        from tests.harness import HERE

        await _until("identity verified", lambda: self._state_is("identity_verified"), 600)
        r = await self.harness.as_("agent01", "POST", f"/sessions/{self.sid}/call/start",
                                   json={"location": HERE})
        assert r.status == 200, r.body
        self.times["call_started"] = time.time()
        self.client = CallClient(audio=PrerecordedTrack(self.media, "audio"),
                                 video=PrerecordedTrack(self.media, "video"))
        token = await self.harness.login("agent01")

        async def signal(sdp: str, type_: str) -> tuple[str, str]:
            r = await self.harness.request("POST", f"/calls/{self.sid}/agent/offer", token=token,
                                           json={"sdp": sdp, "type": type_})
            assert r.status == 200, r.body
            return r.body["sdp"], r.body["type"]

        await self.client.connect(signal)
        await self.client.wait_open(60)
        self.times["agent_joined"] = time.time()

        refused: list[Any] = []

        async def started() -> bool:
            r = await self.harness.as_("agent01", "POST", f"/sessions/{self.sid}/script/start")
            assert r.status in (200, 409), r.body
            refused[:] = [r.body]
            return r.status == 200

        try:
            await _until("the script started", started, 120, every_s=0.1)
        except TimeoutError as error:
            raise TimeoutError(f"{error}: {refused[-1]}") from None
        self.times["script_started"] = time.time()

    async def _state_is(self, state: str) -> bool:
        return await self.state() == state

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def _one_run(harness: Any, n: int, folder: Path, engines: Any, media: Any,
                   ) -> dict[str, float]:
    from media.identity.results import Challenge
    from models.sessions import SessionEvent
    from tests.h5.conftest import chromium_context
    from tests.h5.fake_customer import make_fake_customer
    from tests.h5.test_reentry import WECHAT_PHONE

    customer = await asyncio.to_thread(make_fake_customer, engines, folder / f"customer-{n}",
                                       harness.deps.clock().date(), seed=f"first-speech-{n}")
    sid, link = await _invite(harness, customer.card, n)
    base = str(harness.client.make_url("/")).rstrip("/")
    camera = [f"--use-file-for-fake-video-capture={customer.camera}",
              f"--use-file-for-fake-audio-capture={customer.microphone}"]
    agent = _Agent(harness, sid, media)
    t: dict[str, float] = {}
    rig = 0.0
    async with chromium_context(camera, **WECHAT_PHONE) as phone:
        page = await phone.new_page()
        await page.add_init_script(HEAR_SPEECH)
        agent_task = asyncio.create_task(agent.run())
        try:
            t["open"] = time.time()
            await page.goto(base + link)
            start = page.get_by_role("button", name="开始")
            await start.wait_for()
            t["page_load"] = time.time()
            await start.click()
            boxes = page.locator("#consents input[type=checkbox]")
            await boxes.first.wait_for()
            for i in range(await boxes.count()):
                await boxes.nth(i).check()
            await page.get_by_role("button", name="同意并继续").click()
            await page.get_by_role("heading", name="身份核验").wait_for()
            await page.wait_for_function(
                "() => document.querySelector('#challengeList').textContent")
            t["consent"] = time.time()
            await page.set_input_files("#idFront", customer.id_front)
            await page.locator("#doneFront", has_text="已上传").wait_for()
            await page.set_input_files("#idBack", customer.id_back)
            await page.locator("#doneBack", has_text="已上传").wait_for()
            t["id_uploads"] = time.time()
            by_prompt = {c.prompt: c for c in Challenge}
            prompts = (await page.locator("#challengeList").text_content() or "").split("，")
            before = time.time()
            await asyncio.to_thread(customer.perform, [by_prompt[p] for p in prompts])
            rig += time.time() - before
            await page.get_by_role("button", name="开始录制动作视频").click()
            await page.locator("#livenessState", has_text="动作视频已上传").wait_for(
                timeout=120_000)
            t["liveness"] = time.time() - rig
            before = time.time()
            await asyncio.to_thread(customer.look_at_the_camera)  # for the call
            rig += time.time() - before
            t["submit"] = time.time() - rig
            await page.get_by_role("button", name="提交核验").click()
            await page.wait_for_function(
                "() => !document.querySelector('[data-stage=waiting]').classList.contains('hidden')"
                " || document.querySelector('#identityResult').classList.contains('error')",
                timeout=300_000)
            if await page.locator("#identityResult.error").count():
                raise RuntimeError("identity check failed: "
                                   + (await page.locator("#identityResult").text_content() or ""))
            t["verification"] = time.time() - rig
            verified = await SessionEvent.get(session_id=sid, type="identity_verified")
            t["verified_event"] = verified.at.timestamp() - rig
            await page.wait_for_function(
                "() => window.__pc && window.__pc.connectionState === 'connected'",
                timeout=120_000, polling=50)
            t["call_connect"] = time.time() - rig
            await agent_task
            t["script_start"] = agent.times["script_started"] - rig
            heard = await page.wait_for_function("() => window.__firstSpeech", timeout=120_000,
                                                 polling=50)
            t["first_speech"] = await heard.json_value() / 1000 - rig
            started = await _until("tts_started", lambda: SessionEvent.filter(
                session_id=sid, type="tts_started").order_by("seq").first(), 30)
            t["tts_started_event"] = started.at.timestamp() - rig
        finally:
            if not agent_task.done():
                agent_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await agent_task
            await agent.close()
    # The agent may have started the script before the page saw its own connection settle.
    t["script_start"] = max(t["script_start"], t["call_connect"])
    phases, last = {}, t["open"]
    for name in PHASES:
        phases[name] = max(0.0, t[name] - last)
        last = max(last, t[name])
    phases["total"] = t["first_speech"] - t["open"]
    phases["tts_started_after_open"] = t["tts_started_event"] - t["open"]
    phases["rig"] = rig
    # The verification phase split: the identity job (submit → identity_verified written) and
    # the page being told (→ the page shows it).
    phases["identity_job"] = t["verified_event"] - t["submit"]
    phases["verdict_to_page"] = t["verification"] - t["verified_event"]
    return phases


def _print_run(n: int, phases: dict[str, float], load: str) -> None:
    parts = " ".join(f"{k}={phases[k]:.1f}" for k in PHASES)
    print(f"run {n}: total {phases['total']:.1f} s ({parts}; tts_started event at "
          f"{phases['tts_started_after_open']:.1f} s; identity job {phases['identity_job']:.1f} s, "
          f"verdict to page {phases['verdict_to_page']:.1f} s; rig {phases['rig']:.1f} s) "
          f"load {load}",
          flush=True)


async def main_async(runs: int, keep: Path | None) -> int:
    from api.keys import IDENTITY
    from testing.call_media import EncodedMedia, write_test_media

    folder = keep or Path(tempfile.mkdtemp(prefix="bench-first-speech-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"first speech: {runs} runs, load average at start {_load()}", flush=True)
    results: list[dict[str, float]] = []
    async with _system(folder) as harness:
        engines = harness.app[IDENTITY]()  # loaded once, as the server's first job would
        media = EncodedMedia.load(await asyncio.to_thread(
            write_test_media, folder / "agent.webm", seconds=6.0))
        for n in range(1, runs + 1):
            load = _load()
            phases = await _one_run(harness, n, folder, engines, media)
            _print_run(n, phases, load)
            results.append(phases)
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\nmedian of {runs} runs (load average now {_load()}):")
    for name, label in PHASES.items():
        print(f"  {name:<13} {median[name]:6.1f} s  {median[name] / median['total']:6.1%}  {label}")
    print(f"  {'total':<13} {median['total']:6.1f} s  goal ≤ 20 s "
          f"({'met' if median['total'] <= 20 else 'not met'}); tts_started event at "
          f"{median['tts_started_after_open']:.1f} s; rig time left out {median['rig']:.1f} s")
    print(f"  verification = identity job {median['identity_job']:.1f} s (submit → "
          f"identity_verified) + verdict to the page {median['verdict_to_page']:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the data (kept)")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args.runs, args.keep))


if __name__ == "__main__":
    sys.exit(main())

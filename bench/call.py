"""Benchmark of the call hub with recording (R-30, R-32): N concurrent synthetic calls.

For N = 1, 2, 4, 8 (one after the other) it starts the hub in its own process (so its CPU time
can be read), opens N calls one after the other (``--ramp-seconds`` apart, as calls arrive),
each a customer/agent pair of aiortc clients that send pre-encoded 640×480@15 fps VP8 + Opus
(as a browser would; the clients encode nothing), plays a TTS clip in each call, runs the calls
for ``--seconds``, closes them and prints, per N: how many calls the hub's admission control
admitted and refused (503, issue 16) and how many failed to connect, server CPU-seconds per
recorded call-minute (the whole run: joining, relaying, recording, finishing segments), the
lowest and mean frame rate read back from the recorded segments, the event loop's worst lag,
the CPU per call-minute the hub itself measured for admission and how many calls that lets in,
and the load average the run started under. An overloaded run is reported, never a crash: a
refused join, a connection that never opens or a run that fails are counted and named.

    python -m bench.call [--calls 1,2,4,8] [--seconds 30] [--segment-seconds 60]
                         [--video-kbps 600] [--ramp-seconds 0.5] [--cores C]
                         [--target-utilisation 0.75] [--no-admission]

"steady" is the CPU per call-minute while the admitted calls run (without joining and closing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import numpy as np
from aiohttp import web

from media.call import CallHub, CallHubConfig, SegmentWritten
from media.call.admission import AdmissionConfig, CallRefused
from media.call.client import CallClient
from media.call.ice import include_loopback_candidates
from media.recording import probe_segment
from testing.call_media import EncodedMedia, PrerecordedTrack, write_test_media

REPO = Path(__file__).resolve().parents[1]

# -- the server process --------------------------------------------------------------------------


async def serve(storage: Path, segment_seconds: float, admission: AdmissionConfig | None,
                ) -> None:
    segments: list[dict[str, Any]] = []

    def on_segment(event: SegmentWritten) -> None:
        segments.append(asdict(event) | {"started_at": event.started_at.timestamp(),
                                         "ended_at": event.ended_at.timestamp()})

    hub = CallHub(
        CallHubConfig(storage_root=storage, segment_seconds=segment_seconds,
                      include_loopback=True, admission=admission),
        on_segment=on_segment,
    )
    lag = {"max": 0.0}

    async def watch_loop() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            lag["max"] = max(lag["max"], loop.time() - before - 0.05)

    watcher = asyncio.get_running_loop().create_task(watch_loop())
    routes = web.RouteTableDef()

    @routes.post("/join")
    async def join(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            sdp, type_ = await hub.join(body["session"], body["role"], body["sdp"],
                                        body["type"])
        except CallRefused as refused:
            return web.json_response({"reason": refused.headroom.reason}, status=503,
                                     headers={"Retry-After": str(refused.retry_after)})
        return web.json_response({"sdp": sdp, "type": type_})

    @routes.post("/play")
    async def play(request: web.Request) -> web.Response:
        body = await request.json()
        await hub.play(body["session"], body["clip_id"], Path(body["wav"]))
        return web.json_response({})

    @routes.post("/close")
    async def close(request: web.Request) -> web.Response:
        await hub.close((await request.json())["session"])
        return web.json_response({})

    @routes.get("/usage")
    async def usage(request: web.Request) -> web.Response:
        rusage = resource.getrusage(resource.RUSAGE_SELF)
        headroom = hub.headroom()
        body = {"cpu": rusage.ru_utime + rusage.ru_stime, "segments": segments,
                "max_loop_lag": lag["max"],
                "headroom": None if headroom is None else asdict(headroom) | {
                    "calls_that_fit": headroom.calls_that_fit()},
                "refused": hub.admission.refused if hub.admission is not None else 0}
        if request.query.get("reset_lag"):
            lag["max"] = 0.0
        return web.json_response(body)

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        watcher.cancel()
        await hub.shutdown()
        await runner.cleanup()


# -- the clients (this process) ------------------------------------------------------------------


def make_clip(path: Path, seconds: float) -> Path:
    t = np.arange(round(seconds * 48_000)) / 48_000
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes((np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes())
    return path


def udp_receive_errors() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(storage: Path, segment_seconds: float,
                 admission: list[str]) -> subprocess.Popen[str]:
    """The hub in its own process, so that its CPU time is its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.call", "--serve", str(storage), "--segment-seconds",
         str(segment_seconds), *admission],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )


class Refused(Exception):
    """The hub refused the join (503: no headroom for another call)."""


async def run_calls(
    calls: int, seconds: float, segment_seconds: float, media: dict[str, EncodedMedia],
    clip: Path, workdir: Path, ramp: float, admission: list[str],
) -> dict[str, Any]:
    storage = workdir / f"n{calls}"
    load = os.getloadavg()
    server = start_server(storage, segment_seconds, admission)
    sessions = [f"bench-{calls}-{index}" for index in range(calls)]
    admitted: list[str] = []
    refused: list[str] = []
    failures: list[str] = []
    clients: list[CallClient] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(base + path, json=body) as response:
                    if response.status == 503:
                        raise Refused(response.headers.get("Retry-After"))
                    response.raise_for_status()
                    result: dict[str, Any] = await response.json()
                    return result

            async def usage(reset_lag: bool = False) -> dict[str, Any]:
                async with http.get(base + "/usage",
                                    params={"reset_lag": "1"} if reset_lag else {}) as response:
                    result: dict[str, Any] = await response.json()
                    return result

            start = await usage()
            video_tracks: dict[str, list[PrerecordedTrack]] = {s: [] for s in sessions}

            async def connect(session: str, role: str) -> CallClient:
                video = PrerecordedTrack(media[role], "video")
                video_tracks[session].append(video)
                client = CallClient(audio=PrerecordedTrack(media[role], "audio"), video=video)
                clients.append(client)

                async def signal(sdp: str, type_: str) -> tuple[str, str]:
                    answer = await post("/join", {"session": session, "role": role,
                                                  "sdp": sdp, "type": type_})
                    return answer["sdp"], answer["type"]

                await client.connect(signal)
                await client.wait_open(30)
                return client

            async def open_call(session: str) -> None:
                """The customer opens the room (the join admission control decides on), then
                the agent joins it; every outcome is counted, none raised."""
                for role in ("customer", "agent"):
                    try:
                        await connect(session, role)
                    except Refused:
                        refused.append(session)
                        return
                    except Exception as error:  # reported, not raised: overload is a result
                        failures.append(f"{session}/{role}: {type(error).__name__} {error}"
                                        .strip())
                        return
                admitted.append(session)

            opening = []
            for index, session in enumerate(sessions):
                if index:
                    await asyncio.sleep(ramp)
                opening.append(asyncio.create_task(open_call(session)))
            await asyncio.gather(*opening)
            running = [s for s in sessions if s in admitted]
            connected = await usage(reset_lag=True)
            for session in running:
                await post("/play", {"session": session, "clip_id": "c1", "wav": str(clip)})
            tracks = [t for s in running for t in video_tracks[s]]
            sent_before = [track.frames_sent for track in tracks]
            drops_before, client_cpu_before = udp_receive_errors(), own_cpu()
            await asyncio.sleep(seconds)
            udp_drops = udp_receive_errors() - drops_before
            client_cpu = (own_cpu() - client_cpu_before) / seconds
            sent = [t.frames_sent - b for t, b in zip(tracks, sent_before, strict=True)]
            steady = await usage()
            for session in sessions:
                await post("/close", {"session": session})
            end = await usage()
    finally:
        for client in clients:
            await client.close()
        server.terminate()
        server.wait(10)

    segments = end["segments"]
    call_ms = 0
    for session in running:
        per_kind = {kind: sum(s["duration_ms"] for s in segments
                              if s["session_id"] == session and s["kind"] == kind)
                    for kind in ("customer_av", "agent_av")}
        call_ms += max(per_kind.values())
    rates = []
    for segment in segments:
        if segment["kind"] != "tts" and segment["duration_ms"] >= 5000:
            rates.append(probe_segment(storage / segment["path"]).frame_rate)
    cpu = end["cpu"] - start["cpu"]
    headroom = steady["headroom"] or {}
    cost = headroom.get("cost_per_call")
    return {
        "calls": calls,
        "admitted": len(running),
        "refused": len(refused),
        "failed": len(failures),
        "failures": failures,
        "load_before": round(load[0], 2),
        "server_cpu_s": round(cpu, 1),
        "recorded_call_min": round(call_ms / 60_000, 2),
        "cpu_s_per_call_min": round(cpu / (call_ms / 60_000), 2) if call_ms else None,
        "steady_cpu_s_per_call_min": round(
            (steady["cpu"] - connected["cpu"]) / (len(running) * seconds / 60), 2)
            if running else None,
        "lowest_fps": min(rates) if rates else None,
        "mean_fps": round(sum(rates) / len(rates), 2) if rates else None,
        "max_loop_lag_ms": round(steady["max_loop_lag"] * 1000),
        "client_fps_sent": round(min(sent) / seconds, 1) if sent else None,
        "client_cpu_share": round(client_cpu, 2),
        "udp_receive_drops": udp_drops,
        "segments": len(segments),
        # What the hub's admission control measured while the calls ran.
        "hub_cpu_s_per_call_min": round(cost * 60, 2) if cost else None,
        "hub_loop_cpu_s_per_call_min": round(headroom["loop_cost_per_call"] * 60, 2)
            if headroom.get("loop_cost_per_call") else None,
        "hub_loop_lag_p90_ms": round(headroom["loop_lag"] * 1000) if headroom else None,
        "hub_calls_that_fit": headroom.get("calls_that_fit"),
        "hub_would_admit_another": headroom.get("admit"),
        "hub_reason": headroom.get("reason"),
    }


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


async def bench(
    calls: list[int], seconds: float, segment_seconds: float, video_kbps: int, ramp: float,
    admission: list[str],
) -> None:
    include_loopback_candidates()
    with tempfile.TemporaryDirectory(prefix="bench-call-") as tmp:
        workdir = Path(tmp)
        media = {
            role: EncodedMedia.load(write_test_media(
                workdir / f"{role}.webm", seconds=10, size=(640, 480), fps=15, rgb=rgb,
                tone_hz=tone, keyframe_interval=60, video_bitrate=video_kbps * 1000))
            for role, rgb, tone in (("customer", (200, 40, 40), 440.0),
                                    ("agent", (40, 40, 200), 660.0))
        }
        clip = make_clip(workdir / "clip.wav", 10.0)
        sizes = [len(p) for _, p in media["customer"].video]
        print(f"video {sum(sizes) * 8 / media['customer'].seconds / 1000:.0f} kbit/s, "
              f"{len(sizes) / media['customer'].seconds:.0f} fps; calls of {seconds:.0f} s, "
              f"opened {ramp:g} s apart; admission {' '.join(admission) or 'on (defaults)'}")
        columns = (("N", "calls"), ("in", "admitted"), ("503", "refused"), ("fail", "failed"),
                   ("load", "load_before"), ("cpu s", "server_cpu_s"),
                   ("call-min", "recorded_call_min"), ("cpu s/call-min", "cpu_s_per_call_min"),
                   ("steady", "steady_cpu_s_per_call_min"), ("min fps", "lowest_fps"),
                   ("mean fps", "mean_fps"), ("loop lag ms", "max_loop_lag_ms"),
                   ("sent fps", "client_fps_sent"), ("client cpu", "client_cpu_share"),
                   ("udp drops", "udp_receive_drops"), ("hub cpu s/call-min",
                                                        "hub_cpu_s_per_call_min"),
                   ("hub loop s/call-min", "hub_loop_cpu_s_per_call_min"),
                   ("hub fits", "hub_calls_that_fit"))
        print(" ".join(f"{title:>{max(len(title), 4)}}" for title, _ in columns))
        results = []
        for n in calls:
            try:
                result = await run_calls(n, seconds, segment_seconds, media, clip, workdir,
                                         ramp, admission)
            except Exception as error:  # the run itself broke: reported, the next N runs
                result = {"calls": n, "error": f"{type(error).__name__}: {error}"}
                print(f"{n:>4} run failed: {result['error']}", flush=True)
                results.append(result)
                continue
            results.append(result)
            print(" ".join(f"{_cell(result[key]):>{max(len(title), 4)}}"
                           for title, key in columns), flush=True)
            for failure in result["failures"][:5]:
                print(f"     failed: {failure}")
            if result["hub_reason"]:
                verdict = "fits" if result["hub_would_admit_another"] else "refused"
                print(f"     hub: another call {verdict} ({result['hub_reason']}), "
                      f"loop lag p90 {result['hub_loop_lag_p90_ms']} ms")
        held = [r["admitted"] for r in results
                if r.get("lowest_fps") is not None and r["lowest_fps"] >= 14.9
                and not r.get("failed")]
        print(f"largest number of calls that held 15 fps: {max(held) if held else None}")
        print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--segment-seconds", type=float, default=60.0)
    parser.add_argument("--video-kbps", type=int, default=600)
    parser.add_argument("--ramp-seconds", type=float, default=0.5,
                        help="seconds between the opening of two calls")
    parser.add_argument("--cores", type=float, help="admission control: the node's cores")
    parser.add_argument("--target-utilisation", type=float,
                        help="admission control: the share of them calls may take")
    parser.add_argument("--no-admission", action="store_true",
                        help="admit every call (the hub without admission control)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        admission = None if args.no_admission else AdmissionConfig(
            cores=args.cores, **({"target_utilisation": args.target_utilisation}
                                 if args.target_utilisation else {}))
        asyncio.run(serve(args.serve, args.segment_seconds, admission))
        return
    passed = ([f"--cores={args.cores}"] if args.cores else []) + (
        [f"--target-utilisation={args.target_utilisation}"] if args.target_utilisation
        else []) + (["--no-admission"] if args.no_admission else [])
    start = time.monotonic()
    asyncio.run(bench([int(n) for n in args.calls.split(",")], args.seconds,
                      args.segment_seconds, args.video_kbps, args.ramp_seconds, passed))
    print(f"total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Benchmark of the playback copy (R-41): CPU seconds per minute of produced playback and the
realtime factor, with the event loop's worst delay while the render runs in its child process.

Records a session through the real API on a temporary SQLite database and an embedded Redis
(as the tests do): real WebM segments for the customer, the agent and the TTS track (VP8
640×480@15 fps + Opus), with an interruption. Then it renders the copy (960×424, 15 fps,
H.264 + AAC) in the child process the job uses, several times, and prints the numbers.

    python -m bench.playback [--tts-seconds 10] [--repeat 2] [--preset veryfast] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from uuid import UUID

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recorded import recording_app
from media.playback import RenderSettings
from qa.playback import build_plan, run_composer
from tests.qa.simulate import MediaKit, Scenario, record_session


async def _loop_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """How late a 10 ms timer fires while the render runs: the event loop must stay free."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], time.perf_counter() - before - 0.01)


async def main(tts_seconds: float, repeat: int, preset: str, threads: int) -> None:
    async with recording_app("bench-playback-") as (h, folder):
        kit = MediaKit.build(folder / "media")
        rec = await record_session(h, kit, Scenario(
            tts_ms=round(tts_seconds * 1000), segment_ms=60_000, interrupt_after="product",
            interruption_ms=20_000))
        render = RenderSettings(preset=preset, threads=threads)
        plan = await build_plan(h.deps.storage, UUID(rec.session_id), render)
        assert plan is not None
        minutes = plan.duration_ms / 60000
        print(f"session: {minutes:.2f} min on the recording clock, "
              f"{len(plan.segments)} segments; output {render.width}x{render.height} "
              f"{render.fps} fps, libx264 {preset}, {threads} thread(s)")
        print(f"{'run':<5}{'wall s':>8}{'CPU s':>8}{'CPU s/min':>11}{'realtime x':>12}"
              f"{'MB/min':>8}{'loop lag ms':>13}")
        cpu_per_min, rtf = [], []
        for n in range(1, repeat + 1):
            out = folder / f"copy-{n}.mp4"
            stop, worst = asyncio.Event(), [0.0]
            ticker = asyncio.create_task(_loop_lag(stop, worst))
            started = time.perf_counter()
            result = await run_composer(plan, out, 3600)
            wall = time.perf_counter() - started
            stop.set()
            await ticker
            cpu_per_min.append(result.cpu_seconds / minutes)
            rtf.append(wall / (plan.duration_ms / 1000))
            print(f"{n:<5}{wall:>8.1f}{result.cpu_seconds:>8.1f}{cpu_per_min[-1]:>11.2f}"
                  f"{rtf[-1]:>12.3f}{result.size_bytes / 1e6 / minutes:>8.2f}"
                  f"{worst[0] * 1000:>13.1f}")
        print(f"median: {statistics.median(cpu_per_min):.2f} CPU s per minute of playback, "
              f"realtime factor {statistics.median(rtf):.3f} (wall / duration)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tts-seconds", type=float, default=10.0,
                        help="length of each TTS step (the session is about 17 steps)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--preset", default=RenderSettings().preset)
    parser.add_argument("--threads", type=int, default=RenderSettings().threads)
    args = parser.parse_args()
    asyncio.run(main(args.tts_seconds, args.repeat, args.preset, args.threads))

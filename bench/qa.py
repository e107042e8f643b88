"""Benchmark of the automated QA checks (R-40): time per recorded minute.

Records a session through the real API on a temporary SQLite database and an embedded Redis
(as the tests do): real WebM segments for the customer, the agent and the TTS track (VP8
640×480@15 fps + Opus, 60 s segments), espeak-ng speech where someone speaks. Then it runs the
automated checks several times and prints wall and CPU seconds per recorded minute, split into
the media analysis (decode, probe, voice activity) and the checks themselves, per VAD engine.

    python -m bench.qa [--tts-seconds 20] [--repeat 3]
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
from media.voice.vad import EnergyVad, SileroVad, VoiceActivityDetector, silero_model_path
from models.sales import Product
from qa.checks import CheckInput, run_checks
from qa.media import analyse_recordings
from qa.settings import QaSettings
from qa.timeline import load_timeline
from tests.qa.simulate import MediaKit, Scenario, record_session


async def _measure(h: object, session_id: UUID, vad: VoiceActivityDetector,
                   repeat: int) -> tuple[float, float, float, int, int]:
    deps = h.deps  # type: ignore[attr-defined]
    settings = QaSettings()
    walls, cpus, checks = [], [], []
    recorded = findings = 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        timeline = await load_timeline(session_id)
        media = await asyncio.to_thread(analyse_recordings, deps.storage, timeline.recordings,
                                        timeline.offset, vad, settings.silence_dbfs)
        middle = time.perf_counter()
        product = await Product.get(id=timeline.session.product_id)
        found = run_checks(CheckInput(timeline, media, product, settings))
        checks.append(time.perf_counter() - middle)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        recorded, findings = media.recorded_ms, len(found)
    return (statistics.median(walls), statistics.median(cpus), statistics.median(checks),
            recorded, findings)


async def main(tts_seconds: float, repeat: int) -> None:
    async with recording_app("bench-qa-") as (h, folder):
        started = time.perf_counter()
        kit = MediaKit.build(folder / "media")
        rec = await record_session(h, kit, Scenario(tts_ms=round(tts_seconds * 1000),
                                                    segment_ms=60_000))
        print(f"recorded session: {rec.end_ms / 60000:.2f} min, 3 tracks "
              f"(made in {time.perf_counter() - started:.1f} s)")
        engines: list[VoiceActivityDetector] = [EnergyVad()]
        model = silero_model_path()
        if model is not None:
            engines.insert(0, SileroVad(model))
        print(f"{'VAD engine':<18}{'wall s/min':>11}{'CPU s/min':>11}"
              f"{'checks only':>13}{'findings':>10}")
        for vad in engines:
            wall, cpu, checks, recorded, findings = await _measure(
                h, UUID(rec.session_id), vad, repeat)
            minutes = recorded / 60000
            print(f"{vad.name:<18}{wall / minutes:>11.3f}{cpu / minutes:>11.3f}"
                  f"{checks * 1000:>10.1f} ms{findings:>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tts-seconds", type=float, default=20.0,
                        help="length of each TTS step (the session is about 17 steps)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.tts_seconds, args.repeat))

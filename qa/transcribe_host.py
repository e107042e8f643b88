"""The child process of the after-call transcript (R-22, R-24, R-40): decodes each party's
recorded segments, finds speech with the voice activity detector and recognises only those
stretches, on the recording clock. `python -m qa.transcribe_host` reads a JSON plan on stdin and
writes the result as JSON on stdout; it lowers its own priority first (`nice`), so the live
calls and the web process keep the CPU they need.

How speech is recognised (costs in docs/qa.md, `python -m bench.transcripts`):

* Speech stretches closer than ``merge_gap_ms`` are one utterance, padded by ``pad_ms``.
* A short utterance (at most ``short_seconds``: answers, remarks) is heard alone with the
  recogniser's `hear`, which encodes only a window a little longer than the speech (Whisper's
  30 s window costs about 1.2 CPU-s however short the speech) and keeps the utterance's own
  times exactly.
* Longer utterances (the agent explaining) are packed, in order, into batches of at most
  ``batch_seconds`` with half a second of silence between them and transcribed with
  `transcribe`; each recognised segment is placed back on the clock through the piece it
  starts in (and the piece it ends in).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from media.voice.vad import RATE, Samples, VoiceActivityDetector, load_vad

GAP_SECONDS = 0.5  # silence between the utterances of one batch


@dataclass
class Utterance:
    start_ms: int  # on the recording clock
    samples: Samples

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.samples.size * 1000 // RATE

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


@dataclass
class PartyResult:
    segments: int = 0
    audio_ms: int = 0
    speech_ms: int = 0
    utterances: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)


def utterances_of(samples: Samples, offset_ms: int, vad: VoiceActivityDetector,
                  merge_gap_ms: int, pad_ms: int) -> list[Utterance]:
    """The speech of one segment's audio as utterances placed at `offset_ms` + their start."""
    merged: list[list[int]] = []
    for a, b in vad.speech(samples):
        if merged and a - merged[-1][1] <= merge_gap_ms:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    total_ms = samples.size * 1000 // RATE
    out = []
    for a, b in merged:
        a, b = max(0, a - pad_ms), min(total_ms, b + pad_ms)
        piece = samples[a * RATE // 1000:b * RATE // 1000]
        if piece.size:
            out.append(Utterance(offset_ms + a, piece))
    return out


def _line(party: str, start_ms: int, end_ms: int, text: str, avg_logprob: float,
          no_speech_prob: float) -> dict[str, Any]:
    return {"party": party, "start_ms": int(start_ms), "end_ms": int(max(end_ms, start_ms)),
            "text": text.strip(), "avg_logprob": round(float(avg_logprob), 3),
            "no_speech_prob": round(float(no_speech_prob), 3)}


def _place(pieces: list[tuple[float, Utterance]], t: float) -> int:
    """A time (s) in a batch → ms on the recording clock, through the piece holding it (or the
    nearest piece before it: a segment may start in the silence between two pieces)."""
    chosen = pieces[0]
    for piece in pieces:
        if piece[0] <= t + 1e-6:
            chosen = piece
    offset, utterance = chosen
    within = min(max(t - offset, 0.0), utterance.seconds)
    return utterance.start_ms + round(within * 1000)


PUNCTUATION = "，。！？；、,.!?;"


def _split(pieces: list[tuple[float, Utterance]], start: float, end: float,
           text: str) -> list[tuple[int, int, str]]:
    """A recognised segment of a batch as lines on the recording clock: one per utterance it
    covers (Whisper may run one segment across the silence between two utterances said
    seconds apart), its text shared out by the time spent in each, cut at a punctuation mark
    near the proportional place when there is one."""
    if not text:
        return []
    spans = []
    for offset, u in pieces:
        a, b = max(start, offset), min(end, offset + u.seconds)
        if b > a:
            spans.append((a, b))
    if len(spans) <= 1:
        return [(_place(pieces, start), _place(pieces, end), text)]
    total = sum(b - a for a, b in spans)
    out, cut, spent = [], 0, 0.0
    for n, (a, b) in enumerate(spans):
        spent += b - a
        if n == len(spans) - 1:
            stop = len(text)
        else:
            ideal = round(len(text) * spent / total)
            near = [i + 1 for i in range(max(cut, ideal - 8), min(len(text), ideal + 8))
                    if text[i] in PUNCTUATION]
            stop = min(near, key=lambda i: abs(i - ideal)) if near else max(ideal, cut)
        piece = text[cut:stop].strip(PUNCTUATION + " ")
        if piece:
            out.append((_place(pieces, a), _place(pieces, b), piece))
        cut = stop
    return out


def recognise(recognizer: Any, party: str, utterances: list[Utterance], *, short_seconds: float,
              batch_seconds: float, prompt: str | None) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    batch: list[Utterance] = []

    def flush() -> None:
        if not batch:
            return
        gap = np.zeros(round(GAP_SECONDS * RATE), dtype=np.float32)
        parts: list[Samples] = []
        pieces: list[tuple[float, Utterance]] = []
        cursor = 0.0
        for u in batch:
            if parts:
                parts.append(gap)
                cursor += GAP_SECONDS
            pieces.append((cursor, u))
            parts.append(u.samples)
            cursor += u.seconds
        transcript = recognizer.transcribe(np.concatenate(parts), prompt=prompt)
        for s in transcript.segments:
            for start, end, text in _split(pieces, s.start, s.end, s.text.strip()):
                lines.append(_line(party, start, end, text, s.avg_logprob, s.no_speech_prob))
        batch.clear()

    for u in utterances:
        if u.seconds <= short_seconds:
            heard = recognizer.hear(u.samples, prompt=prompt)
            if heard.text.strip():
                lines.append(_line(party, u.start_ms, u.end_ms, heard.text, heard.avg_logprob,
                                   heard.no_speech_prob))
                continue
            # `hear` gives up on a decoding that runs away (a loop on a short answer); the
            # whole pipeline, with its fallbacks, hears it alone then.
            for s in recognizer.transcribe(u.samples, prompt=prompt).segments:
                if s.text.strip():
                    lines.append(_line(party, u.start_ms + round(s.start * 1000),
                                       u.start_ms + round(s.end * 1000), s.text,
                                       s.avg_logprob, s.no_speech_prob))
            continue
        if batch and sum(b.seconds + GAP_SECONDS for b in batch) + u.seconds > batch_seconds:
            flush()
        batch.append(u)
    flush()
    return sorted(lines, key=lambda line: line["start_ms"])


def run(plan: dict[str, Any]) -> dict[str, Any]:
    from media.voice.asr import AsrConfig, AsrUnavailable, load_asr
    from qa.media import decode_audio
    from storage import file_sha256

    started = time.perf_counter()
    vad = load_vad(str(plan.get("vad", "silero")))
    config = AsrConfig.model_validate(plan.get("asr") or {})
    recognizer: Any = None
    parties: dict[str, PartyResult] = {}
    lines: list[dict[str, Any]] = []
    by_party: dict[str, list[dict[str, Any]]] = {}
    for seg in sorted(plan["segments"], key=lambda s: (s["party"], s["start_ms"])):
        by_party.setdefault(seg["party"], []).append(seg)
    for party, segments in by_party.items():
        result = parties.setdefault(party, PartyResult())
        utterances: list[Utterance] = []
        for seg in segments:
            result.segments += 1
            path = Path(seg["path"])
            where = {"recording_id": seg.get("recording_id"), "segment": seg.get("segment")}
            if not path.is_file():
                result.problems.append({**where, "problem": "missing"})
                continue
            if seg.get("sha256") and file_sha256(path)[0] != seg["sha256"]:
                # Not the sealed recording any more: nothing in it is transcribed.
                result.problems.append({**where, "problem": "altered"})
                continue
            try:
                samples, first_s = decode_audio(path)
            except Exception as exc:  # any decoder failure: the segment is unreadable
                result.problems.append({**where, "problem": "unreadable",
                                        "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            result.audio_ms += samples.size * 1000 // RATE
            offset = int(seg["start_ms"]) + round(first_s * 1000)
            found = utterances_of(samples, offset, vad, int(plan.get("merge_gap_ms", 700)),
                                  int(plan.get("pad_ms", 200)))
            result.speech_ms += sum(u.end_ms - u.start_ms for u in found)
            utterances += found
        result.utterances = len(utterances)
        if not utterances:
            continue
        if recognizer is None:
            try:
                recognizer = load_asr(config)
            except AsrUnavailable as exc:
                return {"unavailable": str(exc)}
        prompts = plan.get("prompts") or {}
        lines += recognise(recognizer, party, utterances,
                           short_seconds=float(plan.get("short_seconds", 4.0)),
                           batch_seconds=float(plan.get("batch_seconds", 25.0)),
                           prompt=prompts.get(party))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "lines": sorted(lines, key=lambda line: (line["start_ms"], line["party"])),
        "parties": {p: vars(r) for p, r in parties.items()},
        "engine": recognizer.name if recognizer is not None else config.engine,
        "engine_version": recognizer.version if recognizer is not None else "",
        "vad": vad.name,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def main() -> int:
    plan = json.loads(sys.stdin.read())
    nice = int(plan.get("nice", 10))
    if nice:
        os.nice(nice)
    json.dump(run(plan), sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

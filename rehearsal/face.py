"""The customer's face and papers, made from one real face photo (R-12, R-13): the ID card
whose portrait is that face (both sides, testing/identity_material.py), the liveness clip in which
the face performs the challenges the server prompted, paced as the H5 page paces its prompts, and
the camera of the call (the face at rest, with camera shake, noise and blinks), encoded once to
VP8 and sent by a `PrerecordedTrack`. The agent's camera is a moving test picture.

The photo is read from the cache the identity tests fill (testing/face_photos.py) or given
by the caller; nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.config import IdentityConfig
from media.identity.imaging import Frame, encode_jpeg
from media.identity.results import Challenge
from rehearsal.api import RehearsalError
from rules.idnumber import IdNumberFacts
from testing import identity_material as synth
from testing.face_photos import default_testdata_dir

FPS = 15  # the call's quality floor (R-32, QA min_frame_rate)
CALL_SIZE = (640, 480)  # QA's minimum picture
SELFIE_SIZE = (480, 640)  # a phone's portrait front camera, for the liveness clip
DEFAULT_PHOTO = "obama.jpg"
# customer.js: "请正对摄像头" for 1.5 s, then each prompt for min(time limit, 4 s).
PAGE_INTRO_S = 1.5
PAGE_PROMPT_S = 4.0
REACTION_S = 0.7  # reading the prompt before moving

# Key values every 0.1 s, resampled to the frame rate (the shapes tests/h5/fake_customer.py
# measured to pass the landmark engine: a held turn, a mouth opened twice, two blinks).
TURN = (0.15, 0.3, 0.45, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.45, 0.3, 0.15)  # radians
MOUTH = (0.15, 0.3, 0.37, 0.37, 0.37, 0.37, 0.37, 0.37, 0.3, 0.15, 0.0, 0.0, 0.0,
         0.15, 0.3, 0.37, 0.37, 0.37, 0.37, 0.37, 0.37, 0.3, 0.15)
BLINKS = (1, 1, 1, 0, 0, 0, 0, 1, 1, 1)
MEDIA_VERSION = "1"  # part of every cached clip's name: change it when the clips change


class Shake:
    """Camera shake and sensor noise (as `synthetic.jitter`, with the noise drawn once into a
    small bank: the clips are made in seconds rather than a minute), so consecutive frames are
    never byte-identical."""

    def __init__(self, shape: tuple[int, ...], seed: int, shift_px: float = 1.5,
                 noise: float = 2.0, bank: int = 8) -> None:
        self.rng = np.random.default_rng(seed)
        self.shift_px = shift_px
        self.noise = [self.rng.normal(0, noise, shape).astype(np.int16) for _ in range(bank)]

    def __call__(self, image: Frame) -> Frame:
        dx, dy = self.rng.normal(0, self.shift_px, 2)
        moved = cv2.warpAffine(image, np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32),
                               (image.shape[1], image.shape[0]),
                               borderMode=cv2.BORDER_REPLICATE)
        grain = self.noise[int(self.rng.integers(len(self.noise)))]
        return np.clip(moved.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def face_photo(path: Path | None) -> Path:
    """The photo given, or the cached sample photo; never downloads."""
    if path is not None:
        if not path.is_file():
            raise RehearsalError(f"no face photo at {path}")
        return path
    cached = default_testdata_dir() / "images" / DEFAULT_PHOTO
    if not cached.is_file():
        raise RehearsalError(
            f"no face photo: {cached} is not cached. Give one with --face PHOTO (one real face, "
            "frontal), or fetch the sample once: .venv/bin/python -c \"from "
            "testing.face_photos import sample_path; sample_path('obama.jpg')\"")
    return cached


def _profile(keys: tuple[float, ...]) -> list[float]:
    n = round(len(keys) * FPS / 10)
    return [float(v) for v in np.interp(np.linspace(0, len(keys) - 1, n),
                                        np.arange(len(keys)), keys)]


@dataclass(frozen=True)
class Framing:
    """The face framed as one camera shows it, with its 68 landmarks in that frame."""

    image: Frame
    landmarks: NDArray[np.float64]


@dataclass(frozen=True)
class Face:
    photo: Frame
    box: tuple[int, int, int, int]
    selfie: Framing  # portrait, for the liveness clip
    call: Framing  # landscape, for the call


def load_face(path: Path) -> Face:
    """Finds the face (dlib, as the liveness engine does) and frames it for both cameras."""
    from media.identity.landmarks import Dlib68Landmarker

    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise RehearsalError(f"{path} is not an image")
    width = IdentityConfig().liveness.analysis_width_px
    landmarker = Dlib68Landmarker(width)
    seen = landmarker.observe(photo)
    if seen.box is None or seen.faces != 1:
        raise RehearsalError(f"{path}: need exactly one face, found {seen.faces}")
    scale = photo.shape[1] / min(photo.shape[1], width)
    box = tuple(round(v * scale) for v in seen.box)

    def framing(size: tuple[int, int]) -> Framing:
        image = synth.selfie_frame(photo, box, size)  # type: ignore[arg-type]
        observed = landmarker.observe(image)
        if observed.landmarks is None:
            raise RehearsalError(f"{path}: no face landmarks once framed for the camera")
        return Framing(image, observed.landmarks * image.shape[1] / min(image.shape[1], width))

    return Face(photo, box, framing(SELFIE_SIZE), framing(CALL_SIZE))  # type: ignore[arg-type]


def card_identity(name: str, id_number: str, today: date) -> synth.CardIdentity:
    """The card of the person the order names: birth date and sex from the ID number, an
    address and issuing authority of its region, a card valid today."""
    facts = IdNumberFacts.of(id_number)
    if not (facts.format_ok and facts.check_digit_ok and facts.birth_date and facts.sex):
        raise RehearsalError(f"{id_number} is not a valid resident ID number")
    area, authority = synth.REGIONS.get(facts.number[:6], ("浙江省宁波市海曙区",
                                                           "宁波市公安局海曙分局"))
    age = today.year - facts.birth_date.year
    issued = date(today.year - 3, 5, 12)
    return synth.CardIdentity(
        name=name, sex=facts.sex, ethnicity="汉", birth_date=facts.birth_date,
        address=f"{area}人民路18号3幢502室", id_number=facts.number,
        issuing_authority=authority, valid_from=issued,
        # The law's periods: 20 years when issued at 26–45, 长期 from 46 on.
        valid_until=None if age - 3 >= 46 else date(issued.year + 20, 5, 12))


def card_photos(identity: synth.CardIdentity, face: Face) -> tuple[bytes, bytes]:
    """Both sides as the phone uploads them (JPEG)."""
    portrait = synth.crop_portrait(face.photo, face.box)
    return (encode_jpeg(synth.draw_front(identity, portrait), 92),
            encode_jpeg(synth.draw_back(identity), 92))


def liveness_frames(face: Face, challenges: list[Challenge], prompt_s: float,
                    seed: int = 1) -> list[Frame]:
    """What the camera films while the page prompts: the face looking at the camera, then each
    prompted action shortly after its prompt appears, held, in the prompted order."""
    image, pts = face.selfie.image, face.selfie.landmarks
    shake = Shake(image.shape, seed)
    closed = synth.close_eyes(image, pts)
    frames = [shake(image) for _ in range(round(PAGE_INTRO_S * FPS))]
    for challenge in challenges:
        window = [shake(image) for _ in range(round(REACTION_S * FPS))]
        if challenge is Challenge.BLINK:
            window += [shake(closed if v > 0.5 else image) for v in _profile(BLINKS)]
        elif challenge is Challenge.OPEN_MOUTH:
            window += [shake(synth.open_mouth(image, pts, a) if a else image)
                       for a in _profile(MOUTH)]
        else:
            sign = 1.0 if challenge is Challenge.TURN_LEFT else -1.0  # an unmirrored camera
            window += [shake(synth.turn_head(image, pts, sign * a)) for a in _profile(TURN)]
        rest = max(round(prompt_s * FPS) - len(window), 0)
        frames += window + [shake(image) for _ in range(rest)]
    return frames + [shake(image) for _ in range(FPS)]


def call_frames(face: Face, seconds: float = 6.0, seed: int = 2) -> list[Frame]:
    """The face in the call: at rest, with shake and noise, blinking now and then."""
    image, pts = face.call.image, face.call.landmarks
    shake = Shake(image.shape, seed)
    closed = synth.close_eyes(image, pts)
    blinks = {round(seconds * FPS * share) + k for share in (0.3, 0.75) for k in range(3)}
    return [shake(closed if i in blinks else image) for i in range(round(seconds * FPS))]


def agent_picture_frames(seconds: float = 2.0) -> list[Frame]:
    """The agent's camera: a desk-coloured picture with a moving bar (no face is needed)."""
    width, height = CALL_SIZE
    frames = []
    base = np.full((height, width, 3), (96, 120, 150), np.uint8)
    base[height // 3:, :] = (60, 70, 80)
    for index in range(round(seconds * FPS)):
        picture = base.copy()
        left = (index * 12) % width
        picture[:, left:left + 24] = 230
        cv2.putText(picture, f"agent {index:03d}", (24, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.2,
                    (250, 250, 250), 2)
        frames.append(picture)
    return frames


def encode_webm(frames: list[Frame], path: Path, *, keyframe_interval: int = FPS,
                bitrate: int = 800_000) -> Path:
    """VP8 in WebM at FPS (libvpx realtime). A key frame every second: a party's recording and
    the presence sampler start at key frames, and a pre-encoded track cannot make one on
    request."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.gop_size = keyframe_interval
        stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


class ClipCache:
    """Encoded clips kept in a folder under a name derived from what they show, so a second
    rehearsal with the same face (and, for liveness, the same prompts) does not make them
    again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, kind: str, *parts: object) -> Path:
        key = hashlib.sha256(repr((MEDIA_VERSION, kind, *parts)).encode()).hexdigest()[:16]
        return self.folder / f"{kind}-{key}.webm"

    def get(self, path: Path, make: Callable[[], list[Frame]]) -> Path:
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            encode_webm(make(), partial)
            os.replace(partial, path)
        return path


def photo_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

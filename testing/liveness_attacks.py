"""Attack clips against active liveness (R-12, issue 15), all built from ONE still photo.

These are what a fraudster with a printed photo or an offline tool does; they are the attack
set of bench/liveness_attacks.py and tests/media_identity/test_liveness_attacks.py, and nothing
here is genuine material:

- ``flat_turn``: the photo, a flat sheet, turned about its vertical axis in front of the camera
  (perspective projection with a phone's focal length);
- ``patched_eyes``: skin-coloured patches over both eyes (a flap on the print): a flat colour
  sampled from the cheek, or cheek skin cloned over the eye;
- ``dark_mouth``: a dark fill over the mouth, as if it were open;
- ``printed_photo_clip``: a whole plan performed with those three tricks, with camera shake,
  sensor noise and focus blur on every frame.

The "offline-generated" clip is ``testing.identity_material.performing_clip`` (cylindrical
remap for turns, cloned skin with a lid line for blinks, a jaw drop with a dark cavity for the
mouth).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.imaging import Frame

Points = NDArray[np.float64]
Clip = list[tuple[float, Frame]]


def camera(img: Frame, rng: np.random.Generator, blur_max: float = 1.2) -> Frame:
    """Shake (±1.5 px), focus blur (σ up to ``blur_max``) and sensor noise (σ 2-4 levels)."""
    dx, dy = rng.normal(0, 1.5, 2)
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    out = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    sigma = rng.uniform(0.0, blur_max)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noisy = out + rng.normal(0, rng.uniform(2.0, 4.0), out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def flat_turn(img: Frame, pts: Points, angle_deg: float, focal: float = 1.1) -> Frame:
    """The whole frame as a flat print turned ``angle_deg`` about the vertical axis through the
    face centre (positive: its right edge goes away, so the face looks to image-right, like a
    head turning to the customer's left on an unmirrored camera). ``focal`` in frame widths."""
    h, w = img.shape[:2]
    cx = float((pts[0, 0] + pts[16, 0]) / 2)
    cy = h / 2
    f = focal * w
    th = np.deg2rad(angle_deg)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    out = []
    for x, y in corners:
        # The print sits at depth f (filling the view) and turns about x = cx.
        big_x, big_y = x - cx, y - cy
        px = big_x * np.cos(th)
        pz = f - big_x * np.sin(th)
        out.append([cx + f * px / pz, cy + f * big_y / pz])
    m = cv2.getPerspectiveTransform(corners.astype(np.float32), np.array(out, np.float32))
    background = np.full_like(img, 90)
    return cv2.warpPerspective(
        img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT,
        dst=background,
    )


def patched_eyes(img: Frame, pts: Points, kind: Literal["flat", "cloned"] = "flat") -> Frame:
    """Skin-coloured patches over both eyes: the cheek's colour, or cheek skin cloned over them."""
    out = img.copy()
    for a in (36, 42):
        eye = pts[a : a + 6]
        x, y, w, h = cv2.boundingRect(eye.astype(np.int32))
        cx, cy = x + w / 2, y + h / 2
        axes = (int(w * 0.75) + 2, int(max(h, w * 0.3) * 1.3) + 2)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.ellipse(mask, (int(cx), int(cy)), axes, 0, 0, 360, 255, -1)
        cheek_y = int(cy + w * 0.9)
        cheek = img[cheek_y - axes[1] : cheek_y + axes[1], int(cx) - axes[0] : int(cx) + axes[0]]
        if kind == "flat":
            colour = np.median(cheek.reshape(-1, 3), axis=0)
            out[mask > 0] = colour.astype(np.uint8)
        else:
            # dst(y) = src(y + dy): the skin below the eye moves up over it.
            shift = np.array([[1, 0, 0], [0, 1, cy - cheek_y]], dtype=np.float32)
            moved = cv2.warpAffine(img, shift, (img.shape[1], img.shape[0]))
            out[mask > 0] = moved[mask > 0]
    return out


def dark_mouth(img: Frame, pts: Points, amount: float = 0.5, colour: int = 25) -> Frame:
    """A dark fill between the lips, ``amount`` × mouth width tall at the centre."""
    out = img.copy()
    width = float(pts[54, 0] - pts[48, 0])
    drop = amount * width
    top = pts[[60, 61, 62, 63, 64]]
    bottom = pts[[64, 65, 66, 67, 60]].copy()
    bottom[1:4, 1] += drop * np.array([0.7, 1.0, 0.7])
    poly = np.vstack([top, bottom[1:4]]).astype(np.int32)
    cv2.fillPoly(out, [poly], (colour, colour - 5, colour + 10), cv2.LINE_AA)
    return out


def printed_photo_clip(
    base: Frame,
    pts: Points,
    challenges: list[str],
    rng: np.random.Generator,
    fps: float = 10.0,
    angle_deg: float | None = None,
    eyes: Literal["flat", "cloned"] = "flat",
    mirrored: bool = False,
) -> Clip:
    """A plan performed with a print: turned 35-50° for turns, eye patches for the blink, a
    dark mouth for the mouth; every frame through ``camera``."""
    frames: list[Frame] = []

    def hold(img: Frame, seconds: float) -> None:
        frames.extend(camera(img, rng) for _ in range(max(1, round(seconds * fps))))

    hold(base, 0.8)
    for c in challenges:
        if c in ("turn_left", "turn_right"):
            peak = angle_deg if angle_deg is not None else float(rng.uniform(35.0, 50.0))
            sign = 1.0 if (c == "turn_left") != mirrored else -1.0
            for k in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.7, 0.35):
                frames.append(camera(flat_turn(base, pts, sign * peak * k), rng))
        elif c == "blink":
            hold(patched_eyes(base, pts, eyes), 0.3)
        elif c == "open_mouth":
            for a in (0.2, 0.4, 0.6, 0.6, 0.6, 0.35, 0.15):
                frames.append(camera(dark_mouth(base, pts, a), rng))
        else:
            raise ValueError(f"unknown challenge {c!r}")
        hold(base, 0.5)
    return [(round(i / fps, 4), f) for i, f in enumerate(frames)]

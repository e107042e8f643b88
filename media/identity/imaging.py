"""Image helpers shared by the identity engines: decoding uploads, scaling, sharpness, JPEG."""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

Frame = NDArray[Any]
"""An image as OpenCV holds it: height × width × 3, BGR, uint8 (typed loosely: cv2's stubs
return unions of array dtypes)."""


class ImageDecodeError(ValueError):
    """The upload is not an image we can read."""


def decode_image(data: bytes) -> Frame:
    """Decode JPEG/PNG/WebP/BMP bytes to BGR, applying the EXIF orientation phones write."""
    try:
        with Image.open(io.BytesIO(data)) as raw:
            upright = ImageOps.exif_transpose(raw)
            rgb = np.asarray(upright.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDecodeError(str(exc)) from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


def as_frame(image: bytes | Frame) -> Frame:
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_image(bytes(image))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def limit_size(image: Frame, max_side: int) -> tuple[Frame, float]:
    """Scale down so the longest side is at most ``max_side``; returns the image and the scale."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, 1.0
    resized = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return resized, scale


def resize_to_width(image: Frame, width: int) -> tuple[Frame, float]:
    h, w = image.shape[:2]
    scale = width / w
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (width, max(1, round(h * scale))), interpolation=interp), scale


def text_sharpness(image: Frame, boxes: list[tuple[int, int, int, int]], height: int = 32) -> float:
    """Median over text lines of var(Laplacian) / var(pixels), each line scaled to ``height`` px.

    Scaling every line to the same height makes the measure independent of the photo's
    resolution, and dividing by the line's own contrast makes it independent of lighting, so one
    threshold fits every card. Sharp print scores about 0.5–1.7, Gaussian blur σ 1.5 px about 0.15.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    values = []
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(gray.shape[1], x1), min(gray.shape[0], y1)
        if y1 - y0 < 8 or x1 - x0 < 8:
            continue
        crop = gray[y0:y1, x0:x1]
        scale = height / (y1 - y0)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=interp).astype(np.float32)
        contrast = float(crop.var())
        if contrast < 1.0:
            continue
        values.append(float(cv2.Laplacian(crop, cv2.CV_32F).var()) / contrast)
    return float(np.median(values)) if values else 0.0


def rotate_quarter(image: Frame, degrees: int) -> Frame:
    """Rotate counter-clockwise by a multiple of 90 degrees."""
    codes = {
        90: cv2.ROTATE_90_COUNTERCLOCKWISE,
        180: cv2.ROTATE_180,
        270: cv2.ROTATE_90_CLOCKWISE,
    }
    return image if degrees % 360 == 0 else cv2.rotate(image, codes[degrees % 360])


def encode_jpeg(image: Frame, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------- cheap checks of an upload
# Model-free measures the upload endpoint can afford (tens of milliseconds, in the CPU pool):
# they refuse a photo the engines would refuse anyway, before it costs an identity attempt.

_ANALYSIS_SIDE = 1000  # long side the layout measures work at


def _text_rows(gray: Frame) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of horizontal text-like rows: strokes joined along a line."""
    # Print is darker than the card around it: strokes are what is clearly darker than the
    # neighbourhood (a table's texture and a gradient are not), joined along the row.
    bw = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV,
                               31, 18)
    joined = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(
        cv2.MORPH_RECT, (15, 1)))
    # Two-level contours: the card's own outline (darker table around it) encloses the rows.
    contours, hierarchy = cv2.findContours(joined, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0] if contours else [],
                                          strict=True):
        if parent != -1:
            continue  # a hole

        x, y, w, h = cv2.boundingRect(contour)
        if not 8 <= h <= 70 or w < 2.5 * h:
            continue
        fill = cv2.countNonZero(bw[y : y + h, x : x + w]) / float(w * h)
        if 0.15 <= fill <= 0.85:
            boxes.append((x, y, x + w, y + h))
    return boxes


def text_layout(image: Frame) -> tuple[list[tuple[int, int, int, int]], bool]:
    """Text rows of a photo in its own pixel coordinates, and whether they run vertically.

    Rows are found at a fixed working size (long side 1000 px) both ways round, and the
    direction with more rows wins: a card photographed on its side has vertical rows.
    """
    small, scale = limit_size(image, _ANALYSIS_SIDE)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    across = _text_rows(gray)
    down = [(y0, x0, y1, x1) for x0, y0, x1, y1 in _text_rows(np.ascontiguousarray(gray.T))]
    boxes, vertical = (down, True) if len(down) > len(across) else (across, False)
    return [
        (round(x0 / scale), round(y0 / scale), round(x1 / scale), round(y1 / scale))
        for x0, y0, x1, y1 in boxes
    ], vertical


def text_rows_sharpness(image: Frame, boxes: list[tuple[int, int, int, int]],
                        vertical: bool) -> float:
    """``text_sharpness`` over rows found by ``text_layout`` (turned upright when vertical)."""
    if not vertical:
        return text_sharpness(image, boxes)
    turned = np.ascontiguousarray(image.transpose(1, 0, 2) if image.ndim == 3 else image.T)
    return text_sharpness(turned, [(y0, x0, y1, x1) for x0, y0, x1, y1 in boxes])


def glare_share(image: Frame, box: tuple[int, int, int, int]) -> float:
    """Share of ``box`` (x0, y0, x1, y1) burnt out by a reflection: every channel ≥ 250 in a
    blob, after opening away isolated white pixels (the print's white is about 246 at most)."""
    x0, y0, x1, y1 = box
    crop = image[max(0, y0) : y1, max(0, x0) : x1]
    if crop.size == 0:
        return 0.0
    burnt = (crop.min(axis=2) >= 250).astype(np.uint8) if crop.ndim == 3 else (
        crop >= 250).astype(np.uint8)
    burnt = cv2.morphologyEx(burnt, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return float(burnt.mean())


_face_detector: Any = None


def count_faces(image: Frame, text_box: tuple[int, int, int, int] | None = None,
                vertical: bool | None = None) -> int:
    """Upright frontal faces found by dlib's HOG detector (no model file) on the card: the
    text rows' box grown by half its size each way, scaled so the text spans 600 px (a card
    portrait's face is then about 90 px), at the quarter turns the text direction allows."""
    global _face_detector
    import dlib

    if _face_detector is None:
        _face_detector = dlib.get_frontal_face_detector()
    crop = image
    if text_box is not None:
        x0, y0, x1, y1 = text_box
        gw, gh = (x1 - x0) // 2, (y1 - y0) // 2
        crop = image[max(0, y0 - gh) : y1 + gh, max(0, x0 - gw) : x1 + gw]
        span = max(x1 - x0, y1 - y0)
        scale = 600 / max(span, 1)
        crop = cv2.resize(crop, None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    crop, _ = limit_size(crop, 1100)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    turns = (0, 180, 90, 270) if vertical is None else (90, 270) if vertical else (0, 180)
    for degrees in turns:
        found = _face_detector(np.ascontiguousarray(rotate_quarter(gray, degrees)), 0)
        if len(found):
            return len(found)
    return 0


def moire_score(image: Frame, box: tuple[int, int, int, int] | None = None,
                tile: int = 256, chroma: bool = True) -> float:
    """How strongly periodic the fine texture is: a photo of a screen carries the screen's
    pixel grid (or its moiré beat) as narrow peaks in the spectrum; print and camera noise do
    not. Per full-resolution tile: the high-passed, Hann-windowed spectrum divided by its
    ring's mean, its highest value between 0.08 and 0.45 cycles/px off the two axes (JPEG
    blocks and straight edges sit on them) and away from the first peak's direction (rows of
    print repeat along one direction, a pixel grid along two); the median over the tiles.
    ``chroma`` measures blue minus red, where a screen's RGB stripes show most."""
    gray: Frame
    if chroma and image.ndim == 3:
        b, _, r = cv2.split(image.astype(np.float32))
        gray = b - r
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if box is not None:
        x0, y0, x1, y1 = box
        gray = gray[max(0, y0) : y1, max(0, x0) : x1]
    h, w = gray.shape[:2]
    if min(h, w) < tile:
        return 0.0
    window = np.outer(np.hanning(tile), np.hanning(tile)).astype(np.float32)
    f = np.fft.fftshift(np.fft.fftfreq(tile)).astype(np.float32)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    rbin = np.minimum((radius * tile).astype(np.int32), tile)
    band = (radius > 0.08) & (radius < 0.45) & (np.abs(fx) > 2 / tile) & (np.abs(fy) > 2 / tile)
    rbin_band = rbin[band]
    angle_band = np.arctan2(fy, fx)[band]
    ring_count = np.maximum(np.bincount(rbin_band, minlength=tile + 1), 1)
    scores = []
    ys = np.linspace(0, h - tile, max(1, min(4, h // tile))).astype(int)
    xs = np.linspace(0, w - tile, max(1, min(4, w // tile))).astype(int)
    for y in ys:
        for x in xs:
            patch = gray[y : y + tile, x : x + tile].astype(np.float32)
            patch = patch - cv2.GaussianBlur(patch, (0, 0), 2.0)
            if float(patch.std()) < 1.0:
                continue
            spectrum = np.abs(np.fft.fftshift(np.fft.fft2(patch * window)))
            ring_mean = np.bincount(rbin_band, spectrum[band], tile + 1) / ring_count
            normalised = spectrum[band] / np.maximum(ring_mean[rbin_band], 1e-6)
            # Rows of text and a card's guilloche repeat along one direction only (their
            # harmonics lie on one line through the origin); a screen's pixel grid repeats
            # along two. The score is the highest peak away from the first peak's direction.
            first = int(normalised.argmax())
            apart = np.abs(((angle_band - angle_band[first]) + np.pi / 2) % np.pi - np.pi / 2)
            rest = normalised[apart > np.radians(12)]
            scores.append(float(rest.max()) if rest.size else 0.0)
    return float(np.median(scores)) if scores else 0.0

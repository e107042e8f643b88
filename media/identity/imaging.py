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

"""The burned-in text of the playback copy, drawn with PIL: a top band with the wall-clock time
(Beijing time), the position on the recording clock and the session id; a bottom band with the
script step (or the interruption); party labels; and the cards shown where a party has no
picture. Everything is rendered once per distinct text and cached: the top band changes once
a second, the rest rarely."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)
BEIJING = timezone(timedelta(hours=8), "CST")  # China has no daylight saving time
FONT_DIRS = (Path("/usr/share/fonts/opentype/noto"), Path("/usr/share/fonts/truetype/noto"))
FONT_FILES = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf")
BAND_RGB = (16, 16, 16)
TEXT_RGB = (240, 240, 240)
ACCENT_RGB = (255, 196, 0)
CARD_RGB = (40, 40, 48)
ALERT_RGB = (120, 24, 24)
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=8)
def font(size: int) -> Font:
    for folder in FONT_DIRS:
        for name in FONT_FILES:
            path = folder / name
            if path.exists():
                # Index 2 of the collection is the Simplified Chinese face.
                return ImageFont.truetype(str(path), size, index=2 if path.suffix == ".ttc" else 0)
    log.warning("no Noto CJK font found: Chinese text in the playback copy will not render")
    return ImageFont.load_default(size)


def wall_clock(started_at: datetime, at_ms: int) -> str:
    """The Beijing time of a moment on the recording clock, e.g. ``2026-11-28 10:31:05``."""
    return (started_at + timedelta(milliseconds=at_ms)).astimezone(BEIJING).strftime(
        "%Y-%m-%d %H:%M:%S")


def position(at_ms: int) -> str:
    s = max(at_ms, 0) // 1000
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _band(width: int, height: int, left: str, right: str = "",
          background: tuple[int, int, int] = BAND_RGB) -> np.ndarray:
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    size = max(height - 12, 10)
    f = font(size)
    top = (height - size) // 2 - 2
    draw.text((10, top), left, font=f, fill=TEXT_RGB)
    if right:
        w = draw.textlength(right, font=f)
        draw.text((width - 10 - w, top), right, font=f, fill=TEXT_RGB)
    return np.asarray(image, dtype=np.uint8)


def top_band(width: int, height: int, started_at: datetime, at_ms: int,
             session_id: str) -> np.ndarray:
    """``2026-11-28 10:31:05 北京时间 · 录制 00:12:34`` on the left, the session id right."""
    return _band(width, height,
                 f"{wall_clock(started_at, at_ms)} 北京时间 · 录制 {position(at_ms)}",
                 f"会话 {session_id}")


def bottom_band(width: int, height: int, label: str, alert: bool = False) -> np.ndarray:
    return _band(width, height, label, background=ALERT_RGB if alert else BAND_RGB)


def card(width: int, height: int, title: str, note: str = "",
         alert: bool = False) -> np.ndarray:
    """A tile without a picture: why there is none, centred."""
    image = Image.new("RGB", (width, height), ALERT_RGB if alert else CARD_RGB)
    draw = ImageDraw.Draw(image)
    big, small = font(max(height // 9, 14)), font(max(height // 20, 12))
    w = draw.textlength(title, font=big)
    draw.text(((width - w) / 2, height / 2 - height // 9), title, font=big, fill=TEXT_RGB)
    if note:
        w = draw.textlength(note, font=small)
        draw.text(((width - w) / 2, height / 2 + 8), note, font=small, fill=TEXT_RGB)
    return np.asarray(image, dtype=np.uint8)


def label(text: str, height: int = 24) -> np.ndarray:
    """A party's name tag for the corner of its tile."""
    f = font(height - 8)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = (int(probe.textlength(text, font=f)) + 12 + 3) // 4 * 4  # I420 wants even sizes
    image = Image.new("RGB", (width, height), BAND_RGB)
    ImageDraw.Draw(image).text((6, 1), text, font=f, fill=ACCENT_RGB)
    return np.asarray(image, dtype=np.uint8)

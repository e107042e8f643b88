"""Synthetic handwriting for tests and the bench (R-25): the stroke medians of real characters
(testing/data/handwriting_medians.json, from hanzi-writer-data) written with a per-character
scale, slant, rotation and placement, displaced stroke ends, a low-frequency tremor and a pen speed,
so every sample is a different hand. Negatives: blank boxes, zig-zags, scribbles, the wrong
sentence, and pretend signatures (a dot, a straight line, an 8×8 black PNG).

Everything is seeded: the same seed gives the same strokes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from media.handwriting.reading import writable

MEDIANS = Path(__file__).parent / "data" / "handwriting_medians.json"
UnitStroke = list[tuple[float, float, int]]


@dataclass(frozen=True)
class Style:
    name: str
    scale: tuple[float, float] = (0.72, 0.86)
    slant: float = 0.0
    rotate_deg: float = 3.0
    jitter: float = 0.018
    tremor: float = 0.006
    speed: float = 1.2  # box sides per second


STYLES = {
    "neat": Style("neat"),
    "hurried": Style("hurried", scale=(0.66, 0.92), slant=0.15, rotate_deg=5, jitter=0.03,
                     tremor=0.008, speed=2.0),
    "shaky": Style("shaky", scale=(0.68, 0.86), rotate_deg=4, jitter=0.025, tremor=0.016,
                   speed=0.6),
}


@cache
def medians() -> dict[str, list[list[list[int]]]]:
    data: dict[str, list[list[list[int]]]] = json.loads(
        MEDIANS.read_text(encoding="utf-8"))["medians"]
    return data


def _spline(points: list[tuple[float, float]], per_segment: int = 6) -> list[tuple[float, float]]:
    if len(points) < 3:
        (x0, y0), (x1, y1) = points[0], points[-1]
        n = per_segment * 2
        return [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(n + 1)]
    padded = [points[0], *points, points[-1]]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1:i + 3]
        for j in range(per_segment):
            t = j / per_segment
            out.append(tuple(0.5 * (2 * p1[k] + (p2[k] - p0[k]) * t
                                    + (2 * p0[k] - 5 * p1[k] + 4 * p2[k] - p3[k]) * t * t
                                    + (3 * p1[k] - p0[k] - 3 * p2[k] + p3[k]) * t ** 3)
                             for k in range(2)))
    out.append(points[-1])
    return out  # type: ignore[return-value]


def character(
    char: str, style: Style, rng: random.Random, t0: int = 0
) -> tuple[list[UnitStroke], int]:
    """One character's strokes in box units (0..1), timed from `t0` ms."""
    scale = rng.uniform(*style.scale)
    angle = math.radians(rng.gauss(0, style.rotate_deg))
    shear = style.slant + rng.gauss(0, 0.04)
    cx, cy = 0.5 + rng.gauss(0, 0.03), 0.5 + rng.gauss(0, 0.03)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(x: float, y: float) -> tuple[float, float]:
        u, v = x / 1024 - 0.5, (900 - y) / 1024 - 0.5
        u, v = (u - shear * v) * scale, v * scale
        return cx + u * cos - v * sin, cy + u * sin + v * cos

    strokes, t = [], float(t0)
    for median in medians()[char]:
        dx, dy = rng.gauss(0, style.jitter), rng.gauss(0, style.jitter)
        pts = [place(x, y) for x, y in median]
        last = max(len(pts) - 1, 1)
        pts = [(x + dx * (1 - i / last) + rng.gauss(0, style.jitter * 0.3) * i / last,
                y + dy * (1 - i / last)) for i, (x, y) in enumerate(pts)]
        phase = [rng.uniform(0, 6.3) for _ in range(4)]
        freq = [rng.uniform(8, 20) for _ in range(4)]
        stroke: UnitStroke = []
        along, previous = 0.0, None
        for x, y in _spline(pts):
            if previous is not None:
                step = math.dist(previous, (x, y))
                along += step
                t += step / style.speed * 1000
            previous = (x, y)
            wx = style.tremor * (math.sin(freq[0] * along + phase[0])
                                 + 0.5 * math.sin(2.3 * freq[1] * along + phase[1]))
            wy = style.tremor * (math.sin(freq[2] * along + phase[2])
                                 + 0.5 * math.sin(2.3 * freq[3] * along + phase[3]))
            stroke.append((min(max(x + wx, 0.01), 0.99), min(max(y + wy, 0.01), 0.99), round(t)))
        strokes.append(stroke)
        t += rng.uniform(120, 350)
    return strokes, round(t)


def zigzag(rng: random.Random, t0: int = 0, edges: int = 9) -> tuple[list[UnitStroke], int]:
    """One long back-and-forth stroke filling the box."""
    stroke: UnitStroke = []
    t = t0
    for k in range(edges + 1):
        x = 0.15 if k % 2 == 0 else 0.85
        y = 0.15 + 0.7 * k / edges
        stroke.append((x + rng.gauss(0, 0.02), y + rng.gauss(0, 0.01), t))
        t += 90
    return [stroke], t


def scribble(rng: random.Random, t0: int = 0) -> tuple[list[UnitStroke], int]:
    """A loopy scribble (circles over circles), as a child colours a box."""
    stroke: UnitStroke = []
    t = t0
    for k in range(160):
        a = k * 0.45
        r = 0.18 + 0.15 * math.sin(k * 0.07)
        stroke.append((0.5 + r * math.cos(a) + rng.gauss(0, 0.01) + 0.12 * math.sin(k / 25),
                       0.5 + r * math.sin(a) + rng.gauss(0, 0.01), t))
        t += 12
    return [stroke], t


def grid(text: str, style: str = "neat", seed: int = 0, box_size: float = 72.0,
         blank: tuple[int, ...] = (), zigzags: tuple[int, ...] = (),
         scribbles: tuple[int, ...] = ()) -> dict[str, Any]:
    """The grid body the page sends for writing `text` (its writable characters), in CSS px."""
    rng = random.Random(seed)
    chosen = STYLES[style]
    boxes: list[list[list[list[float]]]] = []
    t = 0
    for index, char in enumerate(writable(text)):
        if index in blank:
            strokes: list[UnitStroke] = []
        elif index in zigzags:
            strokes, t = zigzag(rng, t)
        elif index in scribbles:
            strokes, t = scribble(rng, t)
        else:
            strokes, t = character(char, chosen, rng, t)
        t += rng.randint(300, 900)
        boxes.append([[[round(x * box_size, 1), round(y * box_size, 1), ms] for x, y, ms in s]
                      for s in strokes])
    return {"kind": "grid", "box_size": box_size, "boxes": boxes}


def pad(name: str = "张三丰", seed: int = 0, width: float = 340.0, height: float = 200.0,
        style: str = "hurried") -> dict[str, Any]:
    """A signature: the name written left to right across the pad."""
    rng = random.Random(seed)
    cell = min(height * 0.8, width / max(len(name), 1))
    strokes, t = [], 0
    for k, char in enumerate(name):
        written, t = character(char, STYLES[style], rng, t)
        for s in written:
            strokes.append([[round(10 + k * cell + x * cell, 1), round(height * 0.1 + y * cell, 1),
                             ms] for x, y, ms in s])
    return {"kind": "pad", "width": width, "height": height, "strokes": strokes}


def dot_pad(width: float = 340.0, height: float = 200.0) -> dict[str, Any]:
    return {"kind": "pad", "width": width, "height": height,
            "strokes": [[[170, 100, 0], [171, 100, 16], [171, 101, 32]]]}


def line_pad(width: float = 340.0, height: float = 200.0) -> dict[str, Any]:
    return {"kind": "pad", "width": width, "height": height,
            "strokes": [[[20 + i * 15, 100 + (i % 2) * 0.5, i * 16] for i in range(20)]]}


def drawn_png(body: dict[str, Any], per_row: int = 10) -> bytes:
    """The image the page would send with `body` (grid or pad), drawn in dark ink."""
    if body["kind"] == "grid":
        size = int(body["box_size"])
        rows = max(1, math.ceil(len(body["boxes"]) / per_row))
        image = Image.new("L", (size * per_row, size * rows), 255)
        draw = ImageDraw.Draw(image)
        for index, box in enumerate(body["boxes"]):
            ox, oy = (index % per_row) * size, (index // per_row) * size
            draw.rectangle((ox, oy, ox + size - 1, oy + size - 1), outline=200)
            for s in box:
                draw.line([(ox + x, oy + y) for x, y, _ in s], fill=20, width=4)
    else:
        image = Image.new("L", (int(body["width"]), int(body["height"])), 255)
        draw = ImageDraw.Draw(image)
        for s in body["strokes"]:
            draw.line([(x, y) for x, y, _ in s], fill=20, width=4)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def black_png(size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size), 0).save(out, "PNG")
    return out.getvalue()


def sign_body(copy: dict[str, Any] | None = None, signature: dict[str, Any] | None = None,
              image: bytes | None = None) -> dict[str, Any]:
    """The JSON the page posts to /customer/signature: strokes and image, never the text."""
    drawn = image or drawn_png(copy if copy is not None else signature)  # type: ignore[arg-type]
    body: dict[str, Any] = {"image_base64": base64.b64encode(drawn).decode()}
    if copy is not None:
        body["copy_strokes"] = copy
    if signature is not None:
        body["signature_strokes"] = signature
    return body


def written(copy_text: str | None, signature: bool, seed: int = 0) -> dict[str, Any]:
    """The body for a written step or the final signing: the hand-copy of `copy_text` (when
    given) in a neat hand, and/or a signature."""
    return sign_body(grid(copy_text, seed=seed) if copy_text else None,
                     pad(seed=seed) if signature else None)

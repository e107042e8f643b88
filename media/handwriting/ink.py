"""Handwriting as the customer's page records it: strokes of timed points (R-25).

The page sends, for the hand-copied sentence, one list of strokes per box of its grid (box
coordinates in CSS pixels, 0..box_size) and, for a signature, the strokes of the pad (0..width,
0..height). Each point is ``[x, y, t]`` with ``t`` the milliseconds since the first touch.

`parse_grid` / `parse_pad` check the shape and bounds (anything else is `MalformedInk`, a 422);
`grid_problems` and `pad_problems` say, in Chinese, what a person must rewrite (blank boxes,
zig-zags and scribbles, a dot or a straight line instead of a signature); `render_rows` draws
the boxes the way the recogniser reads them. Thresholds are module constants documented in
docs/handwriting.md with the figures they were set on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float, int]
Stroke = tuple[Point, ...]

FORMAT_VERSION = 1
MAX_BOXES = 200
MAX_STROKES_PER_BOX = 60
MAX_PAD_STROKES = 200
MAX_POINTS_PER_STROKE = 2000
MAX_POINTS = 30_000
MAX_COORDINATE = 10_000.0
MAX_T_MS = 60 * 60 * 1000

# A box (unit square) holds too little ink below these: a dot or a stray touch.
MIN_BOX_INK = 0.25          # total stroke length, in box sides
MIN_BOX_EXTENT = 0.18       # larger side of the ink's bounding box, in box sides
# Zig-zags and scribbles: the synthetic handwriting (3 styles, 38 characters, 30 samples each)
# has at most 2 reversals in one stroke, at most 4.6 box sides of ink and 21 % coverage.
MAX_REVERSALS_PER_STROKE = 4
MAX_BOX_INK = 8.0
MAX_BOX_COVERAGE = 0.42
# A signature: enough ink, not a dot, not one straight line, not a tiny corner of the pad.
MIN_PAD_INK = 2.0           # total stroke length in pad heights
MIN_PAD_WIDTH_SHARE = 0.2   # ink width / pad width
MIN_PAD_HEIGHT_SHARE = 0.12  # ink height / pad height
MIN_PAD_POINTS = 12
MAX_STRAIGHTNESS = 0.06     # minor/major spread of all points: below, a ruled line


class MalformedInk(ValueError):
    """The stroke data is not what the page sends (a 422); `message` is Chinese."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Grid:
    """The hand-copy: one tuple of strokes per box, in the order of the characters to copy."""

    box_size: float
    boxes: tuple[tuple[Stroke, ...], ...]

    def unit_boxes(self) -> list[list[np.ndarray]]:
        """Each box's strokes as arrays of (x, y) in box sides (0..1 inside the box)."""
        return [[np.array([(p[0], p[1]) for p in s], dtype=float) / self.box_size for s in box]
                for box in self.boxes]

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "kind": "grid", "box_size": self.box_size,
                "boxes": [[[list(p) for p in s] for s in box] for box in self.boxes]}


@dataclass(frozen=True)
class Pad:
    """A signature: the strokes drawn on a pad of `width` × `height` CSS pixels."""

    width: float
    height: float
    strokes: tuple[Stroke, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "kind": "pad", "width": self.width,
                "height": self.height, "strokes": [[list(p) for p in s] for s in self.strokes]}


def _number(value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedInk(f"笔迹数据中的{what}不是数字")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise MalformedInk(f"笔迹数据中的{what}超出范围")
    return number


def _strokes(raw: Any, limit: int, budget: list[int]) -> tuple[Stroke, ...]:
    if not isinstance(raw, list) or len(raw) > limit:
        raise MalformedInk(f"笔迹数据格式不正确（每处最多 {limit} 笔）")
    strokes = []
    for raw_stroke in raw:
        if not isinstance(raw_stroke, list) or not 1 <= len(raw_stroke) <= MAX_POINTS_PER_STROKE:
            raise MalformedInk("笔迹数据格式不正确（笔画为空或点数过多）")
        budget[0] -= len(raw_stroke)
        if budget[0] < 0:
            raise MalformedInk(f"笔迹点数过多（最多 {MAX_POINTS} 个点）")
        points: list[Point] = []
        last_t = 0
        for raw_point in raw_stroke:
            if not isinstance(raw_point, list) or len(raw_point) != 3:
                raise MalformedInk("笔迹数据格式不正确（每个点应为 [x, y, 时间]）")
            x = _number(raw_point[0], -MAX_COORDINATE, MAX_COORDINATE, "坐标")
            y = _number(raw_point[1], -MAX_COORDINATE, MAX_COORDINATE, "坐标")
            t = int(_number(raw_point[2], 0, MAX_T_MS, "时间"))
            if t < last_t:
                raise MalformedInk("笔迹数据中的时间倒流")
            last_t = t
            points.append((round(x, 2), round(y, 2), t))
        strokes.append(tuple(points))
    return tuple(strokes)


def parse_grid(raw: Any, expected_boxes: int) -> Grid:
    """The hand-copy strokes as sent; one box per character to copy."""
    if not isinstance(raw, dict) or raw.get("kind") != "grid":
        raise MalformedInk("抄录笔迹格式不正确，请刷新页面后重新书写")
    box_size = _number(raw.get("box_size"), 20, 2000, "字格大小")
    boxes = raw.get("boxes")
    if not isinstance(boxes, list) or not 1 <= len(boxes) <= MAX_BOXES:
        raise MalformedInk("抄录笔迹格式不正确（字格数量不对）")
    if len(boxes) != expected_boxes:
        raise MalformedInk(f"抄录字格数量不对：应为 {expected_boxes} 个，收到 {len(boxes)} 个，"
                           "请刷新页面后重新书写")
    budget = [MAX_POINTS]
    return Grid(box_size, tuple(_strokes(box, MAX_STROKES_PER_BOX, budget) for box in boxes))


def parse_pad(raw: Any) -> Pad:
    """The signature strokes as sent."""
    if not isinstance(raw, dict) or raw.get("kind") != "pad":
        raise MalformedInk("签名笔迹格式不正确，请刷新页面后重新签名")
    width = _number(raw.get("width"), 50, 5000, "签名区宽度")
    height = _number(raw.get("height"), 30, 5000, "签名区高度")
    return Pad(width, height, _strokes(raw.get("strokes"), MAX_PAD_STROKES, [MAX_POINTS]))


# -- geometry --------------------------------------------------------------------------------


def _length(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    return float(np.sum(np.hypot(*np.diff(points, axis=0).T)))


def _resample(points: np.ndarray, spacing: float) -> np.ndarray:
    if len(points) < 2:
        return points
    steps = np.hypot(*np.diff(points, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    if along[-1] < spacing:
        return points[[0, -1]]
    at = np.arange(0.0, along[-1], spacing)
    return np.stack([np.interp(at, along, points[:, 0]), np.interp(at, along, points[:, 1])], 1)


def reversals(points: np.ndarray, spacing: float = 0.04) -> int:
    """How often a stroke turns back on itself (turn > 140° within two spacing steps):
    a zig-zag does it at every edge, a written character rarely (a hook, a 乙)."""
    line = _resample(points, spacing)
    if len(line) < 5:
        return 0
    seg = np.diff(line, axis=0)
    seg = seg / np.maximum(np.hypot(*seg.T), 1e-9)[:, None]
    cos = np.einsum("ij,ij->i", seg[:-2], seg[2:])  # direction now vs two steps later
    sharp = cos < math.cos(math.radians(140))
    # A turn spans a few consecutive samples: count runs, not samples.
    return int(np.sum(sharp[1:] & ~sharp[:-1]) + (1 if sharp[0] else 0))


def coverage(strokes: Sequence[np.ndarray], pen: float = 0.07, size: int = 48) -> float:
    """Share of the box the ink covers when drawn with a pen `pen` box sides wide."""
    image = render_box(strokes, size, pen)
    return float(np.mean(np.asarray(image) < 128))


@dataclass(frozen=True)
class BoxReport:
    index: int
    ink: float
    extent: float
    max_reversals: int
    coverage: float

    @property
    def blank(self) -> bool:
        return self.ink < MIN_BOX_INK or self.extent < MIN_BOX_EXTENT

    @property
    def scribbled(self) -> bool:
        return (self.max_reversals > MAX_REVERSALS_PER_STROKE or self.ink > MAX_BOX_INK
                or self.coverage > MAX_BOX_COVERAGE)


def box_report(index: int, strokes: Sequence[np.ndarray]) -> BoxReport:
    if not strokes:
        return BoxReport(index, 0.0, 0.0, 0, 0.0)
    every = np.concatenate(strokes)
    extent = float(max(np.ptp(every[:, 0]), np.ptp(every[:, 1])))
    return BoxReport(index, sum(_length(s) for s in strokes), extent,
                     max(reversals(s) for s in strokes), coverage(strokes))


def _numbers(indexes: Sequence[int]) -> str:
    return "、".join(str(i + 1) for i in indexes)


def grid_problems(grid: Grid) -> tuple[list[BoxReport], str | None]:
    """Every box's figures, and the Chinese reason to refuse (None: every box holds writing)."""
    reports = [box_report(i, box) for i, box in enumerate(grid.unit_boxes())]
    blank = [r.index for r in reports if r.blank]
    scribbled = [r.index for r in reports if not r.blank and r.scribbled]
    reasons = []
    if blank:
        reasons.append(f"第 {_numbers(blank)} 个字格没有写字")
    if scribbled:
        reasons.append(f"第 {_numbers(scribbled)} 个字格像是乱画或涂抹，不是工整的字")
    if not reasons:
        return reports, None
    return reports, "；".join(reasons) + "。请在这些字格中逐字工整抄写后再提交"


def pad_problems(pad: Pad) -> str | None:
    """Why the strokes are not a signature (None: they are)."""
    strokes = [np.array([(p[0], p[1]) for p in s], dtype=float) for s in pad.strokes]
    points = sum(len(s) for s in strokes)
    if not strokes or points < MIN_PAD_POINTS:
        return "没有检测到签名笔迹，请用手指在签名区内亲笔签名"
    ink = sum(_length(s) for s in strokes) / pad.height
    every = np.concatenate(strokes)
    width, height = float(np.ptp(every[:, 0])), float(np.ptp(every[:, 1]))
    centred = every - every.mean(axis=0)
    spread = np.sqrt(np.maximum(np.linalg.eigvalsh(np.cov(centred.T)), 0.0))
    if spread[1] <= 0 or spread[0] / spread[1] < MAX_STRAIGHTNESS:
        return "签名只是一条直线，请亲笔签写您的姓名"
    if ink < MIN_PAD_INK or (width < MIN_PAD_WIDTH_SHARE * pad.width
                             and height < MIN_PAD_HEIGHT_SHARE * pad.height):
        return "签名太小或太短，请在签名区内用正常大小亲笔签写您的姓名"
    if height < MIN_PAD_HEIGHT_SHARE * pad.height:
        return "签名太扁，请在签名区内用正常大小亲笔签写您的姓名"
    return None


# -- drawing ---------------------------------------------------------------------------------


def render_box(strokes: Sequence[np.ndarray], size: int, pen: float = 0.06) -> Image.Image:
    """One box (unit coordinates) drawn black on white at `size` pixels, pen `pen` sides wide."""
    scale = 2
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    width = max(1, round(pen * size * scale))
    for stroke in strokes:
        points = [(float(x) * size * scale, float(y) * size * scale) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=0, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def render_rows(
    grid: Grid, per_row: int = 10, size: int = 96
) -> list[tuple[list[int], Image.Image]]:
    """The boxes drawn side by side, `per_row` to a line: what the recogniser reads, with the
    box indexes of each line. The same pen for every customer: the page's own drawing (pen
    width, colour, device pixels) does not change what is read."""
    boxes = grid.unit_boxes()
    rows = []
    for start in range(0, len(boxes), per_row):
        chunk = boxes[start:start + per_row]
        line = Image.new("L", (size * len(chunk), size), 255)
        for k, strokes in enumerate(chunk):
            line.paste(render_box(strokes, size), (k * size, 0))
        rows.append((list(range(start, start + len(chunk))), line))
    return rows

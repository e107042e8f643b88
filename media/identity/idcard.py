"""Reading and validating second-generation resident ID cards (居民身份证) from photos (R-12).

``read_card_side`` turns a photo of one side into fields (deskewing, trying the four upright
orientations, rejecting blurred, cropped and non-ID photos with a reason the customer can act on)
and crops the portrait; ``validate_card`` applies GB 11643, the validity period and the order.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import cv2
import numpy as np

from media.identity.config import CardQualityConfig
from media.identity.imaging import (
    Frame,
    ImageDecodeError,
    as_frame,
    count_faces,
    encode_jpeg,
    glare_share,
    moire_score,
    rotate_quarter,
    text_layout,
    text_rows_sharpness,
    text_sharpness,
)
from media.identity.ocr import IdCardOcr, OcrLine
from media.identity.results import (
    CardSideRead,
    Check,
    ExpectedHolder,
    IdCardBack,
    IdCardFront,
    IdCardVerification,
)
from rules import idnumber

Side = Literal["front", "back"]

# Customer-facing reasons (Chinese), keyed by the stable English code.
REASONS: dict[str, str] = {
    "not_an_image": "无法读取图片，请上传 JPG 或 PNG 格式的身份证照片",
    "low_resolution": "图片分辨率过低，请靠近证件、使证件占满取景框后重新拍摄",
    "blurred": "身份证照片模糊，请在光线充足处对焦清晰后重新拍摄",
    "cropped": "身份证未完整拍摄，请将证件四角完整放入取景框内重新拍摄",
    "not_id_card_front": "未识别到身份证人像面，请对焦清晰后拍摄本人居民身份证原件的人像面",
    "not_id_card_back": "未识别到身份证国徽面，请对焦清晰后拍摄本人居民身份证原件的国徽面",
    "wrong_side_front": "您拍摄的是国徽面，请翻到人像面（有照片的一面）重新拍摄",
    "wrong_side_back": "您拍摄的是人像面，请翻到国徽面（有有效期限的一面）重新拍摄",
    "unreadable": "身份证信息未能完整识别，请避免反光、遮挡后重新拍摄",
    "back_missing": "请上传身份证国徽面照片，以核验证件有效期",
    "id_number_format": "身份证号码识别有误，请重新拍摄清晰的人像面",
    "id_number_checksum": "身份证号码校验未通过，请确认使用的是本人有效的居民身份证原件",
    "region_code": "身份证号码地址码无效，请确认使用的是本人有效的居民身份证原件",
    "birth_date": "身份证号码中的出生日期无效，请确认使用的是本人有效的居民身份证原件",
    "birth_date_matches_number": "证件出生日期与身份证号码不一致，请重新拍摄清晰的证件照片",
    "sex_matches_number": "证件性别与身份证号码不一致，请重新拍摄清晰的证件照片",
    "card_not_expired": "身份证已超过有效期，请使用有效期内的居民身份证",
    "card_valid_from": "身份证有效期起始日期有误，请重新拍摄清晰的国徽面",
    "name_matches_order": "证件姓名与投保信息不一致，请使用投保人本人的身份证",
    "id_number_matches_order": "证件号码与投保信息不一致，请使用投保人本人的身份证",
}

# Card geometry relative to the ID-number line (its left end and width), measured on the card
# layout (85.6 × 54 mm; the number spans about 29–70 mm): where the card edges and portrait are.
_CARD_LEFT, _CARD_RIGHT = -0.70, 1.37
_CARD_TOP, _CARD_BOTTOM = -1.11, 0.12
_PORTRAIT_X = (0.68, 1.31)
_PORTRAIT_Y = (-0.97, -0.19)

_OCR_DIGIT_FIXES = str.maketrans(
    {
        "O": "0",
        "o": "0",
        "D": "0",
        "Q": "0",
        "I": "1",
        "l": "1",
        "|": "1",
        "i": "1",
        "Z": "2",
        "z": "2",
        "S": "5",
        "s": "5",
        "B": "8",
        "G": "6",
        "x": "X",
    }
)
_NUMBER_RE = re.compile(r"\d{17}[\dX]")
_BIRTH_RE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日")
_DATE_RE = re.compile(r"(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})")


# The 56 recognised ethnic groups as printed on cards (without the 族 suffix).
ETHNICITIES: frozenset[str] = frozenset(
    (  # noqa: SIM905 - a list of words reads better as words
        "汉 蒙古 回 藏 维吾尔 苗 彝 壮 布依 朝鲜 满 侗 瑶 白 "
        "土家 哈尼 哈萨克 傣 黎 傈僳 佤 畲 高山 拉祜 水 东乡 纳西 景颇 "
        "柯尔克孜 土 达斡尔 仫佬 羌 布朗 撒拉 毛南 仡佬 锡伯 阿昌 普米 塔吉克 怒 "
        "乌孜别克 俄罗斯 鄂温克 德昂 保安 裕固 京 塔塔尔 独龙 鄂伦春 赫哲 门巴 珞巴 基诺"
    ).split()
)
# The recogniser's dictionary holds traditional characters too and sometimes prefers them.
_TRADITIONAL = str.maketrans(
    "漢滿維爾壯納東鄉傈僳達斡爾仡錫門巴珞內蒙", "汉满维尔壮纳东乡傈僳达斡尔仡锡门巴珞内蒙"
)


def _ethnicity(raw: str) -> str | None:
    value = raw.translate(_TRADITIONAL).removesuffix("族")
    if value in ETHNICITIES:
        return value
    # OCR may glue the next label's first character on: keep the longest known prefix.
    for n in range(len(value) - 1, 0, -1):
        if value[:n] in ETHNICITIES:
            return value[:n]
    return None


def _norm(text: str) -> str:
    """NFKC (full-width digits and colons to ASCII), no spaces or colons."""
    return re.sub(r"[\s:：·]", "", unicodedata.normalize("NFKC", text))


@dataclass
class _Line:
    text: str
    score: float
    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def h(self) -> float:
        return self.y1 - self.y0


@dataclass
class _Row:
    lines: list[_Line] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(ln.text for ln in sorted(self.lines, key=lambda ln: ln.x0))

    @property
    def score(self) -> float:
        return min(ln.score for ln in self.lines)

    @property
    def cy(self) -> float:
        return sum(ln.cy for ln in self.lines) / len(self.lines)

    @property
    def x0(self) -> float:
        return min(ln.x0 for ln in self.lines)


def _skew_deg(lines: list[OcrLine]) -> float:
    """Median angle of the long lines' top edges (image y grows downwards)."""
    angles = []
    for ln in lines:
        (x0, y0), (x1, y1) = ln.quad[0], ln.quad[1]
        if abs(x1 - x0) > 2 * max(ln.height, 1.0):
            angles.append(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    return float(np.median(angles)) if angles else 0.0


_RE_OCR_SKEW_DEG = 4.0


def _rotate(image: Frame, angle: float) -> Frame:
    """Rotate by ``angle`` degrees (counter-clockwise), growing the canvas to keep every corner."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(
        image, m, (nw, nh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def _deskew(image: Frame, lines: list[OcrLine], angle: float) -> tuple[Frame, list[_Line]]:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    if abs(angle) > 0.5:
        image = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    out = []
    for ln in lines:
        pts = np.hstack([np.asarray(ln.quad, np.float64), np.ones((len(ln.quad), 1))]) @ m.T
        out.append(
            _Line(
                _norm(ln.text),
                ln.score,
                pts[:, 0].min(),
                pts[:, 0].max(),
                pts[:, 1].min(),
                pts[:, 1].max(),
            )
        )
    return image, out


def _rows(lines: list[_Line]) -> list[_Row]:
    if not lines:
        return []
    med_h = float(np.median([ln.h for ln in lines]))
    rows: list[_Row] = []
    for ln in sorted(lines, key=lambda ln: ln.cy):
        if rows and abs(rows[-1].cy - ln.cy) < 0.55 * med_h:
            rows[-1].lines.append(ln)
        else:
            rows.append(_Row([ln]))
    return rows


def _find_id_number(rows: list[_Row]) -> tuple[str | None, _Line | None, float]:
    """The 18-character number, preferring the row labelled 公民身份号码 and a valid check digit."""
    candidates: list[tuple[bool, bool, str, _Line]] = []
    for row in rows:
        labelled = "号码" in row.text
        for ln in row.lines:
            raw = ln.text.replace("公民身份号码", "")
            direct = _NUMBER_RE.search(raw.upper())
            fixed = re.sub(r"[^0-9X]", "", raw.translate(_OCR_DIGIT_FIXES))
            for cand in (direct.group(0) if direct else None, fixed if len(fixed) == 18 else None):
                if cand and _NUMBER_RE.fullmatch(cand):
                    candidates.append((labelled, idnumber.has_valid_check_digit(cand), cand, ln))
    if not candidates:
        return None, None, 0.0
    candidates.sort(key=lambda c: (c[1], c[0], c[3].score), reverse=True)
    _, _, number, line = candidates[0]
    return number, line, line.score


def _after(text: str, label: str) -> str:
    i = text.find(label)
    return text[i + len(label) :] if i >= 0 else ""


@dataclass
class _Parsed:
    front: IdCardFront | None = None
    back: IdCardBack | None = None
    anchors: int = 0
    other_side_anchors: int = 0
    number_line: _Line | None = None
    required_missing: list[str] = field(default_factory=list)
    field_scores: list[float] = field(default_factory=list)


def _parse_front(rows: list[_Row]) -> _Parsed:
    p = _Parsed(front=IdCardFront())
    f = p.front
    assert f is not None
    texts = [r.text for r in rows]
    p.anchors = sum(
        any(lbl in t for t in texts)
        for lbl in ("姓名", "性别", "民族", "出生", "住址", "公民身份号码")
    )
    p.other_side_anchors = sum(
        any(lbl in t for t in texts) for lbl in ("居民身份证", "签发机关", "有效期限")
    )
    number, number_line, number_score = _find_id_number(rows)
    if number:
        f.id_number, p.number_line = number, number_line
        f.scores["id_number"] = number_score
    address_rows: list[_Row] = []
    in_address = False
    for row in rows:
        t = row.text
        if "姓名" in t:
            value = _after(t, "姓名")
            if value:
                f.name, f.scores["name"] = value, row.score
        if "性别" in t:
            m = re.search(r"性别(男|女)", t)
            if m:
                f.sex, f.scores["sex"] = m.group(1), row.score
        if "民族" in t:
            m = re.search(r"民族([\u4e00-\u9fff]{1,5})", t)
            ethnicity = _ethnicity(m.group(1)) if m else None
            if ethnicity:
                f.ethnicity, f.scores["ethnicity"] = ethnicity, row.score
        m = _BIRTH_RE.search(t)
        if m and ("出生" in t or f.birth_date is None):
            try:
                f.birth_date = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                f.scores["birth_date"] = row.score
            except ValueError:
                pass
        if "公民身份号码" in t or (p.number_line is not None and p.number_line in row.lines):
            in_address = False
        elif "住址" in t:
            in_address = True
            address_rows.append(row)
        elif in_address:
            address_rows.append(row)
    if address_rows:
        first = address_rows[0]
        value_x0 = min((ln.x0 for ln in first.lines if "住址" not in ln.text), default=first.x0)
        parts = [_after(first.text, "住址")]
        for row in address_rows[1:]:
            # Continuation lines start under the address value; anything else (the portrait's
            # border, stray background text) is left out.
            parts += [
                ln.text
                for ln in sorted(row.lines, key=lambda ln: ln.x0)
                if ln.x0 > value_x0 - 2 * ln.h
            ]
        address = "".join(parts)
        if address:
            f.address, f.scores["address"] = address, min(r.score for r in address_rows)
    p.required_missing = [
        k for k in ("name", "sex", "birth_date", "address", "id_number") if getattr(f, k) is None
    ]
    p.field_scores = list(f.scores.values())
    return p


def _parse_back(rows: list[_Row]) -> _Parsed:
    p = _Parsed(back=IdCardBack())
    b = p.back
    assert b is not None
    texts = [r.text for r in rows]
    p.anchors = sum(
        any(lbl in t for t in texts)
        for lbl in ("居民身份证", "中华人民共和国", "签发机关", "有效期限")
    )
    p.other_side_anchors = sum(
        any(lbl in t for t in texts) for lbl in ("姓名", "性别", "公民身份号码")
    )
    for row in rows:
        t = row.text
        if "签发机关" in t and _after(t, "签发机关"):
            b.issuing_authority, b.scores["issuing_authority"] = _after(t, "签发机关"), row.score
        if "有效期" in t or (b.valid_from is None and len(_DATE_RE.findall(t)) >= 1 and "-" in t):
            value = _after(t, "有效期限") or _after(t, "有效期") or t
            dates = _DATE_RE.findall(value)
            try:
                if dates:
                    b.valid_from = date(*map(int, dates[0]))
                if len(dates) >= 2:
                    b.valid_until = date(*map(int, dates[1]))
                elif "长期" in value:
                    b.long_term = True
            except ValueError:
                continue
            if b.valid_from is not None:
                b.scores["validity"] = row.score
    if b.valid_from is None or (b.valid_until is None and not b.long_term):
        p.required_missing.append("validity")
    p.field_scores = list(b.scores.values())
    return p


def _reread_short_values(ocr: IdCardOcr, image: Frame, lines: list[_Line], parsed: _Parsed) -> None:
    """Read again, from a padded close-up, the one-character values the detector missed.

    Trap: text detection often skips a lone glyph (男, 女, 汉) sitting apart from its label; the
    recogniser reads it fine once it is cropped, padded and enlarged.
    """
    f = parsed.front
    if f is None:
        return
    wanted = [("性别", "sex")] if f.sex is None else []
    wanted += [("民族", "ethnicity")] if f.ethnicity is None else []
    for label, attr in wanted:
        line = next((ln for ln in lines if ln.text.endswith(label)), None)
        if line is None:
            continue
        h = line.h
        right = line.x1 + (2.5 if attr == "sex" else 4.5) * h
        # Stop before the next label on the same row (民族 follows 性别).
        for other in lines:
            same_row = abs(other.cy - line.cy) < 0.5 * h and other.x0 > line.x1
            if other is not line and same_row and other.text[:2] in ("民族", "性别"):
                right = min(right, other.x0 - 0.1 * h)
        x0, x1 = int(line.x1 + 0.1 * h), int(right)
        y0, y1 = int(line.y0 - 0.35 * h), int(line.y1 + 0.35 * h)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(image.shape[1], x1), min(image.shape[0], y1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        crop = image[y0:y1, x0:x1]
        scale = 64 / crop.shape[0]
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        pad = 32
        crop = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = ocr.recognize(crop)
        text = _norm("".join(ln.text for ln in found))
        score = min((ln.score for ln in found), default=0.0)
        if attr == "sex":
            m = re.search("男|女", text)
            if m:
                f.sex, f.scores["sex"] = m.group(0), score
        else:
            value = _ethnicity(text)
            if value:
                f.ethnicity, f.scores["ethnicity"] = value, score
    parsed.required_missing = [k for k in parsed.required_missing if getattr(f, k) is None]
    parsed.field_scores = list(f.scores.values())


def _card_box(number_line: _Line) -> tuple[float, float, float, float]:
    """Estimated card edges (x0, y0, x1, y1) from the ID-number line."""
    nw = number_line.x1 - number_line.x0
    return (
        number_line.x0 + _CARD_LEFT * nw,
        number_line.y0 + _CARD_TOP * nw,
        number_line.x0 + _CARD_RIGHT * nw,
        number_line.y1 + _CARD_BOTTOM * nw,
    )


def _portrait_box(number_line: _Line, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    nw = number_line.x1 - number_line.x0
    x0 = max(0, int(number_line.x0 + _PORTRAIT_X[0] * nw))
    x1 = min(shape[1], int(number_line.x0 + _PORTRAIT_X[1] * nw))
    y0 = max(0, int(number_line.y0 + _PORTRAIT_Y[0] * nw))
    y1 = min(shape[0], int(number_line.y0 + _PORTRAIT_Y[1] * nw))
    if x1 - x0 < 0.3 * nw * 0.63 or y1 - y0 < 0.3 * nw * 0.78:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _lines_touch_border(lines: list[_Line], shape: tuple[int, ...]) -> bool:
    h, w = shape[:2]
    margin = 0.01 * max(h, w)
    return any(
        ln.x0 < margin or ln.y0 < margin or ln.x1 > w - margin or ln.y1 > h - margin for ln in lines
    )


def _text_region_sharpness(image: Frame, lines: list[_Line]) -> float:
    return text_sharpness(image, [(int(ln.x0), int(ln.y0), int(ln.x1), int(ln.y1)) for ln in lines])


def _fold_skew(angle: float) -> float:
    """An angle folded into [-45°, 45°): what is left after the nearest quarter turn."""
    return (angle + 45.0) % 90.0 - 45.0


def _mostly_vertical(lines: list[OcrLine]) -> bool:
    """Most boxes taller than wide: the text runs top-to-bottom, the card lies on its side."""
    return bool(lines) and sum(ln.height > (ln.right - ln.left) for ln in lines) > len(lines) / 2


def _rotation_order(
    raw_lines: list[OcrLine], parse: Callable[[list[_Row]], _Parsed]
) -> tuple[int, ...]:
    """The quarter turns to try (counter-clockwise), the likeliest first.

    Upright or upside down (horizontal boxes): 0, then 180. On its side (vertical boxes): the
    engines turn a tall crop 90° counter-clockwise before recognising it, so when that already
    reads labels the photo was turned clockwise and 90 undoes it; otherwise 270 comes first.
    The search goes on through all four until a reading passes ``_reading_rank``'s checks.
    """
    if not _mostly_vertical(raw_lines):
        return (0, 180, 90, 270)
    _, lines = _deskew(np.zeros((1, 1, 3), np.uint8), raw_lines, 0.0)
    labels_read = parse(_rows(lines)).anchors >= 2
    return (0, 90, 270, 180) if labels_read else (0, 270, 90, 180)


def _reading_rank(parsed: _Parsed, raw: list[OcrLine]) -> tuple[int, ...]:
    """How much a reading is to be trusted; the first element says it passes every check.

    A reading passes when its text runs left to right, at least two labels are found, every
    required field is there and the fields agree: the number's check digit, the birth date and
    sex printed against the ones in the number (front), the issuing authority and the validity
    dates in order (back).
    Trap: recognising a card turned on its side still finds labels (the engines turn tall
    crops upright), but rows become columns and the address goes missing; labels alone are no
    proof of the orientation.
    """
    horizontal = not _mostly_vertical(raw)
    consistent = horizontal and parsed.anchors >= 2 and not parsed.required_missing
    f, b = parsed.front, parsed.back
    if consistent and f is not None and f.id_number is not None:
        facts = idnumber.IdNumberFacts.of(f.id_number)
        consistent = (
            facts.check_digit_ok
            and (f.birth_date is None or f.birth_date == facts.birth_date)
            and (f.sex is None or f.sex == facts.sex)
        )
    if consistent and b is not None:
        consistent = b.issuing_authority is not None and b.valid_from is not None and (
            b.long_term or (b.valid_until is not None and b.valid_until > b.valid_from)
        )
    found = len(parsed.field_scores)
    return (int(consistent), int(horizontal), min(parsed.anchors, 2), found, parsed.anchors)


def read_card_side(
    ocr: IdCardOcr, image: bytes | Frame, side: Side, quality: CardQualityConfig
) -> CardSideRead:
    """OCR one photo of one side of the card and judge whether it can be trusted."""
    started = time.perf_counter()

    def done(ok: bool, code: str | None = None, /, **kw: object) -> CardSideRead:
        return CardSideRead(
            side=side,
            ok=ok,
            reason_code=code,
            reason=REASONS.get(code) if code else None,
            engine=ocr.info,
            elapsed_s=round(time.perf_counter() - started, 4),
            **kw,  # type: ignore[arg-type]
        )

    try:
        frame = as_frame(image)
    except ImageDecodeError:
        return done(False, "not_an_image")
    if min(frame.shape[:2]) < quality.min_short_side_px:
        return done(False, "low_resolution")

    parse = _parse_front if side == "front" else _parse_back
    best: tuple[tuple[int, ...], _Parsed, Frame, list[_Line], int] | None = None
    raw_lines = ocr.recognize(frame)
    for rotation in _rotation_order(raw_lines, parse):
        if rotation:
            if not raw_lines:
                break  # no text at all: another orientation will not find a card either
            rotated = rotate_quarter(frame, rotation)
            lines_r = ocr.recognize(rotated)
        else:
            rotated, lines_r = frame, raw_lines
        # Beyond 45° a "skew" is a quarter turn plus a tilt: the turns are this loop's job
        # (straightening 77° in one warp loses labels), only the tilt is corrected here.
        skew = _fold_skew(_skew_deg(lines_r))
        if abs(skew) > _RE_OCR_SKEW_DEG:
            # The detector misses short boxes (a lone 男 or 汉) on a tilted card: read it again
            # upright rather than only rotating the boxes.
            rotated = _rotate(rotated, skew)
            lines_r = ocr.recognize(rotated)
            skew = _fold_skew(_skew_deg(lines_r))
        upright, lines = _deskew(rotated, lines_r, skew)
        parsed = parse(_rows(lines))
        if parsed.front is not None and parsed.anchors >= 2 and not _mostly_vertical(lines_r):
            _reread_short_values(ocr, upright, lines, parsed)
        rank = _reading_rank(parsed, lines_r)
        if best is None or rank > best[0]:
            best = (rank, parsed, upright, lines, rotation)
        if rank[0]:
            break  # every field there and consistent: this orientation is the card's
        if parsed.anchors < 2 and parsed.other_side_anchors >= 2 and not _mostly_vertical(lines_r):
            break  # the other side of the card, upright: that is the verdict
    assert best is not None
    _, parsed, upright, lines, rotation = best
    texts = [ln.text for ln in lines]
    mean_score = float(np.mean(parsed.field_scores)) if parsed.field_scores else 0.0
    common = {"lines": texts, "rotation": rotation, "mean_score": round(mean_score, 4)}

    if parsed.anchors < 2:
        sharp = _text_region_sharpness(upright, lines) if lines else 0.0
        common["sharpness"] = round(sharp, 3)
        if parsed.other_side_anchors >= 2:
            return done(False, f"wrong_side_{side}", **common)
        if lines and sharp < quality.min_sharpness:
            return done(False, "blurred", **common)
        return done(False, f"not_id_card_{side}", **common)

    sharp = _text_region_sharpness(upright, lines)
    common["sharpness"] = round(sharp, 3)
    if parsed.front is not None:
        common["front"] = parsed.front
    if parsed.back is not None:
        common["back"] = parsed.back
    if sharp < quality.min_sharpness:
        return done(False, "blurred", **common)

    h, w = upright.shape[:2]
    if parsed.number_line is not None:
        x0, y0, x1, y1 = _card_box(parsed.number_line)
        tol = 0.04 * (x1 - x0)
        if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
            return done(False, "cropped", **common)
    if parsed.required_missing:
        if _lines_touch_border(lines, upright.shape):
            return done(False, "cropped", **common)
        return done(False, "unreadable", **common)
    if mean_score < quality.min_field_score:
        return done(False, "unreadable", **common)

    if side == "front" and parsed.number_line is not None:
        box = _portrait_box(parsed.number_line, upright.shape)
        if box is not None:
            x, y, bw, bh = box
            common["portrait_box"] = box
            common["portrait_jpeg"] = encode_jpeg(upright[y : y + bh, x : x + bw], 95)
    return done(True, **common)


def _same_name(a: str, b: str) -> bool:
    # Minority names are written with a middle dot in several code points; OCR drops it.
    def key(s: str) -> str:
        return re.sub(r"[\s·•．.\u00b7\u2022\u30fb]", "", unicodedata.normalize("NFKC", s))

    return key(a) == key(b)


def validate_card(
    front: CardSideRead,
    back: CardSideRead | None,
    expected: ExpectedHolder | None,
    today: date,
) -> IdCardVerification:
    """All R-12 card checks; the first failing check gives the customer's reason."""
    checks: list[Check] = []

    def check(code: str, passed: bool) -> None:
        checks.append(Check(code=code, passed=passed, message="" if passed else REASONS[code]))

    f = front.front
    b = back.back if back is not None else None
    if not front.ok or f is None or f.id_number is None:
        code = front.reason_code or "unreadable"
        checks.append(
            Check(
                code=f"front_{code}", passed=False, message=REASONS.get(code, REASONS["unreadable"])
            )
        )
    if back is None:
        check("back_missing", False)
    elif not back.ok or b is None:
        code = back.reason_code or "unreadable"
        checks.append(
            Check(
                code=f"back_{code}", passed=False, message=REASONS.get(code, REASONS["unreadable"])
            )
        )

    age: int | None = None
    if f is not None and f.id_number is not None:
        facts = idnumber.IdNumberFacts.of(f.id_number)
        check("id_number_format", facts.format_ok)
        check("id_number_checksum", facts.check_digit_ok)
        check("region_code", facts.region_code_ok)
        birth_ok = facts.birth_date is not None and facts.birth_date <= today
        if birth_ok and facts.birth_date is not None:
            age = idnumber.age_on(facts.birth_date, today)
            birth_ok = age <= 150
        check("birth_date", birth_ok)
        if f.birth_date is not None:
            check("birth_date_matches_number", f.birth_date == facts.birth_date)
        if f.sex is not None and facts.sex is not None:
            check("sex_matches_number", f.sex == facts.sex)
        if expected is not None:
            check("name_matches_order", f.name is not None and _same_name(f.name, expected.name))
            check(
                "id_number_matches_order",
                facts.number == idnumber.normalise_id_number(expected.id_number),
            )
    if b is not None and b.valid_from is not None:
        check("card_valid_from", b.valid_from <= today)
        check(
            "card_not_expired",
            b.long_term or (b.valid_until is not None and b.valid_until >= today),
        )

    failed = next((c for c in checks if not c.passed), None)
    return IdCardVerification(
        passed=failed is None,
        reason_code=failed.code if failed else None,
        reason=failed.message if failed else None,
        checks=checks,
        front=f,
        back=b,
        age=age,
        engine=front.engine,
    )


# ---------------------------------------------------------------- checks before an attempt
# R-12 (issue 15): photos the engines would refuse are refused on upload, with what to do,
# so they never cost one of the attempts. Model-free and cheap (tens of milliseconds of one
# core; the face search on the portrait side about 50–150 ms): run them in the CPU pool.

UPLOAD_REASONS: dict[str, str] = {
    "low_resolution": REASONS["low_resolution"],
    "no_card": "未检测到身份证，请将身份证原件平放、完整放入取景框后重新拍摄",
    "blurred": "照片不够清晰，请对准身份证、对焦清晰后重新拍摄",
    "glare": "证件上有反光，请避开灯光直射、调整角度后重新拍摄",
    "no_face": "人像面未检测到证件照片，请拍摄本人居民身份证原件的人像面",
}
# Text rows a card side shows at least (the emblem side has two labelled rows and its title).
_MIN_TEXT_ROWS = 2
# Sharpness of the rows (``text_sharpness``, resolution- and contrast-independent): generated
# cards 0.36–3.0 sharp, 0.19–0.28 at Gaussian blur σ 1 px (which the OCR still reads), ≤ 0.11
# at σ 1.5 px; the engine's own threshold on its text boxes is 0.2.
_MIN_UPLOAD_SHARPNESS = 0.15
# Burnt-out share of the text area that hides fields (a reflection across two rows).
_MAX_GLARE_SHARE = 0.04
# Screen recapture (a warning for QA, not a refusal): the highest spectral peak away from the
# first peak's direction, on the blue-minus-red chroma and on the grey level. Generated genuine
# cards: ≤ 8.8 and ≤ 15.5; photos of the same cards on a simulated RGB-stripe screen: a
# chroma peak of 29–54 or a grey peak of 31–56 (docs: bench/identity.py --orientations).
MOIRE_CHROMA_WARN = 15.0
MOIRE_GRAY_WARN = 25.0


@dataclass(frozen=True)
class CardPhotoCheck:
    """The verdict of ``check_card_photo``: a refusal ``code`` with its Chinese ``message`` (none
    when the photo may go on), the measures, and warnings for QA (``screen_recapture``)."""

    code: str | None
    message: str | None
    measures: dict[str, float]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is None


def recapture_measures(image: Frame, box: tuple[int, int, int, int] | None) -> dict[str, float]:
    """Moiré scores of a card photo (see ``MOIRE_*``) and whether they suggest a screen;
    over the print's box when it holds a few 256 px tiles, else over the whole photo."""
    if box is not None and min(box[2] - box[0], box[3] - box[1]) < 384:
        box = None
    chroma = moire_score(image, box, chroma=True)
    gray = moire_score(image, box, chroma=False)
    return {"moire_chroma": round(chroma, 2), "moire_gray": round(gray, 2),
            "screen_recapture": float(chroma > MOIRE_CHROMA_WARN or gray > MOIRE_GRAY_WARN)}


def recapture_of_photo(image: bytes | Frame) -> dict[str, float]:
    """``recapture_measures`` over the card's print (found as in ``check_card_photo``)."""
    frame = as_frame(image)
    rows, _ = text_layout(frame)
    box = (min(b[0] for b in rows), min(b[1] for b in rows),
           max(b[2] for b in rows), max(b[3] for b in rows)) if rows else None
    return recapture_measures(frame, box)


def check_card_photo(
    image: bytes | Frame, side: Side, quality: CardQualityConfig | None = None
) -> CardPhotoCheck:
    """Resolution, a card (rows of print), sharpness of the print, glare over it, a face on
    the portrait side; and the recapture warning. Refuses only what the OCR would refuse."""
    quality = quality or CardQualityConfig()
    try:
        frame = as_frame(image)
    except ImageDecodeError:
        return CardPhotoCheck("no_card", UPLOAD_REASONS["no_card"], {})
    measures: dict[str, float] = {"short_side_px": float(min(frame.shape[:2]))}

    def refuse(code: str) -> CardPhotoCheck:
        return CardPhotoCheck(code, UPLOAD_REASONS[code], measures)

    if min(frame.shape[:2]) < quality.min_short_side_px:
        return refuse("low_resolution")
    rows, vertical = text_layout(frame)
    measures["text_rows"] = float(len(rows))
    box = (min(b[0] for b in rows), min(b[1] for b in rows),
           max(b[2] for b in rows), max(b[3] for b in rows)) if rows else None
    measures.update(recapture_measures(frame, box))
    if measures["screen_recapture"]:
        # A screen's moiré fools these cheap measures (rows, sharpness, the face search):
        # the engines judge the photo; QA is told.
        return CardPhotoCheck(None, None, measures, ("screen_recapture",))
    if box is None or len(rows) < _MIN_TEXT_ROWS:
        return refuse("no_card")
    sharp = text_rows_sharpness(frame, rows, vertical)
    measures["sharpness"] = round(sharp, 3)
    if sharp < _MIN_UPLOAD_SHARPNESS:
        return refuse("blurred")
    glare = glare_share(frame, box)
    measures["glare_share"] = round(glare, 4)
    if glare > _MAX_GLARE_SHARE:
        return refuse("glare")
    if side == "front":
        faces = count_faces(frame, box, vertical)
        measures["faces"] = float(faces)
        if not faces:
            return refuse("no_face")
    warnings: tuple[str, ...] = ()
    return CardPhotoCheck(None, None, measures, warnings)

"""Synthetic identity material for tests, benchmarks and acceptance evidence (R-02, R-12, R-13).

Draws second-generation resident ID cards (both sides) with PIL and a CJK font from Debian
(``fonts-noto-cjk``), degrades photos of them the way phones do (tilt, noise, JPEG, blur,
cropping), and builds frame sequences in which a real face photo performs liveness challenges:
a cylindrical warp turns the head, a cheek patch closes the eyes, a jaw-drop warp opens the mouth.
These edits move the 68 landmarks the way a real action does; an affine warp would not (ratios
along a line are affine-invariant). No material here is a real person's identity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from media.identity.imaging import Frame
from rules.idnumber import make_id_number

CARD_W, CARD_H = 856, 540
_FONT_DIRS = (Path("/usr/share/fonts/opentype/noto"), Path("/usr/share/fonts/truetype/noto"))
_SANS = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf")
_SANS_BOLD = ("NotoSansCJK-Bold.ttc", "NotoSansCJKsc-Bold.otf", "NotoSansCJK-Medium.ttc")
_SERIF_BOLD = ("NotoSerifCJK-Bold.ttc", "NotoSerifCJKsc-Bold.otf")

LABEL_RGB = (54, 96, 146)
TEXT_RGB = (20, 20, 20)

REGIONS: dict[str, tuple[str, str]] = {
    "110101": ("北京市东城区", "北京市公安局东城分局"),
    "310104": ("上海市徐汇区", "上海市公安局徐汇分局"),
    "330203": ("浙江省宁波市海曙区", "宁波市公安局海曙分局"),
    "330106": ("浙江省杭州市西湖区", "杭州市公安局西湖区分局"),
    "440305": ("广东省深圳市南山区", "深圳市公安局南山分局"),
    "510107": ("四川省成都市武侯区", "成都市公安局武侯区分局"),
    "420106": ("湖北省武汉市武昌区", "武汉市公安局武昌分局"),
    "370202": ("山东省青岛市市南区", "青岛市公安局市南分局"),
}
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘"
    "袁蔡蒋余于杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊"
    "秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰文辉"
    "宇浩然子轩欣怡梓涵一诺晨阳思远嘉怡雨泽俊杰婷婷海燕春梅冬梅晓东建华永强丽娟"
)
_ETHNICITIES = ("汉", "汉", "汉", "汉", "回", "满", "壮", "蒙古", "维吾尔", "苗", "土家")
_STREETS = (
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平街",
    "文化路",
    "新华街",
    "朝阳路",
    "长江路",
)


def _font_path(candidates: tuple[str, ...]) -> Path:
    for d in _FONT_DIRS:
        for name in candidates:
            if (d / name).is_file():
                return d / name
    raise FileNotFoundError(
        "no CJK font found; install the Debian package fonts-noto-cjk "
        f"(looked for {candidates} in {[str(d) for d in _FONT_DIRS]})"
    )


def _font(candidates: tuple[str, ...], size: int) -> ImageFont.FreeTypeFont:
    # index 0 of the Noto CJK collections is the Japanese face; 2 is Simplified Chinese.
    path = _font_path(candidates)
    return ImageFont.truetype(str(path), size, index=2 if path.suffix == ".ttc" else 0)


@dataclass(frozen=True)
class CardIdentity:
    """The facts printed on one synthetic card (front and back)."""

    name: str
    sex: str
    ethnicity: str
    birth_date: date
    address: str
    id_number: str
    issuing_authority: str
    valid_from: date
    valid_until: date | None  # None: 长期

    @property
    def validity_text(self) -> str:
        end = "长期" if self.valid_until is None else f"{self.valid_until:%Y.%m.%d}"
        return f"{self.valid_from:%Y.%m.%d}-{end}"


def random_identity(
    rng: random.Random,
    *,
    today: date,
    valid_check_digit: bool = True,
    expired: bool = False,
    min_age: int = 18,
    max_age: int = 75,
) -> CardIdentity:
    region = rng.choice(sorted(REGIONS))
    area, authority = REGIONS[region]
    age = rng.randint(min_age, max_age)
    birth = date(today.year - age, rng.randint(1, 12), rng.randint(1, 28))
    sequence = rng.randint(0, 999)
    sex = "男" if (sequence % 10) % 2 else "女"
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
    name = rng.choice(_SURNAMES) + given
    street, number = rng.choice(_STREETS), rng.randint(1, 399)
    address = f"{area}{street}{number}号{rng.randint(1, 30)}幢{rng.randint(101, 2808)}室"
    # Validity periods follow the law: 20 years when issued at 26–45, 长期 from 46 on.
    years = 20 if age < 46 else None
    if expired:
        valid_from = date(today.year - 21, rng.randint(1, 12), rng.randint(1, 28))
        valid_until: date | None = date(valid_from.year + 20, valid_from.month, valid_from.day)
    else:
        valid_from = date(today.year - rng.randint(1, 9), rng.randint(1, 12), rng.randint(1, 28))
        valid_until = (
            None
            if years is None
            else date(valid_from.year + years, valid_from.month, valid_from.day)
        )
    return CardIdentity(
        name=name,
        sex=sex,
        ethnicity=rng.choice(_ETHNICITIES),
        birth_date=birth,
        address=address,
        id_number=make_id_number(region, birth, sequence, valid=valid_check_digit),
        issuing_authority=authority,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def _background(seed: int, tint: tuple[int, int, int]) -> Image.Image:
    """A pale card background with guilloche-like waves (OCR must ignore them)."""
    w, h = CARD_W, CARD_H
    _, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), np.float32)
    for c in range(3):
        base[:, :, c] = 246 - (246 - tint[c]) * (0.35 + 0.35 * x / w)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = random.Random(seed)
    for k in range(26):
        amp, period, phase = r.uniform(6, 18), r.uniform(90, 220), r.uniform(0, 6.3)
        y0 = k * h / 26
        pts = [
            (float(xx), float(y0 + amp * np.sin(xx / period * 6.283 + phase)))
            for xx in range(0, w, 6)
        ]
        draw.line(pts, fill=(206, 220, 226), width=1)
    return img


def _portrait_placeholder(size: tuple[int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, (236, 238, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.28, h * 0.12, w * 0.72, h * 0.58), fill=(150, 150, 155))
    d.ellipse((w * 0.08, h * 0.60, w * 0.92, h * 1.25), fill=(120, 120, 128))
    return img


def crop_portrait(photo: Frame, face_box: tuple[int, int, int, int]) -> Frame:
    """Crop an ID-photo framing (head and shoulders, 3:4) around a detected face box."""
    x, y, w, h = face_box
    cx, cy = x + w / 2, y + h * 0.55
    pw = w * 2.0
    ph = pw * 4 / 3
    x0, y0 = int(cx - pw / 2), int(cy - ph * 0.45)
    x1, y1 = int(x0 + pw), int(y0 + ph)
    padded = cv2.copyMakeBorder(photo, 400, 400, 400, 400, cv2.BORDER_REPLICATE)
    return padded[y0 + 400 : y1 + 400, x0 + 400 : x1 + 400].copy()


def draw_front(identity: CardIdentity, portrait: Frame | None = None, seed: int = 0) -> Frame:
    """The portrait side (人像面), laid out like a real card at 10 px/mm."""
    img = _background(seed, (214, 226, 236))
    d = ImageDraw.Draw(img)
    label, value, number = _font(_SANS, 25), _font(_SANS_BOLD, 29), _font(_SANS_BOLD, 33)
    d.text((56, 58), "姓  名", font=label, fill=LABEL_RGB)
    d.text((150, 54), identity.name, font=value, fill=TEXT_RGB)
    d.text((56, 124), "性  别", font=label, fill=LABEL_RGB)
    d.text((150, 120), identity.sex, font=value, fill=TEXT_RGB)
    d.text((236, 124), "民  族", font=label, fill=LABEL_RGB)
    d.text((330, 120), identity.ethnicity, font=value, fill=TEXT_RGB)
    d.text((56, 190), "出  生", font=label, fill=LABEL_RGB)
    b = identity.birth_date
    x = 150
    for part, is_label in (
        (f"{b.year}", False),
        ("年", True),
        (f"{b.month}", False),
        ("月", True),
        (f"{b.day}", False),
        ("日", True),
    ):
        font = label if is_label else value
        d.text(
            (x, 190 if is_label else 186), part, font=font, fill=LABEL_RGB if is_label else TEXT_RGB
        )
        x += int(d.textlength(part, font=font)) + 10
    d.text((56, 256), "住  址", font=label, fill=LABEL_RGB)
    per_line = 12
    for i in range(0, len(identity.address), per_line):
        d.text(
            (150, 252 + (i // per_line) * 42),
            identity.address[i : i + per_line],
            font=value,
            fill=TEXT_RGB,
        )
    d.text((56, 452), "公民身份号码", font=label, fill=LABEL_RGB)
    x = 290
    for ch in identity.id_number:
        d.text((x, 446), ch, font=number, fill=TEXT_RGB)
        x += int(d.textlength(ch, font=number)) + 4
    pw, ph = 232, 296
    if portrait is None:
        face = _portrait_placeholder((pw, ph))
    else:
        rgb = cv2.cvtColor(
            cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
        )
        face = Image.fromarray(rgb)
    img.paste(face, (582, 72))
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def draw_back(identity: CardIdentity, seed: int = 1) -> Frame:
    """The emblem side (国徽面)."""
    img = _background(seed, (226, 220, 236))
    d = ImageDraw.Draw(img)
    d.ellipse((44, 36, 184, 176), fill=(200, 40, 36))
    star = [
        (
            114 + 52 * np.cos(np.pi / 2 + k * 4 * np.pi / 5),
            106 - 52 * np.sin(np.pi / 2 + k * 4 * np.pi / 5),
        )
        for k in range(5)
    ]
    d.polygon([(float(px), float(py)) for px, py in star], fill=(250, 206, 40))
    title, big = _font(_SERIF_BOLD, 44), _font(_SERIF_BOLD, 62)
    d.text((250, 60), "中华人民共和国", font=title, fill=TEXT_RGB)
    x = 250
    for ch in "居民身份证":
        d.text((x, 140), ch, font=big, fill=TEXT_RGB)
        x += 84
    label, value = _font(_SANS, 25), _font(_SANS_BOLD, 29)
    d.text((150, 384), "签发机关", font=label, fill=LABEL_RGB)
    d.text((290, 380), identity.issuing_authority, font=value, fill=TEXT_RGB)
    d.text((150, 446), "有效期限", font=label, fill=LABEL_RGB)
    d.text((290, 442), identity.validity_text, font=value, fill=TEXT_RGB)
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


@dataclass(frozen=True)
class Degradation:
    """How a phone photo of a card differs from the card (all optional)."""

    rotate_deg: float = 0.0
    margin: float = 0.12  # background around the card, as a share of the card width
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    blur_sigma: float = 0.0
    # Share of the card (from the right) that falls outside the photo.
    crop_right: float = 0.0
    scale: float = 1.0
    seed: int = 0
    background_rgb: tuple[int, int, int] = field(default=(92, 74, 60))


def photograph(card: Frame, how: Degradation) -> Frame:
    """Place the card on a table, tilt it, and apply the camera's defects."""
    rng = np.random.default_rng(how.seed)
    h, w = card.shape[:2]
    m = int(w * how.margin)
    bg = np.empty((h + 2 * m, w + 2 * m, 3), np.uint8)
    bg[:] = how.background_rgb[::-1]
    bg = np.clip(
        bg.astype(np.int16) + rng.integers(-12, 12, bg.shape, dtype=np.int16), 0, 255
    ).astype(np.uint8)
    bg = cv2.GaussianBlur(bg, (7, 7), 0)
    mask = np.zeros(bg.shape[:2], np.uint8)
    mask[m : m + h, m : m + w] = 255
    bg[m : m + h, m : m + w] = card
    if how.rotate_deg:
        # Grow the canvas so the whole tilted card stays in the photo.
        bh, bw = bg.shape[:2]
        rot = cv2.getRotationMatrix2D((bw / 2, bh / 2), how.rotate_deg, 1.0)
        cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
        nw, nh = int(bh * sin + bw * cos), int(bh * cos + bw * sin)
        rot[0, 2] += nw / 2 - bw / 2
        rot[1, 2] += nh / 2 - bh / 2
        bg = cv2.warpAffine(bg, rot, (nw, nh), borderMode=cv2.BORDER_REFLECT)
    out = bg
    if how.crop_right > 0:
        cut = int(m + w * (1 - how.crop_right))
        out = out[:, :cut]
    if how.scale != 1.0:
        out = cv2.resize(out, None, fx=how.scale, fy=how.scale, interpolation=cv2.INTER_AREA)
    if how.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), how.blur_sigma)
    if how.noise_sigma > 0:
        noisy = out.astype(np.float32) + rng.normal(0, how.noise_sigma, out.shape)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    if how.jpeg_quality is not None:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, how.jpeg_quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert decoded is not None
        out = decoded
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------- liveness clips


Landmarks = NDArray[np.float64]


def turn_head(img: Frame, pts: Landmarks, angle_rad: float) -> Frame:
    """Rotate the head about a vertical axis by remapping it onto a cylinder.

    Points near the face centre (the nose) move by R·sin(angle) while the contour barely moves,
    which is what a real yaw does to the landmarks. Positive angles move the nose to image-right.
    """
    h, w = img.shape[:2]
    cx = (pts[0, 0] + pts[16, 0]) / 2
    r = (pts[16, 0] - pts[0, 0]) / 2 * 1.15
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    theta = np.arcsin(np.clip((xs - cx) / r, -1, 1))
    src = cx + r * np.sin(np.clip(theta - angle_rad, -np.pi / 2, np.pi / 2))
    fade = np.clip((np.abs(xs - cx) - r) / (0.3 * r), 0, 1)
    src = src * (1 - fade) + xs * fade
    top = pts[19, 1] - (pts[8, 1] - pts[19, 1]) * 0.8
    bottom = pts[8, 1] + (pts[8, 1] - pts[27, 1]) * 0.5
    vy = np.clip(np.minimum((ys - top + 40) / 40, (bottom + 40 - ys) / 40), 0, 1)[:, None]
    map_x = (src[None, :] * vy + xs[None, :] * (1 - vy)).astype(np.float32)
    map_y = np.repeat(ys[:, None], w, 1).astype(np.float32)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def close_eyes(img: Frame, pts: Landmarks) -> Frame:
    """Cover each eye with skin cloned from just below it and draw the closed lid line."""
    out = img.copy()
    for a in (36, 42):
        eye = pts[a : a + 6].astype(np.int32)
        x, y, w, h = cv2.boundingRect(eye)
        pad = int(h * 0.8) + 3
        x0, y0, x1, y1 = x - pad, y - pad, x + w + pad, y + h + pad
        dy = int((y1 - y0) * 1.1)
        patch = img[y0 + dy : y1 + dy, x0:x1]
        mask = np.zeros(patch.shape[:2], np.uint8)
        cv2.ellipse(mask, ((w / 2 + pad, h / 2 + pad), (w * 1.25, h * 2.4 + 4), 0), 255, -1)
        out = cv2.seamlessClone(
            patch, out, mask, (int((x0 + x1) / 2), int((y0 + y1) / 2)), cv2.NORMAL_CLONE
        )
        lid = np.array(
            [
                pts[a],
                pts[a + 1] * 0.3 + pts[a + 5] * 0.7,
                pts[a + 2] * 0.3 + pts[a + 4] * 0.7,
                pts[a + 3],
            ],
            np.int32,
        )
        cv2.polylines(out, [lid], False, (40, 30, 30), max(2, int(w * 0.08)), cv2.LINE_AA)
    return out


def open_mouth(img: Frame, pts: Landmarks, amount: float) -> Frame:
    """Drop the jaw by ``amount`` × mouth width and darken the gap as the mouth cavity."""
    h, w = img.shape[:2]
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    mouth_w = pts[54, 0] - pts[48, 0]
    mouth_cx = (pts[48, 0] + pts[54, 0]) / 2
    lip_y = (pts[62, 1] + pts[66, 1]) / 2
    drop = amount * mouth_w
    chin = pts[8, 1]
    jaw_half = (pts[12, 0] - pts[4, 0]) / 2
    wx = np.clip(1 - np.abs(xs - mouth_cx) / jaw_half, 0, 1) ** 0.7
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    below = np.clip(drop * (1 - (yy - chin - drop) / (0.6 * (chin - lip_y) + 1)), 0, drop)
    profile = np.where(yy < lip_y, 0, np.where(yy < chin + drop, drop, below))
    map_y = (yy - profile * wx[None, :]).astype(np.float32)
    out = cv2.remap(
        img, xx.astype(np.float32), map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    cavity = np.array(
        [
            pts[60],
            pts[61],
            pts[62],
            pts[63],
            pts[64],
            pts[65] + [0, drop],
            pts[66] + [0, drop],
            pts[67] + [0, drop],
        ],
        np.int32,
    )
    cv2.fillPoly(out, [cavity], (25, 20, 45), cv2.LINE_AA)
    return out


def jitter(
    img: Frame, rng: np.random.Generator, shift_px: float = 1.5, noise: float = 2.0
) -> Frame:
    """Camera shake and sensor noise, so consecutive frames are never byte-identical."""
    dx, dy = rng.normal(0, shift_px, 2)
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return np.clip(moved + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def selfie_frame(
    photo: Frame, face_box: tuple[int, int, int, int], size: tuple[int, int] = (480, 640)
) -> Frame:
    """Frame a face the way a phone's front camera does (portrait, face ~45% of the width)."""
    x, y, w, h = face_box
    out_w, out_h = size
    crop_w = w / 0.45
    crop_h = crop_w * out_h / out_w
    cx, cy = x + w / 2, y + h * 0.6
    x0, y0 = int(cx - crop_w / 2), int(cy - crop_h / 2)
    pad = int(max(crop_w, crop_h))
    padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[y0 + pad : y0 + pad + int(crop_h), x0 + pad : x0 + pad + int(crop_w)]
    return cv2.resize(
        crop, size, interpolation=cv2.INTER_AREA if crop_w > out_w else cv2.INTER_CUBIC
    )


def performing_clip(
    base: Frame,
    pts: Landmarks,
    challenges: list[str],
    fps: float = 10.0,
    seed: int = 0,
    lead_in_s: float = 0.8,
    pause_s: float = 0.5,
) -> list[tuple[float, Frame]]:
    """Frames in which the face in ``base`` performs ``challenges`` in order (unmirrored camera).

    ``pts`` are the 68 landmarks of ``base``. Each action ramps in, holds and ramps out the way a
    person does it; camera shake and noise make every frame different.
    """
    rng = np.random.default_rng(seed)
    dt = 1.0 / fps
    frames: list[Frame] = []

    def hold(img: Frame, seconds: float) -> None:
        for _ in range(max(1, round(seconds * fps))):
            frames.append(jitter(img, rng))

    hold(base, lead_in_s)
    for challenge in challenges:
        if challenge == "blink":
            closed = close_eyes(base, pts)
            hold(closed, 0.2)
        elif challenge in ("turn_left", "turn_right"):
            sign = 1.0 if challenge == "turn_left" else -1.0
            steps = [0.15, 0.3, 0.45, 0.55, 0.55, 0.55, 0.4, 0.2]
            for a in steps:
                frames.append(jitter(turn_head(base, pts, sign * a), rng))
        elif challenge == "open_mouth":
            for a in [0.2, 0.4, 0.6, 0.6, 0.6, 0.35, 0.15]:
                frames.append(jitter(open_mouth(base, pts, a), rng))
        else:
            raise ValueError(f"unknown challenge {challenge!r}")
        hold(base, pause_s)
    return [(round(i * dt, 4), f) for i, f in enumerate(frames)]


def still_clip(
    base: Frame, seconds: float, fps: float = 10.0, seed: int = 0
) -> list[tuple[float, Frame]]:
    """A photo held in front of the camera (or replayed as video): shake and noise, no action."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * fps))
    return [(round(i / fps, 4), jitter(base, rng)) for i in range(n)]


def paste(frame: Frame, patch: Frame, at: tuple[int, int], height: int) -> Frame:
    """Paste ``patch`` scaled to ``height`` px with its top-left corner at ``at`` (clipped)."""
    scale = height / patch.shape[0]
    p = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = frame.copy()
    x, y = at
    h = min(p.shape[0], out.shape[0] - y)
    w = min(p.shape[1], out.shape[1] - x)
    out[y : y + h, x : x + w] = p[:h, :w]
    return out

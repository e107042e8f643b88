"""What a flat photo cannot do (R-12, issue 15): 3-D parallax, eye texture, a mouth interior.

The landmark metrics of ``media.identity.landmarks`` (eye/mouth aspect ratios, a yaw proxy) are
moved just as well by a printed photo turned in front of the camera, by skin-coloured patches
pasted over its eyes or by a dark fill over its mouth. The measures here look at what those
tricks leave unchanged:

- **parallax**: every point of a flat photo moves by one planar homography, however the photo
  is turned; on a real head the nose tip stands ~3-4 cm in front of the eye corners and the
  face contour, so a turn moves it *further* than the homography fitted to the contour and the
  eye corners predicts. ``parallax`` is that excess, in the direction of the turn, over the
  inter-ocular distance;
- **relief**: a sheet bent about vertical lines (a print curved round a cylinder, or a photo
  remapped onto one by software) and turned about a vertical axis keeps every vertical column of
  the face in one image column, whatever the bend; on a head the nose tip stands in front of the
  nasion and the upper lip above and below it, so a turn carries it off their line.
  ``relief`` follows the *pixels* of those three points from the frontal frame (template
  matching), not the landmark model's placement: dlib's shape prior puts the nose tip of a
  warped photo where a real turned head would have it;
- **eyes**: an open eye has a dark iris against the sclera and the lids; a closed eye has lost
  that contrast but keeps a lash line (a dark, horizontal valley across the eye). A patch of
  skin has neither: ``eye_texture`` gives the patch's contrast and its lash-line depth, on a
  canonical patch aligned to the eye corners;
- **mouth**: an open mouth shows a cavity darker than the lips with teeth, tongue and shading
  inside; a uniform dark fill has no structure. ``mouth_interior`` gives the interior's
  darkness and its structure (the spread of the smoothed interior) and how much of the
  landmark opening is dark; and the spread *inside the dark core alone* (away from its edges),
  which a fill does not have even when misplaced lip landmarks put its edge inside the opening.

All functions take the 68 dlib landmarks in the coordinates of the image they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.imaging import Frame

Points = NDArray[np.float64]

# Points a homography is fitted on: the jaw contour and the four eye corners. On a flat photo
# they and the nose move together; on a head the nose stands out in front of them.
CONTOUR = tuple(range(0, 17))
EYE_CORNERS = (36, 39, 42, 45)
REFERENCE = CONTOUR + EYE_CORNERS
NOSE_TIP = 30
NOSE = (30, 31, 32, 33, 34, 35)


def inter_ocular(pts: Points) -> float:
    """Distance between the outer eye corners (36, 45)."""
    return float(np.linalg.norm(pts[45] - pts[36]))


@dataclass(frozen=True, slots=True)
class Parallax:
    """Nose movement the homography of the contour and eye corners does not explain.

    ``towards``: its component along the image x axis, signed so that positive is the way the
    nose moved (a flat photo gives ~0 either sign); ``magnitude``: its length; both over the
    inter-ocular distance of the frontal frame. ``contour_rms``: the fit's own residual on the
    reference points (a flat photo: landmark noise only).
    """

    towards: float
    magnitude: float
    contour_rms: float


def parallax(frontal: Points, turned: Points) -> Parallax | None:
    """Fit a homography frontal → turned on contour + eye corners; measure the nose's excess."""
    src = frontal[list(REFERENCE)].astype(np.float64)
    dst = turned[list(REFERENCE)].astype(np.float64)
    h, _ = cv2.findHomography(src, dst, 0)  # least squares over all 21 points
    if h is None:
        return None
    iod = inter_ocular(frontal)
    if iod < 1e-6:
        return None

    def project(p: Points) -> Points:
        q = np.hstack([p, np.ones((len(p), 1))]) @ h.T
        return np.asarray(q[:, :2] / q[:, 2:3], dtype=np.float64)

    fit_rms = float(np.sqrt(np.mean(np.sum((project(src) - dst) ** 2, axis=1)))) / iod
    nose_idx = list(NOSE)
    predicted = project(frontal[nose_idx])
    excess = turned[nose_idx] - predicted
    # The tip counts most; the nostrils (31-35) stand out less but add stability.
    weights = np.array([2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    mean_excess = (excess * weights[:, None]).sum(axis=0) / weights.sum()
    moved = (
        turned[NOSE_TIP, 0]
        - frontal[NOSE_TIP, 0]
        - ((turned[list(CONTOUR), 0] - frontal[list(CONTOUR), 0]).mean())
    )
    sign = 1.0 if moved >= 0 else -1.0
    return Parallax(
        towards=float(sign * mean_excess[0] / iod),
        magnitude=float(np.linalg.norm(mean_excess) / iod),
        contour_rms=fit_rms,
    )


# ---------------------------------------------------------------------------------- relief
NASION = 27
UPPER_LIP = 51
_TRACK_HALF = 0.14  # template half-size, over the inter-ocular distance
_TRACK_SEARCH = 0.2  # search radius around the landmark's own guess, same unit


@dataclass(frozen=True, slots=True)
class Relief:
    """How far the nose tip's pixels left the line through the nasion's and the upper lip's.

    ``towards``: the tip's distance from that line in the turned frame minus in the frontal one,
    over the frontal inter-ocular distance, positive in ``direction`` (the way the nose turned);
    ``match``: the weakest normalised correlation of the three template matches.
    """

    towards: float
    match: float


def _side(a: Points, tip: Points, b: Points) -> float:
    """Signed distance of ``tip`` from the line a→b; positive on image-right when a is above b."""
    d = b - a
    n = np.array([d[1], -d[0]]) / max(float(np.linalg.norm(d)), 1e-9)
    return float((tip - a) @ n)


def relief(
    frontal: Frame, frontal_pts: Points, turned: Frame, turned_pts: Points, direction: float
) -> Relief | None:
    """Follow the nasion (27), nose tip (30) and upper lip (51) from ``frontal`` into ``turned``.

    The turned frame is brought onto the frontal one by the affine fitted (least squares) on the
    contour and eye corners, then each point's frontal patch (0.28 × inter-ocular square) is
    matched within 0.2 × inter-ocular of where the landmarks of ``turned`` put it. ``direction``:
    +1 when the nose turned to image-right, -1 to image-left. None when a patch leaves the image.
    """
    iod = inter_ocular(frontal_pts)
    if iod < 1e-6:
        return None
    ref = list(REFERENCE)
    design = np.hstack([turned_pts[ref], np.ones((len(ref), 1))])
    to_frontal = np.linalg.lstsq(design, frontal_pts[ref], rcond=None)[0].T  # 2×3, turned → F
    half = max(3, round(iod * _TRACK_HALF))
    search = max(2, round(iod * _TRACK_SEARCH))
    keys = (NASION, NOSE_TIP, UPPER_LIP)
    guesses = np.hstack([turned_pts[list(keys)], np.ones((3, 1))]) @ to_frontal.T
    # Work on the three points' box only (frontal frame coordinates), grown by the template and
    # search margins: not the whole face's, whose chin or forehead a close-up selfie cuts off
    # (real video, testing/genuine_video.py: every turn then had no relief at all).
    pad = half + search + 2
    mid = frontal_pts[list(keys)]
    x0 = int(np.floor(min(mid[:, 0].min(), guesses[:, 0].min()))) - pad
    y0 = int(np.floor(min(mid[:, 1].min(), guesses[:, 1].min()))) - pad
    x1 = int(np.ceil(max(mid[:, 0].max(), guesses[:, 0].max()))) + pad
    y1 = int(np.ceil(max(mid[:, 1].max(), guesses[:, 1].max()))) + pad
    g_f = _gray(frontal)
    if x0 < 0 or y0 < 0 or x1 > g_f.shape[1] or y1 > g_f.shape[0]:
        return None
    size = (x1 - x0, y1 - y0)
    f_crop = cv2.GaussianBlur(g_f[y0:y1, x0:x1], (0, 0), 1.0)
    shifted = to_frontal.copy()
    shifted[:, 2] -= (x0, y0)
    t_crop = cv2.warpAffine(
        _gray(turned), shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    t_crop = cv2.GaussianBlur(t_crop, (0, 0), 1.0)
    found, scores = [], []
    for k, guess in zip(keys, guesses, strict=True):
        cx, cy = round(frontal_pts[k, 0]) - x0, round(frontal_pts[k, 1]) - y0
        gx, gy = round(guess[0]) - x0, round(guess[1]) - y0
        tpl = f_crop[cy - half : cy + half + 1, cx - half : cx + half + 1]
        top, left = gy - half - search, gx - half - search
        win = t_crop[top : gy + half + search + 1, left : gx + half + search + 1]
        if tpl.shape != (2 * half + 1, 2 * half + 1) or win.shape != (
            2 * (half + search) + 1,
            2 * (half + search) + 1,
        ):
            return None
        r = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
        _, best, _, (px, py) = cv2.minMaxLoc(r)
        found.append(
            np.array(
                [left + px + _peak(r, py, px, 1) + half, top + py + _peak(r, py, px, 0) + half]
            )
        )
        scores.append(float(best))
    f_keys = frontal_pts[list(keys)] - (x0, y0)
    before = _side(f_keys[0], f_keys[1], f_keys[2])
    after = _side(found[0], found[1], found[2])
    return Relief(towards=float(np.sign(direction) * (after - before) / iod), match=min(scores))


def _peak(r: NDArray[Any], py: int, px: int, axis: int) -> float:
    """Sub-pixel offset of the correlation peak along ``axis`` (1: x, 0: y), by a parabola."""
    if axis == 1:
        if not 0 < px < r.shape[1] - 1:
            return 0.0
        a, b, c = float(r[py, px - 1]), float(r[py, px]), float(r[py, px + 1])
    else:
        if not 0 < py < r.shape[0] - 1:
            return 0.0
        a, b, c = float(r[py - 1, px]), float(r[py, px]), float(r[py + 1, px])
    d = a - 2 * b + c
    return 0.0 if abs(d) < 1e-9 else 0.5 * (a - c) / d


# ---------------------------------------------------------------------------------- eyes
EYE_PATCH = (48, 20)  # canonical width × height of an eye patch


def _similarity_to_patch(
    a: Points, b: Points, size: tuple[int, int], margin: float
) -> NDArray[np.float64]:
    """2×3 similarity mapping corner ``a`` → (m, h/2) and corner ``b`` → (w - m, h/2)."""
    w, hgt = size
    m = w * margin
    src = np.array([a, b], dtype=np.float64)
    dst = np.array([[m, hgt / 2], [w - m, hgt / 2]], dtype=np.float64)
    # Solve for scale·rotation and translation from two point pairs.
    s_vec = src[1] - src[0]
    d_vec = dst[1] - dst[0]
    scale = float(np.linalg.norm(d_vec)) / max(float(np.linalg.norm(s_vec)), 1e-9)
    angle = np.arctan2(d_vec[1], d_vec[0]) - np.arctan2(s_vec[1], s_vec[0])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    t = dst[0] - rot @ src[0]
    return np.hstack([rot, t[:, None]])


def _gray(image: Frame) -> NDArray[np.float32]:
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(g, dtype=np.float32)


def eye_patches(image: Frame, pts: Points) -> list[NDArray[np.float32]]:
    """Both eyes warped onto 48×20 grey patches, corners at 20%/80% of the width, lid line
    horizontal through the middle."""
    gray = _gray(image)
    out = []
    for a, b in ((36, 39), (42, 45)):
        m = _similarity_to_patch(pts[a], pts[b], EYE_PATCH, margin=0.2)
        patch = cv2.warpAffine(
            gray, m, EYE_PATCH, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
        )
        out.append(np.asarray(patch, dtype=np.float32))
    return out


@dataclass(frozen=True, slots=True)
class EyeTexture:
    """Measures of the two eye patches (mean of both), over the patch's skin level (the median
    of its top and bottom rows).

    ``contrast``: the skin level minus the dark core (5th percentile of the middle of the patch):
    an open eye's iris and pupil, a closed eye's lashes. ``lash``: the deepest dark *valley* of
    the row profile of the patch's central band near the lid line (a row darker than the rows
    3 px above and below it): a closed eye's lash line. A skin patch has neither; its edge is a
    step, not a valley. ``gradient``: mean |vertical gradient| of the smoothed patch.
    """

    contrast: float
    lash: float
    gradient: float


def _eye_measures(p: NDArray[np.float32]) -> tuple[float, float, float]:
    smooth = cv2.GaussianBlur(p, (0, 0), 1.0)
    w, h = EYE_PATCH
    skin = float(np.median(np.concatenate([smooth[:3].ravel(), smooth[-3:].ravel()])))
    skin = max(skin, 1.0)
    core = smooth[int(h * 0.25) : int(h * 0.75), int(w * 0.2) : int(w * 0.8)]
    contrast = (skin - float(np.percentile(core, 5))) / skin
    rows = smooth[:, int(w * 0.3) : int(w * 0.7)].mean(axis=1)
    valley = max(
        float(min(rows[r - 3], rows[r + 3]) - rows[r])
        for r in range(int(h * 0.3), int(h * 0.7) + 1)
    )
    grad = float(np.abs(np.diff(smooth, axis=0)).mean()) / skin
    return contrast, valley / skin, grad


def eye_texture(image: Frame, pts: Points) -> EyeTexture:
    vals = np.array([_eye_measures(p) for p in eye_patches(image, pts)])
    c, lash, g = vals.mean(axis=0)
    return EyeTexture(contrast=float(c), lash=float(lash), gradient=float(g))


def eye_change(open_patches: list[NDArray[np.float32]], image: Frame, pts: Points) -> float:
    """1 - normalised correlation between the open-eye patches and this frame's (mean of both
    eyes): ~0 when the eye region looks the same, larger when the iris disappeared."""
    now = eye_patches(image, pts)
    scores = []
    for a, b in zip(open_patches, now, strict=True):
        x = cv2.GaussianBlur(a, (0, 0), 1.0).ravel()
        y = cv2.GaussianBlur(b, (0, 0), 1.0).ravel()
        x = x - x.mean()
        y = y - y.mean()
        denom = float(np.linalg.norm(x) * np.linalg.norm(y))
        scores.append(1.0 - (float(x @ y) / denom if denom > 1e-6 else 0.0))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------- mouth
INNER_LIPS = tuple(range(60, 68))
OUTER_LIPS = tuple(range(48, 60))


@dataclass(frozen=True, slots=True)
class MouthInterior:
    """Inside the inner-lip polygon (eroded by a pixel or two), compared with the lips around.

    ``darkness``: (lips' median - interior median) / lips' median; ``structure``: standard
    deviation of the interior after a Gaussian blur (σ = 1.5 % of the mouth width, which keeps
    teeth and tongue but averages sensor noise away) over the lips' median; ``dark_share``: the
    share of the interior darker than 80 % of the lips' median; ``area``: interior pixels;
    ``core_spread``: within the dark part of the opening eroded by 2 σ (so the edge of the dark
    region, wherever the landmarks put it, does not count), the 10-90 % percentile range of the
    smoothed image over the lips' median (0 when no such core): a cavity's tongue, teeth edges
    and shading, not a fill's noise.
    """

    darkness: float
    structure: float
    dark_share: float
    area: int
    core_spread: float


def mouth_interior(image: Frame, pts: Points) -> MouthInterior | None:
    gray = _gray(image)
    h, w = gray.shape
    inner = np.round(pts[list(INNER_LIPS)]).astype(np.int32)
    outer = np.round(pts[list(OUTER_LIPS)]).astype(np.int32)
    mask_in = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask_in, [inner], 255)
    width = float(np.linalg.norm(pts[54] - pts[48]))
    k = max(1, round(width * 0.03))
    mask_in = np.asarray(cv2.erode(mask_in, np.ones((2 * k + 1, 2 * k + 1), np.uint8)), np.uint8)
    mask_lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask_lips, [outer], 255)
    full_in = np.zeros((h, w), np.uint8)
    cv2.fillPoly(full_in, [inner], 255)
    mask_lips[cv2.dilate(full_in, np.ones((3, 3), np.uint8)) > 0] = 0
    area = int(np.count_nonzero(mask_in))
    if area < 12 or np.count_nonzero(mask_lips) < 12:
        return None
    sigma = max(0.8, width * 0.015)
    smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
    inside = smooth[mask_in > 0]
    lips = max(float(np.median(gray[mask_lips > 0])), 1.0)
    dark = ((smooth < 0.8 * lips) & (full_in > 0)).astype(np.uint8)
    e = max(1, round(2 * sigma))
    core = smooth[cv2.erode(dark, np.ones((2 * e + 1, 2 * e + 1), np.uint8)) > 0]
    spread = (
        float(np.percentile(core, 90) - np.percentile(core, 10)) / lips if core.size >= 12 else 0.0
    )
    return MouthInterior(
        darkness=(lips - float(np.median(inside))) / lips,
        structure=float(inside.std()) / lips,
        dark_share=float(np.mean(inside < 0.8 * lips)),
        area=area,
        core_spread=spread,
    )

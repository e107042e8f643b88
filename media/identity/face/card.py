"""The ID portrait straightened from the card's corners before it is matched (R-12).

A card photographed at a steep angle shows a face squeezed by the perspective; the 5-point
alignment of the face engine undoes rotation and scale within the image plane, not that. Here
the card's four corners are found in the photo, the card is warped back to its canonical
85.6 × 54 mm (856 × 540 px, 10 px/mm) and the portrait is cropped at its place in the layout.

``read_card_side`` (media/identity/idcard.py) gives the quarter turn that made the card upright
(``CardSideRead.rotation``) but no corners, so the corners are found here, on the photo turned
the same way: the card is the largest convex four-sided outline (edges, then brightness as a
fallback). When none is found, or no face is in the straightened portrait, the caller keeps the
OCR's own portrait crop.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from media.identity.imaging import Frame, limit_size, rotate_quarter

CARD_MM = (85.6, 54.0)
PX_PER_MM = 10.0
# The portrait area of the card front in mm (x0, y0, x1, y1), with a margin around the photo
# (GB 16739 layout: the photo sits right of the text, about 58–81 mm × 7–37 mm).
PORTRAIT_MM = (55.5, 4.0, 84.0, 40.0)
_ANALYSIS_SIDE = 640
_MIN_AREA_SHARE = 0.12

Quad = NDArray[np.float64]


def _order(quad: Quad) -> Quad:
    """Corners as top-left, top-right, bottom-right, bottom-left (image y down)."""
    c = quad.mean(axis=0)
    angles = np.arctan2(quad[:, 1] - c[1], quad[:, 0] - c[0])
    ring = quad[np.argsort(angles)]  # clockwise on screen, starting anywhere
    start = int(np.argmin(ring.sum(axis=1)))
    return np.roll(ring, -start, axis=0)


def _plausible(quad: Quad, area_total: float) -> bool:
    if not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return False
    if cv2.contourArea(quad.astype(np.float32)) < _MIN_AREA_SHARE * area_total:
        return False
    for i in range(4):
        a, b, c = quad[i - 1], quad[i], quad[(i + 1) % 4]
        u, v = a - b, c - b
        cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9))
        if abs(cos) > 0.8:  # corner angle outside ~37°–143°: not a card seen in perspective
            return False
    return True


def _quads_from_mask(mask: Frame, area_total: float) -> list[Quad]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in sorted(contours, key=cv2.contourArea, reverse=True)[:5]:
        if cv2.contourArea(contour) < _MIN_AREA_SHARE * area_total:
            break
        hull = cv2.convexHull(contour)
        perimeter = cv2.arcLength(hull, True)
        for eps in (0.02, 0.035, 0.05):
            approx = cv2.approxPolyDP(hull, eps * perimeter, True)
            if len(approx) == 4:
                quad = approx.reshape(4, 2).astype(np.float64)
                if _plausible(quad, area_total):
                    out.append(quad)
                break
    return out


def find_card_quad(image: Frame) -> Quad | None:
    """The card's four corners in ``image`` (TL, TR, BR, BL), or None."""
    small, scale = limit_size(image, _ANALYSIS_SIDE)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray, (5, 5), 0)
    area_total = float(gray.shape[0] * gray.shape[1])
    edges = cv2.Canny(gray, 40, 120)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    candidates = _quads_from_mask(edges, area_total)
    if not candidates:
        # A card on a plain table: the brighter (or darker) of the two Otsu classes.
        _, bright = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
        candidates = _quads_from_mask(bright, area_total) or _quads_from_mask(
            255 - bright, area_total
        )
    if not candidates:
        return None
    best = max(candidates, key=lambda q: cv2.contourArea(q.astype(np.float32)))
    return _order(best / scale)


def straighten_card(image: Frame, quad: Quad) -> Frame:
    """Warp the card quad onto the canonical 856 × 540 px card (landscape)."""
    # Seen in steep perspective the card may look taller than wide; the OCR's quarter turn
    # already made the text upright, so the top-left corner is the card's top-left.
    quad = _order(np.asarray(quad, np.float64))
    w, h = round(CARD_MM[0] * PX_PER_MM), round(CARD_MM[1] * PX_PER_MM)
    target = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


def portrait_from_card(card: Frame) -> Frame:
    """The portrait area of a straightened card front."""
    x0, y0, x1, y1 = (round(v * PX_PER_MM) for v in PORTRAIT_MM)
    return card[y0:y1, x0:x1].copy()


def straightened_portrait(photo: Frame, rotation: int = 0) -> Frame | None:
    """The portrait of the card front in ``photo``, straightened from the card's corners.

    ``rotation`` is ``CardSideRead.rotation``: the quarter turn the OCR applied to read the card.
    """
    upright = rotate_quarter(photo, rotation)
    quad = find_card_quad(upright)
    if quad is None:
        return None
    return portrait_from_card(straighten_card(upright, quad))

"""Face masks in aligned-crop coordinates.

A mask is a float32 ``size`` x ``size`` array in [0, 1]: 1 over what identifies a
person (skin, brows, eyes, nose, mouth; by default the face-mesh oval, hair and
background excluded), ramping down to exactly 0 over a feather band just outside it.
Values are multiples of 1/255, so ``np.rint(mask * 255).astype(np.uint8)`` stores a
mask losslessly (``mask_to_uint8`` / ``mask_from_uint8``).

Without a mesh, an ellipse fitted to the 5 landmarks stands in; ``default_mask`` is that
ellipse for the canonical landmarks of an FFHQ-aligned crop (see ``align.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from faceveil.errors import UsageError
from faceveil.faces.align import AlignTransform, transform_points

if TYPE_CHECKING:  # pragma: no cover
    from faceveil.faces.detect import Face

__all__ = [
    "FACE_OVAL",
    "INCLUDE_OPTIONS",
    "CANONICAL_LANDMARKS5",
    "default_mask",
    "default_outline",
    "face_mask",
    "face_outline",
    "outline_alpha",
    "mask_from_uint8",
    "mask_to_uint8",
]

#: MediaPipe ``FACEMESH_FACE_OVAL`` as an ordered closed polygon (forehead top first).
FACE_OVAL = (
    10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
    152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338,
)

#: ``"face"``: skin, brows, eyes, nose, mouth (hair, ears, background excluded);
#: ``"face+hair"``: also forehead/hairline, hair above the face and the ears.
INCLUDE_OPTIONS = ("face", "face+hair")

#: Mean 5 landmarks of FFHQ-aligned crops (fractions of the crop side), measured with
#: ``detect_faces`` + ``align_face`` on 117 LFW photos, made left-right symmetric.
CANONICAL_LANDMARKS5 = np.array(
    [[0.3782, 0.4737], [0.6218, 0.4737], [0.5000, 0.6330], [0.3945, 0.7374], [0.6055, 0.7374]],
    dtype=np.float64,
)

#: The face outline above the eyes is stretched this much (capped to stay inside the crop): the mesh
#: oval stops at mid-forehead, and the strip of original forehead it left under the hairline showed
#: as a band above every new face (docs/images, TRAINING.md "The forehead band").
FOREHEAD = 1.4

_MARGIN = 0.015  # full-strength margin outside the outline (fraction of size)
_FEATHER = 0.035  # width of the soft ramp outside that margin (fraction of size)


def outline_alpha(
    points: np.ndarray, bounds: tuple[int, int, int, int], margin: float, feather: float, quantize: bool = True
) -> np.ndarray:
    """Feathered fill of a closed polygon on the pixel centres of ``bounds`` (y0, y1, x0, x1).

    Exact geometry in float64 (no rasteriser rounding): alpha is 1 inside the polygon
    and within ``margin`` of it, then falls smoothly (smoothstep) to exactly 0 over
    ``feather``. Any pixel grid works, so the same outline gives a crop mask on the
    model's grid and a smooth paste alpha on the photo's own grid. ``quantize`` rounds
    to multiples of 1/255 (what a crop mask stores).
    """
    poly = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    y0, y1, x0, x1 = bounds
    out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.float64)
    if out.size == 0 or len(poly) < 3:
        return out
    reach = margin + feather
    bx0 = max(x0, int(np.floor(poly[:, 0].min() - reach)))
    bx1 = min(x1, int(np.ceil(poly[:, 0].max() + reach)) + 1)
    by0 = max(y0, int(np.floor(poly[:, 1].min() - reach)))
    by1 = min(y1, int(np.ceil(poly[:, 1].max() + reach)) + 1)
    if bx1 <= bx0 or by1 <= by0:
        return out
    py = np.arange(by0, by1, dtype=np.float64)[:, None]
    px = np.arange(bx0, bx1, dtype=np.float64)[None, :]
    dist2 = np.full((by1 - by0, bx1 - bx0), np.inf)
    inside = np.zeros(dist2.shape, dtype=bool)
    nxt = np.roll(poly, -1, axis=0)
    for (ax, ay), (bx, by) in zip(poly, nxt):
        ex, ey = bx - ax, by - ay
        len2 = ex * ex + ey * ey
        if len2 > 0:
            t = np.clip(((px - ax) * ex + (py - ay) * ey) / len2, 0.0, 1.0)
        else:
            t = np.zeros(dist2.shape)
        dx = px - (ax + t * ex)
        dy = py - (ay + t * ey)
        np.minimum(dist2, dx * dx + dy * dy, out=dist2)
        # even-odd crossing test of a ray towards +x
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = ax + (py - ay) * ex / (ey if ey != 0 else 1.0)
        inside ^= crosses & (px < xcross)
    d_out = np.where(inside, 0.0, np.sqrt(dist2))
    t = np.clip((reach - d_out) / max(feather, 1e-9), 0.0, 1.0)
    alpha = t * t * (3.0 - 2.0 * t)  # smoothstep
    if quantize:
        alpha = np.rint(alpha * 255.0) / 255.0
    out[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = alpha
    return out


def outline_reach(size: int) -> tuple[float, float]:
    """(margin, feather) in crop pixels of a ``size`` crop."""
    return max(1.0, _MARGIN * size), max(1.0, _FEATHER * size)


def _outline_alpha(points: np.ndarray, size: int) -> np.ndarray:
    """The crop mask of an outline (float32 ``size`` x ``size``, multiples of 1/255)."""
    margin, feather = outline_reach(size)
    return outline_alpha(points, (0, size, 0, size), margin, feather).astype(np.float32)


def _face_frame(lm_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Eye midpoint, unit 'right' and 'down' axes, eye distance, eye-mouth distance."""
    eye_avg = (lm_crop[0] + lm_crop[1]) / 2.0
    mouth_avg = (lm_crop[3] + lm_crop[4]) / 2.0
    e2e = lm_crop[1] - lm_crop[0]
    e2m = mouth_avg - eye_avg
    d_eye = float(np.hypot(*e2e))
    d_em = float(np.hypot(*e2m))
    if d_eye <= 0 or d_em <= 0:
        raise UsageError("degenerate landmarks: cannot build a face mask")
    right = e2e / d_eye
    down = np.array([-right[1], right[0]])
    if np.dot(down, e2m) < 0:  # mirrored landmarks: follow the mouth
        down = -down
    return eye_avg, right, down, d_eye, d_em


def _ellipse_points(lm_crop: np.ndarray, n: int = 72) -> np.ndarray:
    """Face outline approximated by an ellipse fitted to 5 landmarks (crop coords)."""
    eye_avg, right, down, d_eye, d_em = _face_frame(lm_crop)
    # Fitted to face-mesh ovals on LFW (mean IoU 0.83), then rounded slightly outward.
    top = -0.95 * d_em  # forehead (mesh point 10) above the eyes
    bottom = 1.75 * d_em  # chin below the mouth
    centre = eye_avg + down * (top + bottom) / 2.0
    ry = (bottom - top) / 2.0
    rx = 1.2 * d_eye
    ang = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return centre + np.outer(np.cos(ang) * rx, right) + np.outer(np.sin(ang) * ry, down)


def _with_forehead(outline: np.ndarray, lm_crop: np.ndarray, size: int) -> np.ndarray:
    """``outline`` with its part above the eyes stretched up by :data:`FOREHEAD`, less where the
    stretched outline and its feathered edge would leave the crop's top."""
    eye, right, down, _, _ = _face_frame(lm_crop)
    rel = outline - eye
    u, v = rel @ right, rel @ down
    above = v < 0
    stretch = FOREHEAD
    reach = sum(outline_reach(size)) + 0.5
    rising = above & (v * down[1] < 0)  # points whose crop y falls as they are stretched
    if rising.any():
        base = outline[rising, 1]  # y at a stretch of 1; y(k) = base + (k - 1) * v * down_y
        slope = v[rising] * down[1]
        stretch = min(stretch, float(np.min(1.0 + (reach - base) / slope)))
    stretch = max(1.0, stretch)
    v = np.where(above, v * stretch, v)
    return eye + np.outer(u, right) + np.outer(v, down)


def _with_hair(outline: np.ndarray, lm_crop: np.ndarray) -> np.ndarray:
    """Convex outline also covering the ears and the hair above the face."""
    _, right, down, _, _ = _face_frame(lm_crop)
    centre = outline.mean(axis=0)
    rel = outline - centre
    u = rel @ right
    v = rel @ down
    height = float(v.max() - v.min())
    wide = centre + np.outer(u * 1.18, right) + np.outer(v * 1.05, down)  # ears, jaw
    up = centre + np.outer(u * 1.12, right) + np.outer(v * 1.0 - 0.32 * height, down)  # hair
    pts = np.concatenate([outline, wide, up]).astype(np.float32)
    return cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)


def _check(include: str) -> None:
    if include not in INCLUDE_OPTIONS:
        raise UsageError(f"unknown mask option {include!r}; choose one of {', '.join(INCLUDE_OPTIONS)}")


def face_outline(face: Face | np.ndarray, transform: AlignTransform, include: str = "face") -> np.ndarray:
    """Closed outline (N x 2 float64, crop coordinates) of what the mask of ``face`` covers.

    ``face`` is a :class:`~faceveil.faces.detect.Face` (its mesh oval is used when
    present, else an ellipse fitted to its 5 landmarks) or a 5x2 landmark array in
    image coordinates. Above the eyes the outline reaches towards the hairline (:data:`FOREHEAD`).
    """
    _check(include)
    mesh = getattr(face, "mesh", None)
    lm = np.asarray(getattr(face, "landmarks5", face), dtype=np.float64)
    if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
        raise UsageError("face mask needs a Face or a finite 5x2 landmark array")
    lm_crop = transform_points(lm, transform.matrix)
    if mesh is not None and np.asarray(mesh).shape[0] > max(FACE_OVAL):
        outline = transform_points(np.asarray(mesh, dtype=np.float64)[list(FACE_OVAL)], transform.matrix)
    else:
        outline = _ellipse_points(lm_crop)
    outline = _with_forehead(outline, lm_crop, transform.size)
    if include == "face+hair":
        outline = _with_hair(outline, lm_crop)
    return np.asarray(outline, dtype=np.float64)


def face_mask(
    face: Face | np.ndarray, transform: AlignTransform, include: str = "face"
) -> np.ndarray:
    """Mask of ``face`` in the crop of ``transform`` (float32 ``size`` x ``size``, [0, 1])."""
    return _outline_alpha(face_outline(face, transform, include), transform.size)


def default_outline(size: int, include: str = "face") -> np.ndarray:
    """Outline for an already FFHQ-aligned ``size`` crop with no landmarks: a centred ellipse."""
    _check(include)
    size = int(size)
    if size <= 0:
        raise UsageError(f"mask size must be positive, got {size}")
    lm_crop = CANONICAL_LANDMARKS5 * size - 0.5  # fractions of the side -> pixel centres
    outline = _ellipse_points(lm_crop)
    if include == "face+hair":
        outline = _with_hair(outline, lm_crop)
    return np.asarray(outline, dtype=np.float64)


def default_mask(size: int, include: str = "face") -> np.ndarray:
    """Mask for an already FFHQ-aligned ``size`` crop with no landmarks: a centred ellipse."""
    return _outline_alpha(default_outline(size, include), int(size))


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Lossless uint8 form of a mask made here (values are multiples of 1/255)."""
    return np.rint(np.clip(np.asarray(mask, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def mask_from_uint8(mask_u8: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mask_to_uint8` (bit-exact for masks made here)."""
    return (np.asarray(mask_u8, dtype=np.uint8).astype(np.float64) / 255.0).astype(np.float32)

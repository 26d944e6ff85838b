"""How much fine detail a new face carries, against the original face at the same place.

The measure is band-pass energy (a difference of Gaussians, sigma 1 and 3 px) inside the
replaced region, with the region's box scaled to 256 px so that faces of every size are read
alike. A real face scores near 1 against its own photo, a Gaussian blur of it about 0.01.
``benchmarks/face_quality.py`` reports it as "detail"; the pipeline's redraws use it to catch a
face drawn much smoother than the photo's (``DiffusionModel.detail_floor``).
"""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 256  # px: the region's box is scaled so that its longer side is this long
INSIDE = 0.9  # the replaced region's alpha above which a pixel counts
ERODE = 9  # px at SIDE: the outline's edge, where old and new pixels mix, is left out
MIN_PIXELS = 100  # fewer pixels inside: no figure


def band_energy(grey: np.ndarray, inside: np.ndarray) -> float:
    """Mean squared difference of Gaussians (sigma 1 and 3) of ``grey`` where ``inside``."""
    dog = cv2.GaussianBlur(grey, (0, 0), 1.0) - cv2.GaussianBlur(grey, (0, 0), 3.0)
    return float(np.mean(dog[inside] ** 2))


def detail_ratio(original: np.ndarray, new: np.ndarray, alpha: np.ndarray) -> float:
    """Band-pass energy of ``new`` over ``original`` (RGB crops of one box, H x W x 3) where
    ``alpha`` (H x W, the replaced region's) exceeds :data:`INSIDE`; NaN for too small a region."""
    h, w = alpha.shape[:2]
    scale = SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def grey(rgb: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return cv2.resize(g, size, interpolation=cv2.INTER_CUBIC)

    inside = cv2.resize(alpha.astype(np.float32), size) > INSIDE
    inside = cv2.erode(inside.astype(np.uint8), np.ones((ERODE, ERODE), np.uint8)) > 0
    if inside.sum() < MIN_PIXELS:
        return float("nan")
    return band_energy(grey(new), inside) / max(band_energy(grey(original), inside), 1e-9)


def region_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the pixels where ``alpha`` exceeds 0.5: the box the ratio is read in."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1

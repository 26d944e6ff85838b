"""Visible treatments of a face region: pixelate, blur, solid fill.

Each replaces the pixels of a :class:`~faceveil.faces.paste.FaceRegion` with something
that no longer shows who it was, blended by the region's alpha (the feathered edge), so
the same region machinery as the model's paste decides which pixels may change. None of
them has to be inverted: the pipeline seals the original region (lossless) and recovery
copies it back, so recovery is exact and needs no model. The layer is a pure function of
the pixels (float64 NumPy and OpenCV on float64), but recovery never recomputes it.
"""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.errors import UsageError
from faceveil.faces.paste import FaceRegion

__all__ = ["MODEL", "VISIBLE", "STYLES", "FALLBACKS", "DEFAULT_FALLBACK", "visible_layer", "apply_visible"]

MODEL = "model"  # a face's treatment when the diffusion model replaces it (the header's word)
VISIBLE = ("pixelate", "blur", "solid")
STYLES = ("face", *VISIBLE)  # --style: "face" is the model
FALLBACKS = (MODEL, *VISIBLE)  # --fallback: what a face the model path cannot take gets
DEFAULT_FALLBACK = "pixelate"
PIXEL_BLOCKS = 8  # pixelation blocks across the region's longer side (deface's mosaic is coarser than 10)
BLUR_BLOCKS = 6  # Gaussian blur sigma = the region's longer side / this: features merge into a smear
SOLID_RGB = (0, 0, 0)  # solid fill colour: black, as deface's "solid"


def _check(treatment: str) -> None:
    if treatment not in VISIBLE:
        raise UsageError(f"unknown visible treatment {treatment!r}; choose one of {', '.join(VISIBLE)}")


def _pixelate(box: np.ndarray) -> np.ndarray:
    """Block means over a grid of about ``PIXEL_BLOCKS`` blocks across the longer side."""
    h, w = box.shape[:2]
    block = max(1, -(-max(h, w) // PIXEL_BLOCKS))
    ny, nx = -(-h // block), -(-w // block)
    padded = np.pad(box, ((0, ny * block - h), (0, nx * block - w), (0, 0)), mode="edge")
    means = padded.reshape(ny, block, nx, block, 3).mean(axis=(1, 3))
    return np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:h, :w]


def _blur(box: np.ndarray) -> np.ndarray:
    """A heavy Gaussian blur (sigma a sixth of the region's side), reflected at the box's edges."""
    sigma = max(1.0, max(box.shape[:2]) / BLUR_BLOCKS)
    return cv2.GaussianBlur(box, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def visible_layer(image: np.ndarray, region: FaceRegion, treatment: str) -> np.ndarray:
    """What ``treatment`` puts on the region's pixels (K x 3 float64, the region's ``inside`` order)."""
    _check(treatment)
    y0, y1, x0, x1 = region.bounds
    box = np.asarray(image[y0:y1, x0:x1, :3], dtype=np.float64)
    if treatment == "pixelate":
        out = _pixelate(box)
    elif treatment == "blur":
        out = _blur(box)
    else:
        out = np.broadcast_to(np.asarray(SOLID_RGB, np.float64), box.shape)
    return np.asarray(out)[region.inside]


def apply_visible(image: np.ndarray, region: FaceRegion, treatment: str) -> np.ndarray:
    """A copy of ``image`` (H x W x 3 uint8) with the region replaced by ``treatment``, blended by its alpha."""
    y0, y1, x0, x1 = region.bounds
    inside = region.inside
    a = region.alpha[inside][:, None]
    old = image[y0:y1, x0:x1][inside].astype(np.float64)
    new = a * visible_layer(image, region, treatment) + (1.0 - a) * old
    out = np.array(image, dtype=np.uint8, copy=True)
    out[y0:y1, x0:x1][inside] = np.clip(np.rint(new), 0, 255).astype(np.uint8)
    return out

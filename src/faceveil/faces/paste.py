"""Paste an aligned crop back into its photo, only inside the face region.

The region is the face outline (crop coordinates) mapped into the image and filled
and feathered there, on the photo's own pixel grid (:func:`outline_region`); the crop
reaches the photo through bicubic resampling (:func:`sample_crop`) and is blended in by
that alpha (:func:`blend_region`). Everything is float64 NumPy (no SIMD-dependent
library warps), so recovery recomputes it exactly from the header. Every pixel outside
the region is left bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceveil.errors import UsageError
from faceveil.faces.align import AlignTransform

__all__ = ["FaceRegion", "blend_region", "crop_coordinates", "outline_region", "paste_crop", "sample_crop", "sampled_cells"]


def _image_hw(image_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(image_shape) < 2 or image_shape[0] < 1 or image_shape[1] < 1:
        raise UsageError(f"invalid image shape {tuple(image_shape)}")
    return int(image_shape[0]), int(image_shape[1])


_CHUNK_PIXELS = 1 << 20  # bound memory on big photos


@dataclass(frozen=True)
class FaceRegion:
    """The paste alpha of one face on the photo's own pixel grid.

    ``alpha`` covers the box ``bounds`` = (y0, y1, x0, x1) of the image; it is the face
    outline filled and feathered in image pixels (not on the model's grid), so its
    edge is smooth at any face size. Pixels where ``alpha`` is 0 are never changed.
    """

    bounds: tuple[int, int, int, int]
    alpha: np.ndarray  # float64 (y1 - y0, x1 - x0)

    @property
    def inside(self) -> np.ndarray:
        """Boolean box of the pixels that may change."""
        return self.alpha > 0.0

    def full(self, image_shape: tuple[int, ...]) -> np.ndarray:
        """Boolean H x W mask of the pixels that may change."""
        h, w = _image_hw(image_shape)
        y0, y1, x0, x1 = self.bounds
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = self.inside
        return out


def outline_region(image_shape: tuple[int, ...], transform: AlignTransform, outline: np.ndarray) -> FaceRegion:
    """The :class:`FaceRegion` of a face outline given in crop coordinates.

    The margin and feather are the crop mask's (``mask.outline_reach``), scaled to image
    pixels, so the photo sees the same shape as the model, only smooth.
    """
    from faceveil.faces.mask import outline_alpha, outline_reach

    h, w = _image_hw(image_shape)
    inv = transform.inverse()
    poly = np.asarray(outline, dtype=np.float64).reshape(-1, 2) @ inv[:, :2].T + inv[:, 2]
    if len(poly) < 3:  # no area: nothing may change
        return FaceRegion((0, 0, 0, 0), np.zeros((0, 0)))
    margin, feather = (v / transform.scale for v in outline_reach(transform.size))
    reach = margin + feather
    x0 = max(0, int(np.floor(poly[:, 0].min() - reach)))
    x1 = min(w, int(np.ceil(poly[:, 0].max() + reach)) + 1)
    y0 = max(0, int(np.floor(poly[:, 1].min() - reach)))
    y1 = min(h, int(np.ceil(poly[:, 1].max() + reach)) + 1)
    x1, y1 = max(x0, x1), max(y0, y1)
    alpha = outline_alpha(poly, (y0, y1, x0, x1), margin, feather, quantize=False)
    return FaceRegion((y0, y1, x0, x1), alpha)


def _cubic_weights(f: np.ndarray) -> list[np.ndarray]:
    """Keys cubic convolution weights (a = -0.5) for taps -1, 0, 1, 2 at fraction ``f``."""
    a = -0.5

    def near(t: np.ndarray) -> np.ndarray:  # |t| <= 1
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0

    def far(t: np.ndarray) -> np.ndarray:  # 1 < |t| < 2
        return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a

    return [far(1.0 + f), near(f), near(1.0 - f), far(2.0 - f)]


def crop_coordinates(transform: AlignTransform, bounds: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop coordinates (u, v) of the image pixel centres in ``bounds``."""
    y0, y1, x0, x1 = bounds
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    m = transform.matrix
    return m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]


def sample_crop(crop: np.ndarray, transform: AlignTransform, region: FaceRegion) -> np.ndarray:
    """Bicubic samples of ``crop`` (S x S x C) at the region's pixels: (K, C) float64.

    Smooth resampling from the model's grid to the photo's (no blocks); edges clamp.
    Pure float64 NumPy, so both directions compute the same values bit for bit.
    """
    src = np.asarray(crop, dtype=np.float64)
    n = transform.size
    if src.shape[:2] != (n, n) or src.ndim not in (2, 3):
        raise UsageError(f"crop shape {src.shape} does not fit transform size {n}")
    u, v = crop_coordinates(transform, region.bounds)
    inside = region.inside
    u, v = u[inside], v[inside]
    out = np.zeros((u.size,) + src.shape[2:], dtype=np.float64)
    step = _CHUNK_PIXELS // 4
    for k0 in range(0, u.size, step):
        uu, vv = u[k0 : k0 + step], v[k0 : k0 + step]
        iu, iv = np.floor(uu), np.floor(vv)
        wu, wv = _cubic_weights(uu - iu), _cubic_weights(vv - iv)
        iu, iv = iu.astype(np.int64), iv.astype(np.int64)
        acc = np.zeros((uu.size,) + src.shape[2:], dtype=np.float64)
        for j in range(4):
            rows = np.clip(iv + j - 1, 0, n - 1)
            line = np.zeros_like(acc)
            for i in range(4):
                cols = np.clip(iu + i - 1, 0, n - 1)
                w = wu[i] if src.ndim == 2 else wu[i][:, None]
                line += w * src[rows, cols]
            acc += (wv[j] if src.ndim == 2 else wv[j][:, None]) * line
        out[k0 : k0 + step] = acc
    return out


def sampled_cells(transform: AlignTransform, region: FaceRegion) -> np.ndarray:
    """Boolean S x S: the crop pixels that :func:`sample_crop` reads for the region."""
    n = transform.size
    u, v = crop_coordinates(transform, region.bounds)
    inside = region.inside
    iu = np.floor(u[inside]).astype(np.int64)
    iv = np.floor(v[inside]).astype(np.int64)
    cells = np.zeros((n, n), dtype=bool)
    for j in range(-1, 3):
        for i in range(-1, 3):
            cells[np.clip(iv + j, 0, n - 1), np.clip(iu + i, 0, n - 1)] = True
    return cells


def blend_region(image: np.ndarray, layer: np.ndarray, region: FaceRegion) -> np.ndarray:
    """``image`` with ``layer`` (K x C samples from :func:`sample_crop`) blended in by alpha.

    Integer images are rounded and clipped; only the region's pixels change.
    """
    img = np.asarray(image)
    if np.shape(layer)[1:] != img.shape[2:]:
        raise UsageError(f"layer shape {np.shape(layer)} does not fit image shape {img.shape}")
    out = img.copy()
    y0, y1, x0, x1 = region.bounds
    inside = region.inside
    if not inside.any():
        return out
    a = region.alpha[inside]
    if img.ndim == 3:
        a = a[:, None]
    base = img[y0:y1, x0:x1][inside].astype(np.float64)
    blended = layer * a + base * (1.0 - a)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    sub = out[y0:y1, x0:x1]
    sub[inside] = blended.astype(img.dtype)
    return out


def paste_crop(image: np.ndarray, crop: np.ndarray, transform: AlignTransform, outline: np.ndarray) -> np.ndarray:
    """``image`` with ``crop`` resampled into the region of ``outline`` (a copy; the input is untouched)."""
    region = outline_region(np.asarray(image).shape, transform, outline)
    return blend_region(image, sample_crop(crop, transform, region), region)

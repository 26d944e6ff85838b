"""Paste an aligned crop back into its photo, only inside the face region.

The region is the set of image pixels where the crop mask, warped into the image with
the inverse of the alignment transform (bilinear, zero outside the crop), is > 0. It
depends only on ``(image shape, transform, crop mask)`` and is computed in float64
NumPy (no SIMD-dependent library warps), so recovery can recompute it exactly from
the header. Every pixel outside the region is left bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceveil.errors import UsageError
from faceveil.faces.align import AlignTransform

__all__ = [
    "FaceRegion", "blend_region", "outline_region", "paste_back", "region_bounds", "region_mask",
    "sample_crop", "sampled_cells", "warp_to_image",
]


def _image_hw(image_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(image_shape) < 2 or image_shape[0] < 1 or image_shape[1] < 1:
        raise UsageError(f"invalid image shape {tuple(image_shape)}")
    return int(image_shape[0]), int(image_shape[1])


def region_bounds(image_shape: tuple[int, ...], transform: AlignTransform) -> tuple[int, int, int, int]:
    """Image rows/cols ``(y0, y1, x0, x1)`` that the crop can reach (half-open, clipped).

    Bilinear sampling gives weight to crop pixels only for crop coordinates in
    ``(-1, size)``; this box covers the inverse image of that square.
    """
    h, w = _image_hw(image_shape)
    n = transform.size
    corners = np.array([[-1.0, -1.0], [n, -1.0], [n, n], [-1.0, n]], dtype=np.float64)
    inv = transform.inverse()
    pts = corners @ inv[:, :2].T + inv[:, 2]
    x0 = int(np.floor(pts[:, 0].min())) - 1
    x1 = int(np.ceil(pts[:, 0].max())) + 2
    y0 = int(np.floor(pts[:, 1].min())) - 1
    y1 = int(np.ceil(pts[:, 1].max())) + 2
    x0, x1 = max(0, min(w, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h, y0)), max(0, min(h, y1))
    return y0, y1, x0, x1


def _sample(src: np.ndarray, transform: AlignTransform, bounds: tuple[int, int, int, int]) -> np.ndarray:
    """Bilinear samples of ``src`` (size x size [x C], float64) at the crop coordinates
    of the image pixels in ``bounds``; zero outside the crop."""
    y0, y1, x0, x1 = bounds
    n = transform.size
    src = np.asarray(src, dtype=np.float64)
    chans = src.shape[2:] if src.ndim == 3 else ()
    out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)) + tuple(chans), dtype=np.float64)
    if y1 <= y0 or x1 <= x0:
        return out
    # zero-padded source so that indices -1 and n read 0
    pad = np.zeros((n + 2, n + 2) + tuple(chans), dtype=np.float64)
    pad[1:-1, 1:-1] = src
    rows = max(1, _CHUNK_PIXELS // (x1 - x0))  # bound memory on big photos
    for r0 in range(y0, y1, rows):
        r1 = min(y1, r0 + rows)
        out[r0 - y0 : r1 - y0] = _sample_block(pad, n, chans, transform.matrix, (r0, r1, x0, x1))
    return out


_CHUNK_PIXELS = 1 << 20


def _sample_block(
    pad: np.ndarray, n: int, chans: tuple[int, ...], m: np.ndarray, bounds: tuple[int, int, int, int]
) -> np.ndarray:
    y0, y1, x0, x1 = bounds
    ys, xs = np.mgrid[y0:y1, x0:x1]
    xs = xs.astype(np.float64)
    ys = ys.astype(np.float64)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = (u > -1.0) & (u < n) & (v > -1.0) & (v < n)
    u = np.where(inside, u, -1.0)
    v = np.where(inside, v, -1.0)
    iu = np.floor(u)
    iv = np.floor(v)
    fu = u - iu
    fv = v - iv
    iu = iu.astype(np.int64) + 1
    iv = iv.astype(np.int64) + 1
    iu = np.clip(iu, 0, n)  # after the 'inside' test only the clamp-to-pad remains
    iv = np.clip(iv, 0, n)
    if chans:
        fu = fu[..., None]
        fv = fv[..., None]
    top = pad[iv, iu] * (1.0 - fu) + pad[iv, iu + 1] * fu
    bot = pad[iv + 1, iu] * (1.0 - fu) + pad[iv + 1, iu + 1] * fu
    val = top * (1.0 - fv) + bot * fv
    if chans:
        val[~inside] = 0.0
    else:
        val = np.where(inside, val, 0.0)
    return val


def _check_mask(crop_mask: np.ndarray, transform: AlignTransform) -> np.ndarray:
    mask = np.asarray(crop_mask)
    if mask.shape != (transform.size, transform.size):
        raise UsageError(
            f"crop mask shape {mask.shape} does not match the crop size {transform.size}"
        )
    if mask.dtype == np.uint8:  # same values as mask.mask_from_uint8 (float32 k/255)
        mask = (mask.astype(np.float64) / 255.0).astype(np.float32)
    mask = np.asarray(mask, dtype=np.float64)
    if not np.all(np.isfinite(mask)):
        raise UsageError("crop mask contains non-finite values")
    return np.clip(mask, 0.0, 1.0)


def _alpha(image_shape: tuple[int, ...], transform: AlignTransform, crop_mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    bounds = region_bounds(image_shape, transform)
    return _sample(_check_mask(crop_mask, transform), transform, bounds), bounds


def region_mask(image_shape: tuple[int, ...], transform: AlignTransform, crop_mask: np.ndarray) -> np.ndarray:
    """Boolean H x W mask of the image pixels that ``paste_back`` may change."""
    h, w = _image_hw(image_shape)
    alpha, (y0, y1, x0, x1) = _alpha(image_shape, transform, crop_mask)
    out = np.zeros((h, w), dtype=bool)
    out[y0:y1, x0:x1] = alpha > 0.0
    return out


def warp_to_image(crop: np.ndarray, image_shape: tuple[int, ...], transform: AlignTransform) -> np.ndarray:
    """The crop warped into image coordinates (float64 H x W [x C]; 0 where unreachable)."""
    h, w = _image_hw(image_shape)
    bounds = region_bounds(image_shape, transform)
    c = np.asarray(crop)
    vals = _sample(c, transform, bounds)
    out = np.zeros((h, w) + c.shape[2:], dtype=np.float64)
    y0, y1, x0, x1 = bounds
    out[y0:y1, x0:x1] = vals
    return out


def paste_back(
    image: np.ndarray, crop: np.ndarray, transform: AlignTransform, crop_mask: np.ndarray
) -> np.ndarray:
    """Composite ``crop`` into a copy of ``image`` with the warped ``crop_mask`` as alpha.

    Only pixels of :func:`region_mask` change; all others are bit-identical. ``image``
    is never modified. ``crop`` must have the crop size and ``image``'s channel count.
    """
    img = np.asarray(image)
    c = np.asarray(crop)
    n = transform.size
    if c.shape[:2] != (n, n) or c.shape[2:] != img.shape[2:]:
        raise UsageError(
            f"crop shape {c.shape} does not fit transform size {n} and image shape {img.shape}"
        )
    out = img.copy()
    alpha, (y0, y1, x0, x1) = _alpha(img.shape, transform, crop_mask)
    region = alpha > 0.0
    if not region.any():
        return out
    warped = _sample(c, transform, (y0, y1, x0, x1))
    a = alpha[region]
    base = img[y0:y1, x0:x1][region].astype(np.float64)
    src = warped[region]
    if img.ndim == 3:
        a = a[:, None]
    blended = src * a + base * (1.0 - a)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    sub = out[y0:y1, x0:x1]
    sub[region] = blended.astype(img.dtype)
    return out


# ---- smooth paste on the photo's own grid ----------------------------------------------
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
    n = src.shape[0]
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

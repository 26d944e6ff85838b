"""The sealed residual: what recovery needs beyond the model, as a lossless image.

Recovery predicts every pixel of a face's region (the model's reconstruction, rounded
to integers); the residual is the difference to the original, ``(original - predicted
+ 128) mod 256``: exact for any prediction, one byte per sample, and a flat grey image
where the prediction is good. It is coded with WebP's lossless mode (libwebp through
Pillow), a real image codec with spatial prediction and entropy coding, over the
region's bounding box (128 outside the region).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

CODEC = "webp-lossless"
_OFFSET = 128
MAX_SIDE = 16383  # WebP's limit per side: the largest face region box faceveil can seal


def residual_image(original: np.ndarray, predicted: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The residual box (H x W x 3 uint8) of ``original`` against ``predicted`` (both box-shaped uint8)."""
    diff = (original.astype(np.int16) - predicted.astype(np.int16) + _OFFSET) % 256
    diff[~inside] = _OFFSET
    return diff.astype(np.uint8)


def apply_residual(predicted: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Inverse of :func:`residual_image`: the original box from the prediction (uint8)."""
    return ((predicted.astype(np.int16) + residual.astype(np.int16) - _OFFSET) % 256).astype(np.uint8)


def encode_region(original: np.ndarray, inside: np.ndarray) -> bytes:
    """The original pixels of a region's box as lossless WebP (0 outside the region): the
    alternative to a residual where the model predicts the face worse than the codec."""
    return encode_residual(np.where(inside[..., None], original, 0).astype(np.uint8))


def encode_residual(residual: np.ndarray) -> bytes:
    """Lossless WebP bytes of a residual box (H x W x 3 uint8)."""
    h, w = residual.shape[:2]
    if h == 0 or w == 0:
        return b""
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"face region {w}x{h} exceeds the residual codec's {MAX_SIDE} px side")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(residual), "RGB").save(buffer, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    return buffer.getvalue()


def decode_residual(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_residual`; ``shape`` (H, W) is checked before decoding."""
    h, w = shape
    if h == 0 or w == 0:
        return np.full((h, w, 3), _OFFSET, np.uint8)
    with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
        if image.size != (w, h):
            raise ValueError(f"residual is {image.size}, expected {(w, h)}")
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()

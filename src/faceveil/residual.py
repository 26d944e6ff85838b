"""The sealed residual: what recovery needs beyond the model, as a lossless image.

Recovery predicts every pixel of a face's region (the model's reconstruction, rounded
to integers); the residual is the difference to the original, ``(original - predicted
+ 128) mod 256``: exact for any prediction, one byte per sample, and a flat grey image
where the prediction is good. It is coded with WebP's lossless mode (libwebp through
Pillow), a real image codec with spatial prediction and entropy coding, over the
region's bounding box (128 outside the region).

Rounding ties: recovery's prediction is a float computation rounded to integers, and the
same computation on other hardware, another thread count or another batch size differs in
the last bits (measured: 1e-4 grey levels across torch thread counts). Where a value lies
within ``TIE_BAND`` of a rounding tie (x.5), such a drift could round it the other way;
so anonymization seals, for exactly those samples, which way it rounded (one code per
region sample, 0 elsewhere, zlib-compressed: ``encode_ties``), and recovery rounds them
that way. Everywhere else a drift below ``TIE_BAND`` cannot change the integer. The band
is anonymization's choice alone: recovery needs only the sealed directions.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

CODEC = "webp-lossless"
TIE_BAND = 1 / 64  # grey levels: predictions this close to x.5 have their rounding sealed
_DOWN, _UP = 1, 2  # a tie's digit per channel (0: not a tie); a sample's code is d0 + 3 d1 + 9 d2
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


def tie_codes(values: np.ndarray, band: float = TIE_BAND) -> np.ndarray:
    """Per sample of ``values`` (K x 3 float predictions) the code of its near-ties (K uint8, 0 = none).

    A channel within ``band`` of x.5 gets the digit of the way ``round_prediction`` rounds
    it here (down or up); every other channel 0.
    """
    frac = values - np.floor(values)
    tie = np.abs(frac - 0.5) < band
    up = np.rint(values) > np.floor(values)
    digits = np.where(tie, np.where(up, _UP, _DOWN), 0).astype(np.uint8)
    return (digits * np.array([1, 3, 9], np.uint8)).sum(axis=1).astype(np.uint8)


def round_prediction(values: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """The integer prediction (K x 3 uint8) of float ``values``: nearest, except where ``codes`` say.

    A tie's digit fixes the rounding (down: floor, up: floor + 1), so a drift of the floats
    smaller than the band they were coded with gives the same integers.
    """
    rounded = np.rint(values)
    if codes is not None and codes.any():
        if codes.max() > 26:
            raise ValueError("invalid rounding code")
        digits = (codes[:, None] // np.array([1, 3, 9], np.uint8)) % 3
        floor = np.floor(values)
        rounded = np.where(digits == _DOWN, floor, np.where(digits == _UP, floor + 1, rounded))
    return np.clip(rounded, 0, 255).astype(np.uint8)


def encode_ties(codes: np.ndarray) -> bytes:
    """The tie codes of a region's samples (K uint8), zlib-compressed (mostly zeros: about 0.13 bytes per sample)."""
    return zlib.compress(np.ascontiguousarray(codes, dtype=np.uint8).tobytes(), 9)


def decode_ties(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_ties` for a region of ``count`` samples; never inflates beyond that."""
    inflater = zlib.decompressobj()
    raw = inflater.decompress(data, count + 1)
    if len(raw) != count or inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"tie codes are not {count} samples")
    codes = np.frombuffer(raw, dtype=np.uint8)
    if codes.max(initial=0) > 26:
        raise ValueError("invalid rounding code")
    return codes.copy()


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

"""Colour and grain of a new face: what makes a model's face sit in the photo it replaces a face of.

``fit_colour`` matches the generated face's skin colour, contrast and (on the face's edge
only) the variation of the photo's lighting; ``Colour`` applies it and undoes it exactly at recovery.
``photo_grain`` gives a face the model enlarges the photo's own noise level, from public
noise, so recovery recomputes it bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from faceveil.faces.paste import FaceRegion
from faceveil.keys import public_gaussian

# ---- colour -----------------------------------------------------------------------
SHADING_GRID = 8  # the shading field's grid (cells per crop side)
CONTRAST_RANGE = (0.6, 1.5)  # the skin contrast gain's limits (a flat model face is not made noisy)


def _upsample_field(field: np.ndarray, size: int) -> np.ndarray:
    """Separable linear interpolation of a (g, g, 3) field to (size, size, 3), in float64 NumPy."""
    g = field.shape[0]
    centres = (np.arange(g) + 0.5) * size / g - 0.5
    pix = np.arange(size, dtype=np.float64)
    rows = np.stack([np.interp(pix, centres, field[:, j, c]) for j in range(g) for c in range(3)], axis=1)
    rows = rows.reshape(size, g, 3)
    return np.stack([np.stack([np.interp(pix, centres, rows[i, :, c]) for c in range(3)], axis=1) for i in range(size)])


COLOUR_MODES = ("shift", "ratio")  # the order is the mode's code in a header's sealed colour fit


@dataclass(frozen=True)
class Colour:
    """Map from the model's face to the photo, exactly invertible, in one of two modes:

    - ``"ratio"`` (the default): ``y = k x + ((k x) . luma - L) (gain - 1) + shading``
      with ``k = dst / src`` per channel (a white balance: black stays black) and the
      contrast ``gain`` applied to luma alone around the skin's luma ``L`` (a neutral
      shift, no tint). A model face whose skin is pinker than the photo's is corrected
      without turning its shadows and the hair at its outline green.
    - ``"shift"`` (headers made before): ``y = (x - src) gain + dst + shading``, per channel.

    ``src``/``dst`` are the generated and original skin colours, ``gain`` their contrast
    ratio; ``shading`` (a coarse ``SHADING_GRID`` field, float16) carries the photo's
    lighting across the face, fitted on the face's edge only and spread inwards, so the new
    face meets the skin, hair and lighting around it without a band. Recovery undoes it
    before reading the latent.
    """

    src: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dst: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gain: float = 1.0
    shading: bytes = b""
    mode: str = "shift"

    def _field(self, size: int) -> np.ndarray | float:
        if not self.shading:
            return 0.0
        g = SHADING_GRID
        return _upsample_field(np.frombuffer(self.shading, dtype="<f2").reshape(g, g, 3).astype(np.float64), size)

    def _balance(self) -> np.ndarray:
        """Per-channel ratios, kept within 1/16 to 16 (a black face's skin would give 0: no inverse)."""
        return np.clip(np.maximum(np.asarray(self.dst), 1.0) / np.maximum(np.asarray(self.src), 1.0), 1 / 16, 16.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "ratio":
            y = x * self._balance()
            return y + ((y @ _LUMA - self._skin_luma()) * (self.gain - 1.0))[..., None] + self._field(x.shape[0])
        return (x - np.asarray(self.src)) * self.gain + np.asarray(self.dst) + self._field(x.shape[0])

    def inverse(self, y: np.ndarray) -> np.ndarray:
        if self.mode == "ratio":
            t = y - self._field(y.shape[0])
            luma = t @ _LUMA  # the luma after the contrast; before it: (luma - L) / gain + L
            before = (luma - self._skin_luma()) / self.gain + self._skin_luma()
            return (t - (luma - before)[..., None]) / self._balance()
        return (y - self._field(y.shape[0]) - np.asarray(self.dst)) / self.gain + np.asarray(self.src)

    def _skin_luma(self) -> float:
        return float(np.asarray(self.dst) @ _LUMA)

    def to_json(self) -> list[float]:
        values = [*self.src, *self.dst, self.gain]
        return values if self.mode == "shift" else [*values, float(COLOUR_MODES.index(self.mode))]

    @classmethod
    def from_json(cls, data: list, shading: bytes = b"") -> Colour:
        values = [float(v) for v in data]
        if len(values) not in (7, 8) or not all(np.isfinite(values)) or not 0.1 <= values[6] <= 10:
            raise ValueError("invalid colour fit")
        if len(values) == 8 and values[7] not in (0.0, 1.0):
            raise ValueError("invalid colour fit: unknown mode")
        if shading and len(shading) != SHADING_GRID * SHADING_GRID * 3 * 2:
            raise ValueError("invalid shading field")
        field = np.frombuffer(shading, dtype="<f2") if shading else np.zeros(1)
        if not np.all(np.isfinite(field)):
            raise ValueError("invalid shading field")
        mode = COLOUR_MODES[int(values[7])] if len(values) == 8 else "shift"
        return cls(tuple(values[:3]), tuple(values[3:6]), values[6], bytes(shading), mode)


_LUMA = np.array([0.299, 0.587, 0.114])


def skin_statistics(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean colour of a face's skin and the spread of its luma, from (K, 3) pixels of the face.

    Only the middle half of the pixels by luma count: teeth, eye whites and highlights above,
    hair, brows and shadows below, which would pull a dark face lighter or a pale one darker.
    The spread is the luma's interquartile range.
    """
    y = pixels @ _LUMA
    lo, hi = np.percentile(y, [25.0, 75.0])
    middle = (y >= lo) & (y <= hi)
    return pixels[middle].mean(axis=0), float(max(hi - lo, 1e-3))


def fit_colour(
    generated: np.ndarray, original: np.ndarray, interior: np.ndarray, edge: np.ndarray, mode: str = "ratio"
) -> Colour:
    """Match the generated face to the original's skin colour and contrast, then its lighting at the edge.

    Colour and contrast come from the skin of the face's interior (:func:`skin_statistics`).
    Only the face's edge band (``edge``, crop pixels) informs the shading field, spread
    inwards by normalised Gaussian filtering, and only its variation across the face is
    kept (its mean over the interior is removed): the edge also runs over hair and
    background, whose colour, spread over the whole face, tinted it (a pale face tanned, a
    dark one greyed). The new face's interior is never copied. ``mode``: :class:`Colour`'s.
    """
    if mode not in COLOUR_MODES:
        raise ValueError(f"colour mode must be one of {', '.join(COLOUR_MODES)}")
    if interior.sum() < 16:
        return Colour()
    g_mean, g_spread = skin_statistics(generated[interior])
    o_mean, o_spread = skin_statistics(original[interior])
    if mode == "ratio":  # the contrast is measured after the white balance, which scales it too
        balanced = Colour(tuple(float(v) for v in g_mean), tuple(float(v) for v in o_mean), 1.0, mode=mode)
        g_spread = skin_statistics(balanced.forward(generated[interior]))[1]
    gain = float(np.clip(o_spread / g_spread, *CONTRAST_RANGE))
    base = Colour(tuple(float(v) for v in g_mean), tuple(float(v) for v in o_mean), gain, mode=mode)
    if edge.sum() < 16:
        return base
    size = generated.shape[0]
    weight = edge.astype(np.float32)
    diff = ((original - base.forward(generated)) * weight[..., None]).astype(np.float32)
    sigma = size / 4.0
    num = cv2.GaussianBlur(diff, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    full = np.where(den[..., None] > 1e-4, num / np.maximum(den[..., None], 1e-4), 0.0)
    full = full - full[interior].mean(axis=0)  # the lighting's variation only: the colour is matched above
    grid = cv2.resize(full.astype(np.float32), (SHADING_GRID, SHADING_GRID), interpolation=cv2.INTER_AREA)
    grid = np.clip(grid, -80.0, 80.0).astype("<f2")
    return dataclasses.replace(base, shading=grid.tobytes())


# ---- grain --------------------------------------------------------------------------------
MAX_GRAIN = 6.0  # grey levels


def photo_grain(image: np.ndarray, region: FaceRegion, scale: float, nonce: bytes) -> np.ndarray | float:
    """Grain for a face the model enlarges: public noise at the photo's own noise level.

    A 64 px model face stretched over hundreds of pixels is smoother than any photo; grain
    at the noise level measured on the untouched pixels around the face (robust MAD of a
    high-pass) makes it sit in the photo. Both directions see those pixels bit for bit and
    the noise comes from the face's public nonce, so recovery recomputes it exactly.
    ``scale`` is the alignment's crop pixels per photo pixel (below 1: the face is enlarged).
    Returns (K, 3) values for the region's pixels, or 0.0 when the face is not enlarged.
    """
    if scale >= 1.0:
        return 0.0
    y0, y1, x0, x1 = region.bounds
    box = image[y0:y1, x0:x1].astype(np.float32) @ _LUMA.astype(np.float32)
    outside = ~region.inside
    if box.shape[0] < 3 or box.shape[1] < 3 or outside[1:-1, 1:-1].sum() < 64:
        return 0.0
    high = box[1:-1, 1:-1] - cv2.blur(box, (3, 3))[1:-1, 1:-1]
    values = np.abs(high[outside[1:-1, 1:-1]]).astype(np.float64)
    sigma = min(MAX_GRAIN, 1.4826 * float(np.median(values)) / np.sqrt(8.0 / 9.0))
    k = int(region.inside.sum())
    noise = public_gaussian(nonce + b"grain", (k,)).astype(np.float64)
    return sigma * np.repeat(noise[:, None], 3, axis=1)

"""Training crops from tight source images: FFHQ alignment with FFHQ's border fill.

Inference crops a face with :func:`faceveil.faces.align_face` (the FFHQ quad as a
similarity transform). Many training sources are already tight face crops, so that quad
reaches beyond the source image. :func:`align_filled` fills what lies outside the way
FFHQ's ``recreate_aligned_images`` did: reflect-pad the image, blur the padded part
(full blur at the original border, fading in over a band a third of the pad wide inside
it) and blend it towards the image's median colour further out; then the inference
warp (:func:`faceveil.faces.align.warp_crop`) cuts the crop from the padded image. A
quad that lies inside the image is cropped exactly as at inference.

:func:`filled_fraction` says how much of a crop came from outside the source image;
:func:`perceptual_hash` (candidates) and :func:`detail_signature` (confirmation) find
the same photo among crops from different sources.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from faceveil.faces.align import AlignTransform, alignment_transform, invert_affine, warp_crop

__all__ = ["FACE_REGION", "align_filled", "detail_signature", "filled_fraction", "hamming", "perceptual_hash", "quad_side"]


FILL_BLUR_REACH = 0.1  # of the crop: how far align_filled's blur reaches into the photo


def quad_side(transform: AlignTransform) -> float:
    """Side of the FFHQ quad in source pixels (FFHQ's ``qsize``)."""
    return transform.size / transform.scale


def _outside_mask(shape: tuple[int, ...], transform: AlignTransform) -> np.ndarray:
    """Per crop pixel: does its source position lie outside the image (bool S x S)?"""
    s = transform.size
    inv = invert_affine(transform.matrix)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    h, w = shape[:2]
    return (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)


def filled_fraction(shape: tuple[int, ...], transform: AlignTransform) -> float:
    """Fraction of the crop's pixels whose source position lies outside the image."""
    return float(_outside_mask(shape, transform).mean())


def _ffhq_pad(image: np.ndarray, pads: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Reflect-pad by ``pads`` (left, top, right, bottom), then FFHQ's blur and median fade."""
    left, top, right, bottom = pads
    img = np.pad(image.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    # 0 on the original border, rising to 1 at the padded edge, negative inside.
    mask = np.maximum(
        1.0 - np.minimum(x / left, (w - 1 - x) / right),
        1.0 - np.minimum(y / top, (h - 1 - y) / bottom),
    )[..., None]
    sigma = qsize * 0.02
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img.reshape(-1, img.shape[2]), axis=0) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def align_filled(
    image: np.ndarray, face_or_landmarks5: object, size: int, framing: str = "ffhq"
) -> tuple[np.ndarray, AlignTransform, float]:
    """The FFHQ-aligned ``size`` crop of a face, filled FFHQ-style beyond the image.

    Returns ``(crop, transform, filled)``: ``transform`` is the inference alignment of
    the face in ``image`` coordinates and ``filled`` the :func:`filled_fraction`.
    """
    img = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
    transform = alignment_transform(face_or_landmarks5, size, framing)  # type: ignore[arg-type]
    filled = filled_fraction(img.shape, transform)
    if filled == 0.0:
        return warp_crop(img, transform), transform, 0.0
    # FFHQ: quad bounds plus a 10 % border, padded at least 30 % of the quad on every side.
    qsize = quad_side(transform)
    inv = invert_affine(transform.matrix)
    s = transform.size
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    quad = corners @ inv[:, :2].T + inv[:, 2]
    h, w = img.shape[:2]
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    need = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - w + border, 0), max(hi[1] - h + border, 0))
    least = int(np.rint(qsize * 0.3))
    # Multiples of warp_crop's integer pre-shrink factor keep its pixel blocks where they
    # were, so the unfilled part of the crop is the inference crop's.
    factor = int(np.floor(1.0 / transform.scale)) if transform.scale < 0.5 else 1
    pads = tuple(-(-max(p, least, 1) // factor) * factor for p in need)
    padded = _ffhq_pad(img, pads, qsize)  # type: ignore[arg-type]
    m = transform.matrix.copy()
    m[:, 2] -= m[:, :2] @ np.array([pads[0], pads[1]], dtype=np.float64)
    crop = warp_crop(padded, AlignTransform(m, s))
    return crop, transform, filled


#: The face's centre in an aligned crop (fractions of the side: x0, x1, y0, y1): eyes to
#: mouth, which even the tightest sources cover with the photo itself (no fill).
FACE_REGION = (0.25, 0.75, 0.3, 0.8)


def _face_grey(crop: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(crop[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return grey.astype(np.float32)


def _region(img: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    x0, x1, y0, y1 = (int(round(v * s)) for v in FACE_REGION)
    return img[y0:y1, x0:x1]


def perceptual_hash(crop: np.ndarray) -> int:
    """64-bit DCT hash of a crop's face region (:data:`FACE_REGION`).

    Signs of the 8x8 lowest frequencies of the 32x32 grey region against their median
    (DC bit 0): it survives re-encoding, resampling and a different fill around the face.
    Aligned faces are alike, so close hashes are only candidates; see :func:`detail_signature`.
    """
    small = cv2.resize(_region(_face_grey(crop)), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    bits[0] = False
    return int(np.packbits(bits).view(">u8")[0])


def detail_signature(crop: np.ndarray) -> np.ndarray:
    """Unit vector of the face region's fine detail (difference of Gaussians), 32x32.

    The dot product of two signatures is near 1 for the same photo (skin texture, hair
    strands and noise agree) and lower for two people whose aligned faces merely look
    alike; it confirms the candidates that :func:`perceptual_hash` proposes.
    """
    grey = _face_grey(crop)
    k = grey.shape[0] / 64.0
    dog = cv2.GaussianBlur(grey, (0, 0), 0.8 * k) - cv2.GaussianBlur(grey, (0, 0), 2.0 * k)
    v = cv2.resize(_region(dog), (32, 32), interpolation=cv2.INTER_AREA).flatten()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return int(a ^ b).bit_count()


def photo_mask(matrices: np.ndarray, shapes: np.ndarray, size: int, margin: float | None = None) -> np.ndarray:
    """(N, size, size) bool: True where a crop pixel is the photo's own, False where
    :func:`align_filled` filled the crop beyond the photo or blurred the photo's edge
    into that fill: no training target there. ``matrices`` are the crops' alignments
    (image -> crop, N x 2 x 3), ``shapes`` their photos' (height, width). ``margin``
    (crop pixels) keeps that far inside the photo's edge; by default 0 for a crop with no
    fill and, for one with fill, the reach of FFHQ's blur into the photo: a third of the
    padding, which is at least 0.3 of the quad (so 0.1 of the crop)."""
    c = np.arange(size, dtype=np.float64)
    u, v = np.meshgrid(c, c)
    out = np.zeros((len(matrices), size, size), bool)
    for k, (m, (h, w)) in enumerate(zip(np.asarray(matrices, np.float64), np.asarray(shapes))):
        inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
        y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]

        def inside(pad: float) -> np.ndarray:
            return (x >= pad - 0.5) & (x <= w - 0.5 - pad) & (y >= pad - 0.5) & (y <= h - 0.5 - pad)

        scale = max(float(np.sqrt(abs(np.linalg.det(m[:, :2])))), 1e-6)  # crop px per photo px
        out[k] = inside(0.0)
        reach = margin if margin is not None else (0.0 if out[k].all() else FILL_BLUR_REACH * size)
        if reach > 0:
            out[k] = inside(reach / scale)
    return out


def set_geometry(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each crop's alignment (image -> crop, 2 x 3) and photo size (h, w) of a face file or
    chunked set, in the order ``load_face_set`` returns its crops; ``None`` when not recorded."""
    from faceveil.train.chunks import read_manifest

    p = Path(path)
    if p.suffix == ".npz" or (p.is_file() and p.suffix != ".json"):
        files = [p]
    else:
        folder, prov = read_manifest(p)
        files = [folder / c["file"] for c in prov.get("chunks") or []]
    matrices, shapes = [], []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            if "align_matrix" not in z.files or "source_shape" not in z.files:
                return None
            matrices.append(z["align_matrix"])
            shapes.append(z["source_shape"])
    return np.concatenate(matrices), np.concatenate(shapes)

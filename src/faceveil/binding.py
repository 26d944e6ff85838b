"""Binding a header to its image: a coarse fingerprint of the veiled pixels, sealed with the header.

The fingerprint is grey block means: the whole image on a ``GRID`` x ``GRID`` grid and
each face's box (from its public transform) on a ``FACE_GRID`` x ``FACE_GRID`` grid, one
byte each. Block means barely move under the lossy re-encoding the sidecar exists for
(JPEG or WebP at quality 95: well under one grey level on average), while another photo
of the same size, or the same scene with another veiled face, differs by many levels
somewhere. Recovery compares the two (:func:`check_binding`) and refuses a header that
belongs to another image; files made before the fingerprint recover unchecked.
"""

from __future__ import annotations

import numpy as np

from faceveil.errors import HeaderError

VERSION = 1
GRID = 16
FACE_GRID = 8
#: Largest mean absolute difference (grey levels) of one region's block means still taken for the same image.
TOLERANCE = 3.0
FORCE_OPTION = "--force"


def _channels(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The colour samples (H x W x C uint8, alpha left out) and the luma weights of its channels."""
    a = np.asarray(array)
    if a.ndim == 2:
        return a[:, :, None], np.array([1.0])
    if a.shape[2] < 3:
        return a[:, :, :1], np.array([1.0])
    return a[:, :, :3], np.array([0.299, 0.587, 0.114])


def _block_means(array: np.ndarray, box: tuple[int, int, int, int], grid: int) -> np.ndarray:
    """Grey means of ``grid`` x ``grid`` blocks (fewer where the box is smaller) of ``array[y0:y1, x0:x1]``.

    Integer block sums per channel, then luma: no float copy of the photo (a 50 Mpx one stays cheap).
    """
    y0, y1, x0, x1 = box
    samples, weights = _channels(array)
    region = samples[y0:y1, x0:x1]
    h, w = region.shape[:2]
    rows = np.unique(np.linspace(0, h, min(grid, h) + 1).astype(np.int64))
    cols = np.unique(np.linspace(0, w, min(grid, w) + 1).astype(np.int64))
    bands = np.stack([region[a:b].sum(axis=0, dtype=np.int64) for a, b in zip(rows[:-1], rows[1:])])  # rows x W x C
    sums = np.add.reduceat(bands, cols[:-1], axis=1)
    counts = np.outer(np.diff(rows), np.diff(cols))
    return (sums @ weights) / counts


def face_boxes(public: dict, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Each face's box in the photo (y0, y1, x0, x1): its crop square mapped back by the public transform."""
    boxes = []
    for face in public.get("faces", []):
        m = np.asarray(face["transform"]["matrix"], dtype=np.float64).reshape(2, 3)
        size = float(face["transform"]["size"])
        inverse = np.linalg.inv(m[:, :2])
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
        points = (corners - m[:, 2]) @ inverse.T  # crop (x, y) -> photo (x, y)
        x0, y0 = np.floor(points.min(axis=0)).astype(np.int64)
        x1, y1 = np.ceil(points.max(axis=0)).astype(np.int64)
        box = (int(max(0, y0)), int(min(height, y1)), int(max(0, x0)), int(min(width, x1)))
        boxes.append(box if box[1] > box[0] and box[3] > box[2] else (0, height, 0, width))
    return boxes


def _regions(array: np.ndarray, public: dict) -> list[np.ndarray]:
    h, w = np.asarray(array).shape[:2]
    regions = [_block_means(array, (0, h, 0, w), GRID)]
    regions += [_block_means(array, box, FACE_GRID) for box in face_boxes(public, h, w)]
    return regions


def fingerprint(array: np.ndarray, public: dict) -> bytes:
    """The sealed fingerprint of the veiled ``array`` whose header has ``public``: a version byte, then block means."""
    return bytes([VERSION]) + b"".join(np.clip(np.rint(r), 0, 255).astype(np.uint8).tobytes() for r in _regions(array, public))


def distances(array: np.ndarray, public: dict, sealed: bytes) -> list[float]:
    """Mean absolute difference (grey levels) per region between ``array`` and the ``sealed`` fingerprint.

    Raises ``ValueError`` when ``sealed`` does not have the layout this image and header give.
    """
    if not isinstance(sealed, bytes) or not sealed or sealed[0] != VERSION:
        raise ValueError("unknown fingerprint version")
    regions = _regions(array, public)
    if len(sealed) - 1 != sum(r.size for r in regions):
        raise ValueError("fingerprint size does not match the image")
    out, pos = [], 1
    for region in regions:
        stored = np.frombuffer(sealed, dtype=np.uint8, count=region.size, offset=pos).reshape(region.shape)
        out.append(float(np.abs(region - stored).mean()))
        pos += region.size
    return out


def check_binding(array: np.ndarray, public: dict, private: dict, where: str = "the file", force: bool = False) -> list[float] | None:
    """Refuse (``HeaderError``, exit 3) a header whose sealed fingerprint is not of ``array``, unless ``force``.

    Returns the per-region distances (``None`` for a file made before fingerprints).
    """
    sealed = private.get("fingerprint") if isinstance(private, dict) else None
    if sealed is None:
        return None
    try:
        found = distances(array, public, sealed)
    except (ValueError, KeyError, TypeError, np.linalg.LinAlgError):
        if force:
            return None
        raise HeaderError(f"the faceveil header of {where} does not belong to this image (its fingerprint does not fit); "
                          f"{FORCE_OPTION} recovers anyway") from None
    worst = max(found)
    if worst > TOLERANCE and not force:
        region = "the whole image" if found.index(worst) == 0 else f"face {found.index(worst)}"
        raise HeaderError(
            f"the faceveil header of {where} belongs to another image: {region} differs from the one it was made for by "
            f"{worst:.1f} grey levels on average (a re-encoding moves it by under {TOLERANCE:g}); a header moved from "
            f"another file would paste that file's faces here. {FORCE_OPTION} recovers anyway"
        )
    return found

"""FFHQ-style face alignment expressed as an exact similarity transform.

The crop square is the quad of FFHQ's ``recreate_aligned_images`` (computed from the
eye centres and the mouth corners), mapped onto a ``size`` x ``size`` crop. Instead of
PIL's quad transform it is stored as a 2x3 similarity matrix so that the same
geometry can be recorded in a header, inverted and re-applied exactly.

Coordinates follow OpenCV: pixel centres sit at integer coordinates, ``x`` to the
right, ``y`` down. The quad's corners map to the crop's outer pixel edges
``(-0.5, -0.5)`` and ``(size - 0.5, size - 0.5)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from faceveil.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from faceveil.faces.detect import Face

__all__ = ["FRAMINGS", "AlignTransform", "align_face", "alignment_transform", "transform_points", "warp_crop"]


@dataclass(frozen=True, eq=False)
class AlignTransform:
    """A similarity transform from image coordinates to a ``size`` x ``size`` crop."""

    matrix: np.ndarray  # 2x3 float64, image -> crop
    size: int

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64).reshape(2, 3)
        if not np.all(np.isfinite(m)):
            raise UsageError("alignment transform contains non-finite values")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        size = int(self.size)
        if size <= 0 or size != self.size:
            raise UsageError(f"alignment crop size must be a positive integer, got {self.size!r}")
        object.__setattr__(self, "size", size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlignTransform):
            return NotImplemented
        return self.size == other.size and bool(np.array_equal(self.matrix, other.matrix))

    def __hash__(self) -> int:
        return hash((self.size, self.matrix.tobytes()))

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form; floats round-trip exactly through ``json``."""
        return {"matrix": [[float(v) for v in row] for row in self.matrix], "size": self.size}

    def dumps(self) -> str:
        """The JSON form as a compact string."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> AlignTransform:
        """Rebuild from :meth:`to_json` output (a dict or its JSON string)."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            matrix = np.array(data["matrix"], dtype=np.float64)
            size = data["size"]
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed alignment transform: {exc}") from None
        if matrix.shape != (2, 3) or not isinstance(size, int) or isinstance(size, bool):
            raise UsageError("malformed alignment transform: need a 2x3 matrix and an integer size")
        return cls(matrix, size)

    def inverse(self) -> np.ndarray:
        """The 2x3 matrix mapping crop coordinates back to image coordinates."""
        return invert_affine(self.matrix)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Invert a 2x3 affine matrix (float64)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    a = m[:, :2]
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    if det == 0 or not np.isfinite(det):
        raise UsageError("alignment transform is not invertible")
    ainv = np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]], dtype=np.float64) / det
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = ainv
    out[:, 2] = -ainv @ m[:, 2]
    return out


def transform_points(points: np.ndarray, matrix: np.ndarray | AlignTransform) -> np.ndarray:
    """Apply a 2x3 affine matrix (or an :class:`AlignTransform`) to N x 2 points."""
    if isinstance(matrix, AlignTransform):
        matrix = matrix.matrix
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    p = np.asarray(points, dtype=np.float64)
    flat = p.reshape(-1, 2)
    out = flat @ m[:, :2].T + m[:, 2]
    return out.reshape(p.shape)


def _landmarks_of(face_or_landmarks5: Face | np.ndarray) -> np.ndarray:
    lm = getattr(face_or_landmarks5, "landmarks5", face_or_landmarks5)
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
        raise UsageError("landmarks5 must be a finite 5x2 array (eyes, nose, mouth corners)")
    return lm


# Framings of the crop around the FFHQ quad's orientation: (centre below the eyes in
# eye-to-mouth distances, side relative to FFHQ's). "ffhq" is FFHQ's own quad, whose
# centre sits near the eyes, so the replaced region runs into the crop's bottom edge and
# the chin and neck are cut. "face" is centred on the face oval (forehead 0.95 above the
# eyes to chin 1.75 below, in eye-to-mouth distances): the region plus a context margin of
# about a tenth of the crop on every side (measured on CelebA and LFW, TRAINING.md).
FRAMINGS: dict[str, tuple[float, float]] = {"ffhq": (0.1, 1.0), "face": (0.4, 1.0)}


def alignment_transform(face_or_landmarks5: Face | np.ndarray, size: int, framing: str = "ffhq") -> AlignTransform:
    """The FFHQ-oriented alignment of a face as an :class:`AlignTransform` onto a ``size`` crop.

    ``face_or_landmarks5`` is a :class:`~faceveil.faces.detect.Face` or a 5x2 array in
    ArcFace order (image-left eye, image-right eye, nose tip, image-left mouth corner,
    image-right mouth corner). ``framing`` is a key of :data:`FRAMINGS` (the model's own).
    """
    if framing not in FRAMINGS:
        raise UsageError(f"unknown crop framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    shift, side = FRAMINGS[framing]
    lm = _landmarks_of(face_or_landmarks5)
    eye_left, eye_right = lm[0], lm[1]
    mouth_left, mouth_right = lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # FFHQ (recreate_aligned_images): oriented crop rectangle.
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = float(np.hypot(*x))
    if norm == 0.0:
        raise UsageError("degenerate landmarks: cannot align face")
    x = x / norm
    half = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8) * side
    if not half > 0.0:
        raise UsageError("degenerate landmarks: cannot align face")
    c = eye_avg + eye_to_mouth * shift
    # quad = [c-x-y, c-x+y, c+x+y, c+x-y] with y = x rotated by +90 degrees (image axes);
    # its side 2*half maps onto the crop side ``size``.
    size = int(size)
    if size <= 0:
        raise UsageError(f"alignment crop size must be positive, got {size}")
    s = size / (2.0 * half)
    ux, uy = float(x[0]), float(x[1])
    a = np.array([[ux, uy], [-uy, ux]], dtype=np.float64) * s
    centre = (size - 1) / 2.0
    t = np.array([centre, centre]) - a @ c
    matrix = np.concatenate([a, t[:, None]], axis=1)
    return AlignTransform(matrix, size)


def align_face(
    image: np.ndarray, face_or_landmarks5: Face | np.ndarray, size: int = 256, framing: str = "ffhq"
) -> tuple[np.ndarray, AlignTransform]:
    """Warp the FFHQ-aligned ``size`` x ``size`` crop of a face out of ``image``.

    Returns the crop (same dtype and channels as ``image``; bicubic, reflected border)
    and the transform that produced it.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise UsageError("image must be an H x W or H x W x C array")
    transform = alignment_transform(face_or_landmarks5, size, framing)
    return warp_crop(img, transform), transform


def warp_crop(image: np.ndarray, transform: AlignTransform) -> np.ndarray:
    """The crop of ``transform`` out of ``image`` (bicubic, reflected border; same dtype).

    A deterministic function of (image, transform): recovery re-crops with it.
    """
    img = np.asarray(image)
    # Downscaling by a large factor with bicubic aliases; use area-like smoothing first.
    src = img
    matrix = transform.matrix.copy()
    scale = transform.scale
    if scale < 0.5:
        factor = int(np.floor(1.0 / scale))  # integer pre-shrink keeps the math exact
        h, w = img.shape[:2]
        nh, nw = max(1, h // factor), max(1, w // factor)
        src = cv2.resize(img[: nh * factor, : nw * factor], (nw, nh), interpolation=cv2.INTER_AREA)
        # pixel centre i of the shrunk image sits at factor*i + (factor-1)/2 of the original
        pre = np.array([[factor, 0.0, (factor - 1) / 2.0], [0.0, factor, (factor - 1) / 2.0]])
        matrix = _compose(matrix, pre)
    return cv2.warpAffine(
        np.ascontiguousarray(src),
        matrix,
        (transform.size, transform.size),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer(inner(p))``."""
    o = np.vstack([outer, [0.0, 0.0, 1.0]])
    i = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (o @ i)[:2]

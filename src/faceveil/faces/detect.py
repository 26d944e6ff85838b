"""Face detection and landmarks: the detector ensemble's boxes, each with a MediaPipe face mesh.

The boxes come from :mod:`faceveil.faces.ensemble` (default: MediaPipe and CenterFace,
upright and on quarter turns; see docs/detection.md). The MediaPipe member runs the
full-range and short-range face detectors on the whole image and, for large images, on
overlapping tiles as well (the networks see the image at 128-192 px, so small faces in
big photos would otherwise be missed). Each face then gets a 478-point face mesh,
computed on a normalised crop around its box so that several faces in one photo each get
their own landmarks. Without a mesh, the 5 landmarks come from the detector's keypoints
(mouth corners estimated) or, for a detector without any, from the box.

Coordinates follow OpenCV (pixel centres at integer coordinates).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from faceveil.errors import UsageError

__all__ = ["Face", "detect_faces", "missing_detectors", "DEFAULT_MIN_SIZE", "DEFAULT_MIN_SCORE"]

DEFAULT_MIN_SIZE = 32
DEFAULT_MIN_SCORE = 0.5

# Face-mesh indices (MediaPipe's canonical face model). "right"/"left" are the
# subject's, i.e. image-left/image-right for an upright, unmirrored face.
_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_NOSE_TIP = 1
_MOUTH_RIGHT = 61  # subject's right corner -> image-left
_MOUTH_LEFT = 291

_MESH_CROP = 256  # side of the normalised crop the mesh runs on
_MESH_CROP_FACTOR = 2.0  # crop side relative to the detection box side
_TILE_MIN = 384  # smallest tile side for tiled detection
_MAX_DETECTOR_SIDE = 16384  # larger images (or tiles) are shown to the detector downscaled to this side


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face (image coordinates, float64; arrays are read-only).

    ``box`` is not clipped: it may extend past the image border for cut-off faces.
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    landmarks5: np.ndarray  # 5x2: left eye, right eye, nose, left mouth, right mouth (image sides)
    mesh: np.ndarray | None = None  # 478 x 2 face-mesh points, or None when the mesh failed
    too_small: bool = False  # box side below the requested ``min_size``
    keypoints6: np.ndarray | None = field(default=None, repr=False)  # raw detector keypoints
    # the detector's own five landmarks (``landmarks5`` are the mesh's where a mesh was found)
    detector_landmarks5: np.ndarray | None = field(default=None, repr=False)
    detector: str = "mediapipe"  # the backend that found it ("centerface@90": on the image turned a quarter turn)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def side(self) -> float:
        """Size of the face used for the ``min_size`` check: the box's smaller side."""
        return min(self.width, self.height)


# --------------------------------------------------------------------------- models
_LOCK = threading.RLock()
_DETECTORS: dict[tuple[int, float], Any] = {}
_MESH: Any = None


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence MediaPipe/TFLite's native start-up chatter on file descriptor 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_WARM: set[int] = set()


def _process(model: Any, image: np.ndarray) -> Any:
    """``model.process(image)``, quiet on the model's first call (graph start-up)."""
    if id(model) in _WARM:
        return model.process(image)
    with _quiet_native_stderr():
        result = model.process(image)
    _WARM.add(id(model))
    return result


def _mp() -> Any:
    try:
        with _quiet_native_stderr():
            import mediapipe as mp  # noqa: PLC0415  (slow import, only when detecting)
    except ImportError as exc:  # pragma: no cover
        raise UsageError(f"face detection needs mediapipe==0.10.21 ({exc})") from None
    return mp


def _detector(model: int, min_score: float) -> Any:
    """Cached MediaPipe detector: model 0 short-range (large faces), 1 full-range."""
    det = _DETECTORS.get((model, min_score))
    if det is None:
        mp = _mp()
        with _quiet_native_stderr():
            det = mp.solutions.face_detection.FaceDetection(
                model_selection=model, min_detection_confidence=min_score
            )
        _DETECTORS[(model, min_score)] = det
    return det


def _mesh_model() -> Any:
    global _MESH
    if _MESH is None:
        mp = _mp()
        with _quiet_native_stderr():
            _MESH = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=3,
                refine_landmarks=True,
                min_detection_confidence=0.3,
            )
    return _MESH


# ------------------------------------------------------------------------ detection
@dataclass
class _Raw:
    box: np.ndarray  # x0, y0, x1, y1
    score: float
    keypoints: np.ndarray  # 6x2 (right eye, left eye, nose, mouth, right ear, left ear)


def _run_detector(img: np.ndarray, min_score: float, ox: float, oy: float, models: tuple[int, ...] = (1, 0)) -> list[_Raw]:
    """Both MediaPipe detectors on ``img`` (offset ``ox``, ``oy`` in the full image).

    The full-range model misses some faces that fill much of the frame (4 % of LFW),
    which the short-range model finds; duplicates are merged later.
    """
    h, w = img.shape[:2]
    if max(h, w) > _MAX_DETECTOR_SIDE:  # MediaPipe aborts the process on a side of 32767 px or more
        scale = _MAX_DETECTOR_SIDE / max(h, w)
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    out: list[_Raw] = []
    for model in models:  # detections are relative to the image: they scale back to w x h as they are
        out += _parse(_process(_detector(model, min_score), img), w, h, ox, oy)
    return out


def _parse(result: Any, w: int, h: int, ox: float, oy: float) -> list[_Raw]:
    out: list[_Raw] = []
    for d in result.detections or []:
        rb = d.location_data.relative_bounding_box
        box = np.array(
            [rb.xmin * w + ox, rb.ymin * h + oy, (rb.xmin + rb.width) * w + ox,
             (rb.ymin + rb.height) * h + oy],
            dtype=np.float64,
        )
        kps = np.array(
            [[k.x * w + ox, k.y * h + oy] for k in d.location_data.relative_keypoints],
            dtype=np.float64,
        )
        if kps.shape != (6, 2) or not np.all(np.isfinite(box)):
            continue
        out.append(_Raw(box, float(d.score[0]), kps))
    return out


def _tiles(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) at successively halved sizes."""
    tiles: list[tuple[int, int, int, int]] = []
    side = max(h, w) // 2
    while side >= _TILE_MIN:
        step = max(1, int(side * 0.75))
        ys = list(range(0, max(1, h - side) + 1, step))
        xs = list(range(0, max(1, w - side) + 1, step))
        if ys[-1] + side < h:
            ys.append(h - side)
        if xs[-1] + side < w:
            xs.append(w - side)
        for y0 in ys:
            for x0 in xs:
                tiles.append((x0, y0, min(w, x0 + side), min(h, y0 + side)))
        side //= 2
    return tiles


def _whole_in_tile(box: np.ndarray, tile: tuple[int, int, int, int], w: int, h: int) -> bool:
    """Keep a tile detection only if it is small for the tile and clear of its inner
    edges: faces cut by a tile edge are whole in an overlapping tile or a coarser pass."""
    x0, y0, x1, y1 = tile
    side = max(x1 - x0, y1 - y0)
    if max(box[2] - box[0], box[3] - box[1]) > 0.25 * side:
        return False
    pad = 0.02 * side
    return bool(
        (x0 == 0 or box[0] > x0 + pad)
        and (y0 == 0 or box[1] > y0 + pad)
        and (x1 == w or box[2] < x1 - pad)
        and (y1 == h or box[3] < y1 - pad)
    )


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / area if area > 0 else 0.0


def _merge(raws: list[_Raw]) -> list[_Raw]:
    """Greedy suppression of duplicates (found at several scales or tiles)."""
    order = sorted(raws, key=lambda r: (-r.score, r.box[0], r.box[1]))
    kept: list[_Raw] = []
    for r in order:
        if all(_overlap(r.box, k.box) < 0.5 for k in kept):
            kept.append(r)
    return kept


# ---------------------------------------------------------------------------- mesh
def _mesh_for(image: np.ndarray, raw: _Raw) -> np.ndarray | None:
    """478 x 2 mesh points (image coordinates) for one detection, or None."""
    x0, y0, x1, y1 = raw.box
    side = max(x1 - x0, y1 - y0) * _MESH_CROP_FACTOR
    if not side > 1.0:
        return None
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    s = _MESH_CROP / side
    crop_m = np.array(
        [[s, 0.0, _MESH_CROP / 2.0 - s * cx], [0.0, s, _MESH_CROP / 2.0 - s * cy]],
        dtype=np.float64,
    )
    src = image
    if s < 0.5:  # shrink first to avoid aliasing, as align_face does
        factor = int(np.floor(1.0 / s))
        h, w = image.shape[:2]
        nh, nw = max(1, h // factor), max(1, w // factor)
        src = cv2.resize(image[: nh * factor, : nw * factor], (nw, nh), interpolation=cv2.INTER_AREA)
        pre = np.array([[factor, 0.0, (factor - 1) / 2.0], [0.0, factor, (factor - 1) / 2.0]])
        crop_m = np.vstack([crop_m, [0, 0, 1]]) @ np.vstack([pre, [0, 0, 1]])
        crop_m = crop_m[:2]
    crop = cv2.warpAffine(
        np.ascontiguousarray(src), crop_m, (_MESH_CROP, _MESH_CROP),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )
    result = _process(_mesh_model(), crop)
    if not result.multi_face_landmarks:
        return None
    inv_s = 1.0 / s
    nose_kp = raw.keypoints[2]
    best: np.ndarray | None = None
    best_d = np.inf
    for lms in result.multi_face_landmarks:
        pts = np.array([[p.x * _MESH_CROP, p.y * _MESH_CROP] for p in lms.landmark], dtype=np.float64)
        pts = (pts - _MESH_CROP / 2.0) * inv_s + np.array([cx, cy])
        nose = pts[_NOSE_TIP]
        if not (x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1):
            continue  # a neighbouring face inside the enlarged crop
        d = float(np.hypot(*(nose - nose_kp)))
        if d < best_d:
            best, best_d = pts, d
    return best


def _landmarks_from_mesh(mesh: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            mesh[list(_RIGHT_EYE)].mean(axis=0),
            mesh[list(_LEFT_EYE)].mean(axis=0),
            mesh[_NOSE_TIP],
            mesh[_MOUTH_RIGHT],
            mesh[_MOUTH_LEFT],
        ]
    )


def _landmarks_from_keypoints(kps: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points from the detector's 6 keypoints (mouth corners estimated)."""
    eye_l, eye_r, nose, mouth = kps[0], kps[1], kps[2], kps[3]
    half = (eye_r - eye_l) * 0.4  # mouth width is about 0.8 x the eye distance
    return np.stack([eye_l, eye_r, nose, mouth - half, mouth + half])


def _frozen(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a = np.ascontiguousarray(a, dtype=np.float64)
        a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------- public
def detect_faces(
    image: np.ndarray,
    min_size: int = DEFAULT_MIN_SIZE,
    min_score: float | None = None,
    with_mesh: bool = True,
    detector: str | None = None,
) -> list[Face]:
    """Detect faces in an RGB uint8 image, each with 5 landmarks and a face mesh.

    ``detector`` is an ensemble spec (``faces.ensemble``; default: ``FACEVEIL_DETECTOR``
    or ``ensemble.DEFAULT_DETECTOR``); its members that cannot run here are skipped
    (:func:`missing_detectors` names them). ``min_score`` replaces every member's own
    score threshold. Faces whose box side is below ``min_size`` pixels are returned
    too, flagged ``too_small=True``. A face from a detector without landmarks gets them
    estimated from its box; the mesh is tried for every face (``None`` where it fails).
    Results are sorted left to right (then top to bottom).
    """
    from faceveil.faces import ensemble  # noqa: PLC0415  (ensemble imports this module)

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise UsageError(f"expected an H x W x 3 uint8 RGB image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if h < 2 or w < 2:
        raise UsageError(f"image too small for face detection: {w}x{h}")
    if min_score is not None and not 0.0 < min_score < 1.0:
        raise UsageError(f"min_score must be between 0 and 1, got {min_score}")
    spec = detector or ensemble.env_detector()
    img = np.ascontiguousarray(img)
    faces: list[Face] = []
    with _LOCK:
        found, _missing = ensemble.candidates(img, spec, None if min_score is None else float(min_score))
        for c in found:
            lm = c.landmarks5 if c.landmarks5 is not None else ensemble.landmarks_from_box(c.box)
            kps = c.keypoints6 if c.keypoints6 is not None else np.vstack([lm[:3], lm[3:].mean(0), lm[:2]])
            mesh = _mesh_for(img, _Raw(c.box, c.score, kps)) if with_mesh else None
            if mesh is not None and "@" in c.detector and not _mesh_agrees(mesh, lm):
                mesh = None  # a face lying sideways: the upright mesh is not to be trusted
            lm5 = _landmarks_from_mesh(mesh) if mesh is not None else lm
            box = tuple(float(v) for v in c.box)
            side = min(box[2] - box[0], box[3] - box[1])
            faces.append(
                Face(
                    box=box,  # type: ignore[arg-type]
                    score=c.score,
                    landmarks5=_frozen(lm5),  # type: ignore[arg-type]
                    mesh=_frozen(mesh),
                    too_small=bool(side < min_size),
                    keypoints6=_frozen(c.keypoints6),
                    detector=c.detector,
                    detector_landmarks5=_frozen(np.asarray(lm, dtype=np.float64)),
                )
            )
    faces.sort(key=lambda f: (round(f.box[0], 3), round(f.box[1], 3), -f.score))
    return faces


def _mesh_agrees(mesh: np.ndarray, lm5: np.ndarray) -> bool:
    """Whether the mesh's eyes lie where the detector put them (within half the eye distance)."""
    eyes = _landmarks_from_mesh(mesh)[:2]
    tol = 0.5 * float(np.hypot(*(lm5[1] - lm5[0])))
    return bool(np.all(np.hypot(*(eyes - lm5[:2]).T) < tol))


def missing_detectors(detector: str | None = None) -> list[str]:
    """Members of the detector spec that cannot run here (their optional package is absent)."""
    from faceveil.faces import ensemble  # noqa: PLC0415

    names, _ = ensemble.members(detector or ensemble.env_detector())
    return [n for n in names if not ensemble.available(n)]

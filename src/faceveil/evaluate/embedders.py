"""Face embedders and a landmark detector for evaluation.

An :class:`Embedder` turns an RGB ``uint8`` image plus the five ArcFace-order
landmarks of one face into an L2-normalised identity vector. Embedders are looked up
by name in a small registry (:func:`get_embedder`, :func:`available_embedders`) that
users extend with :func:`register_embedder` (e.g. for FaceNet or insightface models).

Landmark order (``landmarks5``, shape ``(5, 2)``, pixel ``x, y``) is the ArcFace /
insightface order: image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner. (For a frontal face the image-left eye is the subject's
right eye; YuNet reports its points in exactly this order.)

Built-in embedders (all optional tooling; the product never needs them):

``"arcface-onnx"``  :class:`ArcFaceOnnxEmbedder` - ArcFace-type MobileFaceNet (.onnx,
    512-D) through ``onnxruntime``.
``"dlib"``          :class:`DlibEmbedder` - dlib's ResNet 128-D (``dlib-bin`` and
    ``face-recognition-models``).
``"mobilefacenet-tflite"`` :class:`TFLiteMobileFaceNetEmbedder` - MobileFaceNet
    (.tflite, 192-D) through ``ai-edge-litert``.

Model files are found from an explicit path, else an environment variable
(``FACEVEIL_ARCFACE_ONNX``, ``FACEVEIL_MOBILEFACENET_TFLITE``, ``FACEVEIL_YUNET_ONNX``),
else a directory in ``FACEVEIL_EVAL_MODELS``, else ``shared/models`` beside the
project checkout. A missing file or library raises
:class:`faceveil.errors.ModelUnavailableError` with what to install or set.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from faceveil.errors import ModelUnavailableError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB_CHIP_TEMPLATE_150",
    "Embedder",
    "ArcFaceOnnxEmbedder",
    "DlibEmbedder",
    "TFLiteMobileFaceNetEmbedder",
    "FaceDetection",
    "YuNetDetector",
    "DlibDetector",
    "evaluation_detector",
    "select_primary_face",
    "SELECTION_POLICIES",
    "similarity_transform",
    "align_face",
    "find_model_file",
    "register_embedder",
    "get_embedder",
    "available_embedders",
]

#: Standard ArcFace 112x112 5-point template (insightface ``arcface_dst``).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: Where the 5 ArcFace-order points fall, on average, in a dlib face chip
#: (``dlib.get_face_chip(img, shape5, size=150, padding=0.25)``); measured with YuNet
#: on 400 LFW images (median). Aligning to it approximates dlib's own chip geometry
#: from 5 landmarks.
DLIB_CHIP_TEMPLATE_150 = np.array(
    [
        [45.9, 47.5],
        [106.2, 48.2],
        [75.8, 79.7],
        [50.0, 105.8],
        [102.2, 105.9],
    ],
    dtype=np.float64,
)

MODEL_FILES = {
    "arcface": ("arcface_mobilefacenet_fr_feature.onnx", "FACEVEIL_ARCFACE_ONNX"),
    "mobilefacenet_tflite": ("MobileFaceNet.tflite", "FACEVEIL_MOBILEFACENET_TFLITE"),
    "yunet": ("face_detection_yunet_2026may.onnx", "FACEVEIL_YUNET_ONNX"),
}


# --------------------------------------------------------------------------- files
def _candidate_model_dirs() -> list[Path]:
    dirs: list[Path] = []
    env_dir = os.environ.get("FACEVEIL_EVAL_MODELS")
    if env_dir:
        dirs.append(Path(env_dir))
    # <checkout>/../shared/models for an editable install (src layout) and the cwd.
    here = Path(__file__).resolve()
    if len(here.parents) > 4:
        dirs.append(here.parents[4] / "shared" / "models")
    dirs.append(Path.cwd().parent / "shared" / "models")
    dirs.append(Path.cwd() / "shared" / "models")
    return dirs


def find_model_file(key: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the file of a known evaluation model (``"arcface"``,
    ``"mobilefacenet_tflite"``, ``"yunet"``); raise ``ModelUnavailableError``."""
    filename, env_var = MODEL_FILES[key]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ModelUnavailableError(f"model file not found: {p}")
        return p
    env = os.environ.get(env_var)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ModelUnavailableError(f"{env_var} points to a missing file: {p}")
        return p
    tried = []
    for d in _candidate_model_dirs():
        p = d / filename
        tried.append(str(p))
        if p.is_file():
            return p
    raise ModelUnavailableError(
        f"model file {filename} not found; pass its path, set {env_var} or "
        f"FACEVEIL_EVAL_MODELS (tried: {', '.join(tried)})"
    )


def _require(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelUnavailableError(
            f"the Python package {module!r} is needed for this evaluator: "
            f"pip install {pip_name}"
        )


# --------------------------------------------------------------------------- alignment
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation)
    mapping ``src`` points onto ``dst`` points (Umeyama 1991, as
    ``skimage.transform.SimilarityTransform.estimate`` and insightface's
    ``norm_crop``). Returns the 2x3 matrix for ``cv2.warpAffine``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) point sets, got {src.shape}, {dst.shape}")
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    r = u @ np.diag(d) @ vt
    var_s = (sc**2).sum() / n
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align_face(
    image: np.ndarray,
    landmarks5: np.ndarray,
    size: int = 112,
    template: np.ndarray | None = None,
    template_size: int = 112,
) -> np.ndarray:
    """Warp ``image`` so the five landmarks land on ``template`` (default: the ArcFace
    112 template) scaled to a ``size x size`` crop. Outside pixels are black."""
    import cv2

    lm = _check_landmarks(landmarks5)
    tpl = ARCFACE_TEMPLATE_112 if template is None else np.asarray(template, np.float64)
    tpl = tpl * (size / float(template_size))
    m = similarity_transform(lm, tpl)
    return cv2.warpAffine(
        np.ascontiguousarray(image), m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {img.dtype} {img.shape}"
        )
    return img


def _check_landmarks(landmarks5: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks5, dtype=np.float64)
    if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
        raise ValueError(f"expected finite 5x2 landmarks, got shape {lm.shape}")
    return lm


def _l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("embedder returned a zero or non-finite vector")
    return v / n


# --------------------------------------------------------------------------- protocol
@runtime_checkable
class Embedder(Protocol):
    """A face-identity embedder."""

    name: str

    def embed(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """L2-normalised identity vector of the face at ``landmarks5`` (5x2 float,
        ArcFace order) in an RGB ``uint8`` image (H, W, 3)."""
        ...


# --------------------------------------------------------------------------- ArcFace onnx
class ArcFaceOnnxEmbedder:
    """ArcFace-type MobileFaceNet (onnx, 512-D) via onnxruntime.

    Input: the face aligned to the ArcFace 112x112 template, BGR, ``(x - 127.5) / 128``,
    NCHW. ``num_threads`` caps onnxruntime's intra-op threads (``None``: its default).
    """

    name = "arcface-onnx"
    input_size = 112

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        num_threads: int | None = 1,
        providers: list[str] | None = None,
    ) -> None:
        _require("onnxruntime", "onnxruntime")
        import onnxruntime as ort

        self.model_path = find_model_file("arcface", model_path)
        opts = ort.SessionOptions()
        if num_threads is not None:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self._session.get_outputs()[0].name
        self._lock = threading.Lock()

    def align(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """The 112x112 RGB crop the network sees."""
        return align_face(_check_image(image_rgb_uint8), landmarks5, self.input_size)

    def embed_aligned(self, crop_rgb_uint8: np.ndarray) -> np.ndarray:
        """Embed an already aligned 112x112 RGB crop."""
        crop = _check_image(crop_rgb_uint8)
        if crop.shape[:2] != (self.input_size, self.input_size):
            raise ValueError(f"expected a 112x112 crop, got {crop.shape[:2]}")
        x = (crop[:, :, ::-1].astype(np.float32) - 127.5) / 128.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        with self._lock:
            out = self._session.run([self._output_name], {self._input_name: x})[0]
        return _l2_normalise(out)

    def embed(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        return self.embed_aligned(self.align(image_rgb_uint8, landmarks5))


# --------------------------------------------------------------------------- TFLite
class TFLiteMobileFaceNetEmbedder:
    """MobileFaceNet (tflite, 192-D) via ai-edge-litert.

    Input: the face aligned to the ArcFace 112x112 template, RGB,
    ``(x - 127.5) / 128``, NHWC with a fixed batch of 2 (the crop is fed twice).
    """

    name = "mobilefacenet-tflite"
    input_size = 112

    def __init__(
        self, model_path: str | os.PathLike[str] | None = None, num_threads: int | None = 1
    ) -> None:
        _require("ai_edge_litert", "ai-edge-litert")
        from ai_edge_litert.interpreter import Interpreter

        self.model_path = find_model_file("mobilefacenet_tflite", model_path)
        self._interp = Interpreter(model_path=str(self.model_path), num_threads=num_threads)
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        self._in_index = inp["index"]
        self._batch = int(inp["shape"][0])
        self._out_index = self._interp.get_output_details()[0]["index"]
        self._lock = threading.Lock()

    def align(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        return align_face(_check_image(image_rgb_uint8), landmarks5, self.input_size)

    def embed_aligned(self, crop_rgb_uint8: np.ndarray) -> np.ndarray:
        crop = _check_image(crop_rgb_uint8)
        x = (crop.astype(np.float32) - 127.5) / 128.0
        x = np.ascontiguousarray(np.repeat(x[None], self._batch, axis=0))
        with self._lock:
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            out = self._interp.get_tensor(self._out_index)[0].copy()
        return _l2_normalise(out)

    def embed(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        return self.embed_aligned(self.align(image_rgb_uint8, landmarks5))


# --------------------------------------------------------------------------- dlib
def _dlib_model_dir(model_dir: str | os.PathLike[str] | None) -> Path:
    if model_dir is not None:
        return Path(model_dir)
    # face_recognition_models' __init__ imports pkg_resources (gone from recent
    # setuptools), so locate its data files without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "dlib's model files are needed: pip install face-recognition-models==0.3.0 "
            "(or pass model_dir)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEmbedder:
    """dlib's ResNet face embedder (128-D, L2-normalised here).

    ``alignment="landmarks"`` (default): the 150x150 chip is warped from the given five
    landmarks onto :data:`DLIB_CHIP_TEMPLATE_150` (dlib's chip geometry, padding 0.25).
    ``alignment="shape"``: a face box derived from the landmarks is refined by dlib's
    5-point shape predictor and cut with ``dlib.get_face_chip`` (dlib's own pipeline).
    ``num_jitters`` > 0 averages over jittered copies (slower).
    """

    name = "dlib"
    chip_size = 150

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        alignment: str = "landmarks",
        num_jitters: int = 0,
    ) -> None:
        _require("dlib", "dlib-bin")
        import dlib

        if alignment not in ("landmarks", "shape"):
            raise ValueError(f"alignment must be 'landmarks' or 'shape', not {alignment!r}")
        d = _dlib_model_dir(model_dir)
        rec = d / "dlib_face_recognition_resnet_model_v1.dat"
        sp5 = d / "shape_predictor_5_face_landmarks.dat"
        for f in (rec, sp5):
            if not f.is_file():
                raise ModelUnavailableError(f"dlib model file not found: {f}")
        self._dlib = dlib
        self._rec = dlib.face_recognition_model_v1(str(rec))
        self._sp = dlib.shape_predictor(str(sp5)) if alignment == "shape" else None
        self.alignment = alignment
        self.num_jitters = int(num_jitters)
        self._lock = threading.Lock()

    @staticmethod
    def box_from_landmarks(landmarks5: np.ndarray) -> tuple[int, int, int, int]:
        """A box ``(left, top, right, bottom)`` like dlib's HOG detector's for the face
        with these landmarks (fitted on LFW)."""
        lm = _check_landmarks(landmarks5)
        eyes = lm[:2].mean(0)
        mouth = lm[3:].mean(0)
        cx, cy = (eyes + mouth) / 2.0
        side = 0.331 * float(np.linalg.norm(lm[1] - lm[0])) + 2.0 * float(
            np.linalg.norm(mouth - eyes)
        )
        half = max(side, 8.0) / 2.0
        return (
            int(round(cx - half)),
            int(round(cy - half)),
            int(round(cx + half)),
            int(round(cy + half)),
        )

    def align(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """The 150x150 RGB chip the network sees."""
        img = np.ascontiguousarray(_check_image(image_rgb_uint8))
        if self.alignment == "landmarks":
            return align_face(
                img, landmarks5, self.chip_size, DLIB_CHIP_TEMPLATE_150, self.chip_size
            )
        l, t, r, b = self.box_from_landmarks(landmarks5)
        with self._lock:
            shape = self._sp(img, self._dlib.rectangle(l, t, r, b))
            return np.asarray(self._dlib.get_face_chip(img, shape, self.chip_size, 0.25))

    def embed_aligned(self, chip_rgb_uint8: np.ndarray) -> np.ndarray:
        chip = np.ascontiguousarray(_check_image(chip_rgb_uint8))
        with self._lock:
            v = self._rec.compute_face_descriptor(chip, self.num_jitters)
        return _l2_normalise(np.asarray(v))

    def embed(self, image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        return self.embed_aligned(self.align(image_rgb_uint8, landmarks5))


# --------------------------------------------------------------------------- detector
@dataclass(frozen=True)
class FaceDetection:
    """One detected face: box ``(x, y, w, h)``, ``landmarks5`` (ArcFace order), score."""

    box: np.ndarray
    landmarks5: np.ndarray
    score: float


SELECTION_POLICIES = ("largest", "central", "score")


def select_primary_face(
    detections: list[FaceDetection],
    image_shape: tuple[int, ...],
    policy: str = "largest",
) -> FaceDetection | None:
    """The "main" face among ``detections`` (``None`` if there are none).

    ``policy``: ``"largest"`` (largest box; what the reference LFW figures use),
    ``"central"`` (the largest among boxes containing the image centre, else the
    largest box discounted by its distance to the centre; better on photos centred
    on their subject, e.g. +0.5 pt ArcFace accuracy on LFW), ``"score"`` (highest
    detector score).
    """
    if policy not in SELECTION_POLICIES:
        raise ValueError(f"policy must be one of {SELECTION_POLICIES}, not {policy!r}")
    if not detections:
        return None

    def area(d: FaceDetection) -> float:
        return float(d.box[2] * d.box[3])

    if policy == "score":
        return max(detections, key=lambda d: d.score)
    if policy == "largest":
        return max(detections, key=area)
    h, w = image_shape[:2]
    cx, cy = w / 2.0, h / 2.0

    def contains_centre(d: FaceDetection) -> bool:
        x, y, bw, bh = d.box
        return bool(x <= cx <= x + bw and y <= cy <= y + bh)

    central = [d for d in detections if contains_centre(d)]
    if central:
        return max(central, key=area)
    diag = float(np.hypot(w, h))

    def key(d: FaceDetection) -> float:
        x, y, bw, bh = d.box
        dist = float(np.hypot(x + bw / 2 - cx, y + bh / 2 - cy)) / diag
        return area(d) * float(np.exp(-((dist / 0.25) ** 2)))

    return max(detections, key=key)


class YuNetDetector:
    """OpenCV Zoo YuNet face detector giving boxes and ArcFace-order landmarks.

    Images whose shorter side is below ``min_side`` are upscaled for detection only
    (YuNet misses faces in tiny images); coordinates are mapped back. ``policy``
    chooses the main face (see :func:`select_primary_face`).
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        min_side: int = 128,
        policy: str = "largest",
    ) -> None:
        import cv2

        if policy not in SELECTION_POLICIES:
            raise ValueError(f"policy must be one of {SELECTION_POLICIES}, not {policy!r}")
        self.policy = policy
        self.model_path = find_model_file("yunet", model_path)
        self.score_threshold = score_threshold
        self.min_side = int(min_side)
        self._det = cv2.FaceDetectorYN.create(
            str(self.model_path), "", (320, 320), score_threshold, nms_threshold, top_k
        )
        self._lock = threading.Lock()

    def detect(self, image_rgb_uint8: np.ndarray) -> list[FaceDetection]:
        """All faces, best score first."""
        import cv2

        img = _check_image(image_rgb_uint8)
        h, w = img.shape[:2]
        scale = 1.0
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        if min(h, w) < self.min_side:
            scale = self.min_side / float(min(h, w))
            bgr = cv2.resize(
                bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC
            )
        with self._lock:
            self._det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self._det.detect(bgr)
        if faces is None:
            return []
        out = []
        for row in faces:
            sx = bgr.shape[1] / float(w)
            sy = bgr.shape[0] / float(h)
            box = np.array([row[0] / sx, row[1] / sy, row[2] / sx, row[3] / sy])
            lm = row[4:14].reshape(5, 2).astype(np.float64) / np.array([sx, sy])
            out.append(FaceDetection(box=box, landmarks5=lm, score=float(row[14])))
        out.sort(key=lambda d: -d.score)
        return out

    def primary(self, image_rgb_uint8: np.ndarray) -> FaceDetection | None:
        """The main face (see :func:`select_primary_face`) or ``None``."""
        return select_primary_face(
            self.detect(image_rgb_uint8), np.asarray(image_rgb_uint8).shape, self.policy
        )

    def landmarks5(self, image_rgb_uint8: np.ndarray) -> np.ndarray | None:
        """ArcFace-order landmarks of the main face, or ``None`` if none is found."""
        d = self.primary(image_rgb_uint8)
        return None if d is None else d.landmarks5


class DlibDetector:
    """dlib's HOG face detector with its 68-point shape predictor, giving boxes and ArcFace-order
    landmarks (eye centres, nose tip, mouth corners): the evaluation detector where no YuNet file
    is found, from PyPI alone (``pip install faceveil[eval]``: dlib-bin, face-recognition-models).

    Images whose shorter side is below ``min_side`` are upsampled once, as dlib's own examples do
    for small faces. ``policy`` chooses the main face (see :func:`select_primary_face`).
    """

    name = "dlib"

    def __init__(
        self, model_dir: str | os.PathLike[str] | None = None, min_side: int = 400, policy: str = "largest",
    ) -> None:
        _require("dlib", "dlib-bin")
        import dlib

        if policy not in SELECTION_POLICIES:
            raise ValueError(f"policy must be one of {SELECTION_POLICIES}, not {policy!r}")
        predictor = _dlib_model_dir(model_dir) / "shape_predictor_68_face_landmarks.dat"
        if not predictor.is_file():
            raise ModelUnavailableError(f"dlib model file not found: {predictor}")
        self.policy = policy
        self.min_side = int(min_side)
        self._dlib = dlib
        self._det = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(str(predictor))
        self._lock = threading.Lock()

    def detect(self, image_rgb_uint8: np.ndarray) -> list[FaceDetection]:
        """All faces, best score first."""
        img = np.ascontiguousarray(_check_image(image_rgb_uint8))
        up = 1 if min(img.shape[:2]) < self.min_side else 0
        out = []
        with self._lock:
            rects, scores, _ = self._det.run(img, up, 0.0)
            for rect, score in zip(rects, scores):
                p = np.array([(q.x, q.y) for q in self._sp(img, rect).parts()], dtype=np.float64)
                # 36-41: the eye on the image's left; 42-47: the other; 30: nose tip; 48, 54: mouth corners
                lm = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
                box = np.array([rect.left(), rect.top(), rect.width(), rect.height()], dtype=np.float64)
                out.append(FaceDetection(box=box, landmarks5=lm, score=float(score)))
        out.sort(key=lambda d: -d.score)
        return out

    def primary(self, image_rgb_uint8: np.ndarray) -> FaceDetection | None:
        """The main face (see :func:`select_primary_face`) or ``None``."""
        return select_primary_face(
            self.detect(image_rgb_uint8), np.asarray(image_rgb_uint8).shape, self.policy
        )

    def landmarks5(self, image_rgb_uint8: np.ndarray) -> np.ndarray | None:
        """ArcFace-order landmarks of the main face, or ``None`` if none is found."""
        d = self.primary(image_rgb_uint8)
        return None if d is None else d.landmarks5


def evaluation_detector(policy: str = "largest") -> YuNetDetector | DlibDetector:
    """The detector that judges anonymized photos, independent of the anonymizer's (MediaPipe and
    CenterFace): YuNet where its onnx file is found (the reference figures' detector), else dlib."""
    try:
        return YuNetDetector(policy=policy)
    except ModelUnavailableError as yunet:
        try:
            return DlibDetector(policy=policy)
        except ModelUnavailableError as dlib:
            raise ModelUnavailableError(f"no evaluation detector: {yunet}; and {dlib}") from None


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Embedder]
    requires: tuple[str, ...]  # importable modules needed
    model_key: str | None  # find_model_file key, if a model file is needed


_REGISTRY: dict[str, _Entry] = {}


def register_embedder(
    name: str,
    factory: Callable[..., Embedder],
    *,
    requires: tuple[str, ...] = (),
    model_key: str | None = None,
    overwrite: bool = False,
) -> None:
    """Register ``factory(**kwargs) -> Embedder`` under ``name``. ``requires`` lists
    importable modules the factory needs (used by :func:`available_embedders`)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"an embedder named {name!r} is already registered")
    _REGISTRY[name] = _Entry(factory, tuple(requires), model_key)


def get_embedder(name: str, **kwargs: object) -> Embedder:
    """Instantiate the embedder registered under ``name`` with ``kwargs``."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown embedder {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return entry.factory(**kwargs)


def available_embedders(include_unavailable: bool = False) -> list[str]:
    """Names of registered embedders whose libraries (and default model file) are
    present; all registered names with ``include_unavailable=True``."""
    names = []
    for name, entry in sorted(_REGISTRY.items()):
        if not include_unavailable:
            if any(importlib.util.find_spec(m) is None for m in entry.requires):
                continue
            if entry.model_key is not None:
                try:
                    find_model_file(entry.model_key)
                except ModelUnavailableError:
                    continue
        names.append(name)
    return names


register_embedder(
    ArcFaceOnnxEmbedder.name, ArcFaceOnnxEmbedder, requires=("onnxruntime",), model_key="arcface"
)
register_embedder(
    DlibEmbedder.name, DlibEmbedder, requires=("dlib", "face_recognition_models")
)
register_embedder(
    TFLiteMobileFaceNetEmbedder.name,
    TFLiteMobileFaceNetEmbedder,
    requires=("ai_edge_litert",),
    model_key="mobilefacenet_tflite",
)

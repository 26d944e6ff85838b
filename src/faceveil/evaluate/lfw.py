"""LFW View 2 verification protocol, to calibrate face-recognition thresholds.

The 6,000 pairs of ``pairs.txt`` (10 folds of 300 same-person and 300
different-person pairs) are scored by the cosine similarity of their embeddings.
Reported: the standard 10-fold accuracy (for each fold the threshold maximising
accuracy on the other 9 folds is applied to it; mean over folds), ROC AUC, and the
thresholds at a given false-accept rate (FAR) with their true-accept rate (TAR),
computed on all selected pairs. A pair "matches" when its similarity is ``>=`` the
threshold; thresholds are placed midway between neighbouring observed scores.

Calibrate at the resolution being evaluated: ``resolution`` downscales (or
upscales) each image so its longer side has that many pixels *before* detection and
embedding, so the thresholds match faces of that size (e.g. a diffusion model's
crop). ``None`` keeps the files' own resolution.

Landmarks come from YuNet (:class:`~faceveil.evaluate.embedders.YuNetDetector`),
picking the largest face by default (LFW photos often show bystanders; this choice
reproduces the reference figures of ``shared/README.md``). Where no face is found, the median landmarks of the images
where one was found (relative to image size) are used and counted in
``LFWReport.n_fallback``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.evaluate.embedders import DlibDetector, Embedder, YuNetDetector
from faceveil.evaluate.metrics import roc_auc

__all__ = [
    "LFWPair",
    "pair_images",
    "LFWReport",
    "FarThreshold",
    "parse_pairs",
    "load_image",
    "compute_embeddings",
    "pair_similarities",
    "best_threshold",
    "kfold_accuracy",
    "threshold_at_far",
    "evaluate_lfw",
]

N_FOLDS = 10


@dataclass(frozen=True)
class LFWPair:
    """One verification pair; images are paths relative to the ``images`` folder."""

    image_a: str
    image_b: str
    same: bool
    fold: int


def _image_rel(name: str, number: str | int) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def parse_pairs(path: str | os.PathLike[str]) -> list[LFWPair]:
    """Parse LFW's ``pairs.txt`` (View 2) or ``pairsDevTrain/Test.txt`` (View 1).

    Format: a header ``<sets> <pairs per class>`` (View 1: just ``<pairs>``), then for
    each set ``n`` matched lines ``name i j`` followed by ``n`` mismatched lines
    ``name1 i name2 j``.
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    header = [int(x) for x in lines[0]]
    if len(header) == 2:
        n_sets, n_per = header
    elif len(header) == 1:
        n_sets, n_per = 1, header[0]
    else:
        raise ValueError(f"{path}: bad header {lines[0]}")
    body = lines[1:]
    if len(body) != n_sets * 2 * n_per:
        raise ValueError(
            f"{path}: expected {n_sets * 2 * n_per} pair lines, found {len(body)}"
        )
    pairs: list[LFWPair] = []
    for k, parts in enumerate(body):
        fold = k // (2 * n_per)
        same = (k % (2 * n_per)) < n_per
        if same:
            if len(parts) != 3:
                raise ValueError(f"{path}: line {k + 2}: expected 'name i j', got {parts}")
            a, b = _image_rel(parts[0], parts[1]), _image_rel(parts[0], parts[2])
        else:
            if len(parts) != 4:
                raise ValueError(
                    f"{path}: line {k + 2}: expected 'name1 i name2 j', got {parts}"
                )
            a, b = _image_rel(parts[0], parts[1]), _image_rel(parts[2], parts[3])
        pairs.append(LFWPair(a, b, same, fold))
    return pairs


def pair_images(path: str | os.PathLike[str]) -> list[str]:
    """The distinct images of a pairs file, in file order (relative to ``images``)."""
    seen: dict[str, None] = {}
    for pair in parse_pairs(path):
        seen.setdefault(pair.image_a, None)
        seen.setdefault(pair.image_b, None)
    return list(seen)


def load_image(path: str | os.PathLike[str], resolution: int | None = None) -> np.ndarray:
    """Read an image as RGB ``uint8``; with ``resolution``, resize so its longer side
    is ``resolution`` pixels (area interpolation down, cubic up)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    if resolution is not None:
        h, w = bgr.shape[:2]
        s = resolution / float(max(h, w))
        if s != 1.0:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC
            bgr = cv2.resize(bgr, size, interpolation=interp)
    return np.ascontiguousarray(bgr[:, :, ::-1])


# --------------------------------------------------------------------------- embeddings
def _cache_meta(embedder: Embedder, resolution: int | None, detector: YuNetDetector | DlibDetector) -> str:
    extra = {k: getattr(embedder, k) for k in ("alignment", "num_jitters") if hasattr(embedder, k)}
    return json.dumps(
        {
            "embedder": embedder.name,
            "resolution": resolution,
            "face_policy": getattr(detector, "policy", None),
            "score_threshold": getattr(detector, "score_threshold", None),
            **extra,
            **({} if getattr(detector, "name", "yunet") == "yunet" else {"detector": detector.name}),
        },
        sort_keys=True,
    )


def compute_embeddings(
    images: Iterable[str],
    images_dir: str | os.PathLike[str],
    embedder: Embedder,
    detector: YuNetDetector | DlibDetector | None = None,
    resolution: int | None = None,
    cache_file: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Embed each image (relative paths under ``images_dir``) once.

    Returns ``(embeddings, fallback_images)``: a dict path -> L2-normalised vector, and
    the images where no face was detected and median landmarks were used. With
    ``cache_file`` (an ``.npz``), embeddings computed before with the same embedder
    and resolution are reused and new ones are saved.
    """
    images = list(dict.fromkeys(images))
    root = Path(images_dir)
    det = detector if detector is not None else YuNetDetector()
    meta = _cache_meta(embedder, resolution, det)
    emb: dict[str, np.ndarray] = {}
    fallback: list[str] = []
    if cache_file is not None and Path(cache_file).is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            if str(z["meta"]) == meta:
                emb = {str(p): v for p, v in zip(z["paths"], z["embeddings"])}
                fallback = [str(p) for p in z["fallback"]]
    todo = [p for p in images if p not in emb]
    if todo:
        landmarks: dict[str, np.ndarray] = {}
        missing: list[str] = []
        done = 0
        for rel in todo:
            img = load_image(root / rel, resolution)
            lm = det.landmarks5(img)
            if lm is None:
                missing.append(rel)
                continue
            landmarks[rel] = lm
            emb[rel] = embedder.embed(img, lm)
            done += 1
            if progress is not None:
                progress(done, len(todo))
        if missing:
            median_rel = _median_relative_landmarks(landmarks, root, resolution)
            for rel in missing:
                img = load_image(root / rel, resolution)
                h, w = img.shape[:2]
                emb[rel] = embedder.embed(img, median_rel * np.array([w, h]))
                fallback.append(rel)
                done += 1
                if progress is not None:
                    progress(done, len(todo))
        if cache_file is not None:
            keys = sorted(emb)
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                cache_file,
                meta=np.array(meta),
                paths=np.array(keys),
                embeddings=np.stack([emb[k] for k in keys]),
                fallback=np.array(sorted(set(fallback)), dtype=str),
            )
    return {p: emb[p] for p in images}, sorted(set(fallback) & set(images))


def _median_relative_landmarks(
    landmarks: dict[str, np.ndarray], root: Path, resolution: int | None
) -> np.ndarray:
    if not landmarks:
        raise RuntimeError("no face detected in any image; cannot derive fallback landmarks")
    rel = []
    for p, lm in list(landmarks.items())[:500]:
        img = load_image(root / p, resolution)
        h, w = img.shape[:2]
        rel.append(lm / np.array([w, h]))
    return np.median(np.stack(rel), axis=0)


def pair_similarities(
    pairs: Sequence[LFWPair], embeddings: dict[str, np.ndarray]
) -> np.ndarray:
    """Cosine similarity of each pair's embeddings."""
    a = np.stack([embeddings[p.image_a] for p in pairs]).astype(np.float64)
    b = np.stack([embeddings[p.image_b] for p in pairs]).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


# --------------------------------------------------------------------------- protocol
def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score >= threshold`` (midway between
    neighbouring scores; middle of tied optima) and that accuracy."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    n = s.size
    # cut i: predict positive for sorted indices >= i  (i = 0..n)
    neg_below = np.r_[0, np.cumsum(~y)]
    pos_at_or_above = y.sum() - np.r_[0, np.cumsum(y)]
    correct = neg_below + pos_at_or_above
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]  # only cut between distinct values
    correct = np.where(valid, correct, -1)
    best = np.flatnonzero(correct == correct.max())
    i = int(best[len(best) // 2])
    if i == 0:
        thr = s[0] - 1e-6
    elif i == n:
        thr = s[-1] + 1e-6
    else:
        thr = (s[i - 1] + s[i]) / 2.0
    return float(thr), float(correct[i] / n)


def kfold_accuracy(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-fold-out accuracy: for each fold, the best threshold on the other
    folds is applied to it. Returns per-fold ``(accuracies, thresholds)``."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    f = np.asarray(folds).ravel()
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accs, thrs = [], []
    for k in ids:
        test = f == k
        thr, _ = best_threshold(s[~test], y[~test])
        accs.append(float(np.mean((s[test] >= thr) == y[test])))
        thrs.append(thr)
    return np.array(accs), np.array(thrs)


@dataclass(frozen=True)
class FarThreshold:
    """Threshold at a target false-accept rate, with the rates it achieves."""

    far_target: float
    threshold: float
    far: float
    tar: float


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> FarThreshold:
    """Lowest threshold (midway between neighbouring impostor scores) at which at
    most ``floor(far * n_negatives)`` different-person pairs have ``score >=
    threshold``; reports the achieved FAR and TAR."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    neg = np.sort(s[~y])[::-1]
    if neg.size == 0 or y.sum() == 0:
        raise ValueError("need both same and different pairs")
    k = int(math.floor(far * neg.size + 1e-9))  # false accepts allowed
    if k >= neg.size:
        thr = float(neg[-1])
    else:
        above = neg[:k][neg[:k] > neg[k]]
        if above.size:
            thr = float((neg[k] + above.min()) / 2.0)
        else:
            thr = float(np.nextafter(neg[k], np.inf))
    return FarThreshold(
        far_target=float(far),
        threshold=thr,
        far=float(np.mean(s[~y] >= thr)),
        tar=float(np.mean(s[y] >= thr)),
    )


@dataclass
class LFWReport:
    """Outcome of :func:`evaluate_lfw`."""

    embedder: str
    resolution: int | None
    n_pairs: int
    n_images: int
    n_fallback: int
    folds: list[int]
    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    auc: float
    far_thresholds: list[FarThreshold]
    same_mean: float
    diff_mean: float
    seconds: float
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("scores")
        d.pop("labels")
        return d

    def summary(self) -> str:
        res = "native" if self.resolution is None else f"{self.resolution}px"
        lines = [
            f"{self.embedder} @ {res}: {self.n_pairs} pairs, {self.n_images} images "
            f"({self.n_fallback} without detection), folds {self.folds}",
            f"  accuracy {100 * self.accuracy:.2f} % +- {100 * self.accuracy_std:.2f} "
            f"(threshold mean {np.mean(self.fold_thresholds):.3f}), AUC {self.auc:.4f}",
            f"  cosine mean: same {self.same_mean:.3f}, different {self.diff_mean:.3f}",
        ]
        for t in self.far_thresholds:
            lines.append(
                f"  FAR {t.far_target:g}: threshold {t.threshold:.3f} "
                f"(TAR {100 * t.tar:.1f} %, FAR {100 * t.far:.2f} %)"
            )
        lines.append(f"  wall time {self.seconds:.1f} s")
        return "\n".join(lines)


def evaluate_lfw(
    embedder: Embedder,
    lfw_dir: str | os.PathLike[str],
    *,
    resolution: int | None = None,
    folds: Sequence[int] | None = None,
    detector: YuNetDetector | DlibDetector | None = None,
    cache_file: str | os.PathLike[str] | None = None,
    fars: Sequence[float] = (1e-2, 1e-3),
    pairs_file: str = "pairs.txt",
    face_policy: str = "largest",
    progress: Callable[[int, int], None] | None = None,
) -> LFWReport:
    """Run the LFW View 2 protocol with ``embedder``.

    ``lfw_dir`` holds ``pairs.txt`` and ``images/``. ``folds`` (0-based) restricts the
    run to some folds (at least two; cross-validation is then leave-one-out among
    them). ``face_policy`` picks the face in images with several (see
    :func:`~faceveil.evaluate.embedders.select_primary_face`; ignored when a
    ``detector`` is given). See the module docstring for the rest.
    """
    t0 = time.perf_counter()
    root = Path(lfw_dir)
    pairs = parse_pairs(root / pairs_file)
    if folds is not None:
        keep = set(int(f) for f in folds)
        pairs = [p for p in pairs if p.fold in keep]
        if not pairs:
            raise ValueError(f"no pairs in folds {sorted(keep)}")
    images = list(dict.fromkeys(x for p in pairs for x in (p.image_a, p.image_b)))
    if detector is None:
        detector = YuNetDetector(policy=face_policy)
    emb, fallback = compute_embeddings(
        images, root / "images", embedder, detector, resolution, cache_file, progress
    )
    scores = pair_similarities(pairs, emb)
    labels = np.array([p.same for p in pairs])
    fold_ids = np.array([p.fold for p in pairs])
    accs, thrs = kfold_accuracy(scores, labels, fold_ids)
    return LFWReport(
        embedder=embedder.name,
        resolution=resolution,
        n_pairs=len(pairs),
        n_images=len(images),
        n_fallback=len(fallback),
        folds=sorted(int(f) for f in np.unique(fold_ids)),
        accuracy=float(accs.mean()),
        accuracy_std=float(accs.std()),
        fold_accuracies=[float(a) for a in accs],
        fold_thresholds=[float(t) for t in thrs],
        auc=roc_auc(scores, labels),
        far_thresholds=[threshold_at_far(scores, labels, f) for f in fars],
        same_mean=float(scores[labels].mean()),
        diff_mean=float(scores[~labels].mean()),
        seconds=time.perf_counter() - t0,
        scores=scores,
        labels=labels,
    )

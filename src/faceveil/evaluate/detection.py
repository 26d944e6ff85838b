"""A labelled face-detection benchmark built from LFW and CelebA, its loader and its scoring.

No public labelled detection set can be had on these machines, so one is built
(:func:`build_benchmark`): base photos are labelled by the agreement of independent
detectors (YuNet, dlib HOG, MediaPipe: a face is a label where at least two agree; a face
only one of them finds is an *ignore* region, neither a miss nor a false alarm), then the
hard cases are made from them: faces cut by the border (15-50 % of the box outside),
faces below 32 px in a 640 x 480 photo, rotations of 50-180 degrees, occluders over
35-55 % of the face, dark and noisy exposures, blur. Profiles are the base photos whose
landmarks say the head is turned (nose off the eyes' middle by 30 % of their distance or
more, :func:`yaw_ratio`). The photos are written as PNG with ``labels.json``
(:func:`load_benchmark` reads them back); :func:`score` gives recall and precision per
category for any detector ``image -> boxes``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceveil.errors import UsageError

__all__ = [
    "CATEGORIES",
    "BenchItem",
    "Detection",
    "build_benchmark",
    "load_benchmark",
    "match",
    "score",
    "yaw_ratio",
]

CATEGORIES = ("frontal", "profile", "border", "small", "rotated", "occluded", "dark", "blurred")
LABELLERS = ("yunet", "dlib-hog", "mediapipe")


@dataclass
class BenchItem:
    """One benchmark photo: its faces (x0, y0, x1, y1, unclipped) and ignore regions."""

    path: Path
    category: str
    faces: list[list[float]]
    ignore: list[list[float]] = field(default_factory=list)
    source: str = ""

    def image(self) -> np.ndarray:
        img = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f"cannot read benchmark image {self.path}")
        return np.ascontiguousarray(img[:, :, ::-1])


@dataclass
class Detection:
    box: list[float]
    score: float


# --------------------------------------------------------------------------- matching
def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(p: tuple[float, float], b: Sequence[float]) -> bool:
    return b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]


def _centre(b: Sequence[float]) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def match(det: Sequence[float], truth: Sequence[float]) -> bool:
    """Whether a detected box finds a labelled face: IoU of 0.3 or more, or each box's
    centre inside the other (detectors frame faces differently: brows or forehead to chin)."""
    return _iou(det, truth) >= 0.3 or (_inside(_centre(det), truth) and _inside(_centre(truth), det))


def _clip(b: Sequence[float], w: int, h: int) -> list[float]:
    return [max(0.0, b[0]), max(0.0, b[1]), min(float(w), b[2]), min(float(h), b[3])]


def score(
    items: Sequence[BenchItem], detect: Callable[[np.ndarray], list[Detection]]
) -> dict[str, dict[str, float]]:
    """Recall and precision per category (and ``"all"``), and the mean time per photo.

    Labelled boxes are clipped to the photo before matching (a detector sees only what is
    there). Detections are matched best score first; a detection matching no face but an
    ignore region, or a face already found, is not counted as a false alarm in the first
    case and is one in the second.
    """
    stats: dict[str, dict[str, float]] = {c: {"faces": 0, "found": 0, "detections": 0, "false": 0, "seconds": 0.0,
                                              "photos": 0} for c in (*CATEGORIES, "all")}
    for item in items:
        img = item.image()
        h, w = img.shape[:2]
        t = time.perf_counter()
        dets = sorted(detect(img), key=lambda d: -d.score)
        dt = time.perf_counter() - t
        truths = [_clip(b, w, h) for b in item.faces]
        ignore = [_clip(b, w, h) for b in item.ignore]
        used = [False] * len(truths)
        false = 0
        for d in dets:
            hit = next((i for i, tb in enumerate(truths) if not used[i] and match(d.box, tb)), None)
            if hit is not None:
                used[hit] = True
            elif not any(match(d.box, ib) for ib in ignore) and not any(match(d.box, tb) for tb in truths):
                false += 1
            elif any(match(d.box, tb) for tb in truths):
                false += 1  # a second box on a face already found
        for cat in (item.category, "all"):
            s = stats[cat]
            s["faces"] += len(truths)
            s["found"] += sum(used)
            s["detections"] += len(dets)
            s["false"] += false
            s["seconds"] += dt
            s["photos"] += 1
    for s in stats.values():
        s["recall"] = s["found"] / s["faces"] if s["faces"] else float("nan")
        counted = s["found"] + s["false"]
        s["precision"] = s["found"] / counted if counted else float("nan")
        s["ms_per_photo"] = 1000.0 * s["seconds"] / s["photos"] if s["photos"] else float("nan")
    return stats


# ---------------------------------------------------------------------------- loading
def load_benchmark(folder: str | Path, categories: Sequence[str] | None = None) -> list[BenchItem]:
    """The items of a benchmark folder written by :func:`build_benchmark`."""
    folder = Path(folder)
    labels = folder / "labels.json"
    if not labels.is_file():
        raise UsageError(f"no labels.json in {folder}: build the benchmark first (benchmarks/detection_benchmark.py)")
    data = json.loads(labels.read_text())
    items = [
        BenchItem(folder / e["file"], e["category"], e["faces"], e.get("ignore", []), e.get("source", ""))
        for e in data["items"]
    ]
    if categories:
        items = [i for i in items if i.category in categories]
    return items


# ---------------------------------------------------------------------------- labelling
def yaw_ratio(landmarks5: np.ndarray) -> float:
    """How far the nose sits off the eyes' middle, in eye distances (0 frontal, about 0.5 profile)."""
    lm = np.asarray(landmarks5, dtype=np.float64)
    eyes = lm[1] - lm[0]
    d = float(np.hypot(*eyes))
    if d < 1e-6:
        return 1.0
    mid = lm[:2].mean(0)
    return float(np.dot(lm[2] - mid, eyes / d) / d)


def _label(img: np.ndarray, labellers: tuple[str, ...] = LABELLERS) -> tuple[list[dict], list[list[float]]]:
    """Faces two labellers agree on (box: YuNet's where it has one), and ignore regions."""
    from faceveil.faces import ensemble

    found: list[tuple[str, ensemble.Candidate]] = []
    for name in labellers:
        found += [(name, c) for c in ensemble.BACKENDS[name](img, ensemble.THRESHOLDS[name])]
    groups: list[list[tuple[str, ensemble.Candidate]]] = []
    for name, c in found:
        for g in groups:
            if any(match(c.box, o.box) for _, o in g):
                g.append((name, c))
                break
        else:
            groups.append([(name, c)])
    faces, ignore = [], []
    for g in groups:
        names = {n for n, _ in g}
        pick = next((c for n, c in g if n == "yunet"), g[0][1])
        box = [float(v) for v in pick.box]
        if len(names) >= 2:
            lm = next((c.landmarks5 for n, c in g if n in ("yunet", "mediapipe") and c.landmarks5 is not None), None)
            faces.append({"box": box, "yaw": None if lm is None else yaw_ratio(lm), "by": sorted(names)})
        else:
            ignore.append(box)
    return faces, ignore


# ---------------------------------------------------------------------------- building
def _main_face(faces: list[dict], w: int, h: int) -> dict | None:
    central = [f for f in faces if _inside((w / 2, h / 2), f["box"])]
    pool = central or faces
    return max(pool, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])) if pool else None


def _affine_boxes(boxes: list[list[float]], m: np.ndarray) -> list[list[float]]:
    out = []
    for b in boxes:
        pts = np.array([[b[0], b[1], 1], [b[2], b[1], 1], [b[0], b[3], 1], [b[2], b[3], 1]], dtype=np.float64) @ m.T
        out.append([float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())])
    return out


def _rotated_box(b: list[float], m: np.ndarray) -> list[float]:
    """A face box after rotation: the rotated box's centre with the original side (not the
    bounding box of its corners, which would be 40 % too big at 45 degrees)."""
    c = np.array([*_centre(b), 1.0]) @ m.T
    hw, hh = (b[2] - b[0]) / 2.0, (b[3] - b[1]) / 2.0
    return [float(c[0] - hw), float(c[1] - hh), float(c[0] + hw), float(c[1] + hh)]


def _background_faces(boxes: list[list[float]], w: int, h: int, cw: int = 640, ch: int = 480) -> list[list[float]]:
    """The blurred faces of a *small* photo's background (the photo stretched to cw x ch): ignore regions."""
    return _affine_boxes(boxes, np.array([[cw / w, 0, 0], [0, ch / h, 0]]))


def _make(cat: str, img: np.ndarray, faces: list[list[float]], ignore: list[list[float]], main: list[float],
          rng: np.random.Generator) -> tuple[np.ndarray, list[list[float]], list[list[float]]]:
    h, w = img.shape[:2]
    side = max(main[2] - main[0], main[3] - main[1])
    if cat in ("frontal", "profile"):
        return img, faces, ignore
    if cat == "border":
        f = rng.uniform(0.15, 0.5)
        edge = rng.choice(["left", "right", "left", "right", "top", "bottom"])
        x0, y0, x1, y1 = 0, 0, w, h
        if edge == "left":
            x0 = int(round(main[0] + f * (main[2] - main[0])))
        elif edge == "right":
            x1 = int(round(main[2] - f * (main[2] - main[0])))
        elif edge == "top":
            y0 = int(round(main[1] + f * (main[3] - main[1])))
        else:
            y1 = int(round(main[3] - f * (main[3] - main[1])))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        out = np.ascontiguousarray(img[y0:y1, x0:x1])
        shift = lambda b: [b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0]  # noqa: E731
        kept, dropped = [], [shift(b) for b in ignore]
        for b in faces:
            s = shift(b)
            c = _clip(s, x1 - x0, y1 - y0)
            visible = max(0.0, c[2] - c[0]) * max(0.0, c[3] - c[1]) / ((s[2] - s[0]) * (s[3] - s[1]))
            (kept if b is main or visible >= 0.5 else dropped).append(s)
        return out, kept, dropped
    if cat == "small":
        target = rng.uniform(12, 31)
        f = target / side
        small = cv2.resize(img, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
        cw, ch = 640, 480
        bg = cv2.GaussianBlur(cv2.resize(img, (cw, ch)), (0, 0), 25)
        bg = np.clip(bg + rng.normal(0, 4, bg.shape), 0, 255).astype(np.uint8)
        ox, oy = int(rng.integers(0, cw - small.shape[1])), int(rng.integers(0, ch - small.shape[0]))
        bg[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        m = np.array([[small.shape[1] / w, 0, ox], [0, small.shape[0] / h, oy]])
        return bg, _affine_boxes(faces, m), _affine_boxes(ignore, m) + _background_faces(faces + ignore, w, h)
    if cat == "rotated":
        angle = float(rng.uniform(50, 180) * rng.choice([-1, 1]))
        m = cv2.getRotationMatrix2D(_centre(main), angle, 1.0)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * sin + w * cos) + 1, int(h * cos + w * sin) + 1
        m[0, 2] += nw / 2 - _centre(main)[0]
        m[1, 2] += nh / 2 - _centre(main)[1]
        out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out, [_rotated_box(b, m) for b in faces], [_rotated_box(b, m) for b in ignore]
    if cat == "occluded":
        out = img.copy()
        x0, y0, x1, y1 = main
        bw, bh = x1 - x0, y1 - y0
        kind = rng.choice(["mask", "glasses", "hand-left", "hand-right"])
        cover = rng.uniform(0.35, 0.55)
        if kind == "mask":
            r = (x0 - 0.05 * bw, y1 - cover * bh, x1 + 0.05 * bw, y1 + 0.05 * bh)
        elif kind == "glasses":
            cy = y0 + 0.38 * bh
            r = (x0, cy - cover * bh / 2, x1, cy + cover * bh / 2)
        elif kind == "hand-left":
            r = (x0 - 0.1 * bw, y0, x0 + cover * bw, y1)
        else:
            r = (x1 - cover * bw, y0, x1 + 0.1 * bw, y1)
        colour = rng.integers(0, 256, 3)
        rx0, ry0, rx1, ry1 = (int(round(v)) for v in r)
        rx0, ry0, rx1, ry1 = max(0, rx0), max(0, ry0), min(w, rx1), min(h, ry1)
        patch = np.clip(colour + rng.normal(0, 10, (ry1 - ry0, rx1 - rx0, 3)), 0, 255)
        out[ry0:ry1, rx0:rx1] = patch.astype(np.uint8)
        return out, faces, ignore
    if cat == "dark":
        gain = rng.uniform(0.06, 0.18)
        x = (img.astype(np.float64) / 255.0) ** rng.uniform(1.0, 1.6) * 255.0 * gain
        x += rng.normal(0, rng.uniform(1.0, 3.0), x.shape)
        return np.clip(np.round(x), 0, 255).astype(np.uint8), faces, ignore
    if cat == "blurred":
        sigma = side * rng.uniform(0.04, 0.09)
        return cv2.GaussianBlur(img, (0, 0), sigma), faces, ignore
    raise ValueError(cat)


def build_benchmark(
    shared: str | Path, out: str | Path, per_category: int = 100, seed: int = 0,
    scan_lfw: int = 2500, scan_celeba: int = 800, log: Callable[[str], None] = print,
    labellers: tuple[str, ...] = LABELLERS,
) -> list[BenchItem]:
    """Label base photos from ``shared/data`` and write ``per_category`` photos per category to ``out``.

    Needs the labellers (by default YuNet onnx, dlib and MediaPipe; at least two, since a label is
    where two agree). Deterministic for a seed.
    """
    if len(set(labellers)) < 2 or not set(labellers) <= set(LABELLERS):
        raise UsageError(f"the benchmark needs two or more labellers of {', '.join(LABELLERS)}, got {labellers}")
    shared, out = Path(shared), Path(out)
    lfw = sorted((shared / "data" / "lfw" / "images").glob("*/*.jpg"))
    celeba = sorted((shared / "data" / "celeba" / "images").glob("*.jpg"))
    if not lfw or not celeba:
        raise UsageError(f"LFW and CelebA images are needed under {shared}/data")
    rng = np.random.default_rng(seed)
    pool = [lfw[i] for i in rng.permutation(len(lfw))[:scan_lfw]] + [
        celeba[i] for i in rng.permutation(len(celeba))[:scan_celeba]]
    rng.shuffle(pool)
    bases = []
    for k, p in enumerate(pool):
        img = cv2.imread(str(p))[:, :, ::-1].copy()
        faces, ignore = _label(img, tuple(labellers))
        main = _main_face(faces, img.shape[1], img.shape[0])
        if main is not None:
            bases.append((p, faces, ignore, main))
        if (k + 1) % 500 == 0:
            log(f"labelled {k + 1}/{len(pool)} photos, {len(bases)} usable")
    frontal = [b for b in bases if b[3]["yaw"] is not None and abs(b[3]["yaw"]) < 0.15]
    profile = [b for b in bases if b[3]["yaw"] is not None and abs(b[3]["yaw"]) >= 0.3]
    others = [b for b in bases if b not in profile]
    log(f"{len(bases)} labelled bases: {len(frontal)} frontal, {len(profile)} turned (profile)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries, items = [], []
    for cat in CATEGORIES:
        source = frontal if cat == "frontal" else profile if cat == "profile" else others
        pick = rng.permutation(len(source))[:per_category]
        for j, i in enumerate(pick):
            p, faces, ignore, main = source[i]
            img = cv2.imread(str(p))[:, :, ::-1].copy()
            boxes = [f["box"] for f in faces]
            main_box = next(b for b in boxes if b is main["box"])
            made, fb, ib = _make(cat, img, boxes, ignore, main_box, rng)
            name = f"images/{cat}_{j:04d}.png"
            cv2.imwrite(str(out / name), np.ascontiguousarray(made[:, :, ::-1]))
            rel = str(p.relative_to(shared))
            entries.append({"file": name, "category": cat, "faces": fb, "ignore": ib, "source": rel})
            items.append(BenchItem(out / name, cat, fb, ib, rel))
    meta = {"seed": seed, "per_category": per_category, "labellers": list(labellers),
            "rule": "a face is a label where >= 2 labellers agree; one alone marks an ignore region",
            "items": entries}
    (out / "labels.json").write_text(json.dumps(meta, indent=1))
    return items

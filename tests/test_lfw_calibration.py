"""LFW View 2 protocol: unit tests on synthetic data, a CI-sized check that the
harness reproduces the reference figures of shared/README.md, and the full
reproduction behind ``FACEVEIL_FULL_LFW=1`` (deselected without it: see conftest.py).

Reference (shared/README.md; LFW View 2, 6,000 pairs, 10 folds, YuNet 5-point
alignment, cosine):
    ArcFace onnx  98.55 %, FAR 1e-2 0.246 (TAR 98.2 %), FAR 1e-3 0.325 (TAR 97.1 %)
    MobileFaceNet.tflite 98.62 %, 0.348 (98.2 %), 0.448 (96.1 %)
    dlib          98.45 %, 0.906 (97.9 %), 0.921 (94.3 %)

CI-sized check (about 1 minute on 2 cores): ArcFace on folds 0-2 (1,800 pairs,
~2,300 images; measured 98.33 / 99.00 / 99.67 % in the full run, 10-fold 98.63 %).
Its tolerance comes from the full run's per-fold spread (std of the 10 fold
accuracies 0.56 pt, so the mean of 3 folds has a standard error of about 0.3 pt):
accuracy within 1.2 pt of the 10-fold reference (~4 sigma), and
the FAR 1e-2 threshold (set by the 9th-highest of 900 impostor scores instead of the
31st of 3,000) within 0.04. dlib and MobileFaceNet get a smoke test on 200 pairs at
the reference FAR 1e-2 threshold.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from faceveil.evaluate import lfw as L

from conftest import SHARED  # ../shared, or $FACEVEIL_SHARED
LFW_DIR = SHARED / "data" / "lfw"
MODELS = SHARED / "models"

REFERENCE = {
    "arcface-onnx": (0.9855, (0.246, 0.982), (0.325, 0.971)),
    "mobilefacenet-tflite": (0.9862, (0.348, 0.982), (0.448, 0.961)),
    "dlib": (0.9845, (0.906, 0.979), (0.921, 0.943)),
}


# ----------------------------------------------------------------------------- synthetic
def test_parse_pairs_view2_format(tmp_path):
    txt = "2\t2\nA\t1\t2\nB\t1\t3\nA\t1\tC\t2\nB\t2\tD\t1\n" \
          "E\t1\t2\nF\t3\t4\nE\t1\tG\t1\nF\t1\tH\t10\n"
    p = tmp_path / "pairs.txt"
    p.write_text(txt)
    pairs = L.parse_pairs(p)
    assert len(pairs) == 8
    assert pairs[0] == L.LFWPair("A/A_0001.jpg", "A/A_0002.jpg", True, 0)
    assert pairs[2] == L.LFWPair("A/A_0001.jpg", "C/C_0002.jpg", False, 0)
    assert pairs[7] == L.LFWPair("F/F_0001.jpg", "H/H_0010.jpg", False, 1)
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    p.write_text("2\t2\nA\t1\t2\n")
    with pytest.raises(ValueError, match="expected"):
        L.parse_pairs(p)


def test_best_threshold_and_kfold_on_separable_scores():
    rng = np.random.default_rng(0)
    n = 1000
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = np.r_[rng.uniform(0.5, 1.0, n), rng.uniform(-0.2, 0.4, n)]
    thr, acc = L.best_threshold(scores, labels)
    assert acc == 1.0
    assert 0.4 < thr < 0.5
    folds = np.r_[np.arange(n) % 10, np.arange(n) % 10]
    accs, thrs = L.kfold_accuracy(scores, labels, folds)
    assert accs.shape == (10,) and np.all(accs == 1.0)
    assert np.all((thrs > 0.4) & (thrs < 0.5))


def test_kfold_accuracy_on_gaussian_scores_matches_theory():
    # same ~ N(1, 1), different ~ N(-1, 1): optimal threshold 0, accuracy Phi(1) = 0.841
    rng = np.random.default_rng(1)
    n = 20000
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = np.r_[rng.normal(1, 1, n), rng.normal(-1, 1, n)]
    folds = np.r_[np.arange(n) % 10, np.arange(n) % 10]
    accs, thrs = L.kfold_accuracy(scores, labels, folds)
    assert accs.mean() == pytest.approx(0.8413, abs=0.01)
    assert np.abs(thrs).max() < 0.1


def test_threshold_at_far_counts_false_accepts():
    neg = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    pos = np.array([0.9905, 0.995, 0.5, 0.98])
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(4, bool), np.zeros(1000, bool)]
    t = L.threshold_at_far(scores, labels, 1e-2)  # 10 false accepts allowed
    assert t.threshold == pytest.approx(0.9895)  # midway 0.989 | 0.990
    assert t.far == pytest.approx(0.01)
    assert t.tar == pytest.approx(0.5)
    t3 = L.threshold_at_far(scores, labels, 1e-3)  # one false accept allowed
    assert t3.threshold == pytest.approx(0.9985)
    assert t3.far == pytest.approx(0.001) and t3.tar == 0.0
    with pytest.raises(ValueError):
        L.threshold_at_far(pos, np.ones(4, bool), 1e-2)


def test_load_image_resolution(tmp_path):
    import cv2

    img = np.zeros((100, 80, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), img)
    rgb = L.load_image(p)
    assert rgb.shape == (100, 80, 3) and rgb[0, 0, 0] == 200
    assert L.load_image(p, 50).shape == (50, 40, 3)
    assert L.load_image(p, 200).shape == (200, 160, 3)


# ----------------------------------------------------------------------------- real data
def _need(model_file: str | None, module: str) -> None:
    if not (LFW_DIR / "pairs.txt").is_file():
        pytest.skip(f"LFW not found at {LFW_DIR} (shared data absent)")
    if model_file is not None and not (MODELS / model_file).is_file():
        pytest.skip(f"model file {MODELS / model_file} absent")
    if not (MODELS / "face_detection_yunet_2026may.onnx").is_file():
        pytest.skip("YuNet model file absent")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"optional library {module!r} not installed")


def _embedder(name: str):
    from faceveil.evaluate.embedders import get_embedder

    if name == "arcface-onnx":
        _need("arcface_mobilefacenet_fr_feature.onnx", "onnxruntime")
    elif name == "mobilefacenet-tflite":
        _need("MobileFaceNet.tflite", "ai_edge_litert")
    elif name == "dlib":
        _need(None, "dlib")
        if importlib.util.find_spec("face_recognition_models") is None:
            pytest.skip("face-recognition-models not installed")
    return get_embedder(name)


def _detector():
    from faceveil.evaluate.embedders import YuNetDetector

    return YuNetDetector(MODELS / "face_detection_yunet_2026may.onnx")


def test_evaluation_detectors_give_arcface_order_landmarks():
    """YuNet (where ../shared has its file) and dlib (PyPI), the detectors ``faceveil evaluate`` judges
    with, on LFW's Abel Pacheco or its stand-in, the free astronaut photo: ArcFace-order points, agreeing where both run."""
    from faceveil.evaluate.embedders import DlibDetector

    from conftest import lfw_face

    img = lfw_face("Abel_Pacheco")
    detectors = [DlibDetector()] if importlib.util.find_spec("dlib") else []
    if (MODELS / "face_detection_yunet_2026may.onnx").is_file():
        detectors.append(_detector())
    if not detectors:
        pytest.skip("no evaluation detector here (YuNet onnx or dlib)")
    points = []
    for det in detectors:
        lm = det.landmarks5(img)
        assert lm is not None and lm.shape == (5, 2), det.name
        assert lm[0, 0] < lm[1, 0]  # image-left eye first
        assert lm[3, 0] < lm[4, 0]  # image-left mouth corner first
        assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above nose above mouth
        points.append(lm)
    iod = float(np.linalg.norm(points[0][1] - points[0][0]))
    assert all(np.abs(p - points[0]).max() < 0.25 * iod for p in points)  # measured: 0.07 (LFW), 0.13 (astronaut)


def test_arcface_same_person_closer_than_different():
    emb = _embedder("arcface-onnx")
    det = _detector()
    root = LFW_DIR / "images"

    def e(rel):
        img = L.load_image(root / rel)
        return emb.embed(img, det.landmarks5(img))

    v = e("Aaron_Eckhart/Aaron_Eckhart_0001.jpg")
    assert v.shape == (512,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    pairs = L.parse_pairs(LFW_DIR / "pairs.txt")
    same, diff = pairs[0], pairs[300]
    s_same = float(e(same.image_a) @ e(same.image_b))
    s_diff = float(e(diff.image_a) @ e(diff.image_b))
    assert s_same > 0.246 > s_diff


def test_arcface_lfw_subset_reproduces_reference():
    """CI-sized reproduction: folds 0-2 (see the module docstring for tolerances)."""
    emb = _embedder("arcface-onnx")
    rep = L.evaluate_lfw(emb, LFW_DIR, folds=[0, 1, 2], detector=_detector())
    print("\n" + rep.summary())
    acc, (t2, _), (t3, _) = REFERENCE["arcface-onnx"]
    assert rep.n_pairs == 1800
    assert abs(rep.accuracy - acc) <= 0.012, rep.summary()
    assert abs(rep.far_thresholds[0].threshold - t2) <= 0.04, rep.summary()
    assert abs(rep.far_thresholds[1].threshold - t3) <= 0.08, rep.summary()
    assert rep.auc > 0.99
    assert rep.n_fallback <= 2


@pytest.mark.parametrize("name", ["dlib", "mobilefacenet-tflite"])
def test_embedder_smoke_on_lfw_pairs(name):
    """100 same + 100 different pairs of fold 0, judged at the reference FAR 1e-2
    threshold: reference TAR there is ~98 %, FAR 1 %; allow TAR >= 92 %, FAR <= 5 %
    (binomial 3-sigma on 100 pairs is about +-4 pt)."""
    emb = _embedder(name)
    pairs = L.parse_pairs(LFW_DIR / "pairs.txt")
    sub = pairs[:100] + pairs[300:400]
    images = [x for p in sub for x in (p.image_a, p.image_b)]
    embs, _ = L.compute_embeddings(images, LFW_DIR / "images", emb, _detector())
    s = L.pair_similarities(sub, embs)
    labels = np.array([p.same for p in sub])
    thr = REFERENCE[name][1][0]
    tar = float(np.mean(s[labels] >= thr))
    far = float(np.mean(s[~labels] >= thr))
    assert tar >= 0.92 and far <= 0.05, (tar, far)


@pytest.mark.full_lfw  # opt-in, deselected unless FACEVEIL_FULL_LFW=1 (conftest.py)
@pytest.mark.parametrize("name", ["arcface-onnx", "mobilefacenet-tflite", "dlib"])
def test_full_lfw_reproduces_reference(name):
    emb = _embedder(name)
    rep = L.evaluate_lfw(emb, LFW_DIR, detector=_detector())
    print("\n" + rep.summary())
    acc, (t2, r2), (t3, r3) = REFERENCE[name]
    assert rep.n_pairs == 6000
    assert abs(rep.accuracy - acc) <= 0.005, rep.summary()
    assert abs(rep.far_thresholds[0].threshold - t2) <= 0.015, rep.summary()
    assert abs(rep.far_thresholds[1].threshold - t3) <= 0.015, rep.summary()
    assert abs(rep.far_thresholds[0].tar - r2) <= 0.01, rep.summary()

"""Known-answer tests of faceveil.evaluate.metrics and the model-free parts of
faceveil.evaluate.embedders (alignment, face selection, registry)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from faceveil.errors import ModelUnavailableError
from faceveil.evaluate import embedders as E
from faceveil.evaluate import metrics as M

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason="scikit-image (optional, for SSIM) is not installed",
)


def _image(seed: int = 0, shape=(64, 64, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish content so blur changes structure but not everything
    base = rng.integers(0, 256, size=(shape[0] // 8, shape[1] // 8, shape[2]), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    noise = rng.integers(-20, 21, size=shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- PSNR
def test_psnr_identical_is_inf():
    a = _image()
    assert M.psnr(a, a) == math.inf
    assert M.region_psnr(a, a, np.ones(a.shape[:2], bool)) == math.inf


def test_psnr_constant_offset_is_analytic():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + np.uint8(10)
    expected = 10 * math.log10(255**2 / 100.0)  # MSE = 10^2
    assert M.psnr(a, b) == pytest.approx(expected, abs=1e-9)
    # float images in [0, 1]
    fa = a / 255.0
    fb = b / 255.0
    assert M.psnr(fa, fb) == pytest.approx(expected, abs=1e-9)
    assert M.psnr(a, b, data_range=1.0) == pytest.approx(10 * math.log10(1 / 100.0))


def test_region_psnr_only_counts_mask():
    a = np.zeros((20, 20), np.uint8)
    b = a.copy()
    b[:, 10:] = 50  # differ only on the right half
    left = np.zeros((20, 20), bool)
    left[:, :10] = True
    assert M.region_psnr(a, b, left) == math.inf
    expected = 10 * math.log10(255**2 / 2500.0)
    assert M.region_psnr(a, b, ~left) == pytest.approx(expected)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 1250.0))


def test_region_mask_validation():
    a = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="no pixels"):
        M.region_psnr(a, a, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="shape"):
        M.region_psnr(a, a, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        M.psnr(a, np.zeros((8, 9), np.uint8))


# ----------------------------------------------------------------------------- SSIM
@needs_skimage
def test_ssim_identical_is_one():
    a = _image()
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.region_ssim(a, a, np.ones(a.shape[:2], bool)) == pytest.approx(1.0)
    assert M.ssim(a[..., 0], a[..., 0]) == pytest.approx(1.0)


@needs_skimage
def test_gaussian_blur_lowers_ssim_monotonically():
    import cv2

    a = _image(1)
    s1 = M.ssim(a, cv2.GaussianBlur(a, (0, 0), 1.0))
    s3 = M.ssim(a, cv2.GaussianBlur(a, (0, 0), 3.0))
    assert 0 < s3 < s1 < 0.99


@needs_skimage
def test_region_ssim_is_mean_of_map_inside_mask():
    import cv2

    a = _image(2)
    b = a.copy()
    b[:, 32:] = cv2.GaussianBlur(a, (0, 0), 2.0)[:, 32:]
    mask = np.zeros(a.shape[:2], bool)
    mask[:, :24] = True  # untouched region, away from the seam (7x7 window)
    assert M.region_ssim(a, b, mask) == pytest.approx(1.0)
    right = np.zeros_like(mask)
    right[:, 40:] = True
    assert M.region_ssim(a, b, right) < 0.9
    smap = M.ssim_map(a, b)
    assert smap.shape == a.shape[:2]
    assert M.region_ssim(a, b, right) == pytest.approx(float(smap[right].mean()))


# ----------------------------------------------------------------------------- cosine
def test_cosine_similarity_known_values():
    assert M.cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert M.cosine_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.cosine_similarity([1, 0], [-3, 0]) == pytest.approx(-1.0)
    assert M.cosine_similarity([1, 1], [1, 0]) == pytest.approx(1 / math.sqrt(2))
    rows = M.cosine_similarity(np.eye(3), np.array([[1, 0, 0], [1, 0, 0], [0, 0, 2]]))
    np.testing.assert_allclose(rows, [1, 0, 1])
    with pytest.raises(ValueError):
        M.cosine_similarity([0, 0], [1, 0])


def test_pairwise_cosine():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 8))
    b = rng.normal(size=(3, 8))
    m = M.pairwise_cosine(a, b)
    assert m.shape == (4, 3)
    assert m[2, 1] == pytest.approx(M.cosine_similarity(a[2], b[1]))
    np.testing.assert_allclose(np.diag(M.pairwise_cosine(a)), 1.0)


def test_identity_match_rate():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    assert M.identity_match_rate(s, 0.25) == 0.5
    assert M.identity_match_rate(s, 0.3) == 0.5  # >= threshold matches
    assert M.identity_match_rate(s, 1.0) == 0.0
    assert M.identity_match_rate(s, -1.0) == 1.0


# ----------------------------------------------------------------------------- ROC
def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # a shift adds its squared length; Gaussians with diagonal covariances add sum (sqrt(a) - sqrt(b))^2
    assert M.frechet_distance(x, x + [3.0, 0.0, 4.0]) == pytest.approx(25.0, rel=1e-9)
    y = rng.normal(size=(4000, 3)) * [1.0, 2.0, 3.0]
    sa, sb = np.diag(np.cov(x, rowvar=False)), np.diag(np.cov(y, rowvar=False))
    expected = np.sum((np.sqrt(sa) - np.sqrt(sb)) ** 2) + np.sum((x.mean(0) - y.mean(0)) ** 2)
    assert M.frechet_distance(x, y) == pytest.approx(expected, abs=0.05)  # off-diagonals near zero
    assert M.frechet_distance(y, x) == pytest.approx(M.frechet_distance(x, y), rel=1e-9)
    with pytest.raises(ValueError):
        M.frechet_distance(x, x[:, :2])
    with pytest.raises(ValueError):
        M.frechet_distance(x[:1], x)


def test_auc_perfect_inverted_and_ties():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert M.roc_auc(scores, labels) == 1.0
    assert M.roc_auc(-scores, labels) == 0.0
    assert M.roc_auc(np.ones(6), labels) == 0.5  # all tied
    # one positive below one negative: 8 of 9 positive-negative pairs ordered
    assert M.roc_auc([0.9, 0.8, 0.15, 0.2, 0.1, 0.0], labels) == pytest.approx(8 / 9)


def test_auc_of_uninformative_scores_is_half():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    scores = rng.normal(size=20000)
    assert M.roc_auc(scores, labels) == pytest.approx(0.5, abs=0.01)


def test_auc_matches_gaussian_theory_and_roc_curve():
    # AUC of N(d, 1) vs N(0, 1) is Phi(d / sqrt 2)
    rng = np.random.default_rng(1)
    pos = rng.normal(1.0, 1.0, 20000)
    neg = rng.normal(0.0, 1.0, 20000)
    s = np.r_[pos, neg]
    y = np.r_[np.ones(20000), np.zeros(20000)]
    expected = 0.5 * (1 + math.erf(1.0 / 2.0))  # Phi(1/sqrt2)
    auc = M.roc_auc(s, y)
    assert auc == pytest.approx(expected, abs=0.01)
    fpr, tpr, thr = M.roc_curve(s, y)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(thr) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auc, abs=1e-9)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError):
        M.roc_auc([0.1, 0.2], [1, 1])


def test_similarity_stats():
    st = M.similarity_stats(np.arange(101) / 100.0)
    assert st.n == 101
    assert st.mean == pytest.approx(0.5)
    assert st.median == pytest.approx(0.5)
    assert st.min == 0.0 and st.max == 1.0
    assert st.p05 == pytest.approx(0.05) and st.p95 == pytest.approx(0.95)
    assert st.std == pytest.approx(np.std(np.arange(101) / 100.0, ddof=1))
    assert set(st.as_dict()) >= {"mean", "std", "median"}


# ----------------------------------------------------------------------------- alignment
def test_similarity_transform_recovers_known_transform():
    ang, scale, t = 0.3, 1.7, np.array([5.0, -3.0])
    r = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    src = E.ARCFACE_TEMPLATE_112
    dst = scale * src @ r.T + t
    m = E.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_align_face_puts_landmarks_on_template():
    import cv2

    # an image with 5 bright dots at landmark positions of a face 2x the template
    img = np.zeros((300, 300, 3), np.uint8)
    lm = E.ARCFACE_TEMPLATE_112 * 2.0 + np.array([40.0, 30.0])
    for x, y in lm:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    crop = E.align_face(img, lm, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in E.ARCFACE_TEMPLATE_112:
        assert crop[int(round(y)), int(round(x))].max() > 200
    crop224 = E.align_face(img, lm, 224)
    for x, y in E.ARCFACE_TEMPLATE_112 * 2:
        assert crop224[int(round(y)), int(round(x))].max() > 200


def _det(x, y, w, h, score=0.9):
    return E.FaceDetection(np.array([x, y, w, h], float), np.zeros((5, 2)), score)


def test_select_primary_face_policies():
    small_central = _det(40, 40, 20, 20, score=0.95)
    big_corner = _det(0, 0, 35, 35, score=0.7)
    dets = [small_central, big_corner]
    assert E.select_primary_face(dets, (100, 100), "central") is small_central
    assert E.select_primary_face(dets, (100, 100), "largest") is big_corner
    assert E.select_primary_face(dets, (100, 100), "score") is small_central
    assert E.select_primary_face([], (100, 100)) is None
    with pytest.raises(ValueError):
        E.select_primary_face(dets, (100, 100), "nearest")


# ----------------------------------------------------------------------------- registry
class _ConstEmbedder:
    name = "const-test"

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim

    def embed(self, image_rgb_uint8, landmarks5):
        v = np.ones(self.dim, np.float32)
        return v / np.linalg.norm(v)


def test_registry_roundtrip_and_errors():
    E.register_embedder("const-test", _ConstEmbedder, overwrite=True)
    try:
        emb = E.get_embedder("const-test", dim=8)
        assert isinstance(emb, E.Embedder)
        assert emb.embed(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 2))).shape == (8,)
        assert "const-test" in E.available_embedders()
        with pytest.raises(ValueError, match="already registered"):
            E.register_embedder("const-test", _ConstEmbedder)
        E.register_embedder("needs-missing-lib", _ConstEmbedder, requires=("no_such_mod_xyz",))
        assert "needs-missing-lib" not in E.available_embedders()
        assert "needs-missing-lib" in E.available_embedders(include_unavailable=True)
    finally:
        E._REGISTRY.pop("const-test", None)
        E._REGISTRY.pop("needs-missing-lib", None)
    with pytest.raises(ValueError, match="unknown embedder"):
        E.get_embedder("no-such-embedder")
    assert {"arcface-onnx", "dlib", "mobilefacenet-tflite"} <= set(
        E.available_embedders(include_unavailable=True)
    )


def test_missing_model_file_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailableError, match="not found"):
        E.find_model_file("arcface", tmp_path / "nope.onnx")
    monkeypatch.setenv("FACEVEIL_ARCFACE_ONNX", str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelUnavailableError, match="FACEVEIL_ARCFACE_ONNX"):
        E.find_model_file("arcface")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    with pytest.raises(ModelUnavailableError):
        E.ArcFaceOnnxEmbedder(model_path=tmp_path / "nope.onnx")

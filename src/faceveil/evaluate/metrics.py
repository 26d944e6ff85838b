"""Image-quality and identity metrics for evaluating anonymization and recovery.

All functions are pure numpy (SSIM uses scikit-image, imported lazily) and work on
``uint8`` or float images of shape ``(H, W)`` or ``(H, W, C)``. Region variants take a
boolean (or 0/1) mask of shape ``(H, W)`` selecting the pixels that count.

Conventions
-----------
* ``data_range`` defaults to 255 for integer images and 1.0 for float images.
* A pair "matches" when its cosine similarity is ``>= threshold``.
* :func:`roc_auc` is the probability that a random positive outscores a random
  negative (ties count one half), i.e. the Mann-Whitney U statistic normalised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "psnr",
    "region_psnr",
    "ssim",
    "region_ssim",
    "ssim_map",
    "cosine_similarity",
    "pairwise_cosine",
    "identity_match_rate",
    "frechet_distance",
    "roc_auc",
    "roc_curve",
    "SimilarityStats",
    "similarity_stats",
    "SeamReport",
    "seam_measure",
]


# --------------------------------------------------------------------------- helpers
def _as_float_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def _default_range(a: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    dtype = np.asarray(a).dtype
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def _mask_2d(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask shape {m.shape} does not match image shape {shape[:2]}")
    m = m.astype(bool)
    if not m.any():
        raise ValueError("mask selects no pixels")
    return m


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse <= 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


# --------------------------------------------------------------------------- PSNR
def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole image (``inf`` if identical)."""
    fa, fb = _as_float_pair(a, b)
    rng = _default_range(a, data_range)
    return _psnr_from_mse(float(np.mean((fa - fb) ** 2)), rng)


def region_psnr(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float | None = None
) -> float:
    """PSNR in dB over the pixels where ``mask`` is true (all channels of those pixels)."""
    fa, fb = _as_float_pair(a, b)
    m = _mask_2d(mask, fa.shape)
    rng = _default_range(a, data_range)
    return _psnr_from_mse(float(np.mean((fa[m] - fb[m]) ** 2)), rng)


# --------------------------------------------------------------------------- SSIM
def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Per-pixel SSIM map (``(H, W)``; channels averaged), scikit-image defaults
    (7x7 uniform window).  Images need each side >= 7."""
    from skimage.metrics import structural_similarity

    fa, fb = _as_float_pair(a, b)
    rng = _default_range(a, data_range)
    channel_axis = 2 if fa.ndim == 3 else None
    _, smap = structural_similarity(
        fa, fb, data_range=rng, channel_axis=channel_axis, full=True
    )
    if smap.ndim == 3:
        smap = smap.mean(axis=2)
    return smap


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity over the whole image (1.0 if identical)."""
    from skimage.metrics import structural_similarity

    fa, fb = _as_float_pair(a, b)
    rng = _default_range(a, data_range)
    channel_axis = 2 if fa.ndim == 3 else None
    return float(structural_similarity(fa, fb, data_range=rng, channel_axis=channel_axis))


def region_ssim(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float | None = None
) -> float:
    """Mean of the SSIM map over the pixels where ``mask`` is true.

    The SSIM map is computed on the whole image (windows near the mask border see
    some outside pixels), then averaged inside the mask.
    """
    smap = ssim_map(a, b, data_range)
    m = _mask_2d(mask, np.asarray(a).shape)
    return float(smap[m].mean())


# --------------------------------------------------------------------------- embeddings
def _l2n(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    if np.any(n == 0):
        raise ValueError("cannot take the cosine of a zero vector")
    return x / n


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Cosine similarity of two vectors (a float) or row-wise of two ``(N, D)``
    arrays (an ``(N,)`` array).  Inputs need not be normalised."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    s = np.sum(_l2n(a) * _l2n(b), axis=-1)
    return float(s) if s.ndim == 0 else s


def pairwise_cosine(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Matrix of cosine similarities between the rows of ``a`` (N, D) and ``b``
    (M, D) (``b`` defaults to ``a``)."""
    a = _l2n(np.atleast_2d(a))
    b = a if b is None else _l2n(np.atleast_2d(b))
    return a @ b.T


def identity_match_rate(similarities: np.ndarray, threshold: float) -> float:
    """Fraction of similarities ``>= threshold``.

    With similarities between anonymized and original faces this is the rate at which
    a face recogniser, operated at ``threshold``, still matches the identity (lower is
    better for anonymization, higher for recovery).
    """
    s = np.asarray(similarities, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no similarities given")
    return float(np.mean(s >= threshold))


# --------------------------------------------------------------------------- ROC
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows), as FID
    computes it on Inception features: ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)``.

    The matrix root is taken as ``(S_a^1/2 S_b S_a^1/2)^1/2``, which has the same trace and is
    symmetric, so eigendecompositions suffice (no complex parts to discard). With fewer rows
    than dimensions the covariances are singular and the figure is biased upwards: compare
    sets of the same size only.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"two (N, D) sets of one dimension are needed, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each set needs at least two embeddings")

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T

    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = psd_sqrt(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sb @ root_a), 0.0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(max(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * cross, 0.0))


def _scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if y.all() or not y.any():
        raise ValueError("ROC needs both positive and negative labels")
    return s, y


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # group boundaries of equal values
    starts = np.r_[0, np.nonzero(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties
    counting 1/2.  Rank-based (Mann-Whitney), exact, O(n log n)."""
    s, y = _scores_labels(scores, labels)
    ranks = _average_ranks(s)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` for the decision ``score >= threshold``,
    thresholds decreasing, starting at ``(0, 0, +inf)``."""
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    thr = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thr


# --------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class SimilarityStats:
    """Summary statistics of a set of similarity scores."""

    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float
    p05: float
    p95: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def similarity_stats(similarities: np.ndarray) -> SimilarityStats:
    """Mean, standard deviation, median, extremes and 5/95 % percentiles."""
    s = np.asarray(similarities, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no similarities given")
    p05, med, p95 = np.percentile(s, [5, 50, 95])
    return SimilarityStats(
        n=int(s.size),
        mean=float(s.mean()),
        std=float(s.std(ddof=1)) if s.size > 1 else 0.0,
        median=float(med),
        min=float(s.min()),
        max=float(s.max()),
        p05=float(p05),
        p95=float(p95),
    )


# --------------------------------------------------------------------------- seams
@dataclass(frozen=True)
class SeamReport:
    """Gradients along the changed region's edge, against the photo's own there.

    ``ratio`` is the mean gradient magnitude of the anonymized image over the edge band
    divided by the original's over the same band (1.0: the edge is as busy as the photo
    itself; a visible seam or ramp pushes it up); ``worst`` is the largest such ratio
    over 16 angular sectors of each face's edge (a local seam); ``band_px`` the band's
    half-width.
    """

    ratio: float
    worst: float
    band_px: float
    faces: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gradient(image: np.ndarray) -> np.ndarray:
    import cv2

    img = np.asarray(image, dtype=np.float64)
    luma = img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 else img
    gx = cv2.Sobel(luma, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_64F, 0, 1, ksize=3)
    return np.hypot(gx, gy)


def seam_measure(original: np.ndarray, anonymized: np.ndarray, band_fraction: float = 0.04, sectors: int = 16) -> SeamReport:
    """Seam measure of an anonymized photo, from the two images alone.

    The changed region is where the images differ, with holes filled, one component per
    face. Its edge band is every pixel within ``band_fraction`` of the component's
    equivalent diameter (at least 3 px) of its outline, on both sides.
    """
    import cv2

    a, b = np.asarray(original), np.asarray(anonymized)
    if a.shape != b.shape:
        raise ValueError("images must have the same shape")
    diff = (a != b) if a.ndim == 2 else (a != b).any(axis=-1)
    contours, _ = cv2.findContours(diff.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = [c for c in contours if cv2.contourArea(c) >= 64]
    if not contours:
        return SeamReport(float("nan"), float("nan"), 0.0, 0)
    ga, gb = _gradient(a), _gradient(b)
    num = den = 0.0
    worst, widths = 0.0, []
    for contour in contours:
        filled = np.zeros(diff.shape, np.uint8)
        cv2.drawContours(filled, [contour], -1, 1, thickness=-1)
        width = max(3.0, band_fraction * float(np.sqrt(4.0 * filled.sum() / np.pi)))
        widths.append(width)
        inside = cv2.distanceTransform(filled, cv2.DIST_L2, 5)
        outside = cv2.distanceTransform(1 - filled, cv2.DIST_L2, 5)
        band = ((inside > 0) & (inside <= width)) | ((outside > 0) & (outside <= width))
        num += float(gb[band].sum())
        den += float(ga[band].sum())
        ys, xs = np.nonzero(band)
        cy, cx = np.nonzero(filled)
        angle = np.arctan2(ys - cy.mean(), xs - cx.mean())
        sector = np.minimum(((angle + np.pi) / (2 * np.pi) * sectors).astype(int), sectors - 1)
        for k in range(sectors):
            sel = sector == k
            base = float(ga[ys[sel], xs[sel]].sum())
            if sel.sum() >= 16 and base > 0:
                worst = max(worst, float(gb[ys[sel], xs[sel]].sum()) / base)
    return SeamReport(num / den if den > 0 else float("nan"), worst, float(np.mean(widths)), len(contours))

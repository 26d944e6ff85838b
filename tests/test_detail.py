"""The detail stage (faceveil.detail): bicubic until trained, used only on enlarged faces,
carried in a model folder and its weights hash, and recovery stays exact through it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from faceveil.detail import DetailNet
from faceveil.engine import EngineSettings
from faceveil.container import open_header
from faceveil.errors import HeaderError, UsageError
from faceveil.faces.mask import default_outline
from faceveil.faces.paste import sample_crop
from faceveil.keys import Key
from faceveil.models import load_model
from faceveil.pipeline import (
    FaceJob, Settings, _paste_samples, anonymize_array, face_geometry, recover_array, recover_opened,
    whole_image_transform,
)
from faceveil.schema import check_public
from faceveil.testing import tiny_inpainting_model


def _trained_looking(min_enlargement: float = 1.0, seed: int = 0) -> DetailNet:
    """A small detail net whose correction is not zero (as after training)."""
    torch.manual_seed(seed)
    net = DetailNet(channels=8, blocks=1, min_enlargement=min_enlargement)
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.05)
    return net.eval()


def _photo(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([120 + 60 * np.sin(xx / 3.0), 140 + 50 * np.cos(yy / 2.5), 110 + 40 * np.sin((xx + yy) / 4.0)], -1)
    return rgb.astype(np.uint8)


def test_an_untrained_detail_net_is_bicubic():
    face = np.random.default_rng(0).uniform(0, 255, (16, 16, 3))
    out = DetailNet(channels=8, blocks=1).enhance(face)
    x = torch.from_numpy(face.transpose(2, 0, 1)).float()[None] / 127.5 - 1
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert out.shape == (32, 32, 3)
    assert np.allclose(out, (bicubic[0].numpy().transpose(1, 2, 0) + 1) * 127.5, atol=1e-3)


@pytest.mark.parametrize("min_enlargement, used", [(1.5, True), (2.5, False)])
def test_the_stage_runs_only_on_faces_enlarged_enough(min_enlargement, used):
    """A 32 px model crop pasted over a 64 px face is enlarged 2 times."""
    model = tiny_inpainting_model(32)
    model.detail = _trained_looking(min_enlargement)
    transform = whole_image_transform(64, 64, 32)
    geometry = face_geometry((64, 64, 3), transform, default_outline(32), model)
    face = np.random.default_rng(1).uniform(0, 255, (32, 32, 3))
    plain = sample_crop(face, transform, geometry.region)
    assert np.array_equal(_paste_samples(model, face, geometry, 1), plain) is not used


def test_recovery_is_exact_through_the_detail_stage():
    model = tiny_inpainting_model(32)
    model.detail = _trained_looking()
    rgb, key = _photo(), Key.generate()
    job = FaceJob(whole_image_transform(64, 64, 32), default_outline(32))
    veiled, record, _ = anonymize_array(rgb, key, model, faces=[job], settings=Settings(EngineSettings(steps=4)))
    assert np.abs(veiled.astype(int) - rgb).max() > 0
    back, info = recover_array(veiled, record, key, model)
    assert np.array_equal(back, rgb) and info.verified and not info.inexact_faces


def test_the_passes_a_face_gets_follow_its_enlargement():
    net = DetailNet(channels=8, blocks=1, min_enlargement=1.0)
    assert [net.passes(e, 2) for e in (0.9, 1.0, 3.9, 4.0, 11.0)] == [0, 1, 1, 2, 2]
    assert net.passes(11.0, 3) == 3 and net.passes(11.0, 1) == 1 and net.passes(7.9, 3) == 2


def test_a_face_enlarged_four_times_gets_two_passes_and_recovers_exactly():
    """A 32 px model crop over a 128 px face: the stage twice by default, once where the
    settings ask for one (files made before the setting), and recovery exact either way."""
    model = tiny_inpainting_model(32)
    model.detail = _trained_looking()
    rgb, key = _photo(128), Key.generate()
    transform = whole_image_transform(128, 128, 32)
    geometry = face_geometry(rgb.shape, transform, default_outline(32), model)
    face = np.random.default_rng(2).uniform(0, 255, (32, 32, 3))
    once, twice = (_paste_samples(model, face, geometry, n) for n in (1, 2))
    assert not np.allclose(once, twice)
    job = FaceJob(transform, default_outline(32))
    for passes in (2, 1):
        settings = Settings(EngineSettings(steps=4), detail_passes=passes)
        veiled, record, _ = anonymize_array(rgb, key, model, faces=[job], settings=settings)
        back, info = recover_array(veiled, record, key, model)
        assert np.array_equal(back, rgb) and info.verified and not info.inexact_faces
    # a one-pass file's header as files made before the setting have it (no detail_passes)
    public, private = open_header(key, record)
    assert public["settings"]["detail_passes"] == 1
    old = {**public, "settings": {k: v for k, v in public["settings"].items() if k != "detail_passes"}}
    check_public(old, *veiled.shape[:2])
    back, info = recover_opened(veiled, old, private, key, model)
    assert np.array_equal(back, rgb) and info.verified and not info.inexact_faces
    for bad in (0, 4, "2"):
        with pytest.raises(HeaderError, match="detail_passes"):
            check_public({**public, "settings": {**public["settings"], "detail_passes": bad}}, *veiled.shape[:2])


def test_settings_without_detail_passes_are_one_pass_and_bad_counts_are_refused():
    data = Settings().to_json()
    assert data["detail_passes"] == 2 and Settings.from_json(data).detail_passes == 2
    del data["detail_passes"]
    assert Settings.from_json(data).detail_passes == 1  # a file made before the setting
    for bad in (0, 4, True, 1.5):
        with pytest.raises(UsageError, match="detail_passes"):
            Settings(detail_passes=bad)


def test_a_model_folder_carries_its_detail_stage(tmp_path):
    model = tiny_inpainting_model(32)
    model.unet.save_pretrained(tmp_path / "unet")
    model.scheduler.save_pretrained(tmp_path / "scheduler")
    without = load_model(str(tmp_path))
    assert without.detail is None
    _trained_looking(1.25).save_pretrained(tmp_path / "detail")
    loaded = load_model(str(tmp_path))
    assert loaded.detail is not None and loaded.detail.config.min_enlargement == 1.25
    assert torch.equal(loaded.detail.conv_out.weight, _trained_looking(1.25).conv_out.weight)
    assert loaded.weights_hash != without.weights_hash  # headers name the stage too


def test_train_detail_learns_and_exports_a_model_folder(tmp_path):
    """A few steps on synthetic 32 px faces: resumable, validated against bicubic, exported beside a face model."""
    from faceveil.cli import main
    from faceveil.train.data import FaceData, save_faces

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.stack([
        np.stack([128 + 100 * np.sin(xx / (1.5 + k % 3) + k), 128 + 90 * np.cos(yy / (1.2 + k % 2)), 128 + 0 * xx], -1)
        for k in range(60)
    ]).clip(0, 255).astype(np.uint8)
    data = FaceData(images, np.zeros(60, np.int64), ["x"], [f"src{k % 2}/{k}.jpg" for k in range(60)], {"size": 32})
    save_faces(tmp_path / "set.npz", data)
    base = tmp_path / "base"
    model = tiny_inpainting_model(16)
    model.unet.save_pretrained(base / "unet")
    model.scheduler.save_pretrained(base / "scheduler")
    common = ["train-detail", "--data", str(tmp_path / "set.npz"), "--out", str(tmp_path / "run"), "--channels", "8",
              "--blocks", "1", "--batch-size", "4", "--adv-start", "3", "--checkpoint-every", "3", "--sample-every", "3",
              "--lr", "1e-3", "--quiet", "--source", "src1"]
    assert main([*common, "--steps", "4"]) == 0
    assert main([*common, "--steps", "8", "--export", str(tmp_path / "with-detail"), "--base", str(base)]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 8 and set(log[-1]["validation"]) >= {"l1", "l1_bicubic", "detail", "detail_bicubic"}
    assert (tmp_path / "run" / "samples" / "detail_00000006.png").is_file()
    loaded = load_model(str(tmp_path / "with-detail"))
    assert loaded.detail is not None and loaded.detail.config.channels == 8
    meta = json.loads((tmp_path / "with-detail" / "faceveil_train.json").read_text())
    assert meta["detail"]["trained_steps"] == 8 and meta["detail"]["data"]["sources"] == ["src1"]
    assert main([*common, "--source", "nowhere", "--steps", "9"]) != 0  # a source the set lacks
    assert main(["train-detail", "--out", str(tmp_path / "run"), "--export-only", "--export", str(tmp_path / "with-detail"),
                 "--base", str(base)]) != 0  # never overwrites
    # a new run started from the exported stage holds its weights at step 0; another network is refused
    assert main([*common, "--out", str(tmp_path / "run2"), "--steps", "0", "--init-from", str(tmp_path / "with-detail"),
                 "--export", str(tmp_path / "again"), "--base", str(base)]) == 0
    again = load_model(str(tmp_path / "again"))
    assert all(torch.equal(a, b) for a, b in zip(again.detail.state_dict().values(), loaded.detail.state_dict().values()))
    assert json.loads((tmp_path / "again" / "faceveil_train.json").read_text())["detail"]["started_from"] == str(tmp_path / "with-detail")
    assert main([*common, "--out", str(tmp_path / "run3"), "--steps", "1", "--channels", "4",
                 "--init-from", str(tmp_path / "with-detail")]) != 0
    assert main([*common, "--out", str(tmp_path / "run4"), "--steps", "1", "--init-from", str(base)]) != 0  # no stage there


def test_the_loss_mask_leaves_out_the_fill_beyond_the_photo():
    from faceveil.train.crops import photo_mask

    # a 20 x 10 photo (h x w) enlarged 2x into a 32 px crop: x in [0, 10) covers crop columns 0..19
    m = np.array([[[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]]])
    mask = photo_mask(m, np.array([[20, 10]]), 32, margin=0.0)[0]
    assert mask[:, :20].all() and not mask[:, 20:].any() and mask.dtype == bool
    inner = photo_mask(m, np.array([[20, 10]]), 32, margin=4.0)[0]
    assert inner[4:28, 4:16].all() and not inner[:, :4].any() and not inner[:, 16:].any()


def test_the_fill_s_blur_reaching_into_the_photo_is_no_target_either():
    from faceveil.train.crops import photo_mask

    whole = np.array([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # a 64 px photo halved: no fill
    assert photo_mask(whole, np.array([[64, 64]]), 32).all()
    m = np.array([[[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]]])  # filled beyond column 20: 0.1 x 32 px more left out
    auto = photo_mask(m, np.array([[20, 10]]), 32)[0]
    assert auto[:, :16].any() and not auto[:, 17:].any() and not auto[:3].any()


def test_export_refuses_a_checkpoint_that_is_not_a_detail_checkpoint(tmp_path):
    """Checkpoints are read with torch's weights_only loader and must carry the detail format tag."""
    from faceveil.train.detail import export_detail

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"step": 1, "ema": {}}, tmp_path / "run" / "checkpoints" / "detail_00000001.pt")
    (tmp_path / "base" / "unet").mkdir(parents=True)
    with pytest.raises(UsageError, match="not a faceveil detail-stage training checkpoint"):
        export_detail(tmp_path / "run", tmp_path / "base", tmp_path / "out")
    assert not (tmp_path / "out").exists()

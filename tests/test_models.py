"""Loading models the way users have them: diffusers folders, with or without model_index.json."""

import json

import pytest
import torch

from faceveil.errors import ModelUnavailableError
from faceveil.models import WEIGHTS_DIR, load_model
from faceveil.testing import tiny_latent_model


@pytest.mark.parametrize("autoencoder", ["vq", "kl"])
def test_pipeline_folder_with_model_index_loads_as_latent_model(tmp_path, autoencoder):
    model = tiny_latent_model(32, autoencoder=autoencoder)
    sub = "vqvae" if autoencoder == "vq" else "vae"
    model.unet.save_pretrained(tmp_path / "unet")
    model.scheduler.save_pretrained(tmp_path / "scheduler")
    model.autoencoder.save_pretrained(tmp_path / sub)
    cls = type(model.autoencoder).__name__
    index = {"_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"],
             sub: ["diffusers", cls], "scheduler": ["diffusers", "DDIMScheduler"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    loaded = load_model(str(tmp_path))
    assert loaded.kind == "latent" and loaded.image_size == 32 and loaded.downscale == 4
    assert type(loaded.autoencoder).__name__ == cls
    assert loaded.weights_hash == model.weights_hash  # the same weights, the same identity
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.allclose(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)), atol=1e-5)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ModelUnavailableError, match="not a diffusers model folder"):
        load_model(str(tmp_path))


def test_unknown_names_are_refused_clearly():
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        load_model("no-such-preset")


DRAFT = "faceveil-faces-64-draft"


def _draft_available() -> bool:
    from faceveil.models import model_available

    return model_available(DRAFT)


@pytest.mark.skipif(not _draft_available(), reason="the draft model's weights are not in this checkout")
def test_embedded_draft_model_veils_and_recovers_a_real_face():
    """The shipped weights load offline and round-trip an aligned LFW-like face exactly."""
    import numpy as np
    from conftest import SHARED
    from PIL import Image

    from faceveil.engine import EngineSettings
    from faceveil.keys import Key
    from faceveil.pipeline import Settings, anonymize_array, recover_array

    model = load_model(DRAFT)
    assert model.kind == "pixel" and model.image_size == 64 and model.autoencoder is None
    assert len(model.weights_hash) == 64
    photo = SHARED / "data" / "lfw" / "images" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    if photo.is_file():  # the central 64 px of an LFW photo holds the face
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((96, 96), Image.BICUBIC))[16:80, 16:80].copy()
    else:  # a textured stand-in (a flat patch barely changes once colours are matched)
        yy, xx = np.mgrid[0:64, 0:64]
        rgb = np.stack([120 + 60 * np.sin(xx / 5.0), 140 + 50 * np.cos(yy / 4.0), 110 + 40 * np.sin((xx + yy) / 7.0)], -1)
        rgb = rgb.astype(np.uint8)
    key = Key.generate()
    settings = Settings(EngineSettings(steps=10))
    veiled, record, _ = anonymize_array(rgb, key, model, settings=settings)
    assert np.abs(veiled.astype(int) - rgb).max() > 20
    back, _ = recover_array(veiled, record, key, model)
    assert np.array_equal(back, rgb)


# ---- the default model: the best one embedded in the package ------------------------
def test_default_model_is_the_best_embedded_one(tmp_path):
    from faceveil.models import EMBEDDED_MODELS, default_model

    assert EMBEDDED_MODELS == ("faceveil-faces-64", "faceveil-faces-96-v5", "faceveil-faces-96-v4", "faceveil-faces-96-v3",
                               "faceveil-faces-96-v2", "faceveil-faces-96", "faceveil-faces-64-draft")
    assert default_model(tmp_path) == DRAFT  # nothing shipped: the draft is named (its loading explains)
    (tmp_path / DRAFT / "unet").mkdir(parents=True)
    assert default_model(tmp_path) == DRAFT
    (tmp_path / "faceveil-faces-64").mkdir()
    assert default_model(tmp_path) == DRAFT  # a folder without weights does not count
    (tmp_path / "faceveil-faces-96" / "unet").mkdir(parents=True)
    assert default_model(tmp_path) == "faceveil-faces-96"  # the CPU-trained inpainting model beats the draft
    (tmp_path / "faceveil-faces-96-v3").mkdir()
    assert default_model(tmp_path) == "faceveil-faces-96"  # v3 shares v2's unet/, and there is none yet
    (tmp_path / "faceveil-faces-96-v2" / "unet").mkdir(parents=True)
    assert default_model(tmp_path) == "faceveil-faces-96-v3"  # v2 with the detail stage, on v2's unet/
    (tmp_path / "faceveil-faces-96-v3" / "unet").mkdir()
    assert default_model(tmp_path) == "faceveil-faces-96-v3"  # or on its own
    (tmp_path / "faceveil-faces-96-v5").mkdir()
    assert default_model(tmp_path) == "faceveil-faces-96-v3"  # v5 shares v4's unet/, and there is none yet
    (tmp_path / "faceveil-faces-96-v4" / "unet").mkdir(parents=True)
    assert default_model(tmp_path) == "faceveil-faces-96-v5"  # v4's face model, its detail stage on more faces
    (tmp_path / "faceveil-faces-96-v5" / "detail").mkdir()
    assert default_model(tmp_path) == "faceveil-faces-96-v4"  # v5's stage reads v3's detail weights: none yet
    (tmp_path / "faceveil-faces-96-v3" / "detail").mkdir()
    (tmp_path / "faceveil-faces-96-v3" / "detail" / "diffusion_pytorch_model.safetensors").touch()
    assert default_model(tmp_path) == "faceveil-faces-96-v5"
    (tmp_path / "faceveil-faces-64" / "unet").mkdir()
    assert default_model(tmp_path) == "faceveil-faces-64"  # the day the GPU model ships


def test_default_alias_loads_under_its_real_name(tmp_path, monkeypatch):
    import faceveil.models as models
    from faceveil.testing import tiny_pixel_model

    tiny = tiny_pixel_model(32)
    tiny.unet.save_pretrained(tmp_path / "unet")
    tiny.scheduler.save_pretrained(tmp_path / "scheduler")
    monkeypatch.setattr(models, "default_model", lambda weights_dir=None: str(tmp_path))
    for spec in (None, "default"):
        loaded = load_model(spec)
        assert loaded.model_id == str(tmp_path)  # what headers record: never the alias
        assert loaded.weights_hash == tiny.weights_hash
    assert models.model_available("default")


@pytest.mark.skipif(not _draft_available(), reason="the draft model's weights are not in this checkout")
def test_shipped_default_is_the_cpu_inpainting_model_and_all_load_offline(monkeypatch):
    from faceveil.models import default_model, model_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_model() == "faceveil-faces-96-v5"  # until faceveil-faces-64 (GPU) ships
    model = load_model()
    assert model.model_id == "faceveil-faces-96-v5" and model.framing == "face" and model.image_size == 96
    assert model.noise_gain == 1.25  # measured best with these weights (MODEL_CARD.md)
    assert model.detail_floor == 0.2  # its blurred draws are drawn again (MODEL_CARD.md)
    assert model.detail is not None and model.detail.applies(0.8) and not model.detail.applies(0.7)
    fourth = load_model("faceveil-faces-96-v4")  # the same weights, the stage from 1.0: its files recover with it
    assert not (WEIGHTS_DIR / "faceveil-faces-96-v5" / "unet").exists()  # v4's unet/, shipped once
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), fourth.unet.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(model.detail.state_dict().values(), fourth.detail.state_dict().values()))
    assert fourth.detail.applies(1.0) and not fourth.detail.applies(0.8)
    assert model.weights_hash != fourth.weights_hash  # the switch-on size is part of the model's identity
    # the hashes of when each folder carried its own copy of the weights (Preset.unet_from, Preset.detail_from)
    assert model.weights_hash == "ed73b4e3e7c14ec94c0a2fe344bdd7da3572a845513904948a8f4139544902c0"
    assert fourth.weights_hash == "3094a99fa1a5fe5375721ddd4e2b30c3e85368239a542959585860a4a4317c15"
    third = load_model("faceveil-faces-96-v3")  # the default before v4: v2's face model with the same stage
    second = load_model("faceveil-faces-96-v2")  # the same face model without the stage: its files recover
    assert second.detail is None and second.weights_hash != third.weights_hash
    assert fourth.weights_hash not in (third.weights_hash, second.weights_hash)
    assert all(torch.equal(a, b) for a, b in zip(fourth.detail.state_dict().values(), third.detail.state_dict().values()))
    # shipped once (Preset.unet_from, Preset.detail_from): v3's folder has no unet/ of its own and loads v2's; v4 and v5
    # keep only their detail stage's config (v5's switch-on size) and read its weights from v3's folder
    for name in ("faceveil-faces-96-v4", "faceveil-faces-96-v5"):
        assert (WEIGHTS_DIR / name / "detail" / "config.json").is_file()
        assert not list((WEIGHTS_DIR / name / "detail").glob("*.safetensors"))
    assert not (WEIGHTS_DIR / "faceveil-faces-96-v3" / "unet").exists()
    assert third.weights_hash == "976fc0aff930bffebd3fdd1f09e4e90de11791f183ec34d44beb3c624d4e5d1b"  # as when it had one
    assert load_model(str(WEIGHTS_DIR / "faceveil-faces-96-v3")).weights_hash == third.weights_hash  # its folder by path
    assert model_available(str(WEIGHTS_DIR / "faceveil-faces-96-v3"))  # which is available, as load_model finds
    assert all(torch.equal(a, b) for a, b in zip(second.unet.state_dict().values(), third.unet.state_dict().values()))
    first = load_model("faceveil-faces-96")  # files anonymized with the first version still recover
    assert first.model_id == "faceveil-faces-96" and first.noise_gain == 1.0
    assert load_model(DRAFT).model_id == DRAFT  # the draft still loads by name


def test_hub_presets_are_chosen_by_name_with_one_line_when_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-faceveil-test")
    with pytest.raises(ModelUnavailableError) as exc:
        load_model("ldm-celebahq-256")
    message = str(exc.value)
    assert len(message.splitlines()) == 1 and "hf download CompVis/ldm-celebahq-256" in message


def test_a_detail_stage_without_weights_is_refused_clearly(tmp_path):
    """A folder whose detail/ holds only a config, outside the package (no preset to take weights
    from), is not a whole model: loading it says so, and it is not offered as available."""
    import shutil

    from faceveil.models import model_available
    from faceveil.train.detail import initial_stage

    v4, v5 = WEIGHTS_DIR / "faceveil-faces-96-v4", WEIGHTS_DIR / "faceveil-faces-96-v5"
    if not (v4 / "unet").is_dir():
        pytest.skip("the v4 weights are not in this checkout")
    folder = tmp_path / "model"
    shutil.copytree(v4, folder)
    shutil.rmtree(folder / "detail")
    shutil.copytree(v5 / "detail", folder / "detail")  # the config alone
    with pytest.raises(ModelUnavailableError, match="no weights file"):
        load_model(str(folder))
    assert not model_available(str(folder))
    stage = initial_stage(v5)  # a detail run starting from an embedded preset finds the shared weights
    assert float(stage.config.min_enlargement) == 0.75

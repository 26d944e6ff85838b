"""Loading models the way users have them: diffusers folders, with or without model_index.json."""

import json

import pytest
import torch

from faceveil.errors import ModelUnavailableError
from faceveil.models import load_model
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

"""Shared fixtures: tiny diffusers models (random weights, built here) and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def pixel_model():
    from faceveil.testing import tiny_pixel_model

    return tiny_pixel_model(32)


@pytest.fixture(scope="session")
def latent_model():
    from faceveil.testing import tiny_latent_model

    return tiny_latent_model(32)


@pytest.fixture(scope="session")
def pixel_model_dir(tmp_path_factory, pixel_model):
    """The tiny pixel model saved as a diffusers folder, for the CLI."""
    folder = tmp_path_factory.mktemp("model")
    pixel_model.unet.save_pretrained(folder / "unet")
    pixel_model.scheduler.save_pretrained(folder / "scheduler")
    return folder

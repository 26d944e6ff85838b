"""Data preparation and training of faceveil's own unconditional face diffusion model.

Nothing heavy is imported here: ``faceveil.train.data`` needs numpy (and, only inside
:func:`prepare_dataset`, the face detector), ``faceveil.train.trainer`` needs torch
and diffusers. The names below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FaceCropDataset",
    "FaceData",
    "PrepareReport",
    "TrainConfig",
    "TrainResult",
    "build_unet",
    "celeba_holdout_identities",
    "export_checkpoint",
    "latest_checkpoint",
    "lfw_excluded_names",
    "load_faces",
    "prepare_dataset",
    "train",
]

_DATA = {
    "FaceCropDataset",
    "FaceData",
    "PrepareReport",
    "celeba_holdout_identities",
    "lfw_excluded_names",
    "load_faces",
    "prepare_dataset",
}
_TRAINER = {
    "TrainConfig",
    "TrainResult",
    "build_unet",
    "export_checkpoint",
    "latest_checkpoint",
    "train",
}


def __getattr__(name: str) -> Any:
    if name in _DATA:
        from faceveil.train import data

        return getattr(data, name)
    if name in _TRAINER:
        from faceveil.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'faceveil.train' has no attribute {name!r}")

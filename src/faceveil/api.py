"""The file-level public API: ``anonymize`` and ``recover`` one image file.

These read the input (EXIF orientation, grayscale, alpha), run the pipeline and write
the result atomically, never over an input and never over an existing file unless
``overwrite`` is set. The CLI is a thin shell over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceveil.container import open_header, read_record, write_image, write_veiled
from faceveil.engine import EngineSettings
from faceveil.errors import UsageError
from faceveil.imageio import LoadedImage, read_image, to_output_array
from faceveil.keys import Key
from faceveil.models import DEFAULT_MODEL, DiffusionModel, load_model
from faceveil.pipeline import FaceReport, Progress, Settings, anonymize_array, recover_array

VEILED_TAG = ".veiled"
RECOVERED_TAG = ".recovered"


@dataclass
class Result:
    """What one call wrote and how it went."""

    input: Path
    outputs: list[Path]
    faces: list[FaceReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_output(input_path: Path, tag: str) -> Path:
    """``photo.jpg`` -> ``photo.veiled.png``; ``photo.veiled.png`` -> ``photo.recovered.png``."""
    stem = input_path.stem
    for known in (VEILED_TAG, RECOVERED_TAG):
        if stem.endswith(known):
            stem = stem[: -len(known)]
    return input_path.with_name(f"{stem}{tag}.png")


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    for source in inputs:
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise UsageError(f"refusing to write over the input {source}")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} already exists; choose another -o or pass --overwrite")


def _key(key: Key | str | os.PathLike) -> Key:
    return key if isinstance(key, Key) else Key.load(key)


def _model(model: DiffusionModel | str) -> DiffusionModel:
    return model if isinstance(model, DiffusionModel) else load_model(model)


def anonymize(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str = DEFAULT_MODEL,
    steps: int | None = None,
    settings: Settings | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Anonymize the face of an image file (treated as one aligned face) and write it with its header."""
    source = Path(input)
    loaded = read_image(source)
    target = Path(output) if output is not None else default_output(source, VEILED_TAG)
    _check_output(target, [source], overwrite)
    settings = settings or Settings()
    if steps is not None:
        settings = Settings(EngineSettings(**{**settings.engine.to_json(), "steps": steps}), settings.decoder_iters, settings.hint)
    key, model = _key(key), _model(model)
    array, record, reports = anonymize_array(
        loaded.rgb, key, model, settings=settings, output_like=lambda rgb: to_output_array(loaded, rgb), progress=progress
    )
    written = write_veiled(target, array, record, overwrite=overwrite)
    notes = [f"header in sidecar {written[1].name}"] if len(written) > 1 else []
    return Result(source, written, reports, notes)


def recover(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Restore the original faces of an anonymized image file; needs only the file and the key."""
    source = Path(input)
    loaded = read_image(source)
    record = read_record(source)
    target = Path(output) if output is not None else default_output(source, RECOVERED_TAG)
    _check_output(target, [source], overwrite)
    key = _key(key)
    public, _ = open_header(key, record)  # wrong key or tampering stops here, before any model work
    model = _model(model if model is not None else public.get("model", {}).get("id", DEFAULT_MODEL))
    array, info = recover_array(
        _raw_array(loaded), record, key, model, output_like=lambda rgb: to_output_array(loaded, rgb), progress=progress
    )
    notes = []
    if info.pixels_changed:
        notes.append("the image was modified after anonymization (re-encoded or edited): recovery is approximate")
    if not info.used_hint:
        notes.append("no recovery hint in the header: recovery is approximate")
    written = [write_image(target, array, overwrite=overwrite)]
    return Result(source, written, info.reports, notes)


def _raw_array(loaded: LoadedImage) -> np.ndarray:
    """The array as it was written by anonymization (gray, gray+alpha, RGB or RGBA)."""
    return to_output_array(loaded, loaded.rgb)

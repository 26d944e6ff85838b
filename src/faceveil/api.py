"""The file-level public API: ``anonymize`` and ``recover`` one image file.

These read the input (EXIF orientation, grayscale, alpha), run the pipeline and write
the result atomically, never over an input and never over an existing file unless
``overwrite`` is set. The CLI is a thin shell over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faceveil.container import open_header, read_record, write_image, write_veiled
from faceveil.errors import NoFaceError, UsageError
from faceveil.faces import DEFAULT_MIN_SIZE, alignment_transform, detect_faces, face_outline
from faceveil.imageio import DEFAULT_MAX_PIXELS, LoadedImage, read_image, to_output_array, upright_exif
from faceveil.keys import Key
from faceveil.models import DiffusionModel, default_model, load_model
from faceveil.pipeline import FaceJob, FaceReport, Progress, Settings, anonymize_array, recover_opened

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
    """``photo.jpg`` -> ``photo.veiled.png``; ``photo.veiled.png`` -> ``photo.recovered.png``; videos -> ``.mkv``."""
    from faceveil.batch import VIDEO_SUFFIXES

    stem = input_path.stem
    for known in (VEILED_TAG, RECOVERED_TAG):
        if stem.endswith(known):
            stem = stem[: -len(known)]
    suffix = ".mkv" if input_path.suffix.lower() in VIDEO_SUFFIXES else ".png"
    return input_path.with_name(f"{stem}{tag}{suffix}")


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    for source in inputs:
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise UsageError(f"refusing to write over the input {source}")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} already exists; choose another -o or pass --overwrite")


def _key(key: Key | str | os.PathLike) -> Key:
    return key if isinstance(key, Key) else Key.load(key)


def _model(model: DiffusionModel | str | None) -> DiffusionModel:
    """A loaded model as is; a name, hub id or folder loaded; ``None`` the best embedded model."""
    return model if isinstance(model, DiffusionModel) else load_model(model)


def find_faces(
    rgb: np.ndarray, size: int, mask: str = "face", min_face: int = DEFAULT_MIN_SIZE
) -> tuple[list[FaceJob], list[str]]:
    """Detect every face and make its job (alignment transform and crop mask); notes for the user.

    Faces below ``min_face`` pixels are anonymized too (a privacy tool never passes a
    face through), but reported, since detection and landmarks get unreliable there.
    """
    faces = detect_faces(rgb, min_size=min_face)
    jobs = []
    for face in faces:
        transform = alignment_transform(face, size)
        jobs.append(FaceJob(transform, face_outline(face, transform, include=mask)))
    small = [f for f in faces if f.too_small]
    notes = []
    if small:
        sizes = ", ".join(f"{f.side:.0f} px" for f in small)
        notes.append(f"{len(small)} face(s) below {min_face} px ({sizes}) anonymized; check them: detection is unreliable at that size")
    return jobs, notes


def anonymize(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    steps: int | None = None,
    settings: Settings | None = None,
    aligned: bool = False,
    mask: str = "face",
    min_face: int = DEFAULT_MIN_SIZE,
    allow_no_face: bool = False,
    residual: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Anonymize every face of an image file and write the result with its faceveil header.

    ``model`` is a loaded model, a preset name, a hub id or a folder; ``None`` (the
    default) is the best model embedded in the package (:func:`faceveil.models.default_model`,
    offline). ``progress`` is called with 1 after every UNet evaluation (a progress bar's
    ``update``); their number per face depends on the steps and on how soon refinement converges.
    ``aligned=True`` treats the whole image as one already aligned face (default mask).
    An image with no face raises ``NoFaceError`` unless ``allow_no_face`` is set, in
    which case it is written unchanged (with a header, so ``recover`` accepts it).
    """
    source = Path(input)
    loaded = read_image(source, max_pixels=max_pixels)
    target = Path(output) if output is not None else default_output(source, VEILED_TAG)
    _check_output(target, [source], overwrite)
    settings = settings or Settings()
    if steps is not None:
        settings = replace(settings, engine=replace(settings.engine, steps=steps))
    key, model = _key(key), _model(model)
    notes: list[str] = []
    jobs = None
    if not aligned:
        jobs, notes = find_faces(loaded.rgb, model.image_size, mask=mask, min_face=min_face)
        if not jobs and not allow_no_face:
            raise NoFaceError(f"no face found in {source} (use --allow-no-face to pass it through, --aligned for a face crop)")
        if not jobs:
            notes.append("no face found: written unchanged (--allow-no-face)")
    array, record, reports = anonymize_array(
        loaded.rgb, key, model, faces=jobs, settings=settings, output_like=lambda rgb: to_output_array(loaded, rgb),
        residual=residual, progress=progress, metadata=loaded.metadata,
    )
    if not residual:
        notes.append("no residual stored (--no-residual): recovery will give the model's reconstruction, not the exact original")
    written = write_veiled(target, array, record, overwrite=overwrite)
    if len(written) > 1:
        notes.append(f"header written to sidecar {written[1].name}: keep it with the image")
    if target.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        notes.append("lossy output: pixels outside the faces are re-encoded and recovery is approximate; use .png for exactness")
    if loaded.exif_transposed:
        notes.append("EXIF orientation applied: the output is stored upright")
    if loaded.metadata:
        kinds = ", ".join("EXIF (GPS, camera, thumbnail)" if k == "exif" else k.upper().replace("_PROFILE", "") for k in loaded.metadata)
        notes.append(f"the input's metadata ({kinds}) is not in the veiled file; it is sealed in the header and restored by recover")
    return Result(source, written, reports, notes)


def recover(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    use_residual: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Restore the original faces of an anonymized image file; needs only the file and the key.

    The model named in the header is loaded unless ``model`` overrides it (a local copy);
    ``progress`` is called with 1 after every UNet evaluation.
    """
    source = Path(input)
    record = read_record(source)  # bounded by the image's declared size, validated, before any pixel is decoded
    loaded = read_image(source, max_pixels=max_pixels)
    target = Path(output) if output is not None else default_output(source, RECOVERED_TAG)
    _check_output(target, [source], overwrite)
    key = _key(key)
    public, private = open_header(key, record)  # wrong key or tampering stops here, before any model work
    model = _model(model if model is not None else public.get("model", {}).get("id") or default_model())
    array, info = recover_opened(
        _raw_array(loaded), public, private, key, model, output_like=lambda rgb: to_output_array(loaded, rgb),
        use_residual=use_residual, progress=progress,
    )
    notes = []
    if info.pixels_changed:
        lossy = lossy_format(source)
        if lossy:
            notes.append(
                f"{lossy} is a lossy format: its pixels differ from those faceveil anonymized, so recovery is "
                f"approximate, not exact ({LOSSY_QUALITY}); anonymize to .png for exact recovery"
            )
        else:
            notes.append("the image was modified after anonymization (re-encoded or edited): recovery is approximate")
    if not info.used_residual:
        notes.append("no residual used: the faces are the model's reconstruction, not the exact original pixels")
    metadata = dict(info.metadata)
    if "exif" in metadata:  # the pixels are stored upright: the restored EXIF must say so
        metadata["exif"] = upright_exif(metadata["exif"])
    written = [write_image(target, array, overwrite=overwrite, metadata=metadata)]
    return Result(source, written, info.reports, notes)


# Measured on faceveil's own JPEG output (quality 95) with the draft model: 17.0 dB median face PSNR
# on 5 LFW faces (benchmarks/results/lfw-draft64/report.md, robustness; 11.9 dB for the anonymized
# face itself), 14.6 dB on one LFW face after the seamless paste (the anonymized face: 14.5 dB).
LOSSY_QUALITY = (
    "measured at JPEG quality 95 with the draft model: face PSNR 15 to 17 dB, little better than "
    "the anonymized face itself (12 to 15 dB)"
)


def lossy_format(path: str | os.PathLike) -> str | None:
    """``"JPEG"`` or ``"WebP"`` when the file is stored lossily, else ``None`` (PNG, lossless WebP, ...).

    Decided from the file's bytes, not its name: a WebP is lossy when its image data is a
    ``VP8 `` chunk (faceveil writes WebP at quality 95), lossless for ``VP8L``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return None
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        pos = 12
        while pos + 8 <= len(head):
            tag, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
            if tag == b"VP8 ":
                return "WebP"
            if tag == b"VP8L":
                return None
            pos += 8 + size + (size & 1)
    return None


def _raw_array(loaded: LoadedImage) -> np.ndarray:
    """The array as it was written by anonymization (gray, gray+alpha, RGB or RGBA)."""
    return to_output_array(loaded, loaded.rgb)

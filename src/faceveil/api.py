"""The file-level public API: ``anonymize`` and ``recover`` one image file.

These read the input (EXIF orientation, grayscale, alpha), run the pipeline and write
the result atomically, never over an input and never over an existing file unless
``overwrite`` is set. The CLI is a thin shell over them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faceveil.binding import check_binding
from faceveil.container import read_record, unlock, write_image, write_veiled
from faceveil.errors import FaceveilError, NoFaceError, UsageError
from faceveil.interrupts import deferred
from faceveil.faces import DEFAULT_MIN_SIZE, default_outline, detect_faces
from faceveil.imageio import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    read_image,
    to_output_array,
    upright_exif,
)
from faceveil.envelope import RECIPIENT_HRP, DisclosureToken, Envelope, Recipient, is_token_file
from faceveil.keys import Identity, Key, load_secret
from faceveil.models import DiffusionModel, default_model, load_model
from faceveil.pipeline import (
    DEFAULT_BATCH,
    DEFAULT_REDRAWS,
    FaceJob,
    FaceReport,
    PhotoJob,
    Progress,
    RecoverInfo,
    Settings,
    VeiledPhoto,
    anonymize_arrays,
    recover_arrays,
    whole_image_transform,
)
from faceveil.treatments import DEFAULT_FALLBACK, check_fallback, fallback_note, plan_face, treatment_of

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
        stem = stem.removesuffix(known)
    suffix = ".mkv" if input_path.suffix.lower() in VIDEO_SUFFIXES else ".png"
    return input_path.with_name(f"{stem}{tag}{suffix}")


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    for source in inputs:
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise UsageError(f"refusing to write over the input {source}")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} already exists; choose another -o or pass --overwrite")


Recipients = Key | Identity | Recipient | Envelope | str | os.PathLike | list  # what ``anonymize`` takes as ``key``
Opener = Key | Identity | DisclosureToken | str | os.PathLike  # what ``recover`` takes as ``key``


def _recipients(key: Recipients) -> Key | Identity | Recipient | Envelope | list:
    """What anonymization is for: keys and recipients as given; a ``faceveil1...`` string parsed; a path loaded
    (a key file or an identity file, which stands for its recipient). A list may mix them all."""
    if isinstance(key, (list, tuple)):
        if not key:
            raise UsageError("no key and no recipient: give --key, --recipient or --recipients-file")
        return [_recipients(k) for k in key]
    if isinstance(key, (Key, Identity, Recipient, Envelope)):
        return key
    if isinstance(key, str) and key.strip().startswith(RECIPIENT_HRP + "1"):
        return Recipient.parse(key)
    return load_secret(key)


def _opener(key: Opener) -> Key | Identity | DisclosureToken:
    """What recovery opens headers with: a key, an identity or a disclosure token, or a path to one of them."""
    if isinstance(key, (Key, Identity, DisclosureToken)):
        return key
    if is_token_file(key):
        return DisclosureToken.load(key)
    return load_secret(key)


def _model(model: DiffusionModel | str | None) -> DiffusionModel:
    """A loaded model as is; a name, hub id or folder loaded; ``None`` the best embedded model."""
    return model if isinstance(model, DiffusionModel) else load_model(model)


def find_faces(
    rgb: np.ndarray, size: int, mask: str = "face", min_face: int = DEFAULT_MIN_SIZE, style: str = "face",
    fallback: str = DEFAULT_FALLBACK, framing: str = "ffhq",
) -> tuple[list[FaceJob], list[str]]:
    """Detect every face and make its job (alignment transform and crop mask); notes for the user.

    Faces below ``min_face`` pixels are anonymized too (a privacy tool never passes a
    face through), but reported, since detection and landmarks get unreliable there.
    ``style`` is the treatment of every face (``treatments.STYLES``); a face whose model
    geometry is unsound gets its box's geometry and ``fallback`` (``treatments.plan_face``), with a note.
    """
    faces = detect_faces(rgb, min_size=min_face)
    jobs, fallbacks = [], []
    for index, face in enumerate(faces):
        job, problem = plan_face(face, rgb.shape, size, mask, style, fallback, framing)
        jobs.append(job)
        if problem is not None:
            fallbacks.append(fallback_note(index, face, problem, job.treatment))
    small = [f for f in faces if f.too_small]
    notes = []
    if small:
        sizes = ", ".join(f"{f.side:.0f} px" for f in small)
        notes.append(f"{len(small)} face(s) below {min_face} px ({sizes}) anonymized; check them: detection is unreliable at that size")
    return jobs, notes + fallbacks


def anonymize(
    input: str | os.PathLike,
    key: Recipients,
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
    style: str = "face",
    fallback: str = DEFAULT_FALLBACK,
    redraws: int = DEFAULT_REDRAWS,
) -> Result:
    """Anonymize every face of an image file and write the result with its faceveil header.

    ``key`` is whom the file is for: a symmetric :class:`~faceveil.keys.Key` (or its file),
    a recipient (``faceveil1...`` string or :class:`~faceveil.envelope.Recipient`; no secret
    needed), an identity (for its recipient), or a list of these: any one of them recovers.
    Each file gets a fresh file key, wrapped for each (SECURITY.md).

    ``model`` is a loaded model, a preset name, a hub id or a folder; ``None`` (the
    default) is the best model embedded in the package (:func:`faceveil.models.default_model`,
    offline). ``settings`` default to :meth:`Settings.for_model` (the model's recommended
    noise gain). ``progress`` is called with 1 after every UNet evaluation (a progress bar's
    ``update``); their number per face depends on the steps and on how soon refinement converges.
    ``aligned=True`` treats the whole image as one already aligned face (default mask).
    An image with no face raises ``NoFaceError`` unless ``allow_no_face`` is set, in
    which case it is written unchanged (with a header, so ``recover`` accepts it).
    ``style`` (``"face"``, ``"pixelate"``, ``"blur"``, ``"solid"``): ``"face"`` is the
    diffusion model; the others replace each face visibly, seal its original region and
    run no model (recovery is exact and runs none either). A face the model path cannot
    take gets ``fallback`` (a visible treatment, or ``"model"`` on its box), with a note.
    ``redraws``: a new face that ArcFace (or dlib, where ArcFace's file is missing) still matches
    to the original at FAR 1e-3, or with less detail than the model's ``detail_floor``, is drawn
    again with a fresh nonce, up to that many times, the best face drawn kept, with a note (0: off;
    recovery is unaffected).
    """
    return _one(anonymize_files(
        [(input, output)], key, model=model, steps=steps, settings=settings, aligned=aligned, mask=mask, min_face=min_face,
        allow_no_face=allow_no_face, residual=residual, max_pixels=max_pixels, overwrite=overwrite, progress=progress,
        style=style, fallback=fallback, redraws=redraws,
    ))


def _one(results: list) -> Result:
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


@dataclass
class _Prepared:
    """One file read and checked, ready for the model."""

    source: Path
    target: Path
    loaded: LoadedImage
    notes: list[str]
    jobs: list[FaceJob] | None = None  # anonymize: the faces found (None: the whole image, --aligned)
    public: dict | None = None  # recover: the opened header
    private: dict | None = None
    pattern_key: Key | None = None  # recover: what draws the faces' sign patterns (``container.Opened.key``)


def _prepare_anonymize(source: Path, output, model: DiffusionModel, aligned: bool, mask: str, min_face: int,
                       allow_no_face: bool, max_pixels: int | None, overwrite: bool, style: str = "face",
                       fallback: str = DEFAULT_FALLBACK) -> _Prepared:
    loaded = read_image(source, max_pixels=max_pixels)
    target = Path(output) if output is not None else default_output(source, VEILED_TAG)
    _check_output(target, [source], overwrite)
    prepared = _Prepared(source, target, loaded, [])
    if not aligned:
        prepared.jobs, prepared.notes = find_faces(
            loaded.rgb, model.image_size, mask, min_face, style, fallback, framing=model.framing
        )
        if not prepared.jobs and not allow_no_face:
            raise NoFaceError(f"no face found in {source} (use --allow-no-face to pass it through, --aligned for a face crop)")
        if not prepared.jobs:
            prepared.notes.append("no face found: written unchanged (--allow-no-face)")
    elif treatment_of(style) != "model":  # the whole image is one aligned face, treated visibly
        size = model.image_size
        h, w = loaded.rgb.shape[:2]
        prepared.jobs = [FaceJob(whole_image_transform(h, w, size), default_outline(size, mask), treatment=style)]
    return prepared


def _photo_job(prepared: _Prepared) -> PhotoJob:
    loaded = prepared.loaded
    return PhotoJob(loaded.rgb, prepared.jobs, lambda rgb: to_output_array(loaded, rgb), loaded.metadata)


def _write_anonymized(prepared: _Prepared, array: np.ndarray, record: dict, reports: list[FaceReport],
                      residual: bool, overwrite: bool) -> Result:
    notes, target, loaded = list(prepared.notes), prepared.target, prepared.loaded
    notes += redraw_notes(reports)
    if not residual:
        notes.append("no residual stored (--no-residual): recovery will give the model's reconstruction, not the exact original")
    written = write_veiled(target, array, record, overwrite=overwrite)
    if len(written) > 1:
        notes.append(f"header written to sidecar {written[1].name}: keep it with the image")
    if target.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        notes.append("lossy output: pixels outside the faces are re-encoded and recovery is approximate; use .png for exactness")
    if loaded.exif_transposed:
        notes.append("EXIF orientation applied: the output is stored upright")
    if loaded.alpha is not None and bool((loaded.alpha < 255).any()):
        notes.append("the alpha channel is kept as it was: a cut-out's transparency still shows the head's outline (SECURITY.md)")
    if loaded.metadata:
        kinds = ", ".join("EXIF (GPS, camera, thumbnail)" if k == "exif" else k.upper().replace("_PROFILE", "") for k in loaded.metadata)
        notes.append(f"the input's metadata ({kinds}) is not in the veiled file; it is sealed in the header and restored by recover")
    return Result(prepared.source, written, reports, notes)


def redraw_notes(reports: list[FaceReport]) -> list[str]:
    """The user's notes on faces drawn again: the face drawn before still matched the original,
    or was much smoother than it (below the model's detail floor)."""
    why = {"match": "still recognisable as the original (FAR 1e-3)",
           "smooth": "much smoother than the original (below the model's detail floor)"}
    notes = []
    for i, r in enumerate(reports):
        if r.redraws:
            reasons = " / ".join(why[k] for k in dict.fromkeys(r.redrawn_for))
            notes.append(f"face {i + 1} drawn again ({r.redraws}x, a fresh nonce): the face drawn before was {reasons}")
        if r.still_matches is not None:
            notes.append(f"face {i + 1} still matches the original (similarity {r.still_matches:.3f}) after "
                         f"{r.redraws} redraw(s): kept; check it, or anonymize again with more --redraws")
        elif r.still_smooth is not None:
            notes.append(f"face {i + 1} is smoother than the original (detail {r.still_smooth:.2f} of its) after "
                         f"{r.redraws} redraw(s): kept the most detailed; anonymize again with more --redraws for another")
    return notes


def _batched(items: list, run_batch) -> list:
    """``run_batch(items)``; where it refuses (a ``FaceveilError``: one item's fault), each item alone.

    Never raises a ``FaceveilError``: a refused item gets it as its outcome.
    """
    if not items:
        return []
    try:
        return run_batch(items)
    except FaceveilError as exc:
        if len(items) == 1:
            return [exc]
    out = []
    for item in items:
        try:
            out.append(run_batch([item])[0])
        except FaceveilError as exc:
            out.append(exc)
    return out


def anonymize_files(
    files: list[tuple[str | os.PathLike, str | os.PathLike | None]],
    key: Recipients,
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
    batch_size: int = DEFAULT_BATCH,
    on_result: Callable[[int, Result | FaceveilError], None] | None = None,
    style: str = "face",
    fallback: str = DEFAULT_FALLBACK,
    redraws: int = DEFAULT_REDRAWS,
) -> list[Result | FaceveilError]:
    """``anonymize`` for several ``(input, output or None)`` files, their faces batched through the model.

    Returns one ``Result`` or ``FaceveilError`` per file, in order: one file's failure
    never stops the others. ``progress`` is called with the number of faces of each UNet
    evaluation; ``on_result(index, outcome)`` as soon as a file's outcome is known (its
    output written). Outputs are what ``anonymize`` writes for each file alone (new nonces).
    """
    treatment_of(style)  # an unknown style or fallback is a usage error before any file is read
    check_fallback(fallback)
    key, model = _recipients(key), _model(model)
    settings = settings or Settings.for_model(model)
    if steps is not None:
        settings = replace(settings, engine=replace(settings.engine, steps=steps))
    slots: list = []
    for source, output in files:
        try:
            slots.append(_prepare_anonymize(Path(source), output, model, aligned, mask, min_face, allow_no_face, max_pixels,
                                            overwrite, style, fallback))
        except FaceveilError as exc:
            slots.append(exc)
    ready = [p for p in slots if isinstance(p, _Prepared)]

    def run(items: list[_Prepared]) -> list:
        return anonymize_arrays([_photo_job(p) for p in items], key, model, settings, residual, progress, batch_size,
                                redraws=redraws)

    done = iter(_batched(ready, run))

    def finish(slot) -> Result | FaceveilError:
        if not isinstance(slot, _Prepared):
            return slot
        outcome = next(done)
        return outcome if isinstance(outcome, FaceveilError) else _write_anonymized(slot, *outcome, residual, overwrite)

    return _finish_all(slots, finish, on_result)


def _finish_all(slots: list, finish, on_result) -> list[Result | FaceveilError]:
    """``finish`` each slot in order (writing its output), telling ``on_result`` at once."""
    results: list = []
    for index, slot in enumerate(slots):
        with deferred():  # a stop signal waits until the file written is also reported (faceveil.interrupts)
            try:
                results.append(finish(slot))
            except FaceveilError as exc:
                results.append(exc)
            if on_result is not None:
                on_result(index, results[-1])
    return results


def recover(
    input: str | os.PathLike,
    key: Opener,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    use_residual: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    progress: Progress | None = None,
    force: bool = False,
) -> Result:
    """Restore the original faces of an anonymized image file; needs only the file and the key.

    ``key``: a symmetric key, an X25519 identity, or a disclosure token (which restores its
    one face and leaves the others veiled), or the path of any of them.

    The model named in the header is loaded unless ``model`` overrides it (a local copy);
    ``progress`` is called with 1 after every UNet evaluation. A header sealed for another
    image (:func:`faceveil.binding.check_binding`) is refused unless ``force``.
    """
    return _one(recover_files([(input, output)], key, model=model, use_residual=use_residual, max_pixels=max_pixels,
                              overwrite=overwrite, progress=progress, force=force))


def disclose(
    input: str | os.PathLike,
    key: Opener,
    face: int,
    output: str | os.PathLike,
    model: DiffusionModel | str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[Path, DisclosureToken]:
    """Write a disclosure token for face ``face`` (1-based, header order) of an anonymized image,
    or for track ``face`` of a veiled video.

    The token recovers that face of that file and nothing else (SECURITY.md). It holds the
    face's key; where a later face of the photo pastes into what this face's prediction
    reads, it also holds the face's region, restored here with the whole key (the model named
    in the header is loaded, unless ``model`` overrides it). Written 0600, never over a file.
    """
    from faceveil.container import disclosure_token
    from faceveil.pipeline import disclosed_region

    source, target = Path(input), Path(output)
    opener = _opener(key)
    if isinstance(opener, DisclosureToken):
        raise UsageError("a disclosure token cannot disclose: give the key or identity the file is for")
    if target.exists():
        raise UsageError(f"{target} already exists; refusing to overwrite it")
    from faceveil.batch import VIDEO_SUFFIXES

    if source.suffix.lower() in VIDEO_SUFFIXES:  # a video: ``face`` is a track, its key opens it in every frame
        from faceveil.video.veil import disclose_track

        token = disclose_track(source, opener, face - 1)
        return token.save(target), token
    record = read_record(source)
    opened = unlock(opener, record)
    count = len(opened.public.get("faces", []))
    if not 1 <= face <= count:
        raise UsageError(f"{source} has {count} face(s); --face must be between 1 and {count}")
    if record.get("faceveil") != 3:
        raise UsageError("this file predates per-face keys (header format 2): one face cannot be disclosed")
    loaded = read_image(source, max_pixels=max_pixels)
    check_binding(_raw_array(loaded), opened.public, opened.private, str(source))
    spec = model if model is not None else opened.public.get("model", {}).get("id")
    photo = VeiledPhoto(_raw_array(loaded), opened.public, opened.private, lambda rgb: to_output_array(loaded, rgb), opened.key)
    original = disclosed_region(photo, opened.key, _model(spec), face - 1)
    token = disclosure_token(opener, record, face - 1, original)
    return token.save(target), token


def _prepare_recover(source: Path, output, key: Key | Identity | DisclosureToken, max_pixels: int | None, overwrite: bool, force: bool = False) -> _Prepared:
    record = read_record(source)  # bounded by the image's declared size, validated, before any pixel is decoded
    loaded = read_image(source, max_pixels=max_pixels)
    target = Path(output) if output is not None else default_output(source, RECOVERED_TAG)
    _check_output(target, [source], overwrite)
    opened = unlock(key, record)  # wrong key or tampering stops here, before any model work
    check_binding(_raw_array(loaded), opened.public, opened.private, str(source), force)  # a header grafted from another image too
    return _Prepared(source, target, loaded, [], public=opened.public, private=opened.private, pattern_key=opened.key)


def _write_recovered(prepared: _Prepared, array: np.ndarray, info: RecoverInfo, overwrite: bool) -> Result:
    notes = []
    if info.pixels_changed:
        lossy = lossy_format(prepared.source)
        if lossy:
            notes.append(
                f"{lossy} is a lossy format: its pixels differ from those faceveil anonymized, so recovery is "
                f"approximate, not exact ({LOSSY_QUALITY}); anonymize to .png for exact recovery"
            )
        else:
            notes.append("the image was modified after anonymization (re-encoded or edited): recovery is approximate")
    if info.skipped_faces:
        shown = ", ".join(str(i + 1) for i in info.skipped_faces)
        notes.append(f"face(s) {shown} left veiled: the disclosure token opens face(s) "
                     f"{', '.join(str(i + 1) for i in range(len(info.reports) + len(info.skipped_faces)) if i not in info.skipped_faces)} only")
    if not info.used_residual:
        notes.append("no residual used: the faces are the model's reconstruction, not the exact original pixels")
    elif info.inexact_faces and not info.pixels_changed:
        faces = ", ".join(str(i + 1) for i in info.inexact_faces)
        notes.append(
            f"NOT EXACT: face(s) {faces} differ from the original (their sealed SHA-256 does not match): this machine's "
            "model computes differently from the one that anonymized the file beyond what the sealed rounding covers "
            "(another model build, device or library version?); the rest of the photo is exact"
        )
    metadata = dict(info.metadata)
    if "exif" in metadata:  # the pixels are stored upright: the restored EXIF must say so
        metadata["exif"] = upright_exif(metadata["exif"])
    written = [write_image(prepared.target, array, overwrite=overwrite, metadata=metadata)]
    return Result(prepared.source, written, info.reports, notes)


def recover_files(
    files: list[tuple[str | os.PathLike, str | os.PathLike | None]],
    key: Opener,
    model: DiffusionModel | str | None = None,
    use_residual: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    models: dict | None = None,
    on_result: Callable[[int, Result | FaceveilError], None] | None = None,
    force: bool = False,
) -> list[Result | FaceveilError]:
    """``recover`` for several ``(input, output or None)`` files, their faces batched through the model.

    One ``Result`` or ``FaceveilError`` per file, in order (``on_result`` as in
    ``anonymize_files``). Files naming different models in their headers are recovered in
    one batch per model; ``models`` (name -> loaded model) is a cache the caller may keep
    across calls.
    """
    key = _opener(key)
    models = models if models is not None else {}
    slots: list = []
    for source, output in files:
        try:
            slots.append(_prepare_recover(Path(source), output, key, max_pixels, overwrite, force))
        except FaceveilError as exc:
            slots.append(exc)
    by_model: dict[object, list[_Prepared]] = {}
    specs: dict[object, object] = {}
    for slot in slots:
        if isinstance(slot, _Prepared):
            spec = model if model is not None else slot.public.get("model", {}).get("id") or default_model()
            group = id(spec) if isinstance(spec, DiffusionModel) else str(spec)
            specs[group] = spec if isinstance(spec, DiffusionModel) else str(spec)
            by_model.setdefault(group, []).append(slot)
    outcomes: dict[int, object] = {}
    for group, items in by_model.items():
        spec = specs[group]
        try:
            loaded_model = spec if isinstance(spec, DiffusionModel) else models.get(spec) or models.setdefault(spec, _model(spec))
        except FaceveilError as exc:
            outcomes.update({id(p): exc for p in items})
            continue

        def run(batch: list[_Prepared], m: DiffusionModel = loaded_model) -> list:
            photos = [VeiledPhoto(_raw_array(p.loaded), p.public, p.private, lambda rgb, p=p: to_output_array(p.loaded, rgb),
                                  p.pattern_key) for p in batch]
            return recover_arrays(photos, key, m, use_residual, progress, batch_size)

        outcomes.update({id(p): o for p, o in zip(items, _batched(items, run))})

    def finish(slot) -> Result | FaceveilError:
        if not isinstance(slot, _Prepared):
            return slot
        outcome = outcomes[id(slot)]
        return outcome if isinstance(outcome, FaceveilError) else _write_recovered(slot, *outcome, overwrite)

    return _finish_all(slots, finish, on_result)


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

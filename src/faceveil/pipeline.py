"""Photo-level anonymize and recover: composes faces, models, engine, keys and container.

One face goes through these steps (``_veil_face``), the same way in both directions:

1. crop: the face's aligned crop is warped out of the photo (``faces.align``);
2. masks: the crop mask (soft, in crop pixels) gives the latent mask ``m`` (cells the
   face touches), the paste alpha (the soft mask inside ``m``), and the context mask:
   every crop pixel that pasting can change, directly or through interpolation;
3. context: the crop with the context mask filled from its surroundings, encoded;
   anonymization and recovery see the same pixels there, so the same context;
4. engine: ``engine.veil`` with the key's sign pattern for this face's nonce;
5. paste: the decoded crop goes back into the photo inside the region only.

Anonymization also stores, sealed in the header, a *hint*: the difference between
the latent the engine produced and the latent recovery will read back from the saved
8-bit pixels (quantisation, clipping and autoencoder error), so recovery starts from
the exact latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from faceveil.container import decode_array, encode_array, open_header, pixels_sha256, seal_header
from faceveil.engine import EngineSettings, Schedule, veil
from faceveil.errors import HeaderError, UsageError
from faceveil.faces.align import AlignTransform
from faceveil.faces.align import warp_crop as align_warp
from faceveil.faces.mask import default_mask, mask_from_uint8, mask_to_uint8
from faceveil.faces.paste import paste_back, region_mask, warp_to_image
from faceveil.keys import Key, new_nonce, public_gaussian
from faceveil.models import DiffusionModel

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Settings:
    """Everything that fixes anonymization beyond the model; stored in the header."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    decoder_iters: int = 0  # decoder inversion of the original (latent models)
    hint: bool = True  # store the sealed latent hint for exact recovery

    def to_json(self) -> dict:
        return {"engine": self.engine.to_json(), "decoder_iters": self.decoder_iters, "hint": self.hint}

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        return cls(EngineSettings.from_json(data["engine"]), int(data["decoder_iters"]), bool(data["hint"]))


@dataclass
class FaceReport:
    """What happened to one face."""

    transform: AlignTransform
    unet_evals: int
    max_inversion_residual: float


# ---- crops and masks ------------------------------------------------------------
def warp_crop(image: np.ndarray, transform: AlignTransform) -> np.ndarray:
    """The float32 crop of ``transform`` from ``image``: the alignment warp."""
    return align_warp(np.asarray(image, dtype=np.float32), transform)


def whole_image_transform(height: int, width: int, size: int) -> AlignTransform:
    """The transform that treats a whole image as one aligned face crop (a plain resize)."""
    sx, sy = size / width, size / height
    return AlignTransform(np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]]), size)


@dataclass(frozen=True)
class FaceMasks:
    latent: torch.Tensor  # (1, 1, h, w) 0/1 on the latent grid
    alpha: np.ndarray  # (S, S) float64 paste alpha in crop pixels, 0 outside the latent mask
    context: np.ndarray  # (S, S) bool: crop pixels recovery may see differently


def face_masks(crop_mask: np.ndarray, model: DiffusionModel, image_shape: tuple[int, ...], transform: AlignTransform) -> FaceMasks:
    """Derive the latent mask, paste alpha and context mask from one crop mask."""
    f, n = model.downscale, model.latent_size
    if crop_mask.shape != (n * f, n * f):
        raise UsageError(f"mask is {crop_mask.shape}, the model needs {(n * f, n * f)}")
    cells = (crop_mask >= 0.5).reshape(n, f, n, f).any(axis=(1, 3))
    alpha = crop_mask.astype(np.float64) * np.kron(cells, np.ones((f, f)))
    region = region_mask(image_shape, transform, alpha)
    influence = np.abs(warp_crop(region.astype(np.float32), transform)) > 0
    context = (alpha > 0) | influence | np.kron(cells, np.ones((f, f), dtype=bool))
    return FaceMasks(torch.from_numpy(cells.astype(np.float32))[None, None], alpha, context)


def fill_region(crop: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill ``hole`` pixels of ``crop`` (float, H×W×C) from the rest: normalised Gaussian blur.

    Depends only on pixels outside the hole, so both directions compute the same fill.
    """
    known = (~hole).astype(np.float32)
    sigma = max(2.0, crop.shape[0] / 8)
    weight = cv2.GaussianBlur(known, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    total = cv2.GaussianBlur(crop * known[..., None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    mean = crop[~hole].mean(axis=0) if (~hole).any() else np.full(crop.shape[-1], 127.5, np.float32)
    blurred = np.where(weight[..., None] > 1e-3, total / np.maximum(weight[..., None], 1e-3), mean)
    return np.where(hole[..., None], blurred, crop).astype(np.float32)


def _to_tensor(crop: np.ndarray, model: DiffusionModel) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].to(model.device) / 127.5 - 1


def _to_pixels(x: torch.Tensor) -> np.ndarray:
    return ((x[0].detach().cpu().double().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255)


# ---- one face -------------------------------------------------------------------
def _veil_face(
    image: np.ndarray,
    model: DiffusionModel,
    schedule: Schedule,
    key: Key,
    nonce: bytes,
    transform: AlignTransform,
    masks: FaceMasks,
    settings: Settings,
    hint: np.ndarray | None,
    decoder_iters: int,
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, FaceReport]:
    """Run the keyed transform on one face of ``image``.

    Returns (latent in, latent out, what the inverse transform will give back, report).
    """
    crop = warp_crop(image, transform)
    z0 = model.encode(_to_tensor(crop, model), refine_iters=decoder_iters)
    if hint is not None:
        z0 = z0 + torch.from_numpy(hint.astype(np.float32)).to(z0.device) * masks.latent.to(z0.device)
    context = model.encode(_to_tensor(fill_region(crop, masks.context), model))
    shape = tuple(z0.shape)
    signs = torch.from_numpy(key.sign_pattern(nonce, shape)).to(z0.device)
    noise = torch.from_numpy(public_gaussian(nonce, shape)).to(z0.device)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        if progress:
            progress(1)
        return model.eps(z, t)

    mask = masks.latent.to(z0.device)
    partner = None
    if settings.engine.mixing == "pairs":
        inside = masks.latent.expand(shape).numpy() > 0
        partner = torch.from_numpy(key.pairing(nonce, shape, inside))
    z_out, stats = veil(eps, schedule, z0, mask, signs, settings.engine, context, noise, partner)
    # what the inverse transform will return: z0 inside the mask, the context outside
    expected_back = mask * z0 + (1 - mask) * (context if settings.engine.context != "own" else z0)
    return z0, z_out, expected_back, FaceReport(transform, stats.unet_evals, stats.max_residual)


def _difference_float(
    image: np.ndarray, before: np.ndarray, after: np.ndarray, transform: AlignTransform, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(region, unrounded values there) of undoing a paste of crop ``before`` and pasting ``after``.

    ``paste_back`` wrote ``a * before + (1 - a) * original``; adding
    ``a * (after - before)`` gives ``a * after + (1 - a) * original`` without ever
    knowing ``original`` (up to the rounding of the first paste).
    """
    region = region_mask(image.shape, transform, alpha)
    a = warp_to_image(alpha, image.shape, transform)[region]
    delta = warp_to_image(after - before, image.shape, transform)[region]
    return region, image[region].astype(np.float64) + a[:, None] * delta


def _read_back_rgb(output: np.ndarray) -> np.ndarray:
    """What ``imageio.read_image`` will see of an output array (gray and alpha handled)."""
    if output.ndim == 2:
        return np.repeat(output[..., None], 3, axis=2)
    if output.shape[2] == 2:
        return np.repeat(output[..., :1], 3, axis=2)
    return np.ascontiguousarray(output[..., :3])


RESIDUAL_SCALE = 4.0  # residuals are stored in quarter grey levels: exact after rounding
CONVERGED_RESIDUAL = 1e-4  # latent units; a worse inversion step makes anonymization replay recovery


@dataclass
class FaceJob:
    """One face to anonymize: where its crop is and what its mask covers (crop pixels)."""

    transform: AlignTransform
    mask: np.ndarray


# ---- public array-level API -----------------------------------------------------------
def anonymize_array(
    rgb: np.ndarray,
    key: Key,
    model: DiffusionModel,
    faces: list[FaceJob] | None = None,
    settings: Settings | None = None,
    output_like: Callable[[np.ndarray], np.ndarray] | None = None,
    residual: bool = True,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict, list[FaceReport]]:
    """Anonymize faces of an RGB uint8 image; returns (output array, header record, reports).

    ``faces`` lists the faces; ``None`` treats the whole image as one aligned face with
    the default mask. ``output_like`` turns the RGB result into the array that will be
    written (back to grayscale, alpha re-attached), so hints and residuals account for
    exactly what is saved. Faces are veiled one after another, each on the image with
    the previous ones veiled; recovery undoes them in reverse order, so faces whose
    regions touch stay exact. ``residual`` stores, sealed, what the model cannot give
    back (detail lost to the crop's resolution, the autoencoder, rounding), so that
    recovery restores the original pixels exactly.
    """
    settings = settings or Settings()
    like = output_like or (lambda a: a)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if faces is None:
        size = model.image_size
        faces = [FaceJob(whole_image_transform(rgb.shape[0], rgb.shape[1], size), default_mask(size))]
    schedule = Schedule.from_scheduler(model.scheduler, settings.engine.steps)
    current = _read_back_rgb(like(rgb))  # the image in the domain that will be written
    reports, public_faces, private_faces = [], [], []
    for face in faces:
        crop_mask = mask_from_uint8(mask_to_uint8(face.mask))  # exactly what the header keeps
        masks = face_masks(crop_mask, model, rgb.shape, face.transform)
        nonce = new_nonce()
        _, z_out, z_back, report = _veil_face(
            current, model, schedule, key, nonce, face.transform, masks, settings, None, settings.decoder_iters, progress
        )
        anonymized_crop = _to_pixels(model.decode(z_out))
        veiled = _read_back_rgb(like(paste_back(current, anonymized_crop, face.transform, masks.alpha)))
        private: dict = {"mask": encode_array(mask_to_uint8(crop_mask))}
        z_read, hint = z_out, None
        if settings.hint:
            z_read = model.encode(_to_tensor(warp_crop(veiled, face.transform), model), refine_iters=settings.decoder_iters)
            hint = ((z_out - z_read) * masks.latent.to(z_out.device)).cpu().numpy().astype(np.float16)
            private["hint"] = encode_array(hint)
            z_read = z_read + torch.from_numpy(hint.astype(np.float32)).to(z_read.device) * masks.latent.to(z_read.device)
        if residual:
            if report.max_inversion_residual <= CONVERGED_RESIDUAL:
                # the engine inverted to float round-off: recovery will compute z_back from z_read
                z_start, z_end = z_read, z_back
            else:
                # the inversion did not converge (a rough model, few steps): replay recovery to
                # learn exactly what it will compute, so the residual still makes it exact
                z_start, z_end, _, _ = _veil_face(
                    veiled, model, schedule, key, nonce, face.transform, masks, settings, hint, settings.decoder_iters, progress
                )
            region, predicted = _difference_float(
                veiled, _to_pixels(model.decode(z_start)), _to_pixels(model.decode(z_end)), face.transform, masks.alpha
            )
            missing = np.rint((current[region] - predicted) * RESIDUAL_SCALE)
            private["residual"] = encode_array(missing.astype(np.int16))
        reports.append(report)
        public_faces.append({"nonce": nonce.hex(), "transform": face.transform.to_json()})
        private_faces.append(private)
        current = veiled
    written = like(current)
    public = {
        "model": {"id": model.model_id, "weights_sha256": model.weights_hash, "kind": model.kind},
        "settings": settings.to_json(),
        "image": {"height": int(written.shape[0]), "width": int(written.shape[1]), "pixels_sha256": pixels_sha256(written)},
        "faces": public_faces,
    }
    return written, seal_header(key, public, {"faces": private_faces}), reports


@dataclass
class RecoverInfo:
    pixels_changed: bool  # the image is not byte for byte what anonymization wrote
    used_hint: bool
    used_residual: bool
    reports: list[FaceReport]


def recover_array(
    array: np.ndarray,
    record: dict,
    key: Key,
    model: DiffusionModel,
    output_like: Callable[[np.ndarray], np.ndarray] | None = None,
    use_residual: bool = True,
    progress: Progress | None = None,
) -> tuple[np.ndarray, RecoverInfo]:
    """Restore the faces of an anonymized image given its header record and the key.

    ``array`` is the image as written (gray, gray+alpha, RGB or RGBA).
    """
    public, private = open_header(key, record)
    return recover_opened(array, public, private, key, model, output_like, use_residual, progress)


def recover_opened(
    array: np.ndarray,
    public: dict,
    private: dict,
    key: Key,
    model: DiffusionModel,
    output_like: Callable[[np.ndarray], np.ndarray] | None = None,
    use_residual: bool = True,
    progress: Progress | None = None,
) -> tuple[np.ndarray, RecoverInfo]:
    """``recover_array`` from an already opened header; ``key`` supplies the sign patterns.

    Evaluations use it to try a wrong key with the header check bypassed on purpose.
    """
    try:
        settings = Settings.from_json(public["settings"])
        faces = [(AlignTransform.from_json(f["transform"]), bytes.fromhex(f["nonce"])) for f in public["faces"]]
        privates = private["faces"]
        masks_u8 = [decode_array(f["mask"]) for f in privates]
        hints = [decode_array(f["hint"]) if "hint" in f else None for f in privates]
        residuals = [decode_array(f["residual"]) if "residual" in f else None for f in privates]
        expected = public["image"]
        if len(privates) != len(faces):
            raise ValueError("face count mismatch")
    except (KeyError, TypeError, ValueError) as exc:
        raise HeaderError(f"the faceveil header is incomplete ({exc})") from None
    if public["model"]["weights_sha256"] != model.weights_hash:
        raise UsageError(
            f"this file was anonymized with model {public['model']['id']!r} "
            f"(weights sha256 {public['model']['weights_sha256'][:16]}…); the loaded model's weights differ"
        )
    if (array.shape[0], array.shape[1]) != (expected["height"], expected["width"]):
        raise UsageError(
            f"the image is {array.shape[1]}x{array.shape[0]} but was anonymized at "
            f"{expected['width']}x{expected['height']}; resized images cannot be recovered"
        )
    changed = pixels_sha256(array) != expected["pixels_sha256"]
    current = _read_back_rgb(np.asarray(array, dtype=np.uint8))
    schedule = Schedule.from_scheduler(model.scheduler, settings.engine.steps)
    reports: list[FaceReport] = []
    for (transform, nonce), mask_u8, hint, residual in reversed(list(zip(faces, masks_u8, hints, residuals))):
        masks = face_masks(mask_from_uint8(mask_u8), model, current.shape, transform)
        z_in, z_out, _, report = _veil_face(
            current, model, schedule, key, nonce, transform, masks, settings, hint, settings.decoder_iters, progress
        )
        region, values = _difference_float(
            current, _to_pixels(model.decode(z_in)), _to_pixels(model.decode(z_out)), transform, masks.alpha
        )
        if use_residual and residual is not None and residual.shape == values.shape:
            values = values + residual / RESIDUAL_SCALE
        current = current.copy()
        current[region] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        reports.insert(0, report)
    used_residual = use_residual and all(r is not None for r in residuals)
    used_hint = all(h is not None for h in hints)
    out = output_like(current) if output_like else current
    return out, RecoverInfo(changed, used_hint, used_residual, reports)

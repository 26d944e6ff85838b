"""Photo-level anonymize and recover: composes faces, models, engine, keys and container.

One face goes through these steps, the same way in both directions:

1. geometry (``face_geometry``): from the face's outline, the paste alpha on the
   photo's own pixel grid (smooth and feathered at any face size), the latent mask
   ``m`` (every model cell the paste reads, through bicubic resampling), and the
   context mask (every crop pixel that pasting can change, directly or through the
   crop's interpolation);
2. context: the crop with the context mask filled from its surroundings, encoded;
   anonymization and recovery see the same pixels there, so the same context;
3. engine: ``engine.veil`` with the key's sign pattern for this face's nonce;
4. paste: the decoded crop, colour-matched to the face it replaces, is resampled
   bicubically onto the photo and blended in by the alpha.

Exactness: anonymization *replays recovery* on the saved pixels, so it knows bit for bit what recovery will predict; the *residual*
is the original minus that integer prediction, coded as a lossless image
(``faceveil.residual``). Recovery adds it back: exact whatever the model's error. An
optional sealed *hint* (the latent the engine produced minus the latent read back from
the saved pixels) brings the model's own reconstruction closer; exactness does not need it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from faceveil.container import decode_array, encode_array, open_header, pixels_sha256, seal_header
from faceveil.engine import EngineSettings, Schedule, masked_noise, masked_sample, scramble, veil
from faceveil.engine.veil import noised_trajectory
from faceveil.errors import HeaderError, UsageError
from faceveil.faces.align import AlignTransform
from faceveil.faces.align import warp_crop as align_warp
from faceveil.faces.mask import default_outline, outline_alpha, outline_reach
from faceveil.faces.paste import FaceRegion, blend_region, outline_region, sample_crop, sampled_cells
from faceveil.keys import Key, new_nonce, public_gaussian
from faceveil.models import DiffusionModel
from faceveil.residual import CODEC, MAX_SIDE, apply_residual, decode_residual, encode_region, encode_residual, residual_image
from faceveil.schema import check_public

Progress = Callable[[int], None]

HINT_STEP = 1.0 / 2048  # latent units per stored hint step (int16)


@dataclass(frozen=True)
class Settings:
    """Everything that fixes anonymization beyond the model; stored in the header."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    decoder_iters: int = 0  # decoder inversion of the original (latent models)
    hint: bool = False  # store a sealed latent hint (measured: 5 KB per LFW face for 1-3 % less residual)
    colour: bool = True  # match the new face's colour and brightness to the face it replaces
    grain: bool = True  # photo-level grain on faces the model enlarges

    def to_json(self) -> dict:
        return {"engine": self.engine.to_json(), "decoder_iters": self.decoder_iters, "hint": self.hint,
                "colour": self.colour, "grain": self.grain}

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        return cls(EngineSettings.from_json(data["engine"]), int(data["decoder_iters"]), bool(data["hint"]),
                   bool(data["colour"]), bool(data["grain"]))


@dataclass
class FaceReport:
    """What happened to one face."""

    transform: AlignTransform
    unet_evals: int
    max_inversion_residual: float


@dataclass
class FaceJob:
    """One face to anonymize: where its crop is and its outline (crop coordinates, N x 2).

    ``nonce`` (public, 16 bytes) picks the key's sign pattern; ``None`` draws a fresh one.
    A video passes one nonce for all frames of a face's track (one anonymous face).
    """

    transform: AlignTransform
    outline: np.ndarray
    nonce: bytes | None = None
    noise: torch.Tensor | None = None  # keyed noise to sample this face from (a video track's: ``keyed_noise``)

    @property
    def mask(self) -> np.ndarray:
        """The outline's feathered crop mask (float32 S x S)."""
        margin, feather = outline_reach(self.transform.size)
        n = self.transform.size
        return outline_alpha(self.outline, (0, n, 0, n), margin, feather).astype(np.float32)


# ---- crops and geometry -----------------------------------------------------------
def warp_crop(image: np.ndarray, transform: AlignTransform) -> np.ndarray:
    """The float32 crop of ``transform`` from ``image``: the alignment warp."""
    return align_warp(np.asarray(image, dtype=np.float32), transform)


def whole_image_transform(height: int, width: int, size: int) -> AlignTransform:
    """The transform that treats a whole image as one aligned face crop (a plain resize)."""
    sx, sy = size / width, size / height
    return AlignTransform(np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]]), size)


@dataclass(frozen=True)
class FaceGeometry:
    """Where one face is, on the photo and on the model's grid (both directions agree)."""

    transform: AlignTransform
    region: FaceRegion  # paste alpha on the photo's grid
    latent: torch.Tensor  # (1, 1, h, w) 0/1: latent cells the model regenerates
    context: np.ndarray  # (S, S) bool: crop pixels recovery may see differently
    interior: np.ndarray  # (S, S) bool: the face itself (colour statistics)
    edge: np.ndarray  # (S, S) bool: the crop mask's feather band (where lighting is matched)


def face_geometry(image_shape: tuple[int, ...], transform: AlignTransform, outline: np.ndarray, model: DiffusionModel) -> FaceGeometry:
    """Derive the paste region, latent mask, context mask and interior of one face."""
    f, n = model.downscale, model.latent_size
    size = transform.size
    if size != n * f:
        raise UsageError(f"face crop is {size} px, the model needs {n * f}")
    region = outline_region(image_shape, transform, outline)
    read = sampled_cells(transform, region) if region.inside.any() else np.zeros((size, size), bool)
    cells = read.reshape(n, f, n, f).any(axis=(1, 3))
    cells_px = np.kron(cells, np.ones((f, f), dtype=bool))
    full = np.zeros(tuple(image_shape[:2]), dtype=np.float32)
    y0, y1, x0, x1 = region.bounds
    full[y0:y1, x0:x1] = region.inside
    influence = np.abs(warp_crop(full, transform)) > 0
    interior = outline_alpha(outline, (0, size, 0, size), 0.0, 1e-6) > 0.5
    interior &= cells_px
    margin, feather = outline_reach(size)
    crop_alpha = outline_alpha(outline, (0, size, 0, size), margin, feather)
    edge = (crop_alpha > 0.0) & (crop_alpha < 1.0)
    return FaceGeometry(
        transform, region, torch.from_numpy(cells.astype(np.float32))[None, None], influence | cells_px, interior, edge
    )


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
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32))[None].to(model.device) / 127.5 - 1


def _to_pixels(x: torch.Tensor) -> np.ndarray:
    return ((x[0].detach().cpu().double().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255)


# ---- colour -----------------------------------------------------------------------
SHADING_GRID = 8  # the shading field's grid (cells per crop side)


def _upsample_field(field: np.ndarray, size: int) -> np.ndarray:
    """Separable linear interpolation of a (g, g, 3) field to (size, size, 3), in float64 NumPy."""
    g = field.shape[0]
    centres = (np.arange(g) + 0.5) * size / g - 0.5
    pix = np.arange(size, dtype=np.float64)
    rows = np.stack([np.interp(pix, centres, field[:, j, c]) for j in range(g) for c in range(3)], axis=1)
    rows = rows.reshape(size, g, 3)
    return np.stack([np.stack([np.interp(pix, centres, rows[i, :, c]) for c in range(3)], axis=1) for i in range(size)])


@dataclass(frozen=True)
class Colour:
    """Map from the model's face to the photo: ``(x - src) * gain + dst + shading``.

    ``src``/``dst``/``gain`` match mean colour and contrast; ``shading`` (a coarse
    ``SHADING_GRID`` field, float16) carries the photo's lighting across the face, fitted
    on the face's edge only and spread inwards, so the new face meets the skin, hair and
    lighting around it without a band. Recovery undoes it before reading the latent.
    """

    src: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dst: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gain: float = 1.0
    shading: bytes = b""

    def _field(self, size: int) -> np.ndarray | float:
        if not self.shading:
            return 0.0
        g = SHADING_GRID
        return _upsample_field(np.frombuffer(self.shading, dtype="<f2").reshape(g, g, 3).astype(np.float64), size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.src)) * self.gain + np.asarray(self.dst) + self._field(x.shape[0])

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (y - self._field(y.shape[0]) - np.asarray(self.dst)) / self.gain + np.asarray(self.src)

    def to_json(self) -> list[float]:
        return [*self.src, *self.dst, self.gain]

    @classmethod
    def from_json(cls, data: list, shading: bytes = b"") -> "Colour":
        values = [float(v) for v in data]
        if len(values) != 7 or not all(np.isfinite(values)) or not 0.1 <= values[6] <= 10:
            raise ValueError("invalid colour fit")
        if shading and len(shading) != SHADING_GRID * SHADING_GRID * 3 * 2:
            raise ValueError("invalid shading field")
        field = np.frombuffer(shading, dtype="<f2") if shading else np.zeros(1)
        if not np.all(np.isfinite(field)):
            raise ValueError("invalid shading field")
        return cls(tuple(values[:3]), tuple(values[3:6]), values[6], bytes(shading))


def fit_colour(generated: np.ndarray, original: np.ndarray, interior: np.ndarray, edge: np.ndarray) -> Colour:
    """Match the generated face to the original's colour and contrast, then its lighting at the edge.

    Only the face's edge band (``edge``, crop pixels) informs the shading field, spread
    inwards by normalised Gaussian filtering: the new face's interior is never copied.
    """
    if interior.sum() < 16:
        return Colour()
    g, o = generated[interior], original[interior]
    luma = np.array([0.299, 0.587, 0.114])
    gain = float(np.clip((o @ luma).std() / max((g @ luma).std(), 1e-3), 0.6, 1.5))
    base = Colour(tuple(float(v) for v in g.mean(axis=0)), tuple(float(v) for v in o.mean(axis=0)), gain)
    if edge.sum() < 16:
        return base
    size = generated.shape[0]
    weight = edge.astype(np.float32)
    diff = ((original - base.forward(generated)) * weight[..., None]).astype(np.float32)
    sigma = size / 4.0
    num = cv2.GaussianBlur(diff, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    full = np.where(den[..., None] > 1e-4, num / np.maximum(den[..., None], 1e-4), 0.0)
    grid = cv2.resize(full.astype(np.float32), (SHADING_GRID, SHADING_GRID), interpolation=cv2.INTER_AREA)
    grid = np.clip(grid, -80.0, 80.0).astype("<f2")
    return dataclasses.replace(base, shading=grid.tobytes())


# ---- grain --------------------------------------------------------------------------------
MAX_GRAIN = 6.0  # grey levels


def photo_grain(image: np.ndarray, geometry: FaceGeometry, nonce: bytes) -> np.ndarray | float:
    """Grain for a face the model enlarges: public noise at the photo's own noise level.

    A 64 px model face stretched over hundreds of pixels is smoother than any photo; grain
    at the noise level measured on the untouched pixels around the face (robust MAD of a
    high-pass) makes it sit in the photo. Both directions see those pixels bit for bit and
    the noise comes from the face's public nonce, so recovery recomputes it exactly.
    Returns (K, 3) values for the region's pixels, or 0.0 when the face is not enlarged.
    """
    if geometry.transform.scale >= 1.0:
        return 0.0
    y0, y1, x0, x1 = geometry.region.bounds
    box = image[y0:y1, x0:x1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    outside = ~geometry.region.inside
    if box.shape[0] < 3 or box.shape[1] < 3 or outside[1:-1, 1:-1].sum() < 64:
        return 0.0
    high = box[1:-1, 1:-1] - cv2.blur(box, (3, 3))[1:-1, 1:-1]
    values = np.abs(high[outside[1:-1, 1:-1]]).astype(np.float64)
    sigma = min(MAX_GRAIN, 1.4826 * float(np.median(values)) / np.sqrt(8.0 / 9.0))
    k = int(geometry.region.inside.sum())
    noise = public_gaussian(nonce + b"grain", (k,)).astype(np.float64)
    return sigma * np.repeat(noise[:, None], 3, axis=1)


# ---- one face -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    """What every face of one anonymize or recover call shares."""

    model: DiffusionModel
    schedule: Schedule
    key: Key
    settings: Settings
    progress: Progress | None

    @classmethod
    def of(cls, model: DiffusionModel, key: Key, settings: Settings, progress: Progress | None) -> "_Run":
        return cls(model, Schedule.from_scheduler(model.scheduler, settings.engine.steps), key, settings, progress)


def public_context(model: DiffusionModel, image: np.ndarray, geometry: FaceGeometry, nonce: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """(context latent, context noise) of one face: the crop with the face filled in, and
    the public Gaussian noise of its nonce. Both directions (and anyone) compute the same."""
    crop = warp_crop(image, geometry.transform)
    context = model.encode(_to_tensor(fill_region(crop, geometry.context), model))
    noise = torch.from_numpy(public_gaussian(nonce, tuple(context.shape))).to(context.device)
    return context, noise


def _engine(run: _Run, image: np.ndarray, z_start: torch.Tensor, geometry: FaceGeometry, nonce: bytes) -> tuple[torch.Tensor, FaceReport]:
    """The keyed transform of one face's latent, with the context taken from ``image``."""
    model, key, settings, progress = run.model, run.key, run.settings, run.progress
    context, noise = public_context(model, image, geometry, nonce)
    shape = tuple(z_start.shape)
    signs = torch.from_numpy(key.sign_pattern(nonce, shape)).to(z_start.device)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        if progress:
            progress(1)
        return model.eps(z, t)

    mask = geometry.latent.to(z_start.device)
    partner = None
    if settings.engine.mixing == "pairs":
        inside = geometry.latent.expand(shape).numpy() > 0
        partner = torch.from_numpy(key.pairing(nonce, shape, inside))
    z_out, stats = veil(eps, run.schedule, z_start, mask, signs, settings.engine, context, noise, partner)
    return z_out, FaceReport(geometry.transform, stats.unet_evals, stats.max_residual)


def _counted_eps(run: _Run, report: list[int]) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        report[0] += 1
        if run.progress:
            run.progress(1)
        return run.model.eps(z, t)

    return eps


def _resample(run: _Run, image: np.ndarray, geometry: FaceGeometry, nonce: bytes, noise: torch.Tensor) -> tuple[torch.Tensor, FaceReport]:
    """``veil``'s sampling half alone: the face from given keyed noise, with this image's context outside the mask."""
    if run.settings.engine.context != "noised":
        raise UsageError("a track's noise can only be reused with the 'noised' context")
    context, public = public_context(run.model, image, geometry, nonce)
    evals = [0]
    mask = geometry.latent.to(context.device).expand_as(context)
    trajectory = noised_trajectory(run.schedule, context, public)
    z_out = masked_sample(_counted_eps(run, evals), run.schedule, noise.to(context.device), mask, trajectory)
    return z_out, FaceReport(geometry.transform, evals[0], 0.0)


def keyed_noise(rgb: np.ndarray, key: Key, model: DiffusionModel, face: FaceJob, settings: Settings | None = None) -> torch.Tensor:
    """The keyed noise ``veil`` would sample ``face`` from: its masked inversion, scrambled by the key.

    A video computes it once per track (``face.nonce`` is the track's) and passes it as
    ``FaceJob.noise`` for every frame, so the track's face is one sample, not one per frame.
    """
    if face.nonce is None:
        raise ValueError("keyed_noise needs the face's nonce (the track's)")
    settings = settings or Settings()
    run = _Run.of(model, key, settings, None)
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    outline = np.ascontiguousarray(face.outline, dtype=np.float32).reshape(-1, 2).astype(np.float64)
    geometry = face_geometry(image.shape, face.transform, outline, model)
    z0 = model.encode(_to_tensor(warp_crop(image, face.transform), model), refine_iters=settings.decoder_iters)
    context, public = public_context(model, image, geometry, face.nonce)
    zN, _ = masked_noise(_counted_eps(run, [0]), run.schedule, z0, geometry.latent.to(z0.device), settings.engine, context, public)
    shape = tuple(zN.shape)
    signs = torch.from_numpy(key.sign_pattern(face.nonce, shape)).to(zN.device)
    partner = None
    if settings.engine.mixing == "pairs":
        partner = torch.from_numpy(key.pairing(face.nonce, shape, geometry.latent.expand(shape).numpy() > 0))
    mask = geometry.latent.to(zN.device).expand_as(zN)
    return mask * scramble(zN, signs, partner) + (1 - mask) * zN


def _read_latent(run: _Run, image: np.ndarray, geometry: FaceGeometry, colour: Colour) -> torch.Tensor:
    """The latent recovery reads from a veiled image's face (colour map undone)."""
    crop = colour.inverse(warp_crop(image, geometry.transform).astype(np.float64))
    return run.model.encode(_to_tensor(crop, run.model), refine_iters=run.settings.decoder_iters)


def _layer(run: _Run, face: np.ndarray, image: np.ndarray, geometry: FaceGeometry, colour: Colour, nonce: bytes) -> np.ndarray:
    """What pasting a decoded model face (S x S x 3) puts on the region's pixels before
    blending (K x 3): colour-matched, resampled onto the photo's grid, with grain."""
    layer = sample_crop(colour.forward(face), geometry.transform, geometry.region)
    if run.settings.grain:
        layer = layer + photo_grain(image, geometry, nonce)
    return layer


def _hint_tensor(hint: np.ndarray | None, geometry: FaceGeometry, like: torch.Tensor) -> torch.Tensor:
    if hint is None:
        return torch.zeros_like(like)
    return torch.from_numpy(hint.astype(np.float32) * HINT_STEP).to(like.device) * geometry.latent.to(like.device)


def _predict(
    run: _Run, veiled: np.ndarray, geometry: FaceGeometry, nonce: bytes, colour: Colour, hint: np.ndarray | None
) -> tuple[np.ndarray, FaceReport]:
    """Recovery's prediction of a face's region (K x 3 uint8) from the veiled image.

    Undoes the paste ``v = a L + (1 - a) o`` of the layer ``L`` read back from the
    pixels by adding ``a (B - L)``, where ``B`` is the model's reconstruction of the
    original: ``a B + (1 - a) o`` without ever knowing ``o`` inside the region.
    """
    z_in = _read_latent(run, veiled, geometry, colour)
    z_in = z_in + _hint_tensor(hint, geometry, z_in)
    z_back, report = _engine(run, veiled, z_in, geometry, nonce)
    layer = _layer(run, _to_pixels(run.model.decode(z_in)), veiled, geometry, colour, nonce)
    back = sample_crop(_to_pixels(run.model.decode(z_back)), geometry.transform, geometry.region)
    y0, y1, x0, x1 = geometry.region.bounds
    inside = geometry.region.inside
    a = geometry.region.alpha[inside][:, None]
    values = veiled[y0:y1, x0:x1][inside].astype(np.float64) + a * (back - layer)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8), report


def _read_back_rgb(output: np.ndarray) -> np.ndarray:
    """What ``imageio.read_image`` will see of an output array (gray and alpha handled)."""
    if output.ndim == 2:
        return np.repeat(output[..., None], 3, axis=2)
    if output.shape[2] == 2:
        return np.repeat(output[..., :1], 3, axis=2)
    return np.ascontiguousarray(output[..., :3])


def _box(values: np.ndarray, region: FaceRegion, fill: int = 0) -> np.ndarray:
    """Region samples (K x 3) laid out in the region's bounding box."""
    y0, y1, x0, x1 = region.bounds
    out = np.full((y1 - y0, x1 - x0, values.shape[-1]), fill, dtype=values.dtype)
    out[region.inside] = values
    return out


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
    metadata: dict | None = None,
) -> tuple[np.ndarray, dict, list[FaceReport]]:
    """Anonymize faces of an RGB uint8 image; returns (output array, header record, reports).

    ``faces`` lists the faces; ``None`` treats the whole image as one aligned face with
    the default outline. ``output_like`` turns the RGB result into the array that will
    be written (back to grayscale, alpha re-attached), so hints and residuals account
    for exactly what is saved. Faces are veiled one after another, each on the image
    with the previous ones veiled; recovery undoes them in reverse order, so faces whose
    regions touch stay exact. ``residual`` stores, sealed, what the model cannot give
    back, so that recovery restores the original pixels exactly; it costs a replay of
    recovery at anonymization. ``metadata`` (the input file's EXIF, XMP... as
    ``imageio.read_metadata`` gives it) is sealed with the faces, for recovery to restore.
    """
    settings = settings or Settings()
    like = output_like or (lambda a: a)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if faces is None:
        size = model.image_size
        faces = [FaceJob(whole_image_transform(rgb.shape[0], rgb.shape[1], size), default_outline(size))]
    run = _Run.of(model, key, settings, progress)
    current = _read_back_rgb(like(rgb))  # the image in the domain that will be written
    reports, public_faces, private_faces = [], [], []
    for face in faces:
        # float32 is what the header keeps (half the bytes); both directions use exactly these values
        outline = np.ascontiguousarray(face.outline, dtype=np.float32).reshape(-1, 2).astype(np.float64)
        geometry = face_geometry(current.shape, face.transform, outline, model)
        y0, y1, x0, x1 = geometry.region.bounds
        if residual and max(y1 - y0, x1 - x0) > MAX_SIDE:
            raise UsageError(
                f"a face region of {x1 - x0}x{y1 - y0} px is larger than the {MAX_SIDE} px the sealed residual can "
                "hold; downscale the image"
            )
        nonce = face.nonce or new_nonce()
        crop = warp_crop(current, face.transform)
        z0 = model.encode(_to_tensor(crop, model), refine_iters=settings.decoder_iters)
        if face.noise is None:
            z_out, report = _engine(run, current, z0, geometry, nonce)
        else:  # a video track's face: sampled from the track's keyed noise, this frame's context around it
            z_out, report = _resample(run, current, geometry, nonce, face.noise)
        generated = _to_pixels(model.decode(z_out))
        colour = fit_colour(generated, crop.astype(np.float64), geometry.interior, geometry.edge) if settings.colour else Colour()
        layer = _layer(run, generated, current, geometry, colour, nonce)
        veiled = _read_back_rgb(like(blend_region(current, layer, geometry.region)))
        private: dict = {"outline": outline.astype("<f4").tobytes()}
        if settings.colour:
            private["colour"] = colour.to_json()
            if colour.shading:
                private["shading"] = colour.shading
        hint = None
        if settings.hint:
            z_read = _read_latent(run, veiled, geometry, colour)
            steps = ((z_out - z_read) * geometry.latent.to(z_out.device)).cpu().numpy() / HINT_STEP
            hint = np.clip(np.rint(steps), -32767, 32767).astype(np.int16)
            private["hint"] = encode_array(hint)
        if residual:
            predicted, replay = _predict(run, veiled, geometry, nonce, colour, hint)
            report.unet_evals += replay.unet_evals
            y0, y1, x0, x1 = geometry.region.bounds
            original = current[y0:y1, x0:x1]
            box = residual_image(original, _box(predicted, geometry.region), geometry.region.inside)
            coded = encode_residual(box)
            direct = encode_region(original, geometry.region.inside)
            if len(direct) < len(coded):  # the model predicts this face worse than the codec alone
                private["original"] = direct
            else:
                private["residual"] = coded
        reports.append(report)
        public_faces.append({"nonce": nonce.hex(), "transform": face.transform.to_json()})
        private_faces.append(private)
        current = veiled
    written = like(current)
    public = {
        "model": {"id": model.model_id, "weights_sha256": model.weights_hash, "kind": model.kind},
        "settings": {**settings.to_json(), "residual_codec": CODEC},
        "image": {"height": int(written.shape[0]), "width": int(written.shape[1]), "pixels_sha256": pixels_sha256(written)},
        "faces": public_faces,
    }
    private_part: dict = {"faces": private_faces}
    if metadata:
        private_part["metadata"] = metadata
    return written, seal_header(key, public, private_part), reports


@dataclass
class RecoverInfo:
    pixels_changed: bool  # the image is not byte for byte what anonymization wrote
    used_residual: bool
    reports: list[FaceReport]
    metadata: dict = field(default_factory=dict)  # the original file's metadata, sealed at anonymization


def _sealed_metadata(private: dict) -> dict:
    """The sealed metadata in ``imageio.read_metadata``'s form (bytes values; ``text``: str -> str)."""
    metadata = private.get("metadata", {})
    ok = isinstance(metadata, dict) and all(
        isinstance(v, bytes) if k != "text" else isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())
        for k, v in metadata.items()
    )
    if not ok:
        raise HeaderError("the faceveil header's metadata is corrupt")
    return metadata


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


def _hint_array(obj: dict, shape: tuple[int, ...]) -> np.ndarray:
    hint = decode_array(obj, max_bytes=2 * int(np.prod(shape)))
    if hint.dtype != np.int16 or hint.shape != shape:
        raise ValueError("hint does not match the latent shape")
    return hint


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
    check_public(public, array.shape[0], array.shape[1])
    try:
        settings = Settings.from_json(public["settings"])
        faces = [(AlignTransform.from_json(f["transform"]), bytes.fromhex(f["nonce"])) for f in public["faces"]]
        privates = private["faces"]
        outlines = [np.frombuffer(f["outline"], dtype="<f4").reshape(-1, 2).astype(np.float64) for f in privates]
        colours = [Colour.from_json(f["colour"], f.get("shading", b"")) if "colour" in f else Colour() for f in privates]
        expected = public["image"]
        if len(privates) != len(faces):
            raise ValueError("face count mismatch")
        if public["settings"].get("residual_codec", CODEC) != CODEC:
            raise ValueError(f"unknown residual codec {public['settings'].get('residual_codec')!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HeaderError(f"the faceveil header is incomplete ({exc})") from None
    if public["model"]["weights_sha256"] != model.weights_hash:
        raise UsageError(
            f"this file was anonymized with model {public['model']['id']!r} "
            f"(weights sha256 {public['model']['weights_sha256'][:16]}…); the loaded model's weights differ"
        )
    changed = pixels_sha256(array) != expected["pixels_sha256"]
    current = _read_back_rgb(np.asarray(array, dtype=np.uint8))
    run = _Run.of(model, key, settings, progress)
    latent_shape = (1, model.latent_channels, model.latent_size, model.latent_size)
    reports: list[FaceReport] = []
    used_residual = use_residual
    for (transform, nonce), outline, colour, priv in reversed(list(zip(faces, outlines, colours, privates))):
        geometry = face_geometry(current.shape, transform, outline, model)
        y0, y1, x0, x1 = geometry.region.bounds
        inside = geometry.region.inside
        if use_residual and "original" in priv:  # stored as it was: no model needed for this face
            try:
                box = decode_residual(priv["original"], (y1 - y0, x1 - x0))
            except (ValueError, OSError) as exc:
                raise HeaderError(f"the faceveil header's face data is corrupt ({exc})") from None
            current = current.copy()
            current[y0:y1, x0:x1][inside] = box[inside]
            reports.insert(0, FaceReport(transform, 0, 0.0))
            continue
        try:
            hint = _hint_array(priv["hint"], latent_shape) if "hint" in priv else None
        except (ValueError, TypeError, KeyError) as exc:
            raise HeaderError(f"the faceveil header's hint is corrupt ({exc})") from None
        predicted, report = _predict(run, current, geometry, nonce, colour, hint)
        values = predicted
        if use_residual and "residual" in priv:
            try:
                box = decode_residual(priv["residual"], (y1 - y0, x1 - x0))
            except (ValueError, OSError) as exc:
                raise HeaderError(f"the faceveil header's residual is corrupt ({exc})") from None
            values = apply_residual(predicted, box[inside])
        else:
            used_residual = False
        current = current.copy()
        current[y0:y1, x0:x1][inside] = values
        reports.insert(0, report)
    out = output_like(current) if output_like else current
    return out, RecoverInfo(changed, used_residual, reports, _sealed_metadata(private))

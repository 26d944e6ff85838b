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

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from faceveil.binding import fingerprint
from faceveil.container import (
    decode_array,
    encode_array,
    pixels_sha256,
    seal_header,
    unlock,
)
from faceveil.engine import (
    EngineSettings,
    Schedule,
    masked_noise,
    masked_sample,
    masked_scramble,
    veil,
)
from faceveil.engine.veil import noised_trajectory
from faceveil.errors import HeaderError, UsageError
from faceveil.faces.align import AlignTransform
from faceveil.faces.align import warp_crop as align_warp
from faceveil.faces.colour import Colour, fit_colour, photo_grain
from faceveil.faces import sharpness
from faceveil.faces.mask import default_outline, outline_alpha, outline_reach
from faceveil.faces.paste import (
    FaceRegion,
    blend_region,
    outline_region,
    sample_crop,
    sampled_cells,
)
from faceveil.faces.visible import MODEL, VISIBLE, apply_visible
from faceveil.envelope import Envelope, envelope_for
from faceveil.keys import Key, new_nonce, public_gaussian
from faceveil.models import DiffusionModel
from faceveil.progress import announce
from faceveil.residual import (
    CODEC,
    MAX_SIDE,
    apply_residual,
    decode_residual,
    decode_ties,
    encode_region,
    encode_residual,
    encode_ties,
    residual_image,
    round_prediction,
    tie_codes,
)
from faceveil.schema import MAX_DETAIL_PASSES, check_public

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
    # passes of the model's detail stage at most (faceveil.detail.DetailNet.passes); files made
    # before the setting have none in their header and were made with one
    detail_passes: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.detail_passes, bool) or not isinstance(self.detail_passes, int) \
                or not 1 <= self.detail_passes <= MAX_DETAIL_PASSES:
            raise UsageError(f"detail_passes must be an integer from 1 to {MAX_DETAIL_PASSES}, not {self.detail_passes!r}")

    def to_json(self) -> dict:
        return {"engine": self.engine.to_json(), "decoder_iters": self.decoder_iters, "hint": self.hint,
                "colour": self.colour, "grain": self.grain, "detail_passes": self.detail_passes}

    @classmethod
    def for_model(cls, model: DiffusionModel) -> Settings:
        """The defaults, with the noise gain ``model`` recommends (``DiffusionModel.noise_gain``)."""
        return cls(EngineSettings(noise_gain=model.noise_gain))

    @classmethod
    def from_json(cls, data: dict) -> Settings:
        return cls(EngineSettings.from_json(data["engine"]), int(data["decoder_iters"]), bool(data["hint"]),
                   bool(data["colour"]), bool(data["grain"]), int(data.get("detail_passes", 1)))


@dataclass
class FaceReport:
    """What happened to one face."""

    transform: AlignTransform
    unet_evals: int
    max_inversion_residual: float
    treatment: str = MODEL  # "model", or the visible treatment the face got (``faceveil.faces.visible``)
    # why the face was drawn again (a fresh nonce), one entry per redraw: "match" (the identity check still
    # matched the face drawn before to the original) or "smooth" (its detail was below the model's floor,
    # ``DiffusionModel.detail_floor``)
    redrawn_for: tuple[str, ...] = ()
    still_matches: float | None = None  # the similarity, where the face kept still matches the original
    still_smooth: float | None = None  # its detail ratio, where the face kept is still below the model's floor

    @property
    def redraws(self) -> int:
        """Times the face was drawn again."""
        return len(self.redrawn_for)


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
    treatment: str = MODEL  # or a visible one ("pixelate", "blur", "solid"): no model, the original sealed
    # five-point landmark sets on the photo (ArcFace order, 5 x 2 each) that the identity check
    # (``redraws``) aligns the face with before and after, the largest similarity counting
    # (``treatments.identity_landmarks``); empty: the face is not checked
    landmarks: tuple[np.ndarray, ...] = ()

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


def _geometry(image_shape: tuple[int, ...], transform: AlignTransform, outline: np.ndarray, model: DiffusionModel,
              treatment: str) -> FaceGeometry:
    """``face_geometry`` for a model face; a visibly treated face needs only its region (no model grid)."""
    if treatment == MODEL:
        return face_geometry(image_shape, transform, outline, model)
    none = np.zeros((0, 0), bool)
    return FaceGeometry(transform, outline_region(image_shape, transform, outline), torch.zeros(1, 1, 0, 0), none, none, none)


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


# ---- faces through the model, a batch at a time -------------------------------------------
# times a face that an identity check still matches to the original (faceveil.verify.identity_matcher),
# or smoother than its model's detail floor, is drawn again (fresh nonce) before the best face drawn is
# kept and reported; 0 turns the checks off
DEFAULT_REDRAWS = 2
MAX_REDRAWS = 10


def check_redraws(redraws: object) -> int:
    """``redraws`` if it is a whole number from 0 to :data:`MAX_REDRAWS`, else ``UsageError``."""
    if isinstance(redraws, bool) or not isinstance(redraws, int) or not 0 <= redraws <= MAX_REDRAWS:
        raise UsageError(f"redraws must be an integer from 0 to {MAX_REDRAWS}, not {redraws!r}")
    return redraws


DEFAULT_BATCH = 8  # faces per UNet evaluation (measured on this CPU: 0.62 of the batch-1 cost per face at 8)


@dataclass(frozen=True)
class _Run:
    """What every face of one batch shares: the model, schedule, key and settings."""

    model: DiffusionModel
    schedule: Schedule
    key: Key
    settings: Settings
    progress: Progress | None

    @classmethod
    def of(cls, model: DiffusionModel, key: Key, settings: Settings, progress: Progress | None) -> _Run:
        return cls(model, Schedule.from_scheduler(model.scheduler, settings.engine.steps), key, settings, progress)

    def eps(
        self, batch: int, evals: list[int] | None = None, condition: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The model's noise estimate, counting evaluations and reporting ``batch`` face-evaluations
        each; an inpainting model sees ``condition`` (``DiffusionModel.condition``) at every step."""

        def eps(z: torch.Tensor, t: int) -> torch.Tensor:
            if evals is not None:
                evals[0] += 1
            if self.progress:
                self.progress(batch)
            return self.model.eps(z, t, condition)

        return eps


@dataclass(frozen=True)
class _Face:
    """One face in a batch: its geometry and public nonce, on the image it is read from."""

    image: np.ndarray
    geometry: FaceGeometry
    nonce: bytes
    noise: torch.Tensor | None = None  # a video track's keyed noise (``FaceJob.noise``)
    key: Key | None = None  # what draws this face's sign pattern (its photo's file key), else the run's


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def _encode(model: DiffusionModel, crops: list[np.ndarray], refine_iters: int = 0) -> torch.Tensor:
    return model.encode(torch.cat([_to_tensor(c, model) for c in crops]), refine_iters=refine_iters)


def public_context(model: DiffusionModel, image: np.ndarray, geometry: FaceGeometry, nonce: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """(context latent, context noise) of one face: the crop with the face filled in, and
    the public Gaussian noise of its nonce. Both directions (and anyone) compute the same."""
    return _contexts(model, [_Face(image, geometry, nonce)])


def _contexts(model: DiffusionModel, faces: list[_Face]) -> tuple[torch.Tensor, torch.Tensor]:
    """``public_context`` of a batch of faces (the context latents encoded together)."""
    crops = [fill_region(warp_crop(f.image, f.geometry.transform), f.geometry.context) for f in faces]
    context = _encode(model, crops)
    shape = (1, *context.shape[1:])
    noise = torch.cat([torch.from_numpy(public_gaussian(f.nonce, shape)) for f in faces]).to(context.device)
    return context, noise


def _key_patterns(run: _Run, faces: list[_Face], shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each face's secret sign pattern (B, ...) and, with ``pairs`` mixing, its pairing (B, N),
    drawn for one latent of ``shape`` (1, C, h, w), as they always were."""
    signs = torch.cat([torch.from_numpy((f.key or run.key).sign_pattern(f.nonce, shape)) for f in faces])
    partner = None
    if run.settings.engine.mixing == "pairs":
        partner = torch.stack([
            torch.from_numpy((f.key or run.key).pairing(f.nonce, shape, f.geometry.latent.expand(shape).numpy() > 0))
            for f in faces
        ])
    return signs, partner


def _masks(faces: list[_Face], device: torch.device) -> torch.Tensor:
    return torch.cat([f.geometry.latent for f in faces]).to(device)


def _engine(run: _Run, z_start: torch.Tensor, faces: list[_Face], inverse: bool = False) -> tuple[torch.Tensor, list[FaceReport]]:
    """The keyed transform of a batch of latents (one per face), the context taken from each face's image
    (``inverse``: recovery's direction, which divides by the noise gain)."""
    context, noise = _contexts(run.model, faces)
    signs, partner = _key_patterns(run, faces, (1, *z_start.shape[1:]))
    masks = _masks(faces, z_start.device)
    eps = run.eps(len(faces), condition=run.model.condition(context, masks))
    z_out, stats = veil(eps, run.schedule, z_start, masks, signs.to(z_start.device),
                        run.settings.engine, context, noise, partner, inverse)
    return z_out, [FaceReport(f.geometry.transform, stats.unet_evals, stats.sample_residual(i)) for i, f in enumerate(faces)]


def _resample(run: _Run, faces: list[_Face]) -> tuple[torch.Tensor, list[FaceReport]]:
    """``veil``'s sampling half alone: each face from its given keyed noise, its image's context outside the mask."""
    if run.settings.engine.context != "noised":
        raise UsageError("a track's noise can only be reused with the 'noised' context")
    context, public = _contexts(run.model, faces)
    evals = [0]
    masks = _masks(faces, context.device)
    trajectory = noised_trajectory(run.schedule, context, public)
    noise = torch.cat([f.noise.to(context.device) for f in faces])
    condition = run.model.condition(context, masks)
    z_out = masked_sample(run.eps(len(faces), evals, condition), run.schedule, noise, masks.expand_as(context), trajectory)
    return z_out, [FaceReport(f.geometry.transform, evals[0], 0.0) for f in faces]


def _generate(run: _Run, z0: torch.Tensor, faces: list[_Face]) -> tuple[torch.Tensor, list[FaceReport]]:
    """The new faces' latents: ``_engine`` for faces of their own, ``_resample`` for a track's."""
    out, reports = torch.empty_like(z0), [None] * len(faces)
    for group in ([i for i, f in enumerate(faces) if f.noise is None], [i for i, f in enumerate(faces) if f.noise is not None]):
        if not group:
            continue
        members = [faces[i] for i in group]
        z, rs = _engine(run, z0[group], members) if members[0].noise is None else _resample(run, members)
        out[group] = z
        for i, r in zip(group, rs):
            reports[i] = r
    return out, reports


def keyed_noise(rgb: np.ndarray, key: Key | Envelope, model: DiffusionModel, face: FaceJob, settings: Settings | None = None) -> torch.Tensor:
    """The keyed noise ``veil`` would sample ``face`` from: its masked inversion, scrambled by the key.

    A video computes it once per track (``face.nonce`` is the track's) and passes it as
    ``FaceJob.noise`` for every frame, so the track's face is one sample, not one per frame.
    """
    if face.nonce is None:
        raise ValueError("keyed_noise needs the face's nonce (the track's)")
    settings = settings or Settings.for_model(model)
    run = _Run.of(model, key.file_key if isinstance(key, Envelope) else key, settings, None)
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    geometry = face_geometry(image.shape, face.transform, _outline(face), model)
    one = _Face(image, geometry, face.nonce)
    z0 = _encode(model, [warp_crop(image, face.transform)], settings.decoder_iters)
    context, public = _contexts(model, [one])
    condition = model.condition(context, geometry.latent)
    zN, _ = masked_noise(run.eps(1, condition=condition), run.schedule, z0, geometry.latent.to(z0.device),
                         settings.engine, context, public)
    signs, partner = _key_patterns(run, [one], tuple(zN.shape))
    mask = geometry.latent.to(zN.device).expand_as(zN)
    return masked_scramble(zN, mask, signs.to(zN.device), settings.engine.noise_gain, partner)


def _read_latents(run: _Run, faces: list[_Face], colours: list[Colour]) -> torch.Tensor:
    """The latents recovery reads from veiled faces (each face's colour map undone)."""
    crops = [c.inverse(warp_crop(f.image, f.geometry.transform).astype(np.float64)) for f, c in zip(faces, colours)]
    return _encode(run.model, crops, run.settings.decoder_iters)


def _doubled(transform: AlignTransform) -> AlignTransform:
    """The same crop at twice the resolution (pixel centres at ``2x + 0.5``)."""
    m = np.array(transform.matrix) * 2.0
    m[:, 2] += 0.5
    return AlignTransform(m, 2 * transform.size)


def _paste_samples(model: DiffusionModel, face: np.ndarray, geometry: FaceGeometry, most_passes: int) -> np.ndarray:
    """A model face (S x S x 3) resampled at the region's pixels (K x 3): through the
    model's detail stage first, up to ``most_passes`` times, where the face on the photo is
    enlarged enough for it (a public function of the transform and the header's settings,
    so both directions agree)."""
    transform = geometry.transform
    if model.detail is not None:
        for _ in range(model.detail.passes(1.0 / geometry.transform.scale, most_passes)):
            face, transform = model.detail.enhance(face), _doubled(transform)
    return sample_crop(face, transform, geometry.region)


def _layer(run: _Run, face: np.ndarray, image: np.ndarray, geometry: FaceGeometry, colour: Colour, nonce: bytes) -> np.ndarray:
    """What pasting a decoded model face (S x S x 3) puts on the region's pixels before
    blending (K x 3): colour-matched, resampled onto the photo's grid, with grain."""
    layer = _paste_samples(run.model, colour.forward(face), geometry, run.settings.detail_passes)
    if run.settings.grain:
        layer = layer + photo_grain(image, geometry.region, geometry.transform.scale, nonce)
    return layer


def _hint_tensor(hint: np.ndarray | None, geometry: FaceGeometry, like: torch.Tensor) -> torch.Tensor:
    if hint is None:
        return torch.zeros_like(like)
    return torch.from_numpy(hint.astype(np.float32) * HINT_STEP).to(like.device) * geometry.latent.to(like.device)


def _predict(
    run: _Run, faces: list[_Face], colours: list[Colour], hints: list[np.ndarray | None]
) -> tuple[list[np.ndarray], list[FaceReport]]:
    """Recovery's prediction of each face's region (K x 3 float64, before rounding) from the veiled image.

    Undoes the paste ``v = a L + (1 - a) o`` of the layer ``L`` read back from the
    pixels by adding ``a (B - L)``, where ``B`` is the model's reconstruction of the
    original: ``a B + (1 - a) o`` without ever knowing ``o`` inside the region. The
    floats differ in their last bits with the batch, the hardware and the thread count;
    ``faceveil.residual``'s sealed tie directions make their rounding agree.
    """
    z_in = _read_latents(run, faces, colours)
    z_in = z_in + torch.cat([_hint_tensor(h, f.geometry, z_in[:1]) for f, h in zip(faces, hints)])
    z_back, reports = _engine(run, z_in, faces, inverse=True)
    read, back = run.model.decode(z_in), run.model.decode(z_back)
    predictions = []
    for i, (face, colour) in enumerate(zip(faces, colours)):
        g = face.geometry
        layer = _layer(run, _to_pixels(read[i : i + 1]), face.image, g, colour, face.nonce)
        restored = _paste_samples(run.model, _to_pixels(back[i : i + 1]), g, run.settings.detail_passes)
        y0, y1, x0, x1 = g.region.bounds
        inside = g.region.inside
        a = g.region.alpha[inside][:, None]
        predictions.append(face.image[y0:y1, x0:x1][inside].astype(np.float64) + a * (restored - layer))
    return predictions, reports


def _read_back_rgb(output: np.ndarray) -> np.ndarray:
    """What ``imageio.read_image`` will see of an output array (gray and alpha handled)."""
    if output.ndim == 2:
        return np.repeat(output[..., None], 3, axis=2)
    if output.shape[2] == 2:
        return np.repeat(output[..., :1], 3, axis=2)
    return np.ascontiguousarray(output[..., :3])


def _box(values: np.ndarray, region: FaceRegion, fill: int = 0) -> np.ndarray:
    """Region samples (K x C) laid out in the region's bounding box."""
    y0, y1, x0, x1 = region.bounds
    out = np.full((y1 - y0, x1 - x0, values.shape[-1]), fill, dtype=values.dtype)
    out[region.inside] = values
    return out


def _region_digest(image: np.ndarray, region: FaceRegion) -> bytes:
    """SHA-256 of a region's pixels (K x 3 uint8): sealed, so recovery can prove it restored them."""
    y0, y1, x0, x1 = region.bounds
    return hashlib.sha256(np.ascontiguousarray(image[y0:y1, x0:x1][region.inside], dtype=np.uint8).tobytes()).digest()


# ---- public array-level API -----------------------------------------------------------
@dataclass
class PhotoJob:
    """One photo for ``anonymize_arrays``: its RGB pixels and faces (``None``: the whole image
    is one aligned face), how it will be written (``output_like``) and its metadata to seal."""

    rgb: np.ndarray
    faces: list[FaceJob] | None = None
    output_like: Callable[[np.ndarray], np.ndarray] | None = None
    metadata: dict | None = None


def _outline(face: FaceJob) -> np.ndarray:
    # float32 is what the header keeps (half the bytes); both directions use exactly these values
    return np.ascontiguousarray(face.outline, dtype=np.float32).reshape(-1, 2).astype(np.float64)


def plan_faces(photo: PhotoJob, model: DiffusionModel, residual: bool = True) -> tuple[list[FaceJob], list[FaceGeometry]]:
    """The photo's faces and their geometry, or ``UsageError`` before any model work
    (a crop the model cannot take, a region larger than the residual can hold)."""
    shape = np.asarray(photo.rgb).shape[:2] + (3,)
    faces = photo.faces
    if faces is None:
        size = model.image_size
        faces = [FaceJob(whole_image_transform(shape[0], shape[1], size), default_outline(size))]
    geometries = []
    for face in faces:
        if face.treatment != MODEL and face.treatment not in VISIBLE:
            raise UsageError(f"unknown face treatment {face.treatment!r}; choose {MODEL} or one of {', '.join(VISIBLE)}")
        geometry = _geometry(shape, face.transform, _outline(face), model, face.treatment)
        y0, y1, x0, x1 = geometry.region.bounds
        if (residual or face.treatment != MODEL) and max(y1 - y0, x1 - x0) > MAX_SIDE:
            raise UsageError(
                f"a face region of {x1 - x0}x{y1 - y0} px is larger than the {MAX_SIDE} px the sealed residual can "
                "hold; downscale the image"
            )
        geometries.append(geometry)
    return faces, geometries


@dataclass
class _Anonymizing:
    """One photo of an ``anonymize_arrays`` batch while its faces are veiled."""

    like: Callable[[np.ndarray], np.ndarray]
    current: np.ndarray  # the image in the domain that will be written, faces so far veiled
    faces: list[FaceJob]
    geometries: list[FaceGeometry]
    nonces: list[bytes]
    envelope: Envelope  # the photo's file key and recipients
    reports: list[FaceReport] = field(default_factory=list)
    private_faces: list[dict] = field(default_factory=list)


def anonymize_array(
    rgb: np.ndarray,
    key: Key | Envelope | object,
    model: DiffusionModel,
    faces: list[FaceJob] | None = None,
    settings: Settings | None = None,
    output_like: Callable[[np.ndarray], np.ndarray] | None = None,
    residual: bool = True,
    progress: Progress | None = None,
    metadata: dict | None = None,
    redraws: int = DEFAULT_REDRAWS,
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
    ``redraws``: a face with no given nonce whose new face an identity check still matches to
    the original (ArcFace at FAR 1e-3, where an embedder runs and the face has landmarks), or
    whose detail is below the model's ``detail_floor``, is drawn again with a fresh nonce, up to
    that many times, the best face drawn kept (``FaceReport.redraws``); 0 turns the checks off.
    """
    photo = PhotoJob(rgb, faces, output_like, metadata)
    return anonymize_arrays([photo], key, model, settings, residual, progress, redraws=redraws)[0]


def anonymize_arrays(
    photos: list[PhotoJob],
    key: Key | Envelope | object,
    model: DiffusionModel,
    settings: Settings | None = None,
    residual: bool = True,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    redraws: int = DEFAULT_REDRAWS,
) -> list[tuple[np.ndarray, dict, list[FaceReport]]]:
    """``anonymize_array`` for several photos, their faces batched through the model.

    Each photo's faces are still veiled one after another (face ``i`` on the image with
    faces ``< i`` veiled); the photos go in lockstep, so round ``i`` sends face ``i`` of
    every photo through the UNet together, ``batch_size`` faces per evaluation. Each
    photo's output is what ``anonymize_array`` gives it alone, up to the last bits of the
    model's floats: recovery, alone or in any batch, restores it exactly.
    ``progress`` is called with the number of faces after every UNet evaluation.

    ``key`` is what the files are for (``faceveil.envelope.envelope_for``): a symmetric key,
    recipients, or both; each photo gets a fresh file key, unless ``key`` is an
    ``Envelope``, whose file key every photo then shares (a video's frames).
    """
    settings = settings or Settings.for_model(model)
    check_redraws(redraws)
    envelopes = [envelope_for(key) for _ in photos]  # each a fresh file key, or the one given
    run = _Run.of(model, envelopes[0].file_key if envelopes else Key.generate(), settings, progress)
    states = []
    for photo, envelope in zip(photos, envelopes):
        faces, geometries = plan_faces(photo, model, residual)  # every refusal before any model work
        like = photo.output_like or (lambda a: a)
        current = _read_back_rgb(like(np.ascontiguousarray(photo.rgb, dtype=np.uint8)))
        states.append(_Anonymizing(like, current, faces, geometries, [f.nonce or new_nonce() for f in faces], envelope))
    n_faces = sum(len(s.faces) for s in states)  # a bar's total: about 4 evaluations per step (invert, sample, replay)
    announce(progress, n_faces, n_faces * 4 * settings.engine.steps)
    for round_ in range(max((len(s.faces) for s in states), default=0)):
        active = [s for s in states if len(s.faces) > round_]
        for state in active:
            if state.faces[round_].treatment != MODEL:
                _veil_visible(state, round_)
        for chunk in _chunks([s for s in active if s.faces[round_].treatment == MODEL], batch_size):
            _veil_round(run, chunk, round_, residual, redraws)
    results = []
    for photo, state in zip(photos, states):
        written = state.like(state.current)
        public = {
            "model": {"id": model.model_id, "weights_sha256": model.weights_hash, "kind": model.kind},
            "settings": {**settings.to_json(), "residual_codec": CODEC},
            "image": {"height": int(written.shape[0]), "width": int(written.shape[1]), "pixels_sha256": pixels_sha256(written)},
            "faces": [{"nonce": n.hex(), "transform": f.transform.to_json(), "treatment": f.treatment}
                      for f, n in zip(state.faces, state.nonces)],
        }
        private_part: dict = {"faces": state.private_faces, "fingerprint": fingerprint(written, public)}  # binds header to image
        if photo.metadata:
            private_part["metadata"] = photo.metadata
        results.append((written, seal_header(state.envelope, public, private_part), state.reports))
    return results


def _footprint(geometry: FaceGeometry) -> tuple[float, float, float, float]:
    """(y0, y1, x0, x1) of the photo pixels a face's crop reads (its corners mapped back, bicubic reach added)."""
    m = geometry.transform.matrix
    n = geometry.transform.size
    inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))
    corners = inverse @ np.array([[-1, -1, n, n], [-1, n, -1, n], [1, 1, 1, 1]], dtype=np.float64)
    reach = 2.0 * max(1.0, 1.0 / max(geometry.transform.scale, 1e-9))
    return (corners[1].min() - reach, corners[1].max() + reach, corners[0].min() - reach, corners[0].max() + reach)


def entangled(geometries: list[FaceGeometry], index: int) -> bool:
    """Whether a face veiled after face ``index`` pastes into the pixels face ``index``'s crop reads.

    Recovery restores faces in reverse order, so face ``index`` is predicted from the photo
    as anonymization saw it. Restored alone (a disclosure token), with the later faces still
    veiled, such a face would be predicted from other pixels: its token carries its region instead.
    """
    y0, y1, x0, x1 = _footprint(geometries[index])
    for later in geometries[index + 1 :]:
        b = later.region.bounds
        if b[0] < y1 and b[1] > y0 and b[2] < x1 and b[3] > x0:
            return True
    return False


def _veil_visible(state: _Anonymizing, index: int) -> None:
    """Face ``index`` of one photo by its visible treatment: no model; its original region sealed as it was."""
    face, g = state.faces[index], state.geometries[index]
    y0, y1, x0, x1 = g.region.bounds
    veiled = _read_back_rgb(state.like(apply_visible(state.current, g.region, face.treatment)))
    state.private_faces.append({
        "outline": _outline(face).astype("<f4").tobytes(), "sha256": _region_digest(state.current, g.region),
        "original": encode_region(state.current[y0:y1, x0:x1], g.region.inside),
    })
    state.reports.append(FaceReport(g.transform, 0, 0.0, face.treatment))
    state.current = veiled


@dataclass
class _Drawn:
    """One face drawn by the model and pasted into its photo; recorded once it is kept."""

    face: _Face  # as read: the photo before this face, its geometry and nonce
    report: FaceReport
    colour: Colour
    veiled: _Face  # the photo with the face pasted
    private: dict
    latent: torch.Tensor  # the model's output for the face (1, ...): what a latent hint is measured against
    similarity: float | None = None  # where the redraws' identity check still matches it to the original
    smoothness: float | None = None  # its detail ratio, where the redraws found it below the model's floor

    @property
    def flawed(self) -> str | None:
        """Why it should be drawn again ("match", "smooth"), or None."""
        return "match" if self.similarity is not None else "smooth" if self.smoothness is not None else None

    def rank(self) -> tuple[bool, float, float]:
        """Smaller is better: not matching the original first, then the least similar, then the most detailed."""
        return (self.similarity is not None, self.similarity or 0.0, -(self.smoothness if self.smoothness is not None else 1.0))


def _draw(run: _Run, states: list[_Anonymizing], index: int) -> list[_Drawn]:
    """Face ``index`` of each photo in ``states`` through the model together, pasted; nothing recorded."""
    model, settings = run.model, run.settings
    faces = [_Face(s.current, s.geometries[index], s.nonces[index], s.faces[index].noise, s.envelope.file_key) for s in states]
    crops = [warp_crop(f.image, f.geometry.transform) for f in faces]
    z_out, reports = _generate(run, _encode(model, crops, settings.decoder_iters), faces)
    decoded = model.decode(z_out)
    drawn = []
    for i, (state, face, crop) in enumerate(zip(states, faces, crops)):
        g = face.geometry
        generated = _to_pixels(decoded[i : i + 1])
        colour = fit_colour(generated, crop.astype(np.float64), g.interior, g.edge) if settings.colour else Colour()
        layer = _layer(run, generated, state.current, g, colour, face.nonce)
        veiled = _read_back_rgb(state.like(blend_region(state.current, layer, g.region)))
        private: dict = {"outline": _outline(state.faces[index]).astype("<f4").tobytes(), "sha256": _region_digest(state.current, g.region)}
        if settings.colour:
            private["colour"] = colour.to_json()
            if colour.shading:
                private["shading"] = colour.shading
        drawn.append(_Drawn(face, reports[i], colour, _Face(veiled, g, face.nonce, key=face.key), private, z_out[i : i + 1]))
    return drawn


def _judge(state: _Anonymizing, index: int, drawn: _Drawn, check: Callable | None, floor: float) -> None:
    """Set ``drawn``'s flaws: the largest similarity where ``check`` still matches it to the original
    under one of the face's landmark sets (none: not checked), and its detail ratio where below
    ``floor``. Faces that cannot be drawn again (a nonce given: a video track's) are not judged."""
    job = state.faces[index]
    if job.nonce is not None:
        return
    if check is not None:
        found = [s for s in (check(state.current, drawn.veiled.image, lm) for lm in job.landmarks) if s is not None]
        drawn.similarity = max(found, default=None)
    if floor > 0:
        region = drawn.face.geometry.region
        y0, y1, x0, x1 = region.bounds
        box = sharpness.region_box(region.alpha)
        if box is not None:
            b0, b1, a0, a1 = box
            ratio = sharpness.detail_ratio(state.current[y0:y1, x0:x1][b0:b1, a0:a1],
                                           drawn.veiled.image[y0:y1, x0:x1][b0:b1, a0:a1], region.alpha[b0:b1, a0:a1])
            drawn.smoothness = ratio if ratio < floor else None  # NaN (too small a region): not judged


def _veil_round(run: _Run, states: list[_Anonymizing], index: int, residual: bool, redraws: int = 0) -> None:
    """Veil face ``index`` of each photo in ``states``, the faces through the model together.

    With ``redraws``, a face whose new face an identity check (``faceveil.verify.identity_matcher``)
    still matches to the original, or whose detail is below the model's floor
    (``DiffusionModel.detail_floor``, ``faceveil.faces.sharpness``), is drawn again with a fresh nonce,
    up to ``redraws`` times; the best face drawn is kept (not matching first, then the most detailed).
    Recovery reads the nonce kept in the header, so it is unaffected."""
    from faceveil.verify import identity_matcher

    settings = run.settings
    drawn = _draw(run, states, index)
    check = identity_matcher() if redraws > 0 else None
    floor = run.model.detail_floor if redraws > 0 else 0.0
    if check is not None or floor > 0:
        for state, d in zip(states, drawn):
            _judge(state, index, d, check, floor)
        best = list(drawn)
        for _ in range(redraws):
            again = [i for i, d in enumerate(drawn) if d.flawed]
            if not again:
                break
            for i in again:
                states[i].nonces[index] = new_nonce()
            announce(run.progress, 0, len(again) * 2 * settings.engine.steps)  # a bar's total grows: invert and sample again
            for i, d in zip(again, _draw(run, [states[i] for i in again], index)):
                _judge(states[i], index, d, check, floor)
                before = drawn[i].report
                d.report.unet_evals += before.unet_evals
                d.report.redrawn_for = (*before.redrawn_for, drawn[i].flawed)
                drawn[i] = d
                if d.rank() < best[i].rank():
                    best[i] = d
        for state, kept, last in zip(states, best, drawn):
            if kept is not last:  # an earlier face is kept: its nonce goes into the header, with every draw's count
                kept.report.unet_evals, kept.report.redrawn_for = last.report.unet_evals, last.report.redrawn_for
                state.nonces[index] = kept.face.nonce
            kept.report.still_matches, kept.report.still_smooth = kept.similarity, kept.smoothness
        drawn = best
    faces = [d.face for d in drawn]
    reports = [d.report for d in drawn]
    colours = [d.colour for d in drawn]
    veiled_faces = [d.veiled for d in drawn]
    privates = [d.private for d in drawn]
    hints: list[np.ndarray | None] = [None] * len(faces)
    if settings.hint:
        z_read = _read_latents(run, veiled_faces, colours)
        for i, face in enumerate(faces):
            z = drawn[i].latent
            steps = ((z - z_read[i : i + 1]) * face.geometry.latent.to(z.device)).cpu().numpy() / HINT_STEP
            hints[i] = np.clip(np.rint(steps), -32767, 32767).astype(np.int16)
            privates[i]["hint"] = encode_array(hints[i])
    if residual:
        predictions, replays = _predict(run, veiled_faces, colours, hints)
        for face, state, private, values, report, replay in zip(faces, states, privates, predictions, reports, replays):
            report.unet_evals += replay.unet_evals
            region = face.geometry.region
            y0, y1, x0, x1 = region.bounds
            ties = tie_codes(values)
            original = state.current[y0:y1, x0:x1]
            box = residual_image(original, _box(round_prediction(values, ties), region), region.inside)
            coded = {"residual": encode_residual(box)}
            if ties.any():
                coded["ties"] = encode_ties(ties)
            direct = encode_region(original, region.inside)
            if len(direct) < sum(map(len, coded.values())):  # the model predicts this face worse than the codec alone
                private["original"] = direct
            else:
                private.update(coded)
    for state, veiled, private, report in zip(states, veiled_faces, privates, reports):
        state.reports.append(report)
        state.private_faces.append(private)
        state.current = veiled.image


@dataclass
class RecoverInfo:
    pixels_changed: bool  # the image is not byte for byte what anonymization wrote
    used_residual: bool
    reports: list[FaceReport]
    metadata: dict = field(default_factory=dict)  # the original file's metadata, sealed at anonymization
    # faces (header order) whose restored pixels are not the sealed original's (their SHA-256 differs);
    # empty also for files made before faceveil sealed the hash (``verified`` is then False)
    inexact_faces: list[int] = field(default_factory=list)
    verified: bool = False  # every face's restored pixels were checked against the sealed SHA-256
    skipped_faces: list[int] = field(default_factory=list)  # faces (header order) left veiled: a token opened another


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
    opened = unlock(key, record)
    return recover_opened(array, opened.public, opened.private, opened.key, model, output_like, use_residual, progress)


def _hint_array(obj: dict, shape: tuple[int, ...]) -> np.ndarray:
    hint = decode_array(obj, max_bytes=2 * int(np.prod(shape)))
    if hint.dtype != np.int16 or hint.shape != shape:
        raise ValueError("hint does not match the latent shape")
    return hint


@dataclass
class VeiledPhoto:
    """One photo for ``recover_arrays``: the image as written and its opened header."""

    array: np.ndarray
    public: dict
    private: dict
    output_like: Callable[[np.ndarray], np.ndarray] | None = None
    key: Key | None = None  # the header's opener's pattern key (``container.Opened.key``); else the call's


@dataclass
class _Recovering:
    """One photo of a ``recover_arrays`` batch while its faces are restored (in reverse order)."""

    photo: VeiledPhoto
    settings: Settings
    current: np.ndarray
    faces: list[tuple[FaceGeometry, bytes, Colour, dict]]
    changed: bool
    reports: list[FaceReport | None]
    metadata: dict
    used_residual: bool = True
    inexact: list[int] = field(default_factory=list)
    verified: bool = True
    treatments: list[str] = field(default_factory=list)  # per face: "model" or a visible treatment
    skipped: list[int] = field(default_factory=list)  # faces left veiled (a disclosure token opens one face)

    def opened_index(self, position: int) -> int:
        """The header index of the ``position``-th face this recovery restores."""
        return [i for i in range(len(self.faces) + len(self.skipped)) if i not in self.skipped][position]


def disclosed_region(photo: VeiledPhoto, key: Key, model: DiffusionModel, index: int) -> bytes | None:
    """What a disclosure token for face ``index`` must carry besides the face key: ``None`` when the
    face can be restored alone with the model, else its original region, coded losslessly
    (a later face pastes into what its prediction reads, see :func:`entangled`). Needs the whole
    file opened (``photo.private`` with every face) and, in the second case, a full recovery."""
    state = prepare_recovery(photo, model)
    geometries = [f[0] for f in state.faces]
    treatment = state.treatments[index] if state.treatments else MODEL
    if treatment != MODEL or "original" in state.faces[index][3] or not entangled(geometries, index):
        return None
    restored, info = recover_arrays([photo], key, model)[0]
    if index in info.inexact_faces:
        raise UsageError(f"face {index + 1} does not recover exactly on this machine; no token was written")
    region = geometries[index].region
    y0, y1, x0, x1 = region.bounds
    return encode_region(_read_back_rgb(np.asarray(restored, dtype=np.uint8))[y0:y1, x0:x1], region.inside)


def prepare_recovery(photo: VeiledPhoto, model: DiffusionModel) -> _Recovering:
    """Check one photo's header against its image and the model; ``HeaderError`` or
    ``UsageError`` before any model work."""
    public, private, array = photo.public, photo.private, photo.array
    check_public(public, array.shape[0], array.shape[1])
    try:
        settings = Settings.from_json(public["settings"])
        all_faces = [(AlignTransform.from_json(f["transform"]), bytes.fromhex(f["nonce"])) for f in public["faces"]]
        all_treatments = [f.get("treatment", MODEL) for f in public["faces"]]  # headers before treatments: all model
        if len(private["faces"]) != len(all_faces):
            raise ValueError("face count mismatch")
        opened = [i for i, p in enumerate(private["faces"]) if p is not None]  # a token opens one face
        skipped = [i for i in range(len(all_faces)) if i not in opened]
        faces = [all_faces[i] for i in opened]
        treatments = [all_treatments[i] for i in opened]
        privates = [private["faces"][i] for i in opened]
        if any(t != MODEL and "original" not in p for t, p in zip(treatments, privates)):
            raise ValueError("a visibly treated face lacks its sealed original")
        outlines = [np.frombuffer(f["outline"], dtype="<f4").reshape(-1, 2).astype(np.float64) for f in privates]
        colours = [Colour.from_json(f["colour"], f.get("shading", b"")) if "colour" in f else Colour() for f in privates]
        digests = [f.get("sha256") for f in privates]
        if any(d is not None and (not isinstance(d, bytes) or len(d) != 32) for d in digests):
            raise ValueError("bad face hash")
        expected = public["image"]
        if len(privates) != len(faces):
            raise ValueError("face count mismatch")
        if public["settings"].get("residual_codec", CODEC) != CODEC:
            raise ValueError(f"unknown residual codec {public['settings'].get('residual_codec')!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HeaderError(f"the faceveil header is incomplete ({exc})") from None
    if any(t == MODEL for t in treatments) and public["model"]["weights_sha256"] != model.weights_hash:
        raise UsageError(
            f"this file was anonymized with model {public['model']['id']!r} "
            f"(weights sha256 {public['model']['weights_sha256'][:16]}…); the loaded model's weights differ"
        )
    shape = array.shape[:2] + (3,)
    planned = [
        (_geometry(shape, transform, outline, model, treatment), nonce, colour, priv)
        for (transform, nonce), outline, colour, priv, treatment in zip(faces, outlines, colours, privates, treatments)
    ]
    return _Recovering(
        photo, settings, _read_back_rgb(np.asarray(array, dtype=np.uint8)), planned,
        pixels_sha256(array) != expected["pixels_sha256"], [None] * len(planned), _sealed_metadata(private),
        treatments=treatments, skipped=skipped,
    )


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
    """``recover_array`` from an already opened header; ``key`` supplies the sign patterns: for a
    format-3 file, the file key that ``container.unlock(...).key`` gives, not the key file's own.

    Evaluations use it to try a wrong key with the header check bypassed on purpose.
    """
    photo = VeiledPhoto(array, public, private, output_like)
    return recover_arrays([photo], key, model, use_residual, progress)[0]


def recover_arrays(
    photos: list[VeiledPhoto],
    key: Key,
    model: DiffusionModel,
    use_residual: bool = True,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> list[tuple[np.ndarray, RecoverInfo]]:
    """``recover_opened`` for several photos, their faces batched through the model.

    Faces are restored in reverse order within each photo, photos in lockstep; faces
    with different settings never share a batch. With the residual, every face's
    restored pixels are checked against the SHA-256 sealed at anonymization
    (``RecoverInfo.inexact_faces``).
    """
    states = [prepare_recovery(photo, model) for photo in photos]
    announce(progress, sum(len(s.faces) for s in states), sum(  # a stored region needs no model; else 2 per step
        2 * s.settings.engine.steps for s in states for f in s.faces if not (use_residual and "original" in f[3])))
    for round_ in range(max((len(s.faces) for s in states), default=0)):
        active = [(s, len(s.faces) - 1 - round_) for s in states if len(s.faces) > round_]
        by_settings: dict[Settings, list] = {}
        for state, index in active:
            by_settings.setdefault(state.settings, []).append((state, index))
        for settings, group in by_settings.items():
            run = _Run.of(model, key, settings, progress)
            for chunk in _chunks(group, batch_size):
                _restore_round(run, chunk, use_residual)
    results = []
    for state in states:
        like = state.photo.output_like
        out = like(state.current) if like else state.current
        info = RecoverInfo(
            state.changed, state.used_residual and use_residual, state.reports, state.metadata,
            sorted(state.opened_index(i) for i in state.inexact), state.verified and use_residual, state.skipped,
        )
        results.append((out, info))
    return results


def _restore_round(run: _Run, items: list[tuple[_Recovering, int]], use_residual: bool) -> None:
    """Restore face ``index`` of each photo in ``items``, those that need the model through it together."""
    modelled = []
    for state, index in items:
        geometry, _, _, priv = state.faces[index]
        treatment = state.treatments[index] if state.treatments else MODEL
        if (use_residual or treatment != MODEL) and "original" in priv:  # stored as it was: no model needed
            box = _decoded(priv["original"], geometry.region, "face data")
            _restore(state, index, box[geometry.region.inside], FaceReport(geometry.transform, 0, 0.0, treatment))
            continue
        try:
            latent_shape = (1, run.model.latent_channels, run.model.latent_size, run.model.latent_size)
            hint = _hint_array(priv["hint"], latent_shape) if "hint" in priv else None
        except (ValueError, TypeError, KeyError) as exc:
            raise HeaderError(f"the faceveil header's hint is corrupt ({exc})") from None
        modelled.append((state, index, hint))
    if not modelled:
        return
    faces = [_Face(s.current, s.faces[i][0], s.faces[i][1], key=s.photo.key) for s, i, _ in modelled]
    predictions, reports = _predict(run, faces, [s.faces[i][2] for s, i, _ in modelled], [h for _, _, h in modelled])
    for (state, index, _), values, report in zip(modelled, predictions, reports):
        geometry, _, _, priv = state.faces[index]
        inside = geometry.region.inside
        if use_residual and "residual" in priv:
            box = _decoded(priv["residual"], geometry.region, "residual")
            ties = _ties(priv.get("ties"), len(values))
            restored = apply_residual(round_prediction(values, ties), box[inside])
        else:
            state.used_residual = False
            restored = round_prediction(values)
        _restore(state, index, restored, report)


def _decoded(data: object, region: FaceRegion, what: str) -> np.ndarray:
    """A sealed region image, decoded and checked against the region's box."""
    y0, y1, x0, x1 = region.bounds
    try:
        if not isinstance(data, bytes):
            raise TypeError("not bytes")
        return decode_residual(data, (y1 - y0, x1 - x0))
    except (ValueError, TypeError, OSError) as exc:
        raise HeaderError(f"the faceveil header's {what} is corrupt ({exc})") from None


def _ties(data: object, count: int) -> np.ndarray | None:
    """A face's sealed tie codes (``None``: no sample was near a tie, or the file predates them)."""
    if data is None:
        return None
    try:
        if not isinstance(data, bytes):
            raise TypeError("not bytes")
        return decode_ties(data, count)
    except (ValueError, TypeError, zlib.error) as exc:
        raise HeaderError(f"the faceveil header's rounding ties are corrupt ({exc})") from None


def _restore(state: _Recovering, index: int, values: np.ndarray, report: FaceReport) -> None:
    """Put a face's restored region samples (K x 3) into the photo and check them against the sealed hash."""
    geometry, _, _, priv = state.faces[index]
    y0, y1, x0, x1 = geometry.region.bounds
    state.current = state.current.copy()
    state.current[y0:y1, x0:x1][geometry.region.inside] = values
    digest = priv.get("sha256")
    if digest is None:
        state.verified = False
    elif _region_digest(state.current, geometry.region) != digest:
        state.inexact.append(index)
    state.reports[index] = report

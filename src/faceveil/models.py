"""Diffusion models: presets, loading with ``from_pretrained``, and one face of every model.

A ``DiffusionModel`` hides whether a model works on pixels (``UNet2DModel`` alone) or on
latents (``UNet2DModel`` with a ``VQModel`` or ``AutoencoderKL``): the engine sees only
``encode``, ``decode`` and ``eps``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel

from faceveil import quiet_diffusers
from faceveil.detail import DetailNet
from faceveil.engine.ddim import to_epsilon
from faceveil.errors import ModelUnavailableError

quiet_diffusers()

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # a hub id or a local folder
    description: str
    # embedded presets whose weights this one uses where its own folder has none: unet_from's unet/,
    # detail_from's detail stage weights (its own detail/config.json still sets the switch-on size);
    # presets that share a face model or a detail stage ship its weights once (the package's
    # weights budget, about 50 MB). One step, never a chain: a missing folder is missing weights.
    unet_from: str | None = None
    detail_from: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ldm-celebahq-256",
            "CompVis/ldm-celebahq-256",
            "latent diffusion (VQ-f4, 3x64x64 latent) on CelebA-HQ 256: the paper's model family",
        ),
        Preset("ddpm-celebahq-256", "google/ddpm-ema-celebahq-256", "pixel-space DDPM on CelebA-HQ 256"),
        Preset(
            "faceveil-faces-64",
            str(WEIGHTS_DIR / "faceveil-faces-64"),
            "faceveil's own pixel model, 64x64, GPU-trained, embedded in the package; the default once its "
            "weights ship in weights/faceveil-faces-64 (see TRAINING.md)",
        ),
        Preset(
            "faceveil-faces-96-v5",
            str(WEIGHTS_DIR / "faceveil-faces-96-v5"),
            "faceveil-faces-96-v4 (the same face model and detail stage, the same weights) with the detail stage "
            "switched on from 0.75 of the model's crop instead of 1: faces the photo shows slightly smaller than "
            "the crop (a quarter of LFW's) are drawn sharper too; keyed noise gain 1.25 (embedded, offline; "
            "MODEL_CARD.md)",
            unet_from="faceveil-faces-96-v4",
            detail_from="faceveil-faces-96-v3",
        ),
        Preset(
            "faceveil-faces-96-v4",
            str(WEIGHTS_DIR / "faceveil-faces-96-v4"),
            "v3 with a further-trained face model: 5,600 more steps from v2's on 37,631 faces (UTKFace added), "
            "more varied faces for the same keys, and v3's detail stage; keyed noise gain 1.25 (embedded, offline; "
            "MODEL_CARD.md)",
            detail_from="faceveil-faces-96-v3",
        ),
        Preset(
            "faceveil-faces-96-v3",
            str(WEIGHTS_DIR / "faceveil-faces-96-v3"),
            "faceveil-faces-96-v2's face model (the same weights) with a 2x detail stage: a face the photo "
            "enlarges is sharpened to 192x192 before pasting (0.44 M parameters, trained on UTKFace faces on a "
            "2-core CPU); keyed noise gain 1.25 (embedded, offline; MODEL_CARD.md)",
            unet_from="faceveil-faces-96-v2",
        ),
        Preset(
            "faceveil-faces-96-v2",
            str(WEIGHTS_DIR / "faceveil-faces-96-v2"),
            "faceveil's inpainting pixel model, second version: 96x96 crops centred on the face, the region up the "
            "forehead, 15,106 faces of 6,613 people, 4.3 M parameters, 9,800 steps on a 2-core CPU; keyed noise gain "
            "1.25 (embedded, offline; MODEL_CARD.md)",
        ),
        Preset(
            "faceveil-faces-96",
            str(WEIGHTS_DIR / "faceveil-faces-96"),
            "faceveil's inpainting pixel model, 96x96 crops centred on the face, 4.3 M parameters, trained 3,200 "
            "steps on a 2-core CPU from the draft (embedded, offline); it sees the photo around the face (MODEL_CARD.md)",
        ),
        Preset(
            "faceveil-faces-64-draft",
            str(WEIGHTS_DIR / "faceveil-faces-64-draft"),
            "faceveil's draft pixel model, 64x64, 4.3 M parameters, trained 64 min on a 2-core CPU "
            "(embedded, offline): for trials and evaluation runs, far below a GPU-trained model (MODEL_CARD.md)",
        ),
    )
}
# Embedded models, best first: the default is the first whose weights ship in this installation,
# so the GPU-trained model becomes the default the day its folder is added, with no code change.
EMBEDDED_MODELS = ("faceveil-faces-64", "faceveil-faces-96-v5", "faceveil-faces-96-v4", "faceveil-faces-96-v3",
                   "faceveil-faces-96-v2", "faceveil-faces-96", "faceveil-faces-64-draft")
DEFAULT_ALIAS = "default"


def _shared_folder(folder: Path, attribute: str, preset: Preset | None, weights_dir: Path | None) -> Path | None:
    """The folder of the preset named by ``preset.<attribute>`` (in ``weights_dir``, default the
    package's); without ``preset``, an embedded preset's folder given by its path is that preset."""
    if preset is None:
        preset = next((p for p in PRESETS.values() if getattr(p, attribute) and Path(p.source).resolve() == folder.resolve()), None)
    name = getattr(preset, attribute) if preset is not None else None
    return (Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR) / name if name else None


def unet_folder(folder: Path, preset: Preset | None = None, weights_dir: Path | None = None) -> Path | None:
    """The model folder whose ``unet/`` a model in ``folder`` uses: ``folder`` itself, or for a preset
    that shares another's face model (:attr:`Preset.unet_from`) that preset's folder; None where neither has one."""
    for candidate in (folder, _shared_folder(folder, "unet_from", preset, weights_dir)):
        if candidate is not None and (candidate / "unet").is_dir():
            return candidate
    return None


DETAIL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def detail_folder(folder: Path, preset: Preset | None = None, weights_dir: Path | None = None) -> Path | None:
    """The model folder whose ``detail/`` weights file a model in ``folder`` uses: ``folder`` itself, or
    for a preset that shares another's stage (:attr:`Preset.detail_from`) that preset's folder (its own
    ``detail/config.json`` decides the stage's settings); None where neither has one."""
    for candidate in (folder, _shared_folder(folder, "detail_from", preset, weights_dir)):
        if candidate is not None and any((candidate / "detail" / name).is_file() for name in DETAIL_WEIGHTS):
            return candidate
    return None


def _complete(folder: Path, preset: Preset | None = None, weights_dir: Path | None = None) -> bool:
    """Whether every part a model in ``folder`` needs is present (its unet, and its detail stage's weights)."""
    if unet_folder(folder, preset, weights_dir) is None:
        return False
    return not (folder / "detail").is_dir() or detail_folder(folder, preset, weights_dir) is not None


def default_model(weights_dir: Path | None = None) -> str:
    """The preset name of the best model embedded in the package (runs offline).

    The first of :data:`EMBEDDED_MODELS` whose weights folder is present: ``faceveil-faces-64``
    (GPU-trained), ``faceveil-faces-96-v5`` (v4 with its detail stage on faces from 0.75 of the crop),
    ``faceveil-faces-96-v4`` (a further-trained face model with v3's detail stage),
    ``faceveil-faces-96-v3`` (v2 with a detail stage), ``faceveil-faces-96-v2`` then
    ``faceveil-faces-96`` (the CPU-trained inpainting models), else the CPU-trained ``faceveil-faces-64-draft``. Hub models are never the default: they are chosen by name.
    """
    root = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    for name in EMBEDDED_MODELS:
        if (root / name).is_dir() and _complete(root / name, PRESETS.get(name), root):
            return name
    return EMBEDDED_MODELS[-1]  # nothing shipped: name the draft, whose loading then explains what is missing


DEFAULT_MODEL = default_model()  # resolved once at import; ``load_model("default")`` resolves at call time


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """On CUDA, the model runs in true float32: no TF32 (cuDNN uses it for convolutions by
    default, a 10-bit mantissa) and deterministic cuDNN algorithms, so recovery's prediction
    drifts from anonymization's by float round-off only, which the sealed ties absorb.
    Elsewhere nothing to do. (Not exercised on a GPU in faceveil's tests: none here.)"""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@dataclass
class DiffusionModel:
    """A diffusers UNet, its noise schedule and an optional autoencoder, on one device."""

    unet: UNet2DModel
    scheduler: DDIMScheduler
    autoencoder: VQModel | AutoencoderKL | None = None
    model_id: str = "in-memory"
    vq_quantize: bool = True
    framing: str = "ffhq"  # the face crop the model was trained on (faces.align.FRAMINGS)
    noise_gain: float = 1.0  # the keyed noise's gain its trainers measured best (faceveil_train.json)
    # a new face with less band-pass detail than this share of the original's is drawn again, where
    # redraws are on (faceveil.faces.sharpness; faceveil_train.json; 0: never, the paper's behaviour)
    detail_floor: float = 0.0
    detail: DetailNet | None = None  # 2x super-resolution of enlarged faces before pasting (faceveil.detail)
    _weights_hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.unet.eval().requires_grad_(False)
        if self.autoencoder is not None:
            self.autoencoder.eval().requires_grad_(False)
        if self.detail is not None:
            self.detail.eval().requires_grad_(False)

    # ---- shapes ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    @property
    def conditional(self) -> bool:
        """An inpainting model: its UNet also takes the mask and the masked image (4 channels)."""
        return int(self.unet.config.in_channels) != int(self.unet.config.out_channels)

    def condition(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """An inpainting model's extra inputs for latents with this ``context`` outside
        ``mask`` (B, 1, h, w): the mask and the context with the masked part zeroed.
        ``None`` for unconditional models. Pixel models only (the mask is on the model grid)."""
        if not self.conditional:
            return None
        if self.autoencoder is not None:
            raise ModelUnavailableError("conditional latent models are not supported yet")
        mask = mask.to(context.device, context.dtype).expand(context.shape[0], 1, *context.shape[2:])
        return torch.cat([mask, context * (1 - mask)], dim=1)

    @property
    def latent_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def downscale(self) -> int:
        """Pixels per latent cell along one side (1 for pixel models)."""
        if self.autoencoder is None:
            return 1
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    @property
    def image_size(self) -> int:
        return self.latent_size * self.downscale

    @property
    def kind(self) -> str:
        return "pixel" if self.autoencoder is None else "latent"

    # ---- the three operations the engine needs ---------------------------------
    def eps(self, z: torch.Tensor, t: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The model's noise estimate at latent ``z`` and timestep ``t`` (an inpainting
        model also needs its ``condition``, from :meth:`condition`)."""
        if self.conditional:
            if condition is None or condition.shape[0] != z.shape[0]:
                raise ValueError("an inpainting model needs one condition (mask, masked image) per latent")
            z_in = torch.cat([z, condition.to(z.device, z.dtype)], dim=1)
        else:
            z_in = z
        with torch.no_grad(), full_precision(z.device):
            out = self.unet(z_in, torch.tensor([t], device=z.device)).sample
        if out.shape[1] == 2 * z.shape[1]:  # learned variance: keep the mean part
            out = out[:, : z.shape[1]]
        alpha = float(self.scheduler.alphas_cumprod[t])
        return to_epsilon(out, z, alpha, self.scheduler.config.prediction_type)

    def _scale(self) -> float:
        return float(self.autoencoder.config.scaling_factor) if isinstance(self.autoencoder, AutoencoderKL) else 1.0

    def encode(self, x: torch.Tensor, refine_iters: int = 0, lr: float = 0.05) -> torch.Tensor:
        """Image in [-1, 1] (B, 3, H, W) to latent; ``refine_iters`` > 0 runs decoder inversion.

        Decoder inversion optimises the latent so that ``decode(z)`` matches ``x``
        (Adam on each sample's mean squared error), starting from the encoder's estimate.
        """
        if self.autoencoder is None:
            return x.clone()
        with torch.no_grad(), full_precision(x.device):
            if isinstance(self.autoencoder, VQModel):
                z = self.autoencoder.encode(x).latents
            else:
                z = self.autoencoder.encode(x).latent_dist.mean
            z = z * self._scale()
        if refine_iters <= 0:
            return z
        z = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        with full_precision(x.device):  # the backward pass too
            for _ in range(refine_iters):
                optimizer.zero_grad()
                # each sample's own mean error, summed: a sample's gradient does not depend on the batch it is in
                loss = torch.nn.functional.mse_loss(self._decode(z), x, reduction="none").flatten(1).mean(1).sum()
                loss.backward()
                optimizer.step()
        return z.detach()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        with full_precision(z.device):
            if isinstance(self.autoencoder, VQModel):
                return self.autoencoder.decode(z, force_not_quantize=not self.vq_quantize).sample
            return self.autoencoder.decode(z / self._scale()).sample

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent to image in [-1, 1] (identity for pixel models)."""
        if self.autoencoder is None:
            return z.clone()
        with torch.no_grad():
            return self._decode(z).clamp(-1, 1)

    # ---- identity ---------------------------------------------------------------
    @property
    def weights_hash(self) -> str:
        """SHA-256 over every weight tensor (name, dtype, shape, bytes), autoencoder and detail stage included."""
        if self._weights_hash is None:
            digest = hashlib.sha256()
            parts = [("unet", self.unet)] + ([("autoencoder", self.autoencoder)] if self.autoencoder else [])
            if self.detail is not None:  # also its switch-on size: it decides which faces it changes
                digest.update(f"detail.min_enlargement:{float(self.detail.config.min_enlargement)!r}".encode())
                parts.append(("detail", self.detail))
            for prefix, module in parts:
                for name, tensor in sorted(module.state_dict().items()):
                    t = tensor.detach().cpu().contiguous()
                    digest.update(f"{prefix}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
                    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._weights_hash = digest.hexdigest()
        return self._weights_hash

    def to(self, device: str | torch.device) -> "DiffusionModel":
        self.unet.to(device)
        if self.autoencoder is not None:
            self.autoencoder.to(device)
        if self.detail is not None:
            self.detail.to(device)
        return self


# ---- loading ---------------------------------------------------------------------
def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


_MODEL_FILES = ["model_index.json", "faceveil_train.json", "*/config.json", "*/scheduler_config.json",
                "*/*.safetensors", "*/*.bin"]


def _hub_snapshot(repo_id: str, patterns: list[str], required: bool = True) -> Path | None:
    """The files of hub model ``repo_id`` that match ``patterns``: from the hub cache, else
    downloaded when the hub answers. Where neither works: :class:`ModelUnavailableError`
    saying what to do, or ``None`` when not ``required``."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached
        pass
    if not _hub_reachable():
        if not required:
            return None
        folder = repo_id.split("/")[-1]
        raise ModelUnavailableError(
            f"model {repo_id!r} is not on this machine and the Hugging Face hub cannot be reached: "
            f"on a connected machine run `hf download {repo_id} --local-dir {folder}`, "
            f"copy that folder here and pass --model ./{folder}"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network errors, gated or missing repos
        if not required:
            return None
        raise ModelUnavailableError(f"could not download model {repo_id!r}: {exc}".splitlines()[0]) from None


def _fetch_from_hub(repo_id: str) -> Path:
    """A hub model's whole folder (see :func:`_hub_snapshot`)."""
    folder = _hub_snapshot(repo_id, _MODEL_FILES)
    assert folder is not None  # required: errors raise
    return folder


def _component_dirs(folder: Path) -> dict[str, str]:
    """Which subfolder holds which part: from model_index.json, else by folder names."""
    index = folder / "model_index.json"
    found: dict[str, str] = {}
    if index.is_file():
        for name, spec in json.loads(index.read_text()).items():
            if isinstance(spec, list) and len(spec) == 2 and spec[1]:
                found[name] = spec[1]
    else:
        for name in ("unet", "scheduler", "vqvae", "vae"):
            if (folder / name).is_dir():
                found[name] = {"vqvae": "VQModel", "vae": "AutoencoderKL"}.get(name, name)
    return found


def resolve_spec(spec: str | None) -> str:
    """``None`` or ``"default"`` to the default embedded preset; anything else unchanged."""
    return default_model() if spec in (None, DEFAULT_ALIAS) else spec


def load_model(spec: str | None = None, device: str = "cpu") -> DiffusionModel:
    """Load a preset name, a hub id or a local diffusers folder (unet/, scheduler/, vqvae/ or vae/).

    ``None`` or ``"default"`` loads :func:`default_model` (embedded, no network); the
    model's id (written into headers) is always the resolved name, never the alias.
    """
    spec = resolve_spec(spec)
    preset = PRESETS.get(spec)
    source = preset.source if preset else spec
    folder = Path(source).expanduser()
    if preset and preset.source.startswith(str(WEIGHTS_DIR)) and not folder.is_dir():
        raise ModelUnavailableError(f"model preset {spec!r} has no weights in this installation yet: {preset.description}")
    if not folder.is_dir():
        if source.startswith((".", "~", "/")) or source.count("/") > 1:
            raise ModelUnavailableError(f"model folder {source} does not exist")
        if "/" not in source:
            names = ", ".join(PRESETS)
            raise ModelUnavailableError(
                f"unknown model {spec!r}: use a preset ({names}, or {DEFAULT_ALIAS!r}), a hub id or a folder"
            )
        folder = _fetch_from_hub(source)
    parts = _component_dirs(folder)
    unet_root = unet_folder(folder, preset)
    if "unet" not in parts or unet_root is None:
        raise ModelUnavailableError(f"{folder} is not a diffusers model folder (no unet/ subfolder)")
    try:
        unet = UNet2DModel.from_pretrained(unet_root, subfolder="unet")
        scheduler = (
            DDIMScheduler.from_pretrained(folder, subfolder="scheduler") if "scheduler" in parts else DDIMScheduler()
        )
        autoencoder = None
        classes = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
        for sub, default_cls in (("vqvae", VQModel), ("vae", AutoencoderKL)):
            if sub in parts:
                autoencoder = classes.get(parts[sub], default_cls).from_pretrained(folder, subfolder=sub)
                break
        detail = load_detail(folder, preset) if (folder / "detail").is_dir() else None
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load model from {folder}: {str(exc).splitlines()[0]}") from None
    framing, noise_gain, detail_floor = _usage(folder)
    return DiffusionModel(
        unet, scheduler, autoencoder, model_id=spec, framing=framing, noise_gain=noise_gain, detail_floor=detail_floor,
        detail=detail,
    ).to(device)


def load_detail(folder: Path, preset: Preset | None = None) -> DetailNet:
    """The detail stage of ``folder``: its ``detail/config.json``, with the weights file found by
    :func:`detail_folder` (its own, or a preset's it takes weights from)."""
    weights = detail_folder(folder, preset)
    if weights is None:
        raise ModelUnavailableError(f"{folder / 'detail'} has no weights file, and no model it takes weights from has one")
    config = {k: v for k, v in DetailNet.load_config(folder, subfolder="detail").items() if not k.startswith("_")}
    return DetailNet.from_pretrained(weights, subfolder="detail", **config)


def _usage(folder: Path) -> tuple[str, float, float]:
    """The crop framing, recommended noise gain and detail floor a faceveil-trained folder records
    (``faceveil_train.json``: ``framing``, ``noise_gain``, ``detail_floor``); FFHQ's framing, gain 1
    and no floor otherwise."""
    from faceveil.engine import EngineSettings
    from faceveil.faces.align import FRAMINGS

    meta = folder / "faceveil_train.json"
    if not meta.is_file():
        return "ffhq", 1.0, 0.0
    try:
        data = json.loads(meta.read_text())
        framing, gain, floor = data.get("framing", "ffhq"), data.get("noise_gain", 1.0), data.get("detail_floor", 0.0)
    except (OSError, ValueError, AttributeError):
        raise ModelUnavailableError(f"{meta} is not valid JSON") from None
    if framing not in FRAMINGS:
        raise ModelUnavailableError(f"{meta}: unknown crop framing {framing!r}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)):
        raise ModelUnavailableError(f"{meta}: noise_gain must be a number, not {gain!r}")
    try:
        EngineSettings(noise_gain=float(gain))  # the engine holds the bounds
    except ValueError as exc:
        raise ModelUnavailableError(f"{meta}: {exc}") from None
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 <= floor < 1.0:
        raise ModelUnavailableError(f"{meta}: detail_floor must be a number from 0 to below 1, not {floor!r}")
    return framing, float(gain), float(floor)


def recommended_noise_gain(spec: str | None) -> float:
    """The noise gain ``spec``'s trainers recommend (its ``faceveil_train.json``), read
    without loading its weights, from the same place :func:`load_model` reads it: a preset,
    a local folder or a hub snapshot; 1 (the paper's) when the model records none."""
    return _usage_of(spec)[1]


def recommended_detail_floor(spec: str | None) -> float:
    """The redraws' detail floor ``spec`` records (``DiffusionModel.detail_floor``), read as
    :func:`recommended_noise_gain` reads the gain; 0 (never redrawn for detail) when it records none."""
    return _usage_of(spec)[2]


def _usage_of(spec: str | None) -> tuple[str, float, float]:
    spec = resolve_spec(spec)
    preset = PRESETS.get(spec)
    source = preset.source if preset else spec
    folder: Path | None = Path(source).expanduser()
    if not folder.is_dir():
        hub_id = "/" in source and source.count("/") == 1 and not source.startswith((".", "~", "/"))
        # just its faceveil_train.json; None where loading the model would fail too
        folder = _hub_snapshot(source, ["faceveil_train.json"], required=False) if hub_id else None
    return _usage(folder) if folder is not None else ("ffhq", 1.0, 0.0)


def model_available(spec: str) -> bool:
    """Whether ``spec`` can be loaded without a download (a local folder or the hub cache)."""
    spec = resolve_spec(spec)
    preset = PRESETS.get(spec)
    source = preset.source if preset else spec
    if Path(source).expanduser().is_dir():
        return _complete(Path(source).expanduser(), preset)
    if "/" not in source:
        return False
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(source, allow_patterns=["model_index.json", "*/config.json"], local_files_only=True)
        return True
    except Exception:
        return False

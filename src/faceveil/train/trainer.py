"""Training of faceveil's unconditional pixel-space face diffusion model.

A diffusers ``UNet2DModel`` learns to predict the noise (epsilon) of a ``DDPMScheduler``
with the cosine schedule (``squaredcos_cap_v2``, Nichol & Dhariwal 2021). Why cosine:
at 64x64 the linear schedule destroys the image within the first ~60 % of its steps, so
the last few hundred timesteps are nearly pure noise and wasted; the cosine schedule
spreads the signal-to-noise ratio evenly over the trajectory, which improves both the
samples and, for faceveil, the DDIM inversion: every step of the 50-step grid carries
information, and ``abar`` at the top of the usual "leading" grid (t = 980) is about
9e-4 (z_T is almost pure noise, as the sign-flip method needs) without the 1/sqrt(abar)
blow-up of the very last timestep.

Everything a run needs to continue is in its checkpoints (model, EMA, optimizer, step,
RNG states, data order), written atomically to ``<out>/checkpoints``; ``resume=True``
continues from the latest one and reproduces an uninterrupted run exactly on the same
device. ``max_minutes`` stops a run (with a checkpoint) before a time limit. The export
is the EMA UNet in diffusers layout (``unet/`` + ``scheduler/`` with a DDIM config).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceveil.atomic import atomic_output
from faceveil.errors import UsageError

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "build_unet",
    "ddim_scheduler_config",
    "ddpm_scheduler",
    "export_checkpoint",
    "export_pretrained",
    "latest_checkpoint",
    "load_checkpoint",
    "model_config",
    "sample_images",
    "save_image_grid",
    "train",
]

CKPT_FORMAT = "faceveil-train-ckpt-1"
NUM_TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"

# UNet presets. "default": about 26.6 M parameters at 64x64 (4 levels 64/32/16/8, self
# attention at 16x16 and 8x8); fp16 export about 53 MB.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": 16,
        "norm_num_groups": 8,
        "dropout": 0.0,
    },
    # "small": about 4.3 M parameters at 64x64 (attention at 8x8 only); trainable on a
    # 2-core CPU in about 1.5 h (2.6 s per batch of 32), for drafts and evaluation runs.
    "small": {
        "block_out_channels": (32, 64, 128, 128),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": 32,
        "norm_num_groups": 16,
        "dropout": 0.0,
    },
    "default": {
        "block_out_channels": (64, 128, 256, 256),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "layers_per_block": 2,
        "attention_head_dim": 64,
        "norm_num_groups": 32,
        "dropout": 0.1,  # ~6k training faces: regularise against memorising identities
    },
}
# Per-preset training defaults (used where a TrainConfig field is left at None).
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    "tiny": {"lr": 1e-3, "warmup_steps": 10, "ema_max_decay": 0.99, "batch_size": 8},
    "small": {"lr": 5e-4, "warmup_steps": 100, "ema_max_decay": 0.998, "batch_size": 32},
    "default": {"lr": 2e-4, "warmup_steps": 500, "ema_max_decay": 0.9999, "batch_size": 128},
}


# Inpainting models see, besides the noisy image, the mask (1 channel) and the image with the
# masked part zeroed (3 channels): the context anonymization keeps.
CONDITION_CHANNELS = 4


def model_config(preset: str, resolution: int, conditional: bool = False) -> dict[str, Any]:
    """The ``UNet2DModel`` config of a preset at a resolution (``conditional``: an
    inpainting model with :data:`CONDITION_CHANNELS` more input channels).

    At resolutions above 64 the "default" preset gains one level per doubling (so that
    attention stays at 16x16 and 8x8).
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown model preset {preset!r} (choose from {', '.join(PRESETS)})")
    resolution = int(resolution)
    cfg = copy.deepcopy(PRESETS[preset])
    levels = len(cfg["block_out_channels"])
    if resolution % (2 ** (levels - 1)):
        raise UsageError(f"resolution {resolution} is not divisible by {2 ** (levels - 1)}")
    if preset == "default" and resolution > 64:
        extra = int(round(math.log2(resolution / 64)))
        if 64 * 2**extra != resolution:
            raise UsageError(f"the default preset needs 64 * 2^k pixels, got {resolution}")
        cfg["block_out_channels"] = (64,) * extra + tuple(cfg["block_out_channels"])
        cfg["down_block_types"] = ("DownBlock2D",) * extra + tuple(cfg["down_block_types"])
        cfg["up_block_types"] = tuple(cfg["up_block_types"]) + ("UpBlock2D",) * extra
    cfg.update(
        sample_size=resolution,
        in_channels=3 + (CONDITION_CHANNELS if conditional else 0),
        out_channels=3,
        block_out_channels=tuple(cfg["block_out_channels"]),
        down_block_types=tuple(cfg["down_block_types"]),
        up_block_types=tuple(cfg["up_block_types"]),
    )
    return cfg


def build_unet(preset: str = "default", resolution: int = 64) -> Any:
    """A freshly initialised ``diffusers.UNet2DModel`` of a preset."""
    from diffusers import UNet2DModel

    return UNet2DModel(**model_config(preset, resolution))


def ddpm_scheduler() -> Any:
    """The training noise schedule (epsilon prediction, cosine betas)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_schedule=BETA_SCHEDULE,
        prediction_type="epsilon",
        clip_sample=False,
    )


def ddim_scheduler_config() -> dict[str, Any]:
    """The ``DDIMScheduler`` settings exported with the model.

    ``clip_sample=False`` keeps the DDIM map invertible (clipping x0 would not be);
    ``set_alpha_to_one=True`` makes the last step land on the clean image.
    """
    return {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_schedule": BETA_SCHEDULE,
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "timestep_spacing": "leading",
    }


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Settings of a training run. ``None`` fields take the preset's default."""

    data: str | None = None  # .npz or chunked set folder from prepare-data (or pass images= to train())
    out_dir: str = "runs/faces64"
    preset: str = "default"  # "tiny" | "default"
    steps: int = 20_000  # total optimizer steps of the run (resume continues towards it)
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    lr_schedule: str = "constant"  # after warmup: "constant" | "cosine" (to 10 % at `steps`)
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_max_decay: float | None = None
    ema_power: float = 0.75  # EMA warmup 1-(1+step)^-power: ~0.999 at 10k steps
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "bf16" | "no"
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    seed: int = 0
    resume: bool = False
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    sample_every: int = 2000  # 0: never (a final grid is still written unless num_samples=0)
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2
    num_samples: int = 16
    sample_steps: int = 50
    log_every: int = 50
    export_dir: str | None = None
    export_fp16: bool = True
    export_max_shard_size: str | None = None  # e.g. "15MB" to split the weights file
    compile: bool = False  # torch.compile the UNet (CUDA; costs start-up time per run)
    progress: bool = True
    conditional: bool = False  # inpainting: mask + masked image as extra inputs (data with masks)
    init_from: str | None = None  # a diffusers model folder whose UNet weights start the run
    outside_weight: float = 0.1  # conditional: loss weight of pixels outside the mask (the engine pins them)
    fill_mask: bool = True  # no loss where a crop was filled beyond its photo (needs the set's recorded alignments)

    def resolved(self) -> TrainConfig:
        if self.preset not in PRESETS:
            raise UsageError(f"unknown config {self.preset!r} (choose from {', '.join(PRESETS)})")
        c = copy.copy(self)
        for k, v in PRESET_TRAINING[self.preset].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        if c.steps < 0 or c.batch_size < 1 or c.lr <= 0 or c.warmup_steps < 0:
            raise UsageError("steps must be >= 0, batch size >= 1, lr > 0, warmup >= 0")
        if c.lr_schedule not in ("constant", "cosine"):
            raise UsageError(f"unknown lr schedule {c.lr_schedule!r}")
        if c.mixed_precision not in ("auto", "bf16", "no"):
            raise UsageError(f"unknown mixed precision {c.mixed_precision!r}")
        return c

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


@dataclass
class TrainResult:
    """What a call of :func:`train` did."""

    out_dir: Path
    start_step: int  # step the run started (or resumed) from
    step: int  # step reached
    losses: list[float]  # training loss of every step of this call
    checkpoint: Path | None  # the last checkpoint written
    samples: list[Path] = field(default_factory=list)
    export_dir: Path | None = None
    stopped_by_time: bool = False
    seconds: float = 0.0
    seconds_per_step: float = float("nan")  # mean over this call's steps, start-up excluded
    device: str = "cpu"
    num_parameters: int = 0


# --------------------------------------------------------------------------- helpers


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but is not available")
    return dev


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for the optimizer step number ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine" and cfg.steps > cfg.warmup_steps:
        p = min(1.0, (step - cfg.warmup_steps) / (cfg.steps - cfg.warmup_steps))
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
    return cfg.lr


class _Batches:
    """Random batches without replacement per epoch, with random left-right flips.

    The whole dataset sits on the training device as uint8; the order comes from a CPU
    generator whose state (with the epoch permutation and position) is checkpointed.
    """

    def __init__(
        self, images: np.ndarray, device: torch.device, seed: int, masks: np.ndarray | None = None,
        photo: np.ndarray | None = None,
    ) -> None:
        t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.images = t.to(device)
        self.masks = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks, dtype=bool))[:, None].to(device)
        self.last_masks: torch.Tensor | None = None  # float B x 1 x S x S of the last batch (flipped with it)
        # pixels that came from the photo, not the fill beyond it (train.crops.photo_mask); None: all
        self.photo = None if photo is None else torch.from_numpy(np.ascontiguousarray(photo, dtype=bool))[:, None].to(device)
        self.last_photo: torch.Tensor | None = None
        self.n = int(t.shape[0])
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(self.n, generator=self.gen)
        self.pos = 0

    def next(self, batch_size: int) -> torch.Tensor:
        parts = []
        need = batch_size
        while need > 0:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
            take = self.perm[self.pos : self.pos + need]
            self.pos += len(take)
            need -= len(take)
            parts.append(take)
        idx = torch.cat(parts)
        flip = torch.rand(batch_size, generator=self.gen) < 0.5
        x = self.images[idx.to(self.device)].float().div_(127.5).sub_(1.0)
        x = torch.where(flip.to(self.device)[:, None, None, None], x.flip(-1), x)
        if self.masks is not None:
            m = self.masks[idx.to(self.device)].float()
            self.last_masks = torch.where(flip.to(self.device)[:, None, None, None], m.flip(-1), m)
        if self.photo is not None:
            p = self.photo[idx.to(self.device)].float()
            self.last_photo = torch.where(flip.to(self.device)[:, None, None, None], p.flip(-1), p)
        return x

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise UsageError(
                f"the checkpoint was trained on {state['n']} images, this data has {self.n}"
            )
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as fh:
        torch.save(obj, fh)


def save_checkpoint(state: dict[str, Any], out_dir: str | os.PathLike[str], step: int, prefix: str = "ckpt",
                    keep: int = 2) -> Path:
    """Write ``<out_dir>/checkpoints/<prefix>_<step>.pt`` atomically and delete all but the ``keep``
    latest of that prefix (``state``: tensors and plain data, so ``load_checkpoint`` can read it)."""
    path = Path(out_dir) / "checkpoints" / f"{prefix}_{step:08d}.pt"
    _atomic_torch_save(state, path)
    for _, old in _checkpoints(out_dir, prefix)[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def _checkpoints(out_dir: str | os.PathLike[str], prefix: str = "ckpt") -> list[tuple[int, Path]]:
    """``(step, path)`` of ``<out_dir>/checkpoints/<prefix>_<step>.pt``, by step."""
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{8,}})\.pt$")
    found = []
    for p in d.iterdir():
        m = pattern.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str], prefix: str = "ckpt") -> Path | None:
    """The checkpoint of the highest step in ``<out_dir>/checkpoints``, or ``None``
    (``prefix``: ``ckpt`` for the face model, ``detail`` for the detail stage)."""
    found = _checkpoints(out_dir, prefix)
    return found[-1][1] if found else None


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", fmt: str = CKPT_FORMAT,
                    kind: str = "training") -> dict[str, Any]:
    """Load a ``kind`` checkpoint of format ``fmt`` (tensors and plain data only; no pickled code)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
        raise UsageError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise UsageError(f"{path} is not a faceveil {kind} checkpoint ({fmt})")
    return ckpt


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_images(
    unet: Any,
    num_images: int = 16,
    steps: int = 50,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    scheduler: Any | None = None,
    autocast_dtype: torch.dtype | None = None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples from ``unet``: N x 3 x S x S in [-1, 1].

    An inpainting UNet needs ``condition`` (N x 4 x S x S: mask, masked image)."""
    from diffusers import DDIMScheduler

    dev = torch.device(device) if device is not None else next(unet.parameters()).device
    sched = scheduler if scheduler is not None else DDIMScheduler(**ddim_scheduler_config())
    sched.set_timesteps(steps)
    size = unet.config.sample_size
    size = size if isinstance(size, int) else size[0]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, unet.config.out_channels, size, size, generator=gen).to(dev)
    if unet.config.in_channels != unet.config.out_channels and condition is None:
        raise UsageError("an inpainting UNet samples only with a condition (mask and masked image)")
    was_training = unet.training
    unet.eval()
    try:
        for t in sched.timesteps:
            ctx = (
                torch.autocast(dev.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                inp = x if condition is None else torch.cat([x, condition.to(dev)], dim=1)
                eps = unet(inp, t).sample
            x = sched.step(eps.float(), t, x, eta=0.0).prev_sample
    finally:
        unet.train(was_training)
    return x.clamp(-1, 1)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int | None = None) -> Path:
    """Save N x 3 x H x W images in [-1, 1] as one PNG grid."""
    from PIL import Image

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    pad = 2
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y0 : y0 + h, x0 : x0 + w] = x[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


# --------------------------------------------------------------------------- export


def export_pretrained(
    unet: Any,
    export_dir: str | os.PathLike[str],
    *,
    fp16: bool = True,
    max_shard_size: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``unet`` (use the EMA weights) as a diffusers folder.

    Layout: ``unet/`` (config + safetensors), ``scheduler/`` (``DDIMScheduler``),
    ``model_index.json`` (so ``DDIMPipeline.from_pretrained`` works too) and, when
    given, ``faceveil_train.json`` with training metadata.
    """
    import diffusers
    from diffusers import DDIMScheduler

    out = Path(export_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(unet).to("cpu").eval()
    if fp16:
        torch.nn.Module.to(m, torch.float16)  # plain cast (ModelMixin.to warns about fp32 modules)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    m.save_pretrained(out / "unet", **kwargs)
    DDIMScheduler(**ddim_scheduler_config()).save_pretrained(out / "scheduler")
    index = {
        "_class_name": "DDIMPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if metadata is not None:
        (out / "faceveil_train.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out


def _ema_unet(ckpt: dict[str, Any]) -> Any:
    from diffusers import UNet2DModel

    unet = UNet2DModel(**ckpt["model_config"])
    unet.load_state_dict(ckpt["model"])
    names = [n for n, _ in unet.named_parameters()]
    shadow = ckpt["ema"]["shadow_params"]
    if len(shadow) != len(names):
        raise UsageError("checkpoint EMA does not match its model")
    with torch.no_grad():
        for p, s in zip(unet.parameters(), shadow):
            p.copy_(s.to(p.dtype))
    return unet


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    export_dir: str | os.PathLike[str],
    *,
    fp16: bool = True,
    max_shard_size: str | None = None,
    noise_gain: float | None = None,
) -> Path:
    """Export the EMA weights of a training checkpoint (a file, or a run folder for its
    latest checkpoint) as a diffusers folder; see :func:`export_pretrained`. ``noise_gain``
    is written into ``faceveil_train.json`` as the model's recommended gain (the engine's
    default with this model: ``faceveil.models.recommended_noise_gain``)."""
    path = Path(checkpoint)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise UsageError(f"no checkpoint in {path / 'checkpoints'}")
        path = latest
    ckpt = load_checkpoint(path)
    metadata = _metadata(ckpt)
    if noise_gain is not None:
        metadata["noise_gain"] = float(noise_gain)
    return export_pretrained(_ema_unet(ckpt), export_dir, fp16=fp16, max_shard_size=max_shard_size, metadata=metadata)


def _metadata(ckpt: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "faceveil-model-1",
        "trained_steps": int(ckpt["step"]),
        "weights": "EMA",
        "prediction_type": "epsilon",
        "beta_schedule": BETA_SCHEDULE,
        "resolution": ckpt["model_config"]["sample_size"],
        "preset": ckpt["config"].get("preset"),
        "input_range": [-1.0, 1.0],
        "alignment": "faceveil.faces.align_face (FFHQ quad orientation)",
        "framing": ckpt.get("data_summary", {}).get("framing", "ffhq"),
        "conditioning": "mask+masked-image" if ckpt["config"].get("conditional") else None,
        "init_from": ckpt["config"].get("init_from"),
        "data": ckpt.get("data_summary", {}),
    }


# --------------------------------------------------------------------------- training


def _load_images(
    cfg: TrainConfig, images: np.ndarray | None, masks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    if images is not None:
        arr = np.asarray(images)
        summary: dict[str, Any] = {"source": "in-memory array", "images": int(len(arr))}
    else:
        if not cfg.data:
            raise UsageError("no training data: pass --data FILE (from prepare-data)")
        from faceveil.train.chunks import SET_FORMAT, load_face_set, set_summary

        fd = load_face_set(cfg.data)
        arr, masks = fd.images, fd.masks
        m = fd.manifest
        if m.get("format") == SET_FORMAT:
            summary = set_summary(cfg.data, m)
        else:
            summary = {
                "source": Path(cfg.data).name,
                "images": int(len(arr)),
                "identities": len(fd.identity_names),
                "counts": m.get("counts"),
                "celeba_holdout_identities": (m.get("celeba_holdout") or {}).get("identities"),
                "lfw_excluded_files": (m.get("lfw_excluded") or {}).get("files"),
                "encoding": m.get("encoding"),
                "framing": m.get("framing", "ffhq"),
                "masks": m.get("masks"),
            }
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2]:
        raise UsageError(f"training images must be uint8 N x S x S x 3, got {arr.shape} {arr.dtype}")
    if len(arr) == 0:
        raise UsageError("training data is empty")
    if cfg.conditional and (masks is None or np.asarray(masks).shape != arr.shape[:3]):
        raise UsageError("--conditional training needs data with masks (prepare-data --masks)")
    return arr, masks, summary


def _init_weights(unet: Any, folder: str) -> None:
    """Start ``unet`` from a diffusers folder's UNet: same shapes copied; an inpainting
    UNet's extra input channels start at zero, so it begins as the unconditional model."""
    from diffusers import UNet2DModel

    source = UNet2DModel.from_pretrained(Path(folder), subfolder="unet").state_dict()
    own = unet.state_dict()
    if set(source) != set(own):
        raise UsageError(f"{folder}: its UNet has other layers than this preset's")
    with torch.no_grad():
        for name, value in source.items():
            target = own[name]
            if value.shape == target.shape:
                target.copy_(value.to(target.dtype))
            elif name == "conv_in.weight" and value.shape[1] < target.shape[1] and value.shape[0] == target.shape[0]:
                target.zero_()
                target[:, : value.shape[1]].copy_(value.to(target.dtype))
            else:
                raise UsageError(f"{folder}: {name} is {tuple(value.shape)}, this preset needs {tuple(target.shape)}")


def _condition(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inpainting inputs: the mask and the image with the masked part zeroed."""
    return torch.cat([mask, x0 * (1 - mask)], dim=1)


def train(
    config: TrainConfig,
    *,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train (or resume training) a face diffusion UNet; see :class:`TrainConfig`.

    ``images`` (uint8 N x S x S x 3) replaces ``config.data`` (tests, synthetic data),
    with ``masks`` (bool N x S x S) for a conditional run.
    ``callback(step, loss)`` is called after every optimizer step.
    """
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    cfg = config.resolved()
    device = resolve_device(cfg.device)
    use_bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and device.type == "cuda")
    amp_dtype = torch.bfloat16 if use_bf16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    out_dir = Path(cfg.out_dir)
    existing = latest_checkpoint(out_dir)
    if existing is not None and not cfg.resume:
        raise UsageError(
            f"{out_dir} already holds checkpoints (latest {existing.name}); "
            "pass --resume to continue it or choose another --out"
        )
    ckpt = load_checkpoint(existing, map_location="cpu") if (cfg.resume and existing) else None

    arr, masks, data_summary = _load_images(cfg, images, masks)
    resolution = int(arr.shape[1])
    if ckpt is not None:
        mcfg = dict(ckpt["model_config"])
        mcfg = {k: tuple(v) if isinstance(v, list) else v for k, v in mcfg.items()}
        if int(mcfg["sample_size"]) != resolution:
            raise UsageError(
                f"checkpoint is for {mcfg['sample_size']}px images, the data is {resolution}px"
            )
        preset = ckpt["config"].get("preset", cfg.preset)
        if preset != cfg.preset:
            raise UsageError(f"checkpoint was trained with config {preset!r}, not {cfg.preset!r}")
        if bool(ckpt["config"].get("conditional", False)) != cfg.conditional:
            raise UsageError("the checkpoint's --conditional setting differs from this run's")
    else:
        mcfg = model_config(cfg.preset, resolution, cfg.conditional)

    from diffusers import UNet2DModel

    torch.manual_seed(cfg.seed)
    unet = UNet2DModel(**mcfg)
    if ckpt is None and cfg.init_from:
        _init_weights(unet, cfg.init_from)
    unet = unet.to(device)
    unet.train()
    n_params = sum(p.numel() for p in unet.parameters())
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=cfg.lr,
        betas=tuple(cfg.adam_betas),
        weight_decay=cfg.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    ema = EMAModel(
        unet.parameters(),
        decay=float(cfg.ema_max_decay),
        min_decay=0.0,
        use_ema_warmup=True,
        inv_gamma=1.0,
        power=float(cfg.ema_power),
        foreach=device.type == "cuda",
    )
    noise_sched = ddpm_scheduler()
    alphas_cumprod = noise_sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    photo = None
    if cfg.fill_mask and images is None:
        from faceveil.train.crops import photo_mask, set_geometry

        geometry = set_geometry(cfg.data)
        if geometry is not None and len(geometry[0]) == len(arr):
            photo = photo_mask(*geometry, resolution)
            data_summary = {**data_summary, "loss_mask": f"pixels from the photo ({photo.mean():.1%}); fill beyond it left out"}
    batches = _Batches(arr, device, cfg.seed + 1, masks if cfg.conditional else None, photo)
    if cfg.conditional:  # fixed crops whose faces every sample grid redraws
        shown = np.linspace(0, len(arr) - 1, max(1, cfg.num_samples)).round().astype(int)
        shown_x = torch.from_numpy(arr[shown]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        shown_m = torch.from_numpy(np.asarray(masks)[shown])[:, None].float()
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)

    step = 0
    elapsed_before = 0.0
    if ckpt is not None:
        unet.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ema_state = dict(ckpt["ema"])
        ema_state["shadow_params"] = [s.to(device) for s in ema_state["shadow_params"]]
        ema.load_state_dict(ema_state)
        batches.load_state_dict(ckpt["batches"])
        if ckpt.get("device_type", "cpu") == device.type:
            noise_gen.set_state(ckpt["noise_gen"].cpu())
            _set_rng_state(ckpt["rng"], device)
        else:  # generator states do not carry across device types: reseed from the step
            noise_gen.manual_seed(cfg.seed + 2 + int(ckpt["step"]))
            torch.manual_seed(cfg.seed + int(ckpt["step"]))
        step = int(ckpt["step"])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
    start_step = step

    model_fn = torch.compile(unet) if (cfg.compile and device.type == "cuda") else unet

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(
        json.dumps({"train": cfg.to_json(), "model": _jsonable(mcfg), "data": data_summary}, indent=2) + "\n"
    )
    log_path = out_dir / "log.jsonl"

    def save_ckpt() -> Path:
        state = {
            "format": CKPT_FORMAT,
            "step": step,
            "config": cfg.to_json(),
            "model_config": _jsonable(mcfg),
            "model": unet.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "batches": batches.state_dict(),
            "noise_gen": noise_gen.get_state(),
            "rng": _rng_state(device),
            "device_type": device.type,
            "elapsed": elapsed_before + (time.perf_counter() - t_start),
            "data_summary": data_summary,
        }
        return save_checkpoint(state, out_dir, step, "ckpt", cfg.keep_checkpoints)

    def write_samples() -> Path:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
        try:
            condition = _condition(shown_x, shown_m) if cfg.conditional else None
            imgs = sample_images(
                unet, cfg.num_samples, cfg.sample_steps, seed=cfg.seed, device=device, autocast_dtype=amp_dtype,
                condition=condition,
            )
        finally:
            ema.restore(unet.parameters())
        if cfg.conditional:  # a row of originals above a row of their redrawn faces, pasted in
            pasted = shown_m * imgs.cpu() + (1 - shown_m) * shown_x
            return save_image_grid(torch.cat([shown_x, pasted]), out_dir / "samples" / f"step_{step:08d}.png",
                                   nrow=len(shown_x))
        return save_image_grid(imgs, out_dir / "samples" / f"step_{step:08d}.png")

    losses: list[float] = []
    samples: list[Path] = []
    last_ckpt: Path | None = existing if ckpt is not None else None
    stopped_by_time = False
    deadline = None if cfg.max_minutes is None else t_start + 60.0 * cfg.max_minutes
    running: float | None = None
    pending: list[torch.Tensor] = []  # losses not yet read back (one GPU sync per flush)
    t_first: float | None = None  # when the first step of this call finished
    first_step = step

    def flush() -> None:
        nonlocal running
        if not pending:
            return
        values = torch.stack(pending).tolist()
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise FloatingPointError(f"training loss became {v} at step {step - len(values) + i + 1}")
            running = v if running is None else 0.98 * running + 0.02 * v
        losses.extend(values)

    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc="training",
        unit="step",
        disable=not cfg.progress,
        dynamic_ncols=True,
        mininterval=0.1 if interactive else 30.0,  # captured logs: a line every 30 s
    )
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            while step < cfg.steps:
                now = time.perf_counter()
                if deadline is not None:
                    per_step = (now - t_first) / (step - first_step - 1) if step - first_step > 1 else 0.0
                    if now + per_step > deadline:
                        stopped_by_time = True
                        break
                lr = _lr_at(step, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                x0 = batches.next(cfg.batch_size)
                b = x0.shape[0]
                noise = torch.randn(x0.shape, generator=noise_gen, device=device)
                t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=noise_gen, device=device)
                ab = alphas_cumprod[t].view(b, 1, 1, 1)
                xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
                ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
                if cfg.conditional:
                    m = batches.last_masks
                    xt = torch.cat([xt, _condition(x0, m)], dim=1)
                with ctx:
                    pred = model_fn(xt, t).sample
                w = m + cfg.outside_weight * (1 - m) if cfg.conditional else None
                if batches.last_photo is not None:  # no target where the crop was filled beyond the photo
                    w = batches.last_photo if w is None else w * batches.last_photo
                if w is not None:
                    loss = ((pred.float() - noise) ** 2 * w).mean() / w.mean().clamp(min=1e-8)
                else:
                    loss = torch.nn.functional.mse_loss(pred.float(), noise)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip and cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
                optimizer.step()
                ema.step(unet.parameters())
                step += 1
                pending.append(loss.detach())
                if t_first is None:
                    flush()  # also waits for the first (slowest) step to finish
                    t_first = time.perf_counter()
                bar.update(1)
                log_now = bool(cfg.log_every) and (step % cfg.log_every == 0 or step == cfg.steps)
                ckpt_now = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
                if log_now or ckpt_now or callback is not None or step == cfg.steps:
                    flush()
                if log_now:
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
                    log.write(
                        json.dumps(
                            {"step": step, "loss": losses[-1], "loss_avg": running, "lr": lr,
                             "time": round(elapsed_before + time.perf_counter() - t_start, 2)}
                        )
                        + "\n"
                    )
                    log.flush()
                if callback is not None:
                    callback(step, losses[-1])
                if ckpt_now:
                    last_ckpt = save_ckpt()
                if cfg.sample_every and step % cfg.sample_every == 0 and cfg.num_samples > 0:
                    if deadline is None or time.perf_counter() < deadline - 30:
                        samples.append(write_samples())
            flush()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_end_loop = time.perf_counter()
    finally:
        bar.close()

    if step > start_step and (last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt")):
        last_ckpt = save_ckpt()
    if (
        not stopped_by_time
        and step > start_step
        and cfg.num_samples > 0
        and not (cfg.sample_every and step % cfg.sample_every == 0)
    ):
        samples.append(write_samples())

    export_path = None
    if cfg.export_dir and not stopped_by_time:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
        try:
            meta_ckpt = {"step": step, "model_config": _jsonable(mcfg), "config": cfg.to_json(),
                         "data_summary": data_summary}
            export_path = export_pretrained(
                unet, cfg.export_dir, fp16=cfg.export_fp16, max_shard_size=cfg.export_max_shard_size,
                metadata=_metadata(meta_ckpt),
            )
        finally:
            ema.restore(unet.parameters())

    n_after_first = step - first_step - 1
    return TrainResult(
        out_dir=out_dir,
        start_step=start_step,
        step=step,
        losses=losses,
        checkpoint=last_ckpt,
        samples=samples,
        export_dir=export_path,
        stopped_by_time=stopped_by_time,
        seconds=time.perf_counter() - t_start,
        seconds_per_step=(
            (t_end_loop - t_first) / n_after_first if (t_first is not None and n_after_first > 0) else float("nan")
        ),
        device=str(device),
        num_parameters=n_params,
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


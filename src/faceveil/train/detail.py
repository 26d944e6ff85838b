"""Training the detail stage (:class:`faceveil.detail.DetailNet`): 2x super-resolution of faces.

Pairs come from a face set prepared at twice the model's crop (``prepare-data --size 192
--framing face``): the target is the crop, the input the crop blurred by a random amount
and halved (area), so that the network learns to sharpen faces as soft as the diffusion
model draws them, not only to undo a clean halving. The loss is L1 plus, after
``adv_start`` steps, a hinge patch discriminator (spectrally normalised PatchGAN), the
tool that gave LDM's autoencoders and ESRGAN their texture; no pretrained perceptual
network is used. Both count only pixels that came from the photo, not the mirrored fill
beyond a tight source image (:func:`faceveil.train.crops.photo_mask`). The generator's
EMA is what :func:`export_detail` writes, as ``detail/`` beside a face model's ``unet/``.
Resumable: checkpoints in ``OUT/checkpoints``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from faceveil.atomic import atomic_output
from faceveil.detail import DetailNet
from faceveil.errors import UsageError
from faceveil.train.crops import photo_mask, set_geometry
from faceveil.train.trainer import latest_checkpoint, load_checkpoint, save_checkpoint

CKPT_FORMAT = "faceveil-detail-ckpt-1"  # tensors and plain data only (loaded with weights_only)
VALIDATION_EVERY = 50  # every 50th crop is held out for the validation figures


@dataclass
class DetailConfig:
    data: str
    out_dir: str
    sources: list[str] = field(default_factory=list)  # keep only crops of these sources (empty: all)
    channels: int = 48
    blocks: int = 8
    min_enlargement: float = 1.0
    batch_size: int = 8
    lr: float = 2e-4
    adv_weight: float = 0.01  # 0: L1 only
    adv_start: int = 400
    max_blur: float = 1.5  # sigma (target pixels) of the input's random blur before halving
    steps: int = 20_000
    max_minutes: float | None = None
    checkpoint_every: int = 200
    sample_every: int = 400
    ema: float = 0.999
    seed: int = 0
    progress: bool = True
    init_from: str | None = None  # a model folder with detail/ (or a detail/ folder): a fresh run starts from its stage


class PatchDiscriminator(nn.Module):
    """Real/fake scores for overlapping patches (about 30 px at 192 px): spectrally normalised."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, c, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * c, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _blur(img: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) batch, reflected at the edges; the kernel
    reaches ``radius`` pixels (default three sigmas)."""
    r = math.ceil(3 * sigma) if radius is None else radius
    xs = torch.arange(-r, r + 1, dtype=img.dtype)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[1]
    x = F.pad(img, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def degrade(hr: torch.Tensor, max_blur: float, generator: torch.Generator) -> torch.Tensor:
    """The network's input for targets ``hr`` (B, 3, 2S, 2S): a random Gaussian blur per
    sample (sigma 0 to ``max_blur``), then halved by averaging 2 x 2 blocks."""
    sigmas = torch.rand(hr.shape[0], generator=generator) * max_blur
    radius = max(1, math.ceil(3 * max_blur))
    out = [img[None] if sigma < 0.05 else _blur(img[None], float(sigma), radius) for img, sigma in zip(hr, sigmas)]
    return F.avg_pool2d(torch.cat(out), 2)


def band_energy(x: torch.Tensor) -> torch.Tensor:
    """Band-pass (difference of Gaussians, sigma 1 and 3 px) energy per image of a batch: the
    band of ``benchmarks/face_quality.py``'s detail ratio (there on a masked 256 px grey face,
    with OpenCV; here on whole crops of a torch batch during training)."""
    gray = x.mean(1, keepdim=True)
    return (_blur(gray, 1.0) - _blur(gray, 3.0)).pow(2).mean(dim=(1, 2, 3))


def _load_pairs(cfg: DetailConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    from faceveil.train.chunks import load_face_set

    data = load_face_set(cfg.data)
    geometry = set_geometry(cfg.data)
    origin = np.array([s.split("/", 1)[0] for s in data.sources])  # "utkface-agepred/..." -> its source
    keep = np.ones(len(data.images), dtype=bool)
    if cfg.sources:
        unknown = set(cfg.sources) - set(origin)
        if unknown:
            raise UsageError(f"{cfg.data} has no crops of {', '.join(sorted(unknown))} (it has {', '.join(sorted(set(origin)))})")
        keep = np.isin(origin, cfg.sources)
    images = data.images[keep]
    if images.shape[1] % 2 or images.shape[1] != images.shape[2]:
        raise UsageError(f"{cfg.data}: crops are {images.shape[1]}x{images.shape[2]}, need square and of even side")
    val = np.arange(len(images)) % VALIDATION_EVERY == 0
    summary = {"set": str(cfg.data), "crops": int(keep.sum()), "validation": int(val.sum()),
               "size": int(images.shape[1]), "sources": sorted({str(o) for o in origin[keep]}),
               "loss_mask": "pixels from the photo (fill beyond it left out)" if geometry else "none (no geometry recorded)"}
    train_geometry = (geometry[0][keep][~val], geometry[1][keep][~val]) if geometry else None
    return images[~val], images[val], summary, train_geometry


def _to_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 127.5 - 1


def _save_grid(path: Path, rows: list[torch.Tensor]) -> None:
    """One row per tensor (B, 3, H, W, same size), side by side."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    with atomic_output(path) as fh:
        Image.fromarray(arr).save(fh, format="PNG")


@dataclass
class DetailResult:
    step: int
    seconds: float
    validation: dict[str, float]
    checkpoint: Path | None


def validate(net: DetailNet, val: np.ndarray, max_blur: float, batch: int = 16) -> dict[str, float]:
    """L1 and detail (band-pass energy over the target's) on the held-out crops, against
    plain bicubic, at the middle of the training blur (fixed seed: comparable across runs)."""
    g = torch.Generator().manual_seed(1234)
    l1 = l1_bicubic = 0.0
    energy_net, energy_bicubic, energy_target = [], [], []
    with torch.no_grad():
        for i in range(0, len(val), batch):
            hr = _to_batch(val[i : i + batch])
            lr = degrade(hr, max_blur, g)
            sr = net(lr).clamp(-1, 1)
            bi = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
            l1 += float((sr - hr).abs().mean()) * len(hr)
            l1_bicubic += float((bi - hr).abs().mean()) * len(hr)
            energy_net.append(band_energy(sr))
            energy_bicubic.append(band_energy(bi))
            energy_target.append(band_energy(hr))
    t = torch.cat(energy_target)
    return {
        "l1": l1 / len(val), "l1_bicubic": l1_bicubic / len(val),
        "detail": float((torch.cat(energy_net) / t).median()), "detail_bicubic": float((torch.cat(energy_bicubic) / t).median()),
    }


def initial_stage(path: str | Path) -> DetailNet:
    """The detail stage a run starts from: ``path/detail`` of a model folder, or ``path`` itself."""
    from faceveil.models import load_detail

    path = Path(path)
    if (path / "detail" / "config.json").is_file():
        return load_detail(path)  # an embedded preset's stage may keep its weights in another's folder
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} has no detail stage (no detail/ folder with config.json)")
    return DetailNet.from_pretrained(str(path))


def train_detail(cfg: DetailConfig) -> DetailResult:
    """Train (or resume) the detail stage; stops after ``steps`` or ``max_minutes``."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    out = Path(cfg.out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    train_set, val_set, summary, geometry = _load_pairs(cfg)
    if len(train_set) < cfg.batch_size or not len(val_set):
        raise UsageError(f"{cfg.data}: too few crops ({len(train_set)} to train on)")
    torch.manual_seed(cfg.seed)
    net = DetailNet(channels=cfg.channels, blocks=cfg.blocks, min_enlargement=cfg.min_enlargement)
    ema = DetailNet(**net.config).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    disc = PatchDiscriminator()
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.99))
    step = 0
    latest = latest_checkpoint(out, "detail")
    if latest is None and cfg.init_from:
        start_from = initial_stage(cfg.init_from)
        theirs = {k: v for k, v in start_from.config.items() if not k.startswith("_")}
        if theirs != {k: v for k, v in net.config.items() if not k.startswith("_")}:
            raise UsageError(f"{cfg.init_from}: its stage is another network ({theirs}), "
                             f"not --channels {cfg.channels} --blocks {cfg.blocks} --min-enlargement {cfg.min_enlargement:g}")
        net.load_state_dict(start_from.state_dict())
        ema.load_state_dict(start_from.state_dict())
    if latest is not None:
        ckpt = load_checkpoint(latest, fmt=CKPT_FORMAT, kind="detail-stage training")
        if ckpt["net_config"] != dict(net.config):
            raise UsageError(f"{latest} was trained with another network ({ckpt['net_config']})")
        net.load_state_dict(ckpt["net"])
        ema.load_state_dict(ckpt["ema"])
        disc.load_state_dict(ckpt["disc"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step = int(ckpt["step"])
    rng = np.random.default_rng(cfg.seed + step)  # a resumed run draws new batches
    gen = torch.Generator().manual_seed(cfg.seed + step)
    fixed = _to_batch(val_set[:6])
    fixed_lr = degrade(fixed, cfg.max_blur, torch.Generator().manual_seed(7))
    log = (out / "log.jsonl").open("a")
    checkpoint: Path | None = None

    def save() -> Path:
        state = {
            "format": CKPT_FORMAT, "step": step, "net": net.state_dict(), "ema": ema.state_dict(), "disc": disc.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "net_config": dict(net.config),
            "config": json.loads(json.dumps(asdict(cfg), default=str)), "data_summary": summary,
        }
        return save_checkpoint(state, out, step, "detail")

    bar = tqdm(total=cfg.steps, initial=step, desc="detail", unit="step", disable=not cfg.progress)
    stopped = False
    while step < cfg.steps:
        if cfg.max_minutes is not None and time.monotonic() - start > cfg.max_minutes * 60:
            stopped = True
            break
        idx = rng.integers(0, len(train_set), cfg.batch_size)
        hr = _to_batch(train_set[idx])
        flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5)
        mask = (torch.from_numpy(photo_mask(*(g[idx] for g in geometry), hr.shape[-1])[:, None].astype(np.float32))
                if geometry else torch.ones_like(hr[:, :1]))
        hr = torch.where(flip[:, None, None, None], hr.flip(3), hr)
        mask = torch.where(flip[:, None, None, None], mask.flip(3), mask)
        lr = degrade(hr, cfg.max_blur, gen)
        sr = net(lr)
        l1 = ((sr - hr).abs() * mask).sum() / (3 * mask.sum()).clamp(min=1)
        adversarial = cfg.adv_weight > 0 and step >= cfg.adv_start
        loss_d = torch.zeros(())
        if adversarial:
            fake = mask * sr + (1 - mask) * hr  # the discriminator judges only what came from a photo
            opt_d.zero_grad(set_to_none=True)
            loss_d = F.relu(1 - disc(hr)).mean() + F.relu(1 + disc(fake.detach())).mean()
            loss_d.backward()
            opt_d.step()
            loss_g = l1 - cfg.adv_weight * disc(fake).mean()
        else:
            loss_g = l1
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - cfg.ema)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            log.write(json.dumps({"step": step, "l1": float(l1), "loss_d": float(loss_d),
                                  "time": round(time.monotonic() - start, 1)}) + "\n")
            log.flush()
        if step % cfg.checkpoint_every == 0:
            checkpoint = save()
        if cfg.sample_every and step % cfg.sample_every == 0:
            with torch.no_grad():
                bicubic = F.interpolate(fixed_lr, scale_factor=2, mode="bicubic", align_corners=False)
                _save_grid(out / "samples" / f"detail_{step:08d}.png", [bicubic, ema(fixed_lr), fixed])
    bar.close()
    if checkpoint is None or not checkpoint.name.endswith(f"{step:08d}.pt"):
        checkpoint = save()
    figures = validate(ema, val_set, cfg.max_blur)
    log.write(json.dumps({"step": step, "validation": figures, "stopped_by_time": stopped}) + "\n")
    log.close()
    return DetailResult(step, time.monotonic() - start, figures, checkpoint)


def export_detail(run: str | Path, base: str | Path, out: str | Path) -> Path:
    """A new model folder: the face model ``base`` (a folder) with the run's EMA detail
    stage as ``detail/`` and the stage's provenance in ``faceveil_train.json``."""
    run, base, out = Path(run), Path(base), Path(out)
    latest = latest_checkpoint(run, "detail")
    if latest is None:
        raise UsageError(f"no detail checkpoint in {run / 'checkpoints'}")
    if not (base / "unet").is_dir():
        raise UsageError(f"{base} is not a model folder (no unet/)")
    if out.exists():
        raise UsageError(f"{out} exists; choose a new folder")
    ckpt = load_checkpoint(latest, fmt=CKPT_FORMAT, kind="detail-stage training")
    net = DetailNet(**ckpt["net_config"])
    net.load_state_dict(ckpt["ema"])
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(base, tmp)
    net.save_pretrained(tmp / "detail", safe_serialization=True)
    meta_path = tmp / "faceveil_train.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    cfg = ckpt["config"]
    meta["detail"] = {
        "trained_steps": int(ckpt["step"]), "weights": "EMA", "network": ckpt["net_config"],
        "data": ckpt["data_summary"], "loss": f"L1 + {cfg['adv_weight']} x hinge PatchGAN from step {cfg['adv_start']}",
        "input": f"target blurred (sigma 0 to {cfg['max_blur']} px) and halved (2 x 2 mean)",
        "batch_size": cfg["batch_size"], "lr": cfg["lr"],
    }
    if cfg.get("init_from"):
        meta["detail"]["started_from"] = str(cfg["init_from"])
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.rename(out)
    return out

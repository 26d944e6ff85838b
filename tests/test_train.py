"""Tests of faceveil.train: data files, the tiny training loop, resume, export, CLI hooks.

Everything runs on the CPU with the "tiny" preset at 16x16 pixels. The data
preparation test reads a few photos from the shared folder, or free photos in its layout without it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from faceveil.errors import UsageError
from faceveil.train import data as tdata
from faceveil.train import trainer
from faceveil.train.command import register
from faceveil.train.data import FaceCropDataset, FaceData, load_faces, save_faces
from faceveil.train.trainer import TrainConfig, train

from conftest import SHARED, stand_in_shared  # ../shared, or $FACEVEIL_SHARED
RES = 16


def _synthetic_faces(n: int = 12, size: int = RES, seed: int = 0) -> np.ndarray:
    """Smooth, face-like blobs (uint8 N x S x S x 3) so that there is something to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        r = rng.uniform(0.5, 0.8)
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / r**2) * 2)
        colour = rng.uniform(0.3, 1.0, 3)
        bg = rng.uniform(0.0, 0.4, 3)
        img = blob[..., None] * colour + (1 - blob[..., None]) * bg
        out[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def _config(out: Path, steps: int, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(out),
        preset="tiny",
        steps=steps,
        batch_size=4,
        checkpoint_every=2,
        sample_every=0,
        num_samples=0,
        log_every=1,
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads can make
    each tiny step 50x slower under load; one thread keeps the file fast and stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _synthetic_faces()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, images):
    """An uninterrupted 4-step tiny run with a checkpoint every 2 steps and an export."""
    root = tmp_path_factory.mktemp("full")
    cfg = _config(root / "run", 4, export_dir=str(root / "export"), num_samples=2, sample_steps=2)
    return train(cfg, images=images)


# ----------------------------------------------------------------------------- model


def test_presets_and_default_size():
    tiny = trainer.build_unet("tiny", RES)
    assert sum(p.numel() for p in tiny.parameters()) < 2_000_000
    cfg = trainer.model_config("default", 64)
    assert cfg["sample_size"] == 64 and len(cfg["block_out_channels"]) == 4
    # attention only at the two lowest resolutions (16x16 and 8x8 for 64 px)
    assert cfg["down_block_types"][-2:] == ("AttnDownBlock2D", "AttnDownBlock2D")
    assert trainer.model_config("default", 128)["down_block_types"][-2:] == cfg["down_block_types"][-2:]
    with pytest.raises(UsageError):
        trainer.model_config("huge", 64)


def test_default_preset_parameter_count():
    from diffusers import UNet2DModel

    with torch.device("meta"):
        unet = UNet2DModel(**trainer.model_config("default", 64))
    n = sum(p.numel() for p in unet.parameters())
    assert 20e6 <= n <= 40e6, n
    with torch.device("meta"):
        small = UNet2DModel(**trainer.model_config("small", 64))
    assert 3e6 <= sum(p.numel() for p in small.parameters()) <= 6e6
    assert trainer.TrainConfig(preset="small").resolved().batch_size == 32


def test_overfit_fixed_batch(images):
    """With fixed noise and timesteps the epsilon loss must fall on one batch."""
    torch.manual_seed(0)
    unet = trainer.build_unet("tiny", RES)
    abar = trainer.ddpm_scheduler().alphas_cumprod.float()
    x0 = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([100, 300, 500, 700])
    a = abar[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-5:]) < 0.6 * losses[0], losses


# -------------------------------------------------------------------------- training


def test_train_runs_and_writes_outputs(full_run):
    r = full_run
    assert r.step == 4 and r.start_step == 0 and len(r.losses) == 4
    assert all(math.isfinite(v) for v in r.losses)
    assert r.checkpoint is not None and r.checkpoint.name == "ckpt_00000004.pt"
    ckpts = sorted(p.name for p in (r.out_dir / "checkpoints").iterdir())
    assert ckpts == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert r.samples and r.samples[-1].is_file()
    from PIL import Image

    with Image.open(r.samples[-1]) as im:
        assert im.mode == "RGB" and im.size[0] > RES
    log = [json.loads(line) for line in (r.out_dir / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert json.loads((r.out_dir / "config.json").read_text())["train"]["preset"] == "tiny"


def test_resume_continues_exactly(tmp_path, images, full_run):
    """2 steps + resume to 4 == 4 uninterrupted steps: model, EMA, optimizer, RNG, data order."""
    first = train(_config(tmp_path / "run", 2), images=images)
    assert first.step == 2
    second = train(_config(tmp_path / "run", 4, resume=True), images=images)
    assert second.start_step == 2 and second.step == 4
    assert second.losses == full_run.losses[2:]

    a = trainer.load_checkpoint(full_run.checkpoint)
    b = trainer.load_checkpoint(second.checkpoint)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        assert torch.equal(sa, sb)
    assert a["ema"]["optimization_step"] == b["ema"]["optimization_step"] == 4
    for pid, st in a["optimizer"]["state"].items():
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(b["optimizer"]["state"][pid][key]))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["noise_gen"], b["noise_gen"])
    assert torch.equal(a["batches"]["perm"], b["batches"]["perm"]) and a["batches"]["pos"] == b["batches"]["pos"]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, images):
    train(_config(tmp_path / "run", 1, checkpoint_every=1), images=images)
    with pytest.raises(UsageError, match="--resume"):
        train(_config(tmp_path / "run", 2), images=images)


def test_max_minutes_stops_before_training(tmp_path, images):
    r = train(_config(tmp_path / "run", 10, max_minutes=1e-9, export_dir=str(tmp_path / "x")), images=images)
    assert r.stopped_by_time and r.step == 0 and r.export_dir is None


def test_export_loads_with_from_pretrained(full_run):
    from diffusers import DDIMScheduler, UNet2DModel

    folder = full_run.export_dir
    assert folder is not None
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    sched = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert sched.config.prediction_type == "epsilon" and not sched.config.clip_sample
    assert sched.config.beta_schedule == "squaredcos_cap_v2"
    meta = json.loads((folder / "faceveil_train.json").read_text())
    assert meta["trained_steps"] == 4 and meta["weights"] == "EMA"
    x = trainer.sample_images(unet.float(), 2, 3, seed=1, scheduler=sched)
    assert x.shape == (2, 3, RES, RES) and torch.isfinite(x).all()
    assert float(x.abs().max()) <= 1.0

    # the exported weights are the EMA weights of the last checkpoint (fp16-rounded)
    ckpt = trainer.load_checkpoint(full_run.checkpoint)
    shadow = ckpt["ema"]["shadow_params"]
    for p, s in zip(unet.parameters(), shadow):
        assert torch.allclose(p.float(), s.half().float())


def test_export_checkpoint_sharded(tmp_path, full_run):
    from diffusers import UNet2DModel

    out = trainer.export_checkpoint(full_run.out_dir, tmp_path / "exp", fp16=False, max_shard_size="1MB")
    shards = sorted((out / "unet").glob("*.safetensors"))
    assert len(shards) >= 2
    unet = UNet2DModel.from_pretrained(out, subfolder="unet")
    assert next(unet.parameters()).dtype == torch.float32


# ------------------------------------------------------------------------------ data


def _face_data(n: int = 6, size: int = RES) -> FaceData:
    imgs = _synthetic_faces(n, size, seed=3)
    return FaceData(
        images=imgs,
        labels=np.arange(n) % 2,
        identity_names=["celeba:1", "lfw:A_B"],
        sources=[f"x/{i}.jpg" for i in range(n)],
        manifest={"size": size, "note": "test"},
    )


@pytest.mark.parametrize("encoding", ["raw", "webp", "jpeg"])
def test_save_load_roundtrip(tmp_path, encoding):
    fd = _face_data()
    info = save_faces(tmp_path / "f.npz", fd, encoding=encoding)
    assert info["kind"] == encoding and info["bytes"] == (tmp_path / "f.npz").stat().st_size
    back = load_faces(tmp_path / "f.npz")
    assert back.images.shape == fd.images.shape and back.images.dtype == np.uint8
    assert back.identity_names == fd.identity_names and back.sources == fd.sources
    assert np.array_equal(back.labels, fd.labels)
    assert back.manifest["note"] == "test" and back.manifest["encoding"]["kind"] == encoding
    diff = np.abs(back.images.astype(int) - fd.images.astype(int))
    if encoding in ("raw", "webp"):
        assert diff.max() == 0
    else:
        assert diff.mean() < 3


def test_save_refuses_or_adapts_to_the_size_limit(tmp_path):
    fd = _face_data(8, 32)
    info = save_faces(tmp_path / "a.npz", fd, max_bytes=fd.images.nbytes // 2)
    assert info["kind"] in ("webp", "jpeg") and info["bytes"] <= fd.images.nbytes // 2
    with pytest.raises(UsageError, match="do not fit"):
        save_faces(tmp_path / "b.npz", fd, max_bytes=500)
    assert not (tmp_path / "b.npz").exists()


def test_face_crop_dataset_range_and_flips():
    fd = _face_data(4)
    ds = FaceCropDataset(fd, flip_p=1.0, return_labels=True)
    x, label = ds[1]
    assert len(ds) == 4 and x.shape == (3, RES, RES) and x.dtype == torch.float32 and label == 1
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    ref = torch.from_numpy(fd.images[1]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(x, ref.flip(-1))
    assert torch.allclose(FaceCropDataset(fd, flip_p=0.0)[1], ref)


def test_holdout_is_deterministic_and_order_free():
    ids = [str(i) for i in range(1000, 1100)]
    a = tdata.celeba_holdout_identities(ids, 0.1)
    b = tdata.celeba_holdout_identities(list(reversed(ids)), 0.1)
    assert a == b and len(a) == 10 and set(a) <= set(ids)
    assert tdata.celeba_holdout_identities(ids, 0.0) == []


def test_parse_lfw_pairs(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("2\t2\nAbel_Pacheco\t1\t4\nAkhmed_Zakayev\t1\t3\nAbdel_Madi\t1\tDean_Barker\t1\n")
    assert tdata.parse_lfw_pairs(p) == {"Abel_Pacheco", "Akhmed_Zakayev", "Abdel_Madi", "Dean_Barker"}
    p.write_text("1\nA\t1\n")
    with pytest.raises(UsageError):
        tdata.parse_lfw_pairs(p)


def test_prepare_dataset_subset_excludes_held_out_identities(tmp_path):
    """On ../shared, or without it on the free photos in its layout (conftest.stand_in_shared)."""
    pytest.importorskip("mediapipe")
    real = (SHARED / "data" / "celeba" / "identity.txt").is_file() and (SHARED / "data" / "lfw" / "images").is_dir()
    shared = SHARED if real else stand_in_shared(tmp_path / "stand-in")
    out = tmp_path / "faces.npz"
    report = tdata.prepare_dataset(shared, out, 32, limit_per_source=6, progress=False)
    fd = load_faces(out)
    assert fd.images.shape[1:] == (32, 32, 3) and len(fd) == report.images > 0
    for src, c in report.counts.items():
        assert c["candidates"] == 6
        assert c["used"] + c["no_face"] + c["too_small"] + c["unreadable"] == 6
    assert set(fd.manifest["counts"]) == {"celeba", "lfw"}

    holdout = fd.manifest["celeba_holdout"]["identities"]
    excluded = fd.manifest["lfw_excluded"]["names"]
    ident = tdata.read_celeba_identities(shared / "data" / "celeba" / "identity.txt")
    assert len(holdout) == round(0.1 * len(set(ident.values())))  # 239 identities in ../shared, 7 in the stand-in
    first = (shared / "data" / "lfw" / "pairs.txt").read_text().splitlines()[1].split()[0]
    assert first in excluded and len(excluded) > (4000 if real else 0)  # the first pair of pairs.txt
    names = set(fd.identity_names)
    assert not names & {f"celeba:{i}" for i in holdout}
    assert not names & {f"lfw:{n}" for n in excluded}
    # every crop's source belongs to its labelled identity
    for src, lab in zip(fd.sources, fd.labels):
        name = fd.identity_names[lab]
        if src.startswith("celeba/"):
            assert name == f"celeba:{ident[src.split('/', 1)[1]]}"
        else:
            assert name == f"lfw:{src.split('/')[1]}"
    assert out.stat().st_size <= tdata.MAX_BYTES


# ------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceveil")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_train_and_export_only(tmp_path, capsys):
    save_faces(tmp_path / "d.npz", _face_data(6))
    parser = _parser()
    args = parser.parse_args(
        ["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "--config", "tiny",
         "--steps", "2", "--batch-size", "2", "--sample-every", "0", "--checkpoint-every", "1",
         "--num-samples", "2", "--sample-steps", "2",
         "--device", "cpu", "--quiet", "--export", str(tmp_path / "exp")]
    )
    assert args.func(args) == 0
    assert "step 2/2" in capsys.readouterr().out
    assert (tmp_path / "exp" / "unet" / "config.json").is_file()
    args = parser.parse_args(
        ["train", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "exp2"), "--export-only"]
    )
    assert args.func(args) == 0
    assert (tmp_path / "exp2" / "scheduler" / "scheduler_config.json").is_file()
    assert "noise_gain" not in json.loads((tmp_path / "exp2" / "faceveil_train.json").read_text())
    # the gain measured best with these weights travels with them: anonymize's default
    args = parser.parse_args(["train", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "exp3"),
                              "--export-only", "--export-noise-gain", "1.25"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "exp3" / "faceveil_train.json").read_text())["noise_gain"] == 1.25
    from faceveil.models import load_model

    assert load_model(str(tmp_path / "exp3")).noise_gain == 1.25
    for bad in (["--export-only", "--export-noise-gain", "3"], ["--export-noise-gain", "1.25"]):
        args = parser.parse_args(["train", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "exp4"), *bad])
        with pytest.raises(UsageError, match="export-noise-gain"):
            args.func(args)
    assert not (tmp_path / "exp4").exists()


def test_cli_prepare_data_arguments():
    args = _parser().parse_args(["prepare-data", "-o", "x.npz"])
    assert args.shared == "../shared" and args.size == 64 and args.output == "x.npz"
    assert callable(args.func)


def test_export_is_a_faceveil_model_and_round_trips(full_run):
    """What training exports is what `--model FOLDER` (and the embedded preset) loads."""
    from faceveil.engine import EngineSettings, Schedule, veil
    from faceveil.keys import Key, new_nonce
    from faceveil.models import load_model

    model = load_model(str(full_run.export_dir))
    assert model.kind == "pixel" and model.image_size == RES
    assert next(model.unet.parameters()).dtype == torch.float32
    z0 = torch.rand(1, 3, RES, RES) * 2 - 1
    mask = torch.zeros(1, 1, RES, RES)
    mask[..., 4:12, 4:12] = 1
    nonce = new_nonce()
    signs = torch.from_numpy(Key.generate().sign_pattern(nonce, tuple(z0.shape)))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    settings = EngineSettings(steps=5, refine_iters=10, refine_tol=1e-6)
    schedule = Schedule.from_scheduler(model.scheduler, 5)
    anon, _ = veil(model.eps, schedule, z0, mask, signs, settings, z0 * (1 - mask), noise)
    back, _ = veil(model.eps, schedule, anon, mask, signs, settings, z0 * (1 - mask), noise)
    assert float((anon - z0).abs().max()) > 0.1 and float((back - z0).abs().max()) < 1e-3


def test_embedded_preset_without_weights_says_so():
    from faceveil.errors import ModelUnavailableError
    from faceveil.models import PRESETS, load_model, model_available

    assert "faceveil-faces-64" in PRESETS
    if not model_available("faceveil-faces-64"):
        with pytest.raises(ModelUnavailableError, match="no weights"):
            load_model("faceveil-faces-64")

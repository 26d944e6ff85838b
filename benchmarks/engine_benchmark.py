"""Engine benchmark: speed on the LDM-256 architecture and exactness of inversion options.

    python benchmarks/engine_benchmark.py            # timings + exactness tables (~10 min on 2 cores)
    python benchmarks/engine_benchmark.py --full     # also one real anonymize+recover at 50 steps, LDM-256

Speed uses the architecture of CompVis/ldm-celebahq-256 with random weights (the real
weights are not reachable here; the cost of a UNet evaluation does not depend on them).
Exactness uses the tiny random-weight models of ``faceveil.testing`` and, when present,
the project's own embedded model. Every figure printed is measured in this run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from faceveil.engine import EngineSettings, Schedule, veil
from faceveil.engine.ddim import sample
from faceveil.engine.veil import VeilStats, masked_invert
from faceveil.keys import Key, new_nonce, public_gaussian
from faceveil.models import DiffusionModel, load_model, model_available
from faceveil.testing import ldm_celebahq_256_random, tiny_latent_model, tiny_pixel_model


def time_unet(model: DiffusionModel, repeats: int = 3) -> float:
    z = torch.randn(1, model.latent_channels, model.latent_size, model.latent_size)
    model.eps(z, 500)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.eps(z, 500)
    return (time.perf_counter() - start) / repeats


def time_autoencoder(model: DiffusionModel) -> tuple[float, float]:
    x = torch.rand(1, 3, model.image_size, model.image_size) * 2 - 1
    start = time.perf_counter()
    z = model.encode(x)
    middle = time.perf_counter()
    model.decode(z)
    return middle - start, time.perf_counter() - middle


def inversion_error(model: DiffusionModel, steps: int, refine_iters: int, seed: int = 0) -> float:
    """Max |z0 - sample(invert(z0))| with no key and no mask: the inversion's own error."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(1, model.latent_channels, model.latent_size, model.latent_size, generator=g) * 0.5
    schedule = Schedule.from_scheduler(model.scheduler, steps)
    ones = torch.ones_like(z0)
    zN = masked_invert(model.eps, schedule, z0, ones, None, refine_iters, 1e-6, VeilStats())[-1]
    return float((sample(model.eps, schedule, zN) - z0).abs().max())


def round_trip_error(
    model: DiffusionModel, steps: int, refine_iters: int, seed: int = 0, context: str = "noised"
) -> tuple[float, int]:
    """Max latent error of anonymize then recover with the right key, and UNet evals per direction."""
    g = torch.Generator().manual_seed(seed)
    n, c = model.latent_size, model.latent_channels
    z0 = torch.randn(1, c, n, n, generator=g) * 0.5
    mask = torch.zeros(1, 1, n, n)
    mask[..., n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1
    nonce = new_nonce()
    signs = torch.from_numpy(Key.generate().sign_pattern(nonce, tuple(z0.shape)))
    noise = torch.from_numpy(public_gaussian(nonce, tuple(z0.shape)))
    settings = EngineSettings(steps=steps, refine_iters=refine_iters, refine_tol=1e-5, context=context)
    schedule = Schedule.from_scheduler(model.scheduler, steps)
    context = z0 * (1 - mask)
    anon, stats = veil(model.eps, schedule, z0, mask, signs, settings, context, noise)
    back, _ = veil(model.eps, schedule, anon, mask, signs, settings, context, noise)
    return float((back - z0).abs().max()), stats.unet_evals


def full_run(model: DiffusionModel, steps: int) -> None:
    from faceveil.pipeline import Settings, anonymize_array, recover_array

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (model.image_size, model.image_size, 3), dtype=np.uint8)
    key = Key.generate()
    evals = [0]

    def count(n: int) -> None:
        evals[0] += n

    settings = Settings(EngineSettings(steps=steps))
    start = time.perf_counter()
    veiled, record, _ = anonymize_array(image, key, model, settings=settings, progress=count)
    middle = time.perf_counter()
    anon_evals = evals[0]
    recover_array(veiled, record, key, model, progress=count)
    end = time.perf_counter()
    print(f"  anonymize: {middle - start:.1f} s ({anon_evals} UNet evals); "
          f"recover: {end - middle:.1f} s ({evals[0] - anon_evals} UNet evals)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="time one anonymize+recover with the LDM-256 architecture")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--contexts-only", action="store_true", help="only the context comparison (seconds)")
    parser.add_argument("--decoder-only", action="store_true", help="only the decoder-inversion figures (a minute)")
    parser.add_argument("--full-only", action="store_true", help="only the measured LDM-256 anonymize+recover")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.contexts_only:
        compare_contexts()
        return
    if args.decoder_only:
        decoder_inversion()
        return
    if args.full_only:
        print("LDM-256 architecture, random weights, one 256x256 face, 50 steps:")
        full_run(ldm_celebahq_256_random(), 50)
        return
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")

    print("\n== Speed: CompVis/ldm-celebahq-256 architecture, random weights ==")
    ldm = ldm_celebahq_256_random()
    params = sum(p.numel() for p in ldm.unet.parameters()) / 1e6
    per_eval = time_unet(ldm)
    enc, dec = time_autoencoder(ldm)
    print(f"  UNet {params:.0f} M parameters: {per_eval:.2f} s per evaluation (batch 1, 3x64x64 latent)")
    print(f"  VQ-f4 autoencoder: encode {enc:.2f} s, decode {dec:.2f} s (256x256)")
    tiny = tiny_pixel_model(32)
    _, evals_tiny = round_trip_error(tiny, 50, 10)
    print(f"  UNet evals per direction at 50 steps (tiny model, default refinement): {evals_tiny}")
    print(f"  => estimated anonymize+recover at 50 steps: {2 * evals_tiny * per_eval / 60:.1f} min "
          f"(plain DDIM, the paper's cost: {2 * 100 * per_eval / 60:.1f} min)")
    if args.full:
        print("  measured, one 256x256 face, 50 steps (random weights converge slower than trained ones):")
        full_run(ldm, 50)
    del ldm

    models = {"tiny pixel 32": tiny_pixel_model(32), "tiny latent VQ 32": tiny_latent_model(32)}
    if model_available("faceveil-faces-64"):
        models["faceveil-faces-64"] = load_model("faceveil-faces-64")
    print("\n== Exactness: max |z0 - sample(invert(z0))|, no key (latent units) ==")
    print(f"  {'model':20s} {'steps':>5s} {'plain':>10s} {'refine 2':>10s} {'refine 5':>10s} {'refine 10':>10s}")
    for name, model in models.items():
        for steps in (10, 20, 50):
            errs = [inversion_error(model, steps, k) for k in (0, 2, 5, 10)]
            print(f"  {name:20s} {steps:5d} " + " ".join(f"{e:10.2e}" for e in errs))
    print("\n== Exactness: anonymize then recover with the key, max latent error inside the mask ==")
    print(f"  {'model':20s} {'steps':>5s} {'plain':>10s} {'refined':>10s} {'evals plain':>12s} {'evals refined':>14s}")
    for name, model in models.items():
        for steps in (10, 20, 50):
            plain, ev0 = round_trip_error(model, steps, 0)
            refined, ev1 = round_trip_error(model, steps, 10)
            print(f"  {name:20s} {steps:5d} {plain:10.2e} {refined:10.2e} {ev0:12d} {ev1:14d}")
    compare_contexts()
    decoder_inversion()


def decoder_inversion() -> None:
    """PSNR of decode(encode(x)) against x with 0..100 decoder-inversion iterations, and their cost."""
    print("\n== Decoder inversion (latent models): PSNR of decode(z) vs the image, seconds ==")
    g = torch.Generator().manual_seed(0)
    for name, model in (("tiny VQ 64", tiny_latent_model(64)), ("tiny KL 64", tiny_latent_model(64, autoencoder="kl"))):
        x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=64, mode="bilinear") * 2 - 1
        row = []
        for iters in (0, 20, 50, 100):
            start = time.perf_counter()
            z = model.encode(x, refine_iters=iters)
            seconds = time.perf_counter() - start
            mse = float(((model.decode(z) - x) ** 2).mean())
            row.append(f"{10 * np.log10(4 / mse):5.1f} dB ({seconds:4.1f} s)")
        print(f"  {name:11s} iterations 0/20/50/100: " + "  ".join(row))
    ldm = ldm_celebahq_256_random()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    start = time.perf_counter()
    ldm.encode(x, refine_iters=1)
    print(f"  LDM-256 VQ-f4: encode + 1 decoder-inversion iteration: {time.perf_counter() - start:.1f} s")


def compare_contexts() -> None:
    print("\n== Context trajectory: anonymize then recover, tiny pixel 32, 20 steps, max latent error (UNet evals) ==")
    model = tiny_pixel_model(32)
    for context in ("noised", "inverted", "own"):
        row = []
        for iters in (0, 2, 5, 10):
            err, evals = round_trip_error(model, 20, iters, context=context)
            row.append(f"{err:9.2e} ({evals:3d})")
        print(f"  {context:9s} refine 0/2/5/10: " + "  ".join(row))


if __name__ == "__main__":
    main()

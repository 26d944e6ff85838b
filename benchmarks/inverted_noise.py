"""How far is a face's inverted noise from the Gaussian the model samples from? Per held-out face
and DDIM step count: the standard deviation, kurtosis and tails of the keyed noise inside the face
mask (before the noise gain), and outside it (the public noise, 1.0 by construction).

    python benchmarks/inverted_noise.py --model faceveil-faces-96-v3 --faces 8 --steps 10 20 40

The model samples from noise of deviation 1 and kurtosis 3. The noise gain (``EngineSettings.noise_gain``)
scales what inversion gives; this shows what it scales, face by face, and how that moves with the
step count (TRAINING.md, "Noise gain").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from face_quality import SHARED, held_out_photos  # noqa: E402  (the same held-out LFW photos)

from faceveil.api import find_faces  # noqa: E402
from faceveil.engine import EngineSettings  # noqa: E402
from faceveil.keys import Key  # noqa: E402
from faceveil.models import load_model  # noqa: E402
from faceveil.pipeline import Settings, _outline, face_geometry, keyed_noise  # noqa: E402  (_outline: the engine's own)


def noise_figures(z: torch.Tensor, inside: torch.Tensor) -> dict[str, float]:
    v = z[inside].double()
    a = v.abs()
    return {"std": float(v.std()), "kurtosis": float(((v - v.mean()) ** 4).mean() / v.var() ** 2),
            "median_abs": float(a.median()), "p99_abs": float(torch.quantile(a, 0.99)), "max_abs": float(a.max()),
            "share_above_3": float((a > 3).double().mean()), "outside_std": float(z[~inside].double().std())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="faceveil-faces-96-v3")
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[20])
    args = ap.parse_args()
    if not (SHARED / "data" / "lfw").is_dir():
        raise SystemExit(f"needs the LFW photos in {SHARED}")
    model = load_model(args.model)
    key = Key.generate()  # the figures do not depend on the key: scrambling keeps the values
    print(f"{args.model}; Gaussian: std 1, kurtosis 3, median |z| 0.674, p99 |z| 2.58, share above 3: 0.0027")
    print("| photo | steps | std | kurtosis | median abs | p99 abs | max abs | share above 3 | outside std |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    stds: dict[int, list[float]] = {n: [] for n in args.steps}
    used = 0
    for path in held_out_photos(args.faces):
        if used >= args.faces:
            break
        rgb = np.asarray(Image.open(path).convert("RGB"))
        jobs, _ = find_faces(rgb, model.image_size, framing=model.framing)
        if not jobs:
            continue
        used += 1
        job = dataclasses.replace(jobs[0], nonce=bytes(16))
        inside = face_geometry(rgb.shape, job.transform, _outline(job), model).latent > 0.5
        for n in args.steps:
            z = keyed_noise(rgb, key, model, job, Settings(EngineSettings(steps=n, noise_gain=1.0)))
            f = noise_figures(z, inside.expand_as(z))
            stds[n].append(f["std"])
            print(f"| {path.name} | {n} | {f['std']:.3f} | {f['kurtosis']:.2f} | {f['median_abs']:.3f} | {f['p99_abs']:.2f} "
                  f"| {f['max_abs']:.2f} | {f['share_above_3']:.4f} | {f['outside_std']:.3f} |", flush=True)
    for n in args.steps:
        print(f"{n} steps: std inside the mask, median {np.median(stds[n]):.3f} (range {min(stds[n]):.3f} to {max(stds[n]):.3f}) over {used} faces")


if __name__ == "__main__":
    main()

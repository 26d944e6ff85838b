"""Photos: faces found on LFW View 2, and seconds per photo spent outside the diffusion model.

    python benchmarks/photo_benchmark.py                 # every View 2 image, then 50 full round trips
    python benchmarks/photo_benchmark.py --n 500 --roundtrips 20

Part 1 runs detection on each distinct image of ``pairs.txt`` and counts images with at
least one face. Part 2 anonymizes and recovers photos end to end (residual on) with a
tiny 64 px pixel model and 4 DDIM steps, timing everything except the UNet calls and the
autoencoder (none for a pixel model): detection, alignment, masks, context fill,
hint, residual, paste-back, header sealing. It also checks each recovery is exact and
reports the header size, and the PSNR of recovery without the residual.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceveil.api import find_faces
from faceveil.container import pack_record
from faceveil.engine import EngineSettings
from faceveil.evaluate.lfw import pair_images
from faceveil.evaluate.metrics import psnr
from faceveil.faces import detect_faces
from faceveil.keys import Key
from faceveil.pipeline import Settings, anonymize_array, recover_array
from faceveil.testing import tiny_pixel_model


def view2_images(lfw: Path) -> list[Path]:
    return [lfw / "images" / rel for rel in pair_images(lfw / "pairs.txt")]


class TimedModel:
    """Wraps a DiffusionModel's eps to add up the seconds spent in the UNet."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0
        original = model.eps

        def eps(z, t):
            start = time.perf_counter()
            out = original(z, t)
            self.seconds += time.perf_counter() - start
            return out

        model.eps = eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--n", type=int, default=0, help="images for part 1 (0: all of View 2)")
    ap.add_argument("--roundtrips", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(2)
    images = view2_images(args.shared / "data" / "lfw")
    if args.n:
        images = images[: args.n]
    found, faces_total, start = 0, 0, time.perf_counter()
    for path in images:
        faces = detect_faces(np.asarray(Image.open(path).convert("RGB")))
        found += bool(faces)
        faces_total += len(faces)
    elapsed = time.perf_counter() - start
    print(f"LFW View 2: {found}/{len(images)} images with a face ({100 * found / len(images):.2f} %), "
          f"{faces_total} faces, {elapsed / len(images):.3f} s per image for detection")

    timed = TimedModel(tiny_pixel_model(64))
    model = timed.model
    key, settings = Key.generate(), Settings(EngineSettings(steps=4, refine_iters=10))
    overhead, exact, header_bytes, n_faces, model_only = [], 0, [], 0, []
    for path in images[: args.roundtrips]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        timed.seconds = 0.0
        t0 = time.perf_counter()
        jobs, _ = find_faces(rgb, model.image_size)
        if not jobs:
            continue
        veiled, record, _ = anonymize_array(rgb, key, model, faces=jobs, settings=settings)
        back, _ = recover_array(veiled, record, key, model)
        overhead.append(time.perf_counter() - t0 - timed.seconds)
        exact += bool(np.array_equal(back, rgb))
        plain, _ = recover_array(veiled, record, key, model, use_residual=False)
        model_only.append(psnr(plain, rgb))
        header_bytes.append(len(pack_record(record)))
        n_faces += len(jobs)
    print(f"round trips: {len(overhead)} photos ({n_faces} faces), exact recovery in {exact}/{len(overhead)}; "
          f"outside the model {np.mean(overhead):.3f} s per photo (anonymize + recover, median {np.median(overhead):.3f}); "
          f"header {np.mean(header_bytes) / 1024:.1f} KiB mean, {max(header_bytes) / 1024:.1f} KiB max "
          f"({Image.open(images[0]).size[0]} px photos, 64 px model)")
    print(f"without the residual (the model's reconstruction): PSNR {np.mean(model_only):.1f} dB mean, "
          f"{np.min(model_only):.1f} dB worst (what the model crop cannot hold)")


if __name__ == "__main__":
    main()

"""Acceptance figures of a pixel face model: do its samples look like faces, and does
DDIM inversion reproduce faces it never saw?

    python benchmarks/model_acceptance.py                           # the embedded draft model
    python benchmarks/model_acceptance.py --model src/faceveil/weights/faceveil-faces-64 --out /tmp/acc

1. ``--samples`` images drawn with deterministic DDIM (``--steps``) from seeded noise;
   each is upscaled to 256 px and counts as a face when mediapipe finds one in it.
2. ``--faces`` LFW people named in ``pairs.txt`` (left out of the training data): the
   largest detected face of each one's first image, aligned as inference aligns it,
   mapped to noise by plain DDIM inversion and sampled back; PSNR against the crop.

Identity figures (anonymized vs original, recovered vs original) come from
``faceveil evaluate``. With ``--out``, the sample grid and the inversion pairs are saved.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceveil.engine.ddim import Schedule, invert, sample
from faceveil.evaluate.metrics import psnr
from faceveil.faces import align_face, detect_faces
from faceveil.models import load_model
from faceveil.train.data import parse_lfw_pairs


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] to (B, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def has_face(img: np.ndarray, size: int = 256) -> bool:
    big = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
    return len(detect_faces(big, min_size=1, with_mesh=False)) > 0


def grid(images: list[np.ndarray], columns: int) -> Image.Image:
    h, w = images[0].shape[:2]
    rows = (len(images) + columns - 1) // columns
    canvas = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, im in enumerate(images):
        canvas[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w] = im
    return Image.fromarray(canvas)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="faceveil-faces-64-draft")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--faces", type=int, default=50)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    ap.add_argument("--out", default=None, help="folder for samples.png and inversion.png")
    args = ap.parse_args()

    model = load_model(args.model)
    if model.kind != "pixel":
        raise SystemExit("this benchmark is for pixel models")
    size = model.image_size
    schedule = Schedule.from_scheduler(model.scheduler, args.steps)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {"model": args.model, "weights_sha256": model.weights_hash, "steps": args.steps,
                                  "torch_threads": torch.get_num_threads()}

    # 1. samples
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    samples: list[np.ndarray] = []
    for start in range(0, args.samples, args.batch):
        n = min(args.batch, args.samples - start)
        z = torch.randn(n, 3, size, size, generator=gen, dtype=torch.float32)
        samples += list(to_uint8(sample(model.eps, schedule, z)))
    seconds = time.perf_counter() - t0
    detected = sum(has_face(s) for s in samples)
    figures["samples"] = {"n": len(samples), "face_detected": detected, "rate": detected / len(samples),
                          "seconds_per_sample": seconds / len(samples)}
    print(f"samples: {detected}/{len(samples)} with a face found by mediapipe "
          f"({100 * detected / len(samples):.1f} %), {seconds / len(samples):.2f} s per sample")
    if out:
        grid(samples, 8).save(out / "samples.png")

    # 2. held-out LFW faces: invert and regenerate
    lfw = Path(args.shared) / "data" / "lfw"
    if not (lfw / "pairs.txt").is_file():
        print(f"inversion: skipped, LFW not found in {lfw}")
    else:
        crops: list[np.ndarray] = []
        for name in sorted(parse_lfw_pairs(lfw / "pairs.txt")):
            if len(crops) >= args.faces:
                break
            img = np.asarray(Image.open(lfw / "images" / name / f"{name}_0001.jpg").convert("RGB"))
            faces = detect_faces(img, with_mesh=False)
            if not faces:
                continue
            face = max(faces, key=lambda f: f.width * f.height)
            crops.append(align_face(img, face, size)[0])
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
        t0 = time.perf_counter()
        regenerated: list[np.ndarray] = []
        for start in range(0, len(crops), args.batch):
            z_t = invert(model.eps, schedule, x[start:start + args.batch])[-1]
            regenerated += list(to_uint8(sample(model.eps, schedule, z_t)))
        seconds = time.perf_counter() - t0
        values = np.array([psnr(a, b) for a, b in zip(crops, regenerated)])
        figures["inversion"] = {"n": len(crops), "psnr_mean": float(values.mean()), "psnr_min": float(values.min()),
                                "psnr_median": float(np.median(values)), "share_at_least_30db": float((values >= 30).mean()),
                                "seconds_per_face": seconds / len(crops)}
        print(f"inversion + regeneration of {len(crops)} held-out LFW faces: PSNR mean {values.mean():.1f} dB, "
              f"median {np.median(values):.1f}, worst {values.min():.1f}; {100 * (values >= 30).mean():.0f} % "
              f">= 30 dB; {seconds / len(crops):.2f} s per face")
        if out:
            pairs = [im for pair in zip(crops[:16], regenerated[:16]) for im in pair]
            grid(pairs, 8).save(out / "inversion.png")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

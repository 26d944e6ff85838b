"""Choose the default steps and refinement from measurements on the embedded model.

For each configuration (DDIM steps, refinement iterations) over LFW photos: UNet
evaluations and seconds to anonymize + recover (recovery bit-exact, checked), sealed
header bytes per face, the model's reconstruction without the residual (face-region
PSNR), whether the anonymized face is still detected (mediapipe), and ArcFace cosine
similarity between original and anonymized faces (identity left; the LFW FAR 1e-3
threshold is 0.324).

    python benchmarks/step_defaults.py [--faces 8] [--model faceveil-faces-64-draft]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceveil.api import find_faces
from faceveil.engine import EngineSettings
from faceveil.evaluate.embedders import ArcFaceOnnxEmbedder
from faceveil.evaluate.metrics import region_psnr
from faceveil.faces import detect_faces
from faceveil.container import pack_record
from faceveil.keys import Key
from faceveil.models import load_model
from faceveil.pipeline import Settings, anonymize_array, face_geometry, recover_array

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFIGS = ((10, 0), (20, 0), (50, 0), (20, 2), (50, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--model", default="faceveil-faces-64-draft")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a shared CPU: 2 threads oversubscribe it badly)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    embedder = ArcFaceOnnxEmbedder()
    people = [p for p in sorted((SHARED / "data/lfw/images").iterdir()) if any(p.glob("*.jpg"))][::97][: args.faces]
    photos = [np.asarray(Image.open(next(p.glob("*.jpg"))).convert("RGB")) for p in people]
    key = Key.generate()
    print(f"model {args.model}, {len(photos)} LFW photos, torch threads {torch.get_num_threads()}")
    print("steps refine | UNet evals (anon+recover) | s/face | header B/face | PSNR no-residual | detected | ArcFace cos")
    for steps, refine in CONFIGS:
        settings = Settings(EngineSettings(steps=steps, refine_iters=refine))
        evals, secs, hbytes, psnrs, found, cos, faces = 0, 0.0, 0, [], 0, [], 0
        for rgb in photos:
            jobs, _ = find_faces(rgb, model.image_size)
            jobs = jobs[:1]
            count = [0]
            t0 = time.perf_counter()
            veiled, record, reports = anonymize_array(rgb, key, model, faces=jobs, settings=settings, progress=lambda n: count.__setitem__(0, count[0] + n))
            back, _ = recover_array(veiled, record, key, model, progress=lambda n: count.__setitem__(0, count[0] + n))
            secs += time.perf_counter() - t0
            assert np.array_equal(back, rgb), "recovery not exact"
            plain, _ = recover_array(veiled, record, key, model, use_residual=False)
            region = face_geometry(rgb.shape, jobs[0].transform, jobs[0].outline, model).region.full(rgb.shape)
            psnrs.append(region_psnr(plain, rgb, region))
            evals += count[0]
            hbytes += len(pack_record(record))
            faces += 1
            detected = detect_faces(veiled)
            found += bool(detected)
            original = detect_faces(rgb)[0]
            e0 = embedder.embed(rgb, original.landmarks5)
            e1 = embedder.embed(veiled, original.landmarks5)
            cos.append(float(e0 @ e1))
        print(
            f"{steps:5d} {refine:6d} | {evals / faces:24.0f} | {secs / faces:6.2f} | {hbytes / faces:13.0f} | "
            f"{np.mean(psnrs):6.1f} dB (worst {np.min(psnrs):.1f}) | {found}/{faces} | {np.mean(cos):.3f} (max {np.max(cos):.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""What the key's mixing costs: `signs` against `pairs` on LFW faces with the embedded model.

    python benchmarks/mixing_costs.py [--faces 8] [--threads 1]

For each face (the first image of each LFW View 2 person, every detected face) and each
mixing: exact recovery with the residual, the model-only reconstruction's face PSNR
(recovery without the residual) and the header's bytes. Needs ../shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from faceveil.api import find_faces
from faceveil.container import open_header, pack_record
from faceveil.engine import EngineSettings
from faceveil.evaluate.command import lfw_inputs
from faceveil.evaluate.metrics import psnr
from faceveil.imageio import read_image
from faceveil.keys import Key
from faceveil.models import load_model
from faceveil.pipeline import Settings, anonymize_array, face_geometry, recover_opened

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=8, help="LFW images (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    rows: dict[str, list[tuple[float, int, bool]]] = {"signs": [], "pairs": []}
    for path in lfw_inputs(SHARED / "data" / "lfw", args.faces):
        rgb = read_image(path).rgb
        jobs, _ = find_faces(rgb, model.image_size)
        if not jobs:
            continue
        for mixing in rows:
            key = Key.generate()
            out, record, _ = anonymize_array(rgb, key, model, faces=jobs, settings=Settings(EngineSettings(mixing=mixing)))
            public, private = open_header(key, record)
            model_only, _ = recover_opened(out, public, private, key, model, use_residual=False)
            exact, _ = recover_opened(out, public, private, key, model)
            region = np.zeros(rgb.shape[:2], bool)
            for face, job in zip(private["faces"], jobs):
                outline = np.frombuffer(face["outline"], "<f4").reshape(-1, 2).astype(np.float64)
                region |= face_geometry(rgb.shape, job.transform, outline, model).region.full(rgb.shape) > 0
            rows[mixing].append((psnr(model_only[region], rgb[region]), len(pack_record(record)), np.array_equal(exact, rgb)))
    print("| mixing | images | exact with the residual | model-only face PSNR, median (min) | header bytes, mean |")
    print("|---|---|---|---|---|")
    for mixing, r in rows.items():
        p = np.array([x[0] for x in r])
        print(f"| {mixing} | {len(r)} | {sum(x[2] for x in r)}/{len(r)} | {np.median(p):.2f} dB ({p.min():.2f}) | "
              f"{np.mean([x[1] for x in r]):.0f} |")


if __name__ == "__main__":
    main()

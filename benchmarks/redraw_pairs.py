"""What the redraws change, in pictures: for named held-out LFW photos, the original, the faces
drawn once (``redraws=0``) and the faces kept with redraws, side by side at 256 px, with the same
seeded keys and nonces as ``face_quality.py --seed S`` (so the middle column is that run's face).

    python benchmarks/redraw_pairs.py --seed 5 --out pairs.jpg Emelie_Loit Ben_Chandler
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import face_quality as fq  # the benchmark's seeded keys and held-out photos

from faceveil.api import find_faces
from faceveil.models import load_model
from faceveil.pipeline import DEFAULT_REDRAWS, Settings, anonymize_array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="LFW people (their _0001 photo)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--redraws", type=int, default=DEFAULT_REDRAWS)
    ap.add_argument("--detail-floor", type=float, default=None, help="override the model's (an experiment)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = load_model(args.model)
    if args.detail_floor is not None:
        model.detail_floor = args.detail_floor
    draw = fq.Keys(args.seed)
    rows = []
    for name in args.names:
        path = fq.SHARED / "data" / "lfw" / "images" / name / f"{name}_0001.jpg"
        rgb = np.asarray(Image.open(path).convert("RGB"))
        jobs, _ = find_faces(rgb, model.image_size, framing=model.framing)
        tiles = [rgb]
        for redraws in (0, args.redraws):
            key, keyed = draw.draw(path.name, 0, jobs)
            out, _, reports = anonymize_array(rgb, key, model, faces=keyed, settings=Settings.for_model(model), redraws=redraws)
            tiles.append(out)
        print(f"{name}: redrawn for {[r.redrawn_for for r in reports]}", flush=True)
        rows.append(np.concatenate([cv2.resize(t, (256, 256), interpolation=cv2.INTER_CUBIC) for t in tiles], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out, quality=90)


if __name__ == "__main__":
    main()

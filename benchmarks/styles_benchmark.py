"""Styles: seconds, header bytes and exactness of each ``--style``, and how often the fallback serves.

    python benchmarks/styles_benchmark.py                      # astronaut (ships with scikit-image)
    python benchmarks/styles_benchmark.py --lfw ../shared/data/lfw --n 150 --picture docs/images/styles.jpg

Part 1 anonymizes and recovers scikit-image's ``astronaut`` through ``faceveil.api`` with
the embedded model, once per style, and prints the seconds of each direction, the header
size and whether recovery is bit-exact. Part 2 (with ``--lfw``) runs detection and
``treatments.plan_face`` on every 40th LFW ``*_0001.jpg`` and counts the faces that get
the fallback, by reason. ``--picture`` writes the four styles side by side.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from faceveil import api
from faceveil.container import pack_record, read_record
from faceveil.faces import detect_faces
from faceveil.faces.visible import STYLES
from faceveil.keys import Key
from faceveil.models import load_model
from faceveil.treatments import plan_face


def styles(picture: Path | None) -> None:
    model, key = load_model(None), Key.generate()
    image = np.ascontiguousarray(skimage.data.astronaut())
    shown = []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "astronaut.png"
        Image.fromarray(image).save(source)
        print(f"astronaut 512x512, model {model.model_id}")
        print("style     anonymize_s  recover_s  header_bytes  exact")
        for style in STYLES:
            t0 = time.perf_counter()
            veiled = api.anonymize(source, key, Path(folder) / f"{style}.veiled.png", model=model, style=style)
            t1 = time.perf_counter()
            recovered = api.recover(veiled.outputs[0], key, Path(folder) / f"{style}.recovered.png", model=model)
            t2 = time.perf_counter()
            exact = np.array_equal(np.asarray(Image.open(recovered.outputs[0])), image)
            header = len(pack_record(read_record(veiled.outputs[0])))
            print(f"{style:9s} {t1 - t0:11.2f}  {t2 - t1:9.2f}  {header:12d}  {exact}")
            shown.append(np.asarray(Image.open(veiled.outputs[0]).convert("RGB"))[30:250, 110:340])
    if picture is not None:
        Image.fromarray(np.concatenate([image[30:250, 110:340], *shown], axis=1)).save(picture, quality=90)
        print(f"wrote {picture} (original, then {', '.join(STYLES)})")


def fallbacks(lfw: Path, n: int) -> None:
    paths = sorted((lfw / "images").glob("*/*_0001.jpg"))[::40][:n]
    reasons: collections.Counter = collections.Counter()
    faces = 0
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for face in detect_faces(rgb):
            faces += 1
            _, problem = plan_face(face, rgb.shape, 64)
            if problem:
                reasons[problem.split(" (")[0]] += 1
    print(f"LFW: {len(paths)} photos, {faces} faces, {sum(reasons.values())} given the fallback: {dict(reasons)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=None, help="an LFW folder (images/NAME/NAME_0001.jpg)")
    parser.add_argument("--n", type=int, default=150, help="LFW photos for the fallback count")
    parser.add_argument("--picture", type=Path, default=None, help="write the styles side by side here")
    args = parser.parse_args()
    styles(args.picture)
    if args.lfw is not None:
        fallbacks(args.lfw, args.n)


if __name__ == "__main__":
    main()

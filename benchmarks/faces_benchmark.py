"""Face detection + alignment + mask on the first LFW View 2 images.

Usage: python benchmarks/faces_benchmark.py [--n 200] [--size 256] [--shared PATH]

Reads the images listed first in ../shared/data/lfw/pairs.txt (each image once, in
order), and reports how many have at least one face, how many got a face mesh, and
the mean wall-clock seconds per image for detect_faces + align_face + face_mask
(models created beforehand, not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from faceveil.faces import align_face, detect_faces, face_mask
from faceveil.evaluate.lfw import pair_images as lfw_pair_images
from faceveil.imageio import read_image


def pair_images(pairs: Path, n: int) -> list[Path]:
    """The first ``n`` distinct image paths named by an LFW pairs file."""
    return [pairs.parent / "images" / rel for rel in lfw_pair_images(pairs)[:n]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = ap.parse_args()
    pairs = args.shared / "data" / "lfw" / "pairs.txt"
    if not pairs.is_file():
        print(f"skipped: {pairs} not found", file=sys.stderr)
        return 0
    paths = pair_images(pairs, args.n)
    images = [read_image(p).rgb for p in paths]

    t0 = time.perf_counter()
    detect_faces(images[0])  # creates the MediaPipe graphs
    startup = time.perf_counter() - t0

    found = with_mesh = multi = small = 0
    times = []
    for img in images:
        t = time.perf_counter()
        faces = detect_faces(img)
        for f in faces:
            crop, tr = align_face(img, f, args.size)
            face_mask(f, tr)
        times.append(time.perf_counter() - t)
        found += bool(faces)
        multi += len(faces) > 1
        with_mesh += any(f.mesh is not None for f in faces)
        small += any(f.too_small for f in faces)
    times_a = np.array(times)
    print(f"images: {len(images)} (first distinct images of {pairs.name}, View 2)")
    print(f"with >= 1 face: {found} ({100 * found / len(images):.1f} %)")
    print(f"with a face mesh: {with_mesh}; with > 1 face: {multi}; with a too-small face: {small}")
    print(f"model start-up: {startup:.2f} s")
    print(
        f"detect + align ({args.size}) + mask per image: mean {times_a.mean():.4f} s, "
        f"median {np.median(times_a):.4f} s, max {times_a.max():.4f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

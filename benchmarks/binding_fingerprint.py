"""How far re-encoding and other photos move the header-binding fingerprint (faceveil.binding).

Usage: python benchmarks/binding_fingerprint.py [LFW_FOLDER] [N]   (default ../shared/data/lfw, 60 photos)
Prints, per re-encoding, the largest and median per-region distance (grey levels) between a photo's
fingerprint and its re-encoded copy, and the smallest and median distance between consecutive
different photos of the same size; the refusal threshold is binding.TOLERANCE.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from faceveil.binding import TOLERANCE, distances, fingerprint


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lfw"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    files = sorted(folder.rglob("*.jpg"))[:n]
    if not files:
        sys.exit(f"no photos under {folder}")
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    # one face box in the middle of each photo, as an LFW face sits (the box only picks a region)
    def public(a: np.ndarray) -> dict:
        h, w = a.shape[:2]
        return {"faces": [{"transform": {"matrix": [[1.0, 0.0, -w / 4], [0.0, 1.0, -h / 4]], "size": min(h, w) // 2}}]}

    def reencode(a: np.ndarray, fmt: str, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, fmt, quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    print(f"{len(photos)} photos from {folder}; threshold {TOLERANCE} grey levels")
    for fmt, quality in (("JPEG", 95), ("WEBP", 95), ("JPEG", 75), ("JPEG", 50)):
        d = [max(distances(reencode(a, fmt, quality), public(a), fingerprint(a, public(a)))) for a in photos]
        print(f"{fmt} quality {quality}: max {max(d):.2f}, median {np.median(d):.2f}")
    cross = [max(distances(b, public(a), fingerprint(a, public(a)))) for a, b in zip(photos, photos[1:]) if a.shape == b.shape]
    print(f"different photos ({len(cross)} pairs): min {min(cross):.2f}, median {np.median(cross):.2f}, max {max(cross):.2f}")


if __name__ == "__main__":
    main()

"""Large photos end to end with the default (embedded) model: the README's figures and pictures.

A 1024 px portrait with a 600 px face and a 4000 px photo of six people, both built
from ../shared (``faceveil.testing``), go through ``faceveil.anonymize`` and
``faceveil.recover`` as files. Printed per photo: seconds, UNet evaluations, bit-exact
recovery, the seam measure (``evaluate.metrics.seam_measure``) and header bytes per
face against the encrypted-crop baseline (the original region, lossless WebP, sealed).
With ``--figures DIR`` it writes before/after pictures for the README.

    python benchmarks/large_photos.py [--figures docs/images] [--model M] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import faceveil
from faceveil.container import open_header, pack_record, read_record
from faceveil.evaluate.baselines import EncryptedCropBaseline
from faceveil.evaluate.metrics import seam_measure
from faceveil.faces.align import AlignTransform
from faceveil.pipeline import FaceJob
from faceveil.testing import group_photo, portrait_photo

SHARED = Path(__file__).resolve().parents[2] / "shared"


def side_by_side(before: np.ndarray, after: np.ndarray, width: int) -> Image.Image:
    h, w = before.shape[:2]
    scale = width / (2 * w)
    size = (int(w * scale), int(h * scale))
    out = Image.new("RGB", (2 * size[0] + 8, size[1]), (255, 255, 255))
    out.paste(Image.fromarray(before).resize(size, Image.LANCZOS), (0, 0))
    out.paste(Image.fromarray(after).resize(size, Image.LANCZOS), (size[0] + 8, 0))
    return out


def run(name: str, rgb: np.ndarray, model, steps: int | None, figures: Path | None, work: Path) -> None:
    key = faceveil.generate_key()
    src = work / f"{name}.png"
    Image.fromarray(rgb).save(src)
    counter = [0]

    def count(n: int) -> None:
        counter[0] += n

    t0 = time.perf_counter()
    result = faceveil.anonymize(src, key, model=model, steps=steps, progress=count)
    t1 = time.perf_counter()
    anon_evals = counter[0]
    back = faceveil.recover(result.outputs[0], key, model=model, progress=count)
    t2 = time.perf_counter()
    veiled = np.asarray(Image.open(result.outputs[0]).convert("RGB"))
    recovered = np.asarray(Image.open(back.outputs[0]).convert("RGB"))
    record = read_record(result.outputs[0])
    public, private = open_header(key, record)
    jobs = [
        FaceJob(AlignTransform.from_json(f["transform"]), np.frombuffer(p["outline"], dtype="<f4").reshape(-1, 2))
        for f, p in zip(public["faces"], private["faces"])
    ]
    baseline = EncryptedCropBaseline().anonymize(rgb, jobs, key)
    n = max(1, len(jobs))
    ours, theirs = len(pack_record(record)) / n, len(pack_record(baseline.record)) / n
    seam = seam_measure(rgb, veiled)
    print(
        f"{name}: {rgb.shape[1]}x{rgb.shape[0]}, {len(jobs)} faces | anonymize {t1 - t0:.1f} s ({anon_evals} UNet evals), "
        f"recover {t2 - t1:.1f} s ({counter[0] - anon_evals}) | bit-exact {np.array_equal(recovered, rgb)} | "
        f"seam ratio {seam.ratio:.2f} (worst sector {seam.worst:.2f}) | header {ours / 1024:.1f} KiB/face vs "
        f"encrypted crop {theirs / 1024:.1f} KiB/face ({ours / theirs:.2f}x); image PNG {src.stat().st_size / 1024:.0f} KiB",
        flush=True,
    )
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
        side_by_side(rgb, veiled, 1400).save(figures / f"{name}_before_after.jpg", quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--model", default=None, help="default: the embedded default model")
    parser.add_argument("--steps", type=int, default=None, help="default: the default settings")
    parser.add_argument("--only", choices=("portrait", "group"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = faceveil.load_model(args.model) if args.model else faceveil.load_model()
    print(f"model {model.model_id}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "portrait"):
            run("portrait", portrait_photo(SHARED), model, args.steps, args.figures, Path(tmp))
        if args.only in (None, "group"):
            run("group", group_photo(SHARED), model, args.steps, args.figures, Path(tmp))


if __name__ == "__main__":
    main()

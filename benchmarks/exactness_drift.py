"""How far recovery's float prediction drifts from anonymization's, and what the sealed ties cost.

Recovery predicts each face's pixels with float32 UNet arithmetic and rounds them; the
residual sealed at anonymization is exact only if recovery rounds to the same integers.
This anonymizes LFW photos in one batch (one torch thread, ``--batch`` faces per UNet
evaluation) and recovers each alone with ``--threads`` torch threads, then reports per
face: the largest drift between the two float predictions, how many integers plain
rounding would have flipped, how many samples carry a sealed tie code, what the codes
cost in the residual's bytes, and whether recovery was bit-exact and verified.

The embedded draft model predicts LFW faces worse than the codec codes the originals, so
it would seal the original region and never run the model at recovery; this benchmark
seals the residual for every face (the prediction path is what it measures).

    python benchmarks/exactness_drift.py [--photos 8] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads at recovery (anonymization: 1)")
    args = parser.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW photos not found at {LFW}")

    from faceveil import pipeline
    from faceveil.api import find_faces
    from faceveil.imageio import read_image
    from faceveil.keys import Key
    from faceveil.models import load_model
    from faceveil.residual import TIE_BAND, encode_residual, encode_ties, tie_codes

    pipeline.encode_region = lambda original, inside: b"\0" * (1 << 30)  # seal the residual for every face
    predictions: list[list[np.ndarray]] = []
    real = pipeline._predict

    def recording(run, faces, colours, hints):
        values, reports = real(run, faces, colours, hints)
        predictions.append(values)
        return values, reports

    pipeline._predict = recording
    model, key = load_model(), Key.generate()
    photos = []
    for path in sorted(LFW.glob("*/*_0001.jpg"))[: args.photos]:
        rgb = read_image(path).rgb
        jobs, _ = find_faces(rgb, model.image_size)
        if jobs:
            photos.append(pipeline.PhotoJob(rgb, jobs[:1]))
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = pipeline.anonymize_arrays(photos, key, model, batch_size=args.batch)
    print(f"{len(photos)} LFW faces anonymized in batches of {args.batch} (1 thread) in {time.perf_counter() - started:.1f} s; "
          f"recovered one by one with {args.threads} threads; tie band {TIE_BAND:.4f} grey levels")
    made = [v for call in predictions for v in call]  # the replay's predictions, one per face, in photo order
    torch.set_num_threads(args.threads)
    print("| face | samples | max drift (grey levels) | plain rounding would flip | tie-coded samples | residual bytes | tie codes bytes | exact | verified |")
    print("|---|---|---|---|---|---|---|---|---|")
    drifts, flips, ties_total, samples_total, exact_all = [], 0, 0, 0, True
    for i, ((array, record, _), photo) in enumerate(zip(results, photos)):
        predictions.clear()
        out, info = pipeline.recover_array(array, record, key, model)
        seen = predictions[0][0]
        drift = float(np.abs(seen - made[i]).max())
        flipped = int((np.rint(seen) != np.rint(made[i])).sum())
        codes = tie_codes(made[i])
        face = photo.faces[0]
        geometry = pipeline.face_geometry(photo.rgb.shape, face.transform, pipeline._outline(face), model)
        region = geometry.region
        y0, y1, x0, x1 = region.bounds
        box = pipeline.residual_image(photo.rgb[y0:y1, x0:x1], pipeline._box(pipeline.round_prediction(made[i], codes), region), region.inside)
        without = len(encode_residual(box))
        ties_bytes = len(encode_ties(codes))
        exact = bool(np.array_equal(out, photo.rgb))
        exact_all &= exact
        drifts.append(drift)
        flips += flipped
        ties_total += int((codes > 0).sum())
        samples_total += codes.size
        print(f"| {i + 1} | {codes.size} | {drift:.2e} | {flipped} | {int((codes > 0).sum())} ({(codes > 0).mean():.1%}) | "
              f"{without:,} | {ties_bytes:,} ({ties_bytes / without:.0%}) | {'yes' if exact else 'NO'} | {'yes' if info.verified and not info.inexact_faces else 'NO'} |")
    print(f"\nall: max drift {max(drifts):.2e} grey levels ({TIE_BAND / max(drifts):.0f} times below the band), "
          f"{flips} integer(s) plain rounding would have got wrong, {ties_total / samples_total:.1%} of samples tie-coded, "
          f"every face exact: {'yes' if exact_all else 'NO'}")


if __name__ == "__main__":
    main()

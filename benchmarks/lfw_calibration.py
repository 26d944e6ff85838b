"""Calibrate face-recognition thresholds on LFW View 2 and check the harness.

Runs the standard protocol (6,000 pairs, 10 folds, YuNet 5-point alignment, cosine
similarity) for each requested embedder and prints accuracy, AUC and the thresholds
at FAR 1e-2 / 1e-3 beside the reference figures of ``shared/README.md``.

    python benchmarks/lfw_calibration.py                       # all available embedders
    python benchmarks/lfw_calibration.py -e arcface-onnx -e dlib
    python benchmarks/lfw_calibration.py -e arcface-onnx --resolution 64
    python benchmarks/lfw_calibration.py --folds 0 1 --json out.json

Images are resized to ``--resolution`` (longer side) before detection and embedding:
calibrate at the resolution being evaluated. ``--cache-dir`` keeps per-image
embeddings in .npz files for re-runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from faceveil.errors import ModelUnavailableError
from faceveil.evaluate.embedders import available_embedders, get_embedder
from faceveil.evaluate.lfw import evaluate_lfw

SHARED = Path(__file__).resolve().parents[2] / "shared"

#: shared/README.md: accuracy, (threshold, TAR) at FAR 1e-2 and 1e-3 (native resolution).
REFERENCE = {
    "arcface-onnx": (0.9855, (0.246, 0.982), (0.325, 0.971)),
    "mobilefacenet-tflite": (0.9862, (0.348, 0.982), (0.448, 0.961)),
    "dlib": (0.9845, (0.906, 0.979), (0.921, 0.943)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-e", "--embedder", action="append", help="embedder name (repeatable)")
    ap.add_argument("--lfw-dir", type=Path, default=SHARED / "data" / "lfw")
    ap.add_argument("--resolution", type=int, default=None, help="longer side in pixels")
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="0-based folds")
    ap.add_argument(
        "--face-policy",
        default="largest",
        choices=("largest", "central", "score"),
        help="which face to use in images with several (reference: largest)",
    )
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the reports here")
    args = ap.parse_args(argv)

    if not (args.lfw_dir / "pairs.txt").is_file():
        print(f"LFW not found at {args.lfw_dir}", file=sys.stderr)
        return 2
    names = args.embedder or available_embedders()
    reports = []
    t_all = time.perf_counter()
    for name in names:
        try:
            emb = get_embedder(name)
        except ModelUnavailableError as e:
            print(f"{name}: skipped ({e})")
            continue
        cache = None
        if args.cache_dir is not None:
            res = "native" if args.resolution is None else str(args.resolution)
            cache = args.cache_dir / f"lfw_{name}_{res}_{args.face_policy}.npz"
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] > 30 or done == total:
                last[0] = now
                print(f"  [{name}] {done}/{total} images", file=sys.stderr, flush=True)

        rep = evaluate_lfw(
            emb,
            args.lfw_dir,
            resolution=args.resolution,
            folds=args.folds,
            face_policy=args.face_policy,
            cache_file=cache,
            progress=progress,
        )
        print(rep.summary())
        ref = REFERENCE.get(name)
        if (
            ref is not None
            and args.resolution is None
            and args.folds is None
            and args.face_policy == "largest"
        ):
            acc, (t2, r2), (t3, r3) = ref
            got2, got3 = rep.far_thresholds[0], rep.far_thresholds[1]
            print(
                f"  reference: accuracy {100 * acc:.2f} % (diff {100 * (rep.accuracy - acc):+.2f} pt),"
                f" FAR 1e-2 {t2:.3f} ({100 * r2:.1f} %) vs {got2.threshold:.3f},"
                f" FAR 1e-3 {t3:.3f} ({100 * r3:.1f} %) vs {got3.threshold:.3f}"
            )
        print(f"  per-fold accuracy: {' '.join(f'{100 * a:.2f}' for a in rep.fold_accuracies)}")
        sys.stdout.flush()
        reports.append(rep.as_dict())
    print(f"total wall time {time.perf_counter() - t_all:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

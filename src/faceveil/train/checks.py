"""Do training crops look like inference crops? Measurements on a prepared face set.

Per source (the first part of each crop's source path): the mean crop and a few sample
crops side by side in one PNG; the filled fraction; the face detector run again on a
sample of crops (upscaled to ``detect_side`` pixels, as the model's output is pasted
back larger) with the found landmarks compared to
:data:`faceveil.faces.CANONICAL_LANDMARKS5`; and the sharpness (variance of the
Laplacian) of the crop's outer ring against its centre, where a blurred fill shows.

``python -m faceveil.train.checks SET OUT_DIR`` writes ``OUT_DIR/check.json`` and
``OUT_DIR/means.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceveil.train.chunks import load_face_set

__all__ = ["check_face_set", "main"]


def _sharpness(crops: np.ndarray) -> tuple[float, float]:
    """Mean Laplacian variance of the outer ring (outside 70 % of the side) and of the centre."""
    s = crops.shape[1]
    yy, xx = np.mgrid[0:s, 0:s]
    r = np.maximum(np.abs(xx - (s - 1) / 2), np.abs(yy - (s - 1) / 2)) / (s / 2)
    ring, centre = r > 0.7, r < 0.5
    outer, inner = [], []
    for c in crops:
        lap = cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
        outer.append(float(lap[ring].var()))
        inner.append(float(lap[centre].var()))
    return float(np.mean(outer)), float(np.mean(inner))


def _redetect(crops: np.ndarray, side: int) -> dict[str, Any]:
    from faceveil.faces import CANONICAL_LANDMARKS5, detect_faces
    from faceveil.train.data import _pick_face

    found, errors, points = 0, [], []
    for c in crops:
        big = cv2.resize(c, (side, side), interpolation=cv2.INTER_CUBIC)
        face = _pick_face(detect_faces(big), big.shape)
        if face is None:
            continue
        found += 1
        lm = (np.asarray(face.landmarks5) + 0.5) / side
        points.append(lm)
        errors.append(float(np.linalg.norm(lm - CANONICAL_LANDMARKS5, axis=1).mean()))
    return {
        "sampled": int(len(crops)),
        "detected": found,
        "detected_share": found / max(1, len(crops)),
        "landmark_error_mean": float(np.mean(errors)) if errors else None,
        "landmark_error_p95": float(np.percentile(errors, 95)) if errors else None,
        "landmarks_mean": np.mean(points, axis=0).round(4).tolist() if points else None,
    }


def check_face_set(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    sample: int = 200,
    samples_shown: int = 6,
    detect_side: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure a face set per source; write ``check.json`` and ``means.png`` to ``out_dir``."""
    fd = load_face_set(path, verify=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = np.array([s.split("/", 1)[0] for s in fd.sources])
    prov_sources = (fd.manifest.get("sources") or {}) if isinstance(fd.manifest, dict) else {}
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"set": str(path), "images": len(fd), "size": fd.size, "sources": {}}
    tiles = []
    for name in sorted(set(groups.tolist()), key=lambda n: (not n.startswith("shared"), n)):
        idx = np.flatnonzero(groups == name)
        pick = rng.choice(idx, min(sample, len(idx)), replace=False)
        crops = fd.images[pick]
        outer, inner = _sharpness(crops)
        entry: dict[str, Any] = {
            "crops": int(len(idx)),
            "sharpness_outer_ring": round(outer, 1),
            "sharpness_centre": round(inner, 1),
            "redetect": _redetect(crops, detect_side),
        }
        if name in prov_sources:
            entry["filled_mean"] = prov_sources[name].get("filled", {}).get("mean")
        result["sources"][name] = entry
        mean = fd.images[idx].astype(np.float64).mean(axis=0).round().astype(np.uint8)
        shown = [fd.images[i] for i in pick[:samples_shown]]
        row = [mean] + shown + [np.zeros_like(mean)] * (samples_shown - len(shown))
        tiles.append(np.concatenate(row, axis=1))
    grid = np.concatenate(tiles, axis=0)
    scale = max(1, 128 // fd.size)
    grid = cv2.resize(grid, (grid.shape[1] * scale, grid.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out / "means.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    result["means_png"] = "means.png: per source (rows) the mean crop, then samples"
    (out / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceveil.train.checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("set", help="face set folder, provenance.json or .npz")
    parser.add_argument("out", help="folder for check.json and means.png")
    parser.add_argument("--sample", type=int, default=200, help="crops per source to re-detect (default: 200)")
    args = parser.parse_args(argv)
    result = check_face_set(args.set, args.out, sample=args.sample)
    for name, e in result["sources"].items():
        r = e["redetect"]
        print(
            f"{name}: {e['crops']} crops, filled {e.get('filled_mean') or 0:.1%}, re-detected "
            f"{r['detected']}/{r['sampled']}, landmark error {r['landmark_error_mean'] or float('nan'):.4f}, "
            f"sharpness ring/centre {e['sharpness_outer_ring']}/{e['sharpness_centre']}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

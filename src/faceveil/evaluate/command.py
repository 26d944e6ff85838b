"""CLI hook: ``faceveil evaluate`` (the evaluation protocols on a folder or on LFW).

:func:`register` adds the subcommand to an argparse subparsers object; its ``func``
takes the parsed arguments and returns an exit code (errors are raised as
:class:`faceveil.errors.FaceveilError`, whose ``exit_code`` applies). This module
loads inputs, calibrates thresholds on LFW View 2, runs
:func:`~faceveil.evaluate.protocols.run_protocols` and writes the report.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.engine import EngineSettings
from faceveil.errors import ModelUnavailableError, UsageError

__all__ = [
    "register",
    "run_evaluate",
    "default_shared",
    "lfw_inputs",
    "folder_inputs",
    "subset_pairs_file",
    "calibrate",
    "make_samples",
]

DEFAULT_EMBEDDERS = "arcface-onnx,dlib"
FARS = (1e-2, 1e-3)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def default_shared() -> Path:
    """``shared/`` beside the checkout (src layout), else ``../shared`` from the cwd."""
    here = Path(__file__).resolve()
    candidates = [here.parents[4] / "shared"] if len(here.parents) > 4 else []
    candidates.append(Path.cwd().parent / "shared")
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    from faceveil.models import DEFAULT_MODEL

    p = subparsers.add_parser(
        "evaluate",
        help="run the evaluation protocols and write report.md, results.json and figures",
        description=(
            "Anonymize and recover the faces of a folder of photos (or LFW View 2 images with --lfw) "
            "with faceveil, the paper's reference configuration, Gaussian blur and pixelation, and "
            "measure identity removal (thresholds calibrated on LFW View 2 at the evaluated "
            "resolution), recovery, keys, robustness, diversity, utility, the |z_T| linkage attack "
            "and cost. Writes report.md, results.json and figures/*.png into --out."
        ),
    )
    p.add_argument("folder", nargs="?", help="folder of photos (one evaluated face per photo: the largest)")
    p.add_argument("--lfw", action="store_true", help="evaluate LFW View 2 images (one per person) from --shared")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"preset, hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--tiny", choices=("pixel", "latent"), default=None,
                   help="use a tiny random-weight model instead of --model (smoke runs: identity figures meaningless)")
    p.add_argument("--steps", type=int, default=EngineSettings().steps, help="DDIM steps of every diffusion method (the paper: 50)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate at most N faces (default: all of a folder, 100 of LFW)")
    p.add_argument("--embedders", default=DEFAULT_EMBEDDERS, help=f"comma-separated (default {DEFAULT_EMBEDDERS})")
    p.add_argument("--methods", default="blur,pixelate,paper,faceveil", help="comma-separated: blur, pixelate, paper, faceveil, encrypted-crop (the header-size baseline), faceveil-signs (sign flips only, the paper's mixing), faceveil-pairs (the default mixing, named)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="resize inputs so their longer side is PX before evaluating (and calibrate at PX); default native")
    p.add_argument("--calibration", choices=("lfw", "none"), default="lfw",
                   help="thresholds from LFW View 2 (default) or none (no match rates)")
    p.add_argument("--calibration-folds", type=int, default=10, metavar="K", help="LFW folds used (default 10)")
    p.add_argument("--calibration-pairs", type=int, default=None, metavar="N",
                   help="same and different pairs per fold (default: all 300)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "faceveil" / "lfw"), metavar="DIR",
                   help="where LFW embeddings are cached (default ~/.cache/faceveil/lfw)")
    p.add_argument("--shared", default=None, metavar="DIR", help="shared data folder (default: beside the checkout)")
    p.add_argument("--protocol-faces", type=int, default=5, metavar="K",
                   help="faces used by the key and robustness protocols (default 5)")
    p.add_argument("--diversity-keys", type=int, default=10, metavar="N", help="keys for the diversity protocol (default 10)")
    p.add_argument("--noise-gain", type=float, default=None, metavar="G",
                   help="keyed noise gain of the faceveil methods (default: the model's recommendation; "
                        "the paper's configuration keeps 1)")
    p.add_argument("--mask", choices=("face", "face+hair"), default="face", help="face mask (default face)")
    p.add_argument("--min-face", type=int, default=32, help="faces below this are still anonymized (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_evaluate)


# --------------------------------------------------------------------------- inputs
def lfw_inputs(lfw_dir: Path, limit: int | None) -> list[Path]:
    """The first image of each person of ``pairs.txt`` (file order), at most ``limit``."""
    from faceveil.evaluate.lfw import pair_images

    seen: dict[str, Path] = {}
    for rel in pair_images(lfw_dir / "pairs.txt"):
        person = rel.split("/")[0]
        if person not in seen:
            seen[person] = lfw_dir / "images" / rel
            if limit is not None and len(seen) >= limit:
                break
    return list(seen.values())


def folder_inputs(folder: Path, limit: int | None) -> list[Path]:
    """Image files of ``folder`` (sorted, not recursive), at most ``limit``."""
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return files[:limit] if limit is not None else files


def _resize_longer(rgb: np.ndarray, resolution: int | None) -> np.ndarray:
    import cv2

    if resolution is None:
        return rgb
    h, w = rgb.shape[:2]
    s = resolution / float(max(h, w))
    if s == 1.0:
        return rgb
    interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def make_samples(
    paths: Sequence[Path], size: int, detector: Any, resolution: int | None, mask: str, min_face: int,
    log: Callable[[str], None], framing: str = "ffhq",
) -> tuple[list[Any], list[str]]:
    """Read each photo, find its faces (the anonymizer's detector) and its main face
    (the evaluation detector's largest face); photos lacking either are skipped."""
    from faceveil.api import find_faces
    from faceveil.evaluate.protocols import Sample
    from faceveil.faces import CANONICAL_LANDMARKS5, transform_points
    from faceveil.imageio import read_image

    samples, notes = [], []
    for path in paths:
        try:
            rgb = _resize_longer(read_image(path).rgb, resolution)
        except UsageError as exc:
            notes.append(f"{path.name}: skipped, {exc}")
            continue
        landmarks = detector.landmarks5(rgb)
        if landmarks is None:
            notes.append(f"{path.name}: skipped, no face found by the evaluation detector")
            continue
        jobs, _ = find_faces(rgb, size, mask=mask, min_face=min_face, framing=framing)
        if not jobs:
            notes.append(f"{path.name}: skipped, no face found by the anonymizer")
            continue
        target = CANONICAL_LANDMARKS5 * size - 0.5
        dists = [float(np.linalg.norm(transform_points(landmarks, j.transform.matrix) - target, axis=1).mean()) for j in jobs]
        main = int(np.argmin(dists))
        if dists[main] > 0.15 * size:
            notes.append(f"{path.name}: skipped, the anonymizer's faces do not include the main face")
            continue
        samples.append(Sample(path.stem, np.ascontiguousarray(rgb), jobs, np.asarray(landmarks), main))
        log(f"input {path.name}: {len(jobs)} face(s)")
    return samples, notes


# --------------------------------------------------------------------------- calibration
def subset_pairs_file(lfw_dir: Path, folds: int, per_class: int | None, cache_dir: Path) -> str:
    """``pairs.txt`` itself, or a file with its first ``folds`` folds and ``per_class``
    same and different pairs of each (written into ``cache_dir``; absolute path)."""
    if folds >= 10 and per_class is None:
        return "pairs.txt"
    lines = [ln for ln in (lfw_dir / "pairs.txt").read_text().splitlines() if ln.strip()]
    n_sets, n_per = (int(x) for x in lines[0].split())
    folds = max(2, min(folds, n_sets))
    per = n_per if per_class is None else max(1, min(per_class, n_per))
    body = lines[1:]
    out = [f"{folds}\t{per}"]
    for k in range(folds):
        block = body[k * 2 * n_per:(k + 1) * 2 * n_per]
        out += block[:per] + block[n_per:n_per + per]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"pairs_{folds}x{per}.txt"
    path.write_text("\n".join(out) + "\n")
    return str(path.resolve())


def calibrate(
    embedders: Sequence[Any], lfw_dir: Path, resolution: int | None, folds: int, per_class: int | None,
    cache_dir: Path, detector: Any, log: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """LFW View 2 thresholds at FAR 1e-2 and 1e-3 for each embedder at ``resolution``."""
    from faceveil.evaluate.lfw import evaluate_lfw

    pairs_file = subset_pairs_file(lfw_dir, folds, per_class, cache_dir)
    calibration, scores = {}, {}
    for emb in embedders:
        res = "native" if resolution is None else str(resolution)
        log(f"calibrating {emb.name} on LFW View 2 ({Path(pairs_file).name}, resolution {res})")
        rep = evaluate_lfw(
            emb, lfw_dir, resolution=resolution, detector=detector, fars=FARS, pairs_file=pairs_file,
            cache_file=cache_dir / f"lfw_{emb.name}_{res}.npz",
        )
        entry = rep.as_dict()
        entry["source"] = f"LFW View 2 ({Path(pairs_file).name})"
        entry["thresholds"] = {f"FAR {t.far_target:.0e}": t.threshold for t in rep.far_thresholds}
        calibration[emb.name] = entry
        scores[emb.name] = (rep.scores, rep.labels)
    return calibration, scores


# --------------------------------------------------------------------------- the command
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")


def _load_model(args: argparse.Namespace) -> Any:
    from faceveil.engine import EngineSettings

    if args.tiny:
        from faceveil.testing import tiny_latent_model, tiny_pixel_model

        model = tiny_pixel_model(32) if args.tiny == "pixel" else tiny_latent_model(32)
    else:
        from faceveil.models import load_model

        model = load_model(args.model)
    if args.noise_gain is not None:
        try:
            model.noise_gain = EngineSettings(noise_gain=args.noise_gain).noise_gain  # checks the range
        except ValueError as exc:
            raise UsageError(f"--noise-gain: {exc}") from None
    return model


def _methods(names: Sequence[str], model: Any, steps: int) -> list[Any]:
    from faceveil.evaluate.baselines import (
        BlurBaseline,
        EncryptedCropBaseline,
        PixelateBaseline,
        engine_variant,
        faceveil_default,
        paper_reference,
    )

    make: dict[str, Callable[[], Any]] = {
        "blur": lambda: BlurBaseline(),
        "pixelate": lambda: PixelateBaseline(),
        "paper": lambda: paper_reference(model, steps),
        "faceveil": lambda: faceveil_default(model, steps),
        "encrypted-crop": lambda: EncryptedCropBaseline(),
    }
    make["faceveil-signs"] = lambda: engine_variant("faceveil-signs", model, steps, mixing="signs")  # the paper's operation
    make["faceveil-pairs"] = lambda: engine_variant("faceveil-pairs", model, steps, mixing="pairs")  # = the default
    unknown = [n for n in names if n not in make]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(make)}")
    return [make[n]() for n in make if n in names]


def run_evaluate(args: argparse.Namespace) -> int:
    """``faceveil evaluate``: returns 0 on success (raises ``FaceveilError`` otherwise)."""
    from faceveil.evaluate.embedders import available_embedders, evaluation_detector, get_embedder
    from faceveil.evaluate.protocols import run_protocols
    from faceveil.evaluate.report import write_report

    def log(message: str) -> None:
        if not args.quiet:
            print(f"faceveil evaluate: {message}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if bool(args.folder) == bool(args.lfw):
        raise UsageError("give either a folder of photos or --lfw")
    if args.steps < 1 or (args.limit is not None and args.limit < 1):
        raise UsageError("--steps and --limit must be positive")
    out = Path(args.out)
    _check_out(out, args.overwrite)
    shared = Path(args.shared) if args.shared else default_shared()
    lfw_dir = shared / "data" / "lfw"
    names = [n.strip() for n in args.embedders.split(",") if n.strip()]
    missing = [n for n in names if n not in available_embedders()]
    if missing:
        raise ModelUnavailableError(
            f"embedder(s) not available here: {', '.join(missing)} (available: {', '.join(available_embedders()) or 'none'})"
        )
    embedders = [get_embedder(n) for n in names]
    detector = evaluation_detector()
    if args.lfw:
        if not (lfw_dir / "pairs.txt").is_file():
            raise UsageError(f"LFW not found in {lfw_dir} (pass --shared)")
        paths = lfw_inputs(lfw_dir, args.limit if args.limit is not None else 100)
    else:
        paths = folder_inputs(Path(args.folder), args.limit)
    if not paths:
        raise UsageError("no input images found")
    model = _load_model(args)
    methods = _methods([n.strip() for n in args.methods.split(",") if n.strip()], model, args.steps)
    samples, notes = make_samples(
        paths, model.image_size, detector, args.resolution, args.mask, args.min_face, log, model.framing
    )
    if not samples:
        raise UsageError("no evaluable face in the inputs: " + "; ".join(notes))
    calibration: dict[str, dict[str, Any]] = {}
    lfw_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if args.calibration == "lfw":
        if not (lfw_dir / "pairs.txt").is_file():
            raise UsageError(f"LFW not found in {lfw_dir}: pass --shared, or --calibration none")
        calibration, lfw_scores = calibrate(
            embedders, lfw_dir, args.resolution, args.calibration_folds, args.calibration_pairs,
            Path(args.cache_dir), detector, log,
        )
    thresholds = {name: c["thresholds"] for name, c in calibration.items()}
    run = run_protocols(
        samples, methods, embedders, thresholds, detector, protocol_faces=args.protocol_faces,
        diversity_keys=args.diversity_keys, log=log,
    )
    import torch

    run.results["config"] = {
        "input": "LFW View 2 (first image per person)" if args.lfw else str(args.folder),
        "faces_evaluated": len(samples),
        "model": f"tiny-{args.tiny} (random weights: identity figures meaningless)" if args.tiny else args.model,
        "model_id": model.model_id,
        "steps": args.steps,
        "methods": [m.name for m in methods],
        "embedders": names,
        "detector": detector.name,
        "resolution": args.resolution or "native",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    run.results["calibration"] = calibration
    run.results["notes"] = notes
    out.mkdir(parents=True, exist_ok=True)
    written = write_report(out, run.results, run.grid, run.methods_row, run.scores, lfw_scores)
    print(f"wrote {written['report']}, {written['json']} and {written['figures']}/")
    return 0

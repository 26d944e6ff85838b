"""Throughput of ``--ray`` against the single-process batch, and what it means for a million photos.

Runs, over the same LFW photos, each as the user would (a fresh ``faceveil anonymize``
process, wall clock from start to exit, one torch thread per worker):

- the single-process batch: ``faceveil anonymize IN -o OUT --key K --batch B``, file by
  file (``--batch 1``) and with the faces of 8 files batched (``--batch 8``, the default);
- ``--ray --workers W --batch B`` on a local Ray for each ``W:B`` of ``--runs`` (default
  1 worker file by file, 1 worker in groups of 8, 2 workers in groups of 8; start-up and
  steady rate read from the run's own summary line).

Then it measures per-face costs in-process (UNet seconds per evaluation at batch 1 and
batch 8, UNet evaluations per face, the seconds per photo outside the UNet, and the
seconds per photo of ``api.anonymize_files`` with the faces batched) and prints
what N workers would need for a million photos. GPU figures need one number this
machine cannot measure, the GPU's seconds per UNet evaluation (``--gpu-eval-ms``); it is
printed as an assumption.

    python benchmarks/cluster_benchmark.py [--photos 16] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw" / "images"
FACES_PER_LFW_PHOTO = 8669 / 7701  # README, photo_benchmark: faces found on all LFW View 2 images
RAY_LINE = re.compile(r"ray: (\d+) worker\(s\) on (\w+), (\d+) image\(s\) in ([\d.]+) s \(([\d.]+) images/s\) after ([\d.]+) s")


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stderr


def _per_face_costs(photos: list[Path], steps: int) -> dict:
    """In-process: UNet seconds per evaluation (batch 1 and 8), evaluations per face, seconds per photo outside the UNet."""
    import torch

    from faceveil import api
    from faceveil.keys import Key
    from faceveil.models import load_model

    torch.set_num_threads(1)
    model = load_model(None)
    z = torch.randn(1, model.latent_channels, model.latent_size, model.latent_size)
    timings = {}
    for batch in (1, 8):
        zb = z.repeat(batch, 1, 1, 1)
        model.eps(zb, 500)
        runs = 20 if batch == 1 else 5
        t0 = time.perf_counter()
        for _ in range(runs):
            model.eps(zb, 500)
        timings[batch] = (time.perf_counter() - t0) / runs / batch
    key, evals, faces, unet = Key.generate(), [0], 0, [0.0]
    eps = model.eps

    def timed_eps(z, t):  # the UNet's own seconds inside the real runs
        t0 = time.perf_counter()
        try:
            return eps(z, t)
        finally:
            unet[0] += time.perf_counter() - t0

    model.eps = timed_eps
    out = Path(tempfile.mkdtemp(prefix="fv-bench-"))
    t0 = time.perf_counter()
    for i, photo in enumerate(photos):
        result = api.anonymize(photo, key, out / f"{i}.veiled.png", model=model, steps=steps,
                               progress=lambda n: evals.__setitem__(0, evals[0] + n))
        faces += len(result.faces)
    total = time.perf_counter() - t0
    unet_single = unet[0]
    unet[0] = 0.0
    t0 = time.perf_counter()
    results = api.anonymize_files([(photo, out / f"b{i}.veiled.png") for i, photo in enumerate(photos)], key,
                                  model=model, steps=steps, batch_size=8)
    batched = time.perf_counter() - t0
    assert all(not isinstance(r, Exception) for r in results), results
    unet_batched = unet[0]
    shutil.rmtree(out, ignore_errors=True)
    unet = unet_single
    return {
        "s_per_photo_batched": batched / len(photos), "unet_s_per_photo_batched": unet_batched / len(photos),
        "unet_s_per_photo_single": unet / len(photos),
        "unet_s_per_eval_batch1": timings[1], "unet_s_per_eval_batch8": timings[8],
        "evals_per_face": evals[0] / faces, "faces_per_photo": faces / len(photos),
        "unet_s_per_eval_in_runs": unet / max(1, evals[0]),
        "s_per_photo": total / len(photos), "s_per_photo_outside_unet": (total - unet) / len(photos),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (20: the default)")
    parser.add_argument("--runs", default="1:1,1:8,2:8", help="WORKERS:BATCH runs on the local Ray")
    parser.add_argument("--profile-photos", type=int, default=4, help="photos for the in-process per-face costs")
    parser.add_argument("--gpu-eval-ms", type=float, default=5.0,
                        help="ASSUMED milliseconds per UNet evaluation on one GPU (not measurable here)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW photos not found at {LFW}")
    photos = sorted(LFW.glob("*/*_0001.jpg"))[: args.photos]
    work = Path(tempfile.mkdtemp(prefix="fv-cb-", dir="/tmp"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(work)}
    try:
        source = work / "in"
        source.mkdir()
        for photo in photos:
            shutil.copy(photo, source / photo.name)
        key = work / "k.key"
        subprocess.run([sys.executable, "-m", "faceveil", "keygen", str(key)], check=True, capture_output=True)
        base = [sys.executable, "-m", "faceveil", "anonymize", str(source), "--key", str(key), "--steps", str(args.steps), "--quiet"]
        load = os.getloadavg()[0]
        print(f"{len(photos)} LFW photos, --steps {args.steps}, one torch thread per process, load average {load:.1f} "
              f"on {os.cpu_count()} CPUs at start")
        rows = []
        for batch in (1, 8):
            wall, _ = _run([*base, "-o", str(work / f"single{batch}"), "--batch", str(batch)], env)
            rows.append({"mode": f"single process --batch {batch}", "wall_s": wall, "startup_s": None, "steady_images_per_s": None})
        for run in args.runs.split(","):
            count, batch = (int(v) for v in run.split(":"))
            wall, log = _run([*base, "-o", str(work / f"ray{count}-{batch}"), "--ray", "--workers", str(count), "--batch", str(batch)], env)
            m = RAY_LINE.search(log)
            rows.append({"mode": f"--ray --workers {count} --batch {batch}", "workers": count, "wall_s": wall,
                         "startup_s": float(m[6]), "steady_images_per_s": float(m[5])})
        single = rows[0]["wall_s"]
        print("| run | wall s | images/s (wall) | speed-up (wall) | Ray start-up s | images/s after start-up |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            extra = ("", "") if r["startup_s"] is None else (f"{r['startup_s']:.1f}", f"{r['steady_images_per_s']:.3f}")
            print(f"| {r['mode']} | {r['wall_s']:.1f} | {len(photos) / r['wall_s']:.3f} | {single / r['wall_s']:.2f}x | "
                  f"{extra[0] or 'n/a'} | {extra[1] or 'n/a'} |")

        costs = _per_face_costs(photos[: args.profile_photos], args.steps)
        print(f"\nper-face costs (in-process, {args.profile_photos} photos, one thread): UNet "
              f"{costs['unet_s_per_eval_batch1'] * 1e3:.1f} ms/evaluation at batch 1, "
              f"{costs['unet_s_per_eval_batch8'] * 1e3:.1f} ms per sample at batch 8; "
              f"{costs['unet_s_per_eval_in_runs'] * 1e3:.1f} ms inside the runs; "
              f"{costs['evals_per_face']:.0f} evaluations per face; {costs['s_per_photo']:.2f} s per photo, of which "
              f"{costs['s_per_photo_outside_unet']:.2f} s outside the UNet ({costs['faces_per_photo']:.2f} faces per photo); "
              f"faces batched by 8 (api.anonymize_files): {costs['s_per_photo_batched']:.2f} s per photo, UNet "
              f"{costs['unet_s_per_photo_batched']:.2f} s per photo against {costs['unet_s_per_photo_single']:.2f} s one by one")
        steady = [r for r in rows if r["steady_images_per_s"]]
        per_worker = steady[-2]["steady_images_per_s"] / steady[-2]["workers"]
        efficiency = (steady[-1]["steady_images_per_s"] / steady[-1]["workers"]) / per_worker
        # CPU workers batch their faces (the default --batch 8): the UNet share at the batched cost measured above
        batched_eval = costs["unet_s_per_photo_batched"] / (costs["faces_per_photo"] * costs["evals_per_face"])
        photo_cpu = FACES_PER_LFW_PHOTO * costs["evals_per_face"] * batched_eval + costs["s_per_photo_outside_unet"]
        photo_gpu_unet = FACES_PER_LFW_PHOTO * costs["evals_per_face"] * args.gpu_eval_ms / 1e3
        photo_gpu = photo_gpu_unet + costs["s_per_photo_outside_unet"]
        print(f"\none million LFW-like photos ({FACES_PER_LFW_PHOTO:.2f} faces each), from these costs; per-worker "
              f"efficiency of '{steady[-1]['mode']}' against '{steady[-2]['mode']}' here: {efficiency:.2f}")
        print(f"| workers | CPU workers, faces batched by 8 (measured cost {photo_cpu:.2f} s/photo) | GPU workers (ASSUMED {args.gpu_eval_ms:g} ms/eval: "
              f"{photo_gpu_unet:.2f} s UNet + {costs['s_per_photo_outside_unet']:.2f} s CPU per photo) |")
        print("|---|---|---|")
        for n in (1, 8, 64, 256):
            cpu_h = 1e6 * photo_cpu / n / 3600
            gpu_h = 1e6 * photo_gpu / n / 3600
            print(f"| {n} | {cpu_h:,.1f} h | {gpu_h:,.1f} h |")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps({"photos": len(photos), "steps": args.steps, "load_average": load, "runs": rows,
                                             "costs": costs, "efficiency": efficiency, "gpu_eval_ms_assumed": args.gpu_eval_ms}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Threads: the command's own choice against every fixed thread count, with and without two busy processes.

    python benchmarks/threads_benchmark.py                       # writes its table to stdout
    python benchmarks/threads_benchmark.py --steps 5 --repeats 2 --out benchmarks/results/threads/figures.md

Each run is a fresh process, ``faceveil anonymize`` of one 150 px photo (the public-domain
astronaut portrait from scikit-image, framed like an LFW photo) with the embedded default
model, timed wall-clock from start to exit, as a user would wait for it. Settings:

- ``auto``: the command's default (faceveil.threads: usable CPUs less the load, OpenMP waits passively);
- ``N``: ``--threads N`` for every N from 1 to the usable CPUs;
- ``torch default``: the Python API in a fresh process, which leaves torch alone (one thread per
  physical core, OpenMP spinning while it waits): what the command did before faceveil.threads.

Conditions: the machine as found (its load average is printed: on a shared machine it is not
idle), then beside ``--busy`` processes that each spin one core. Settings run round-robin, so
drifting background load falls on all of them alike; the table gives each setting's median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceveil.threads import choose_threads, load_average, usable_cpus

SPIN = "while True: pass"


def photo(folder: Path) -> Path:
    """The astronaut's face, 150 px, framed like LFW (the tests' free stand-in)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    x0, y0, x1, y1 = 178, 83, 273, 178  # where faceveil's detector finds the face
    side = round(2.3 * (x1 - x0))
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    crop = np.ascontiguousarray(skimage.data.astronaut()[top : top + side, left : left + side])
    path = folder / "astronaut.jpg"
    Image.fromarray(crop).resize((150, 150), Image.LANCZOS).save(path, quality=95)
    return path


def command(setting: str, src: Path, key: Path, out: Path, steps: int) -> list[str]:
    if setting == "torch default":
        code = f"import faceveil; faceveil.anonymize({str(src)!r}, {str(key)!r}, {str(out)!r}, steps={steps}, overwrite=True)"
        return [sys.executable, "-c", code]
    cmd = [sys.executable, "-m", "faceveil", "anonymize", str(src), "--key", str(key), "-o", str(out),
           "--overwrite", "--quiet", "--steps", str(steps)]
    return cmd if setting == "auto" else [*cmd, "--threads", setting]


def run_once(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def measure(settings: list[str], repeats: int, baseline_repeats: int, env: dict, paths: tuple, steps: int,
            condition: str) -> tuple[dict, list, list]:
    """Each setting ``repeats`` times round-robin (the slow torch default ``baseline_repeats`` times); one line per run."""
    times: dict[str, list[float]] = {s: [] for s in settings}
    loads, picks = [], []
    for r in range(repeats):
        for s in settings:
            if s == "torch default" and r >= baseline_repeats:
                continue
            loads.append(load_average())
            if s == "auto":
                import torch

                picks.append(choose_threads(usable_cpus(), loads[-1], cap=torch.get_num_threads()))
            times[s].append(run_once(command(s, *paths, steps), env))
            print(f"run: {condition} | {s} | {times[s][-1]:.1f} s | load {loads[-1]:.1f}", flush=True)
    return times, loads, picks


def machine() -> str:
    """The CPU model, online CPUs and kernel, for the results file."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs online, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps (fewer: shorter runs)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-repeats", type=int, default=1, help="runs of the slow torch default per condition")
    parser.add_argument("--busy", type=int, default=2, help="spinning processes in the second condition")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()

    import torch

    cpus = usable_cpus()
    settings = ["auto", *[str(n) for n in range(1, cpus + 1)], "torch default"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    lines = [
        "# Threads: the command's choice against fixed thread counts",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; load average "
        f"{load_average():.2f} when it started.",
        "",
        f"`python benchmarks/threads_benchmark.py --steps {args.steps} --repeats {args.repeats} "
        f"--baseline-repeats {args.baseline_repeats} --busy {args.busy}`; "
        f"{cpus} usable CPUs ({os.cpu_count()} online), torch {torch.__version__} (default {torch.get_num_threads()} "
        f"threads), nice {os.nice(0)}. One 150 px photo, the embedded model, {args.steps} DDIM steps; wall seconds "
        f"per fresh process, median of {args.repeats} runs ({args.baseline_repeats} for torch default), settings "
        f"round-robin.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = folder / "k.key"
        subprocess.run([sys.executable, "-m", "faceveil", "keygen", str(key)], env=env, check=True, capture_output=True)
        paths = (photo(folder), key, folder / "out.png")
        for condition in ("as found", f"+{args.busy} busy"):
            spinners = []
            if condition != "as found":
                spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
                time.sleep(5)
            try:
                times, loads, picks = measure(settings, args.repeats, args.baseline_repeats, env, paths, args.steps,
                                              condition)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
            medians = {s: statistics.median(t) for s, t in times.items()}
            fixed = {s: m for s, m in medians.items() if s not in ("auto", "torch default")}
            best = min(fixed, key=fixed.get)
            lines += [
                f"## {condition}: load average {min(loads):.1f} to {max(loads):.1f} during the runs; "
                f"auto picked {sorted(set(picks))} thread(s)",
                "",
                "| setting | median s | runs (s) | vs best fixed |",
                "|---|---|---|---|",
            ]
            lines += [f"| {s} | {medians[s]:.1f} | {', '.join(f'{t:.1f}' for t in times[s])} | "
                      f"{medians[s] / fixed[best]:.2f}x |" for s in settings]
            lines += ["", f"auto / best fixed ({best} thread(s)): **{medians['auto'] / fixed[best]:.2f}x**", ""]
            print("\n".join(lines[-len(settings) - 6:]), flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

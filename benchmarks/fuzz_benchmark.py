"""Hostile files: peak memory of `faceveil recover` on header bombs, and a long fuzz campaign.

    python benchmarks/fuzz_benchmark.py [--examples 2500] [--skip-campaign]

Part 1 runs one `faceveil recover` process per file (a legitimate 32 x 32 veiled PNG
alone, then the legitimate file with each bomb of ``faceveil.testing.header_bombs``) and
prints each exit code and peak resident memory. Part 2 runs tests/test_fuzz.py with
``FACEVEIL_FUZZ_EXAMPLES`` cases per property (four properties) and prints the cases,
the failures, the wall time and the peak memory of that process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_one(command: list[str], env: dict | None = None) -> tuple[int, float, float, str]:
    """Exit code, peak RSS (MiB, this process's own, from ``os.wait4``), wall seconds, the output's tail."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT)
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, time.perf_counter() - start, output[-2000:]


def bombs(folder: Path) -> None:
    from faceveil import api
    from faceveil.engine import EngineSettings
    from faceveil.keys import Key
    from faceveil.pipeline import Settings
    from faceveil.testing import header_bombs, tiny_pixel_model

    model = tiny_pixel_model(32)
    model_dir = folder / "model"
    model.unet.save_pretrained(model_dir / "unet")
    model.scheduler.save_pretrained(model_dir / "scheduler")
    key = Key.generate()
    key_path = key.save(folder / "k.key")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "face.png")
    legit = api.anonymize(folder / "face.png", key, model=model, settings=Settings(EngineSettings(steps=2)), aligned=True).outputs[0]
    base = [sys.executable, "-m", "faceveil", "recover", "--key", str(key_path), "--model", str(model_dir), "--quiet"]
    env = {"OMP_NUM_THREADS": "1"}
    print("| input of `faceveil recover` | file size | exit code | peak RSS |")
    print("|---|---|---|---|")
    out = folder / "alone"
    out.mkdir()
    code, peak, _, _ = run_one([*base, str(legit), "-o", str(out)], env)
    print(f"| the legitimate veiled PNG alone | {legit.stat().st_size / 1024:.1f} KiB | {code} | {peak:.0f} MiB |")
    for name, blob in header_bombs(legit.read_bytes()).items():
        bomb = folder / f"{name}.png"
        bomb.write_bytes(blob)
        out = folder / f"out-{name}"
        out.mkdir()
        code, peak, _, err = run_one([*base, str(legit), str(bomb), "-o", str(out)], env)
        reason = next((line for line in err.splitlines() if line.startswith("faceveil: ") and f"{name}.png" in line), "")
        reason = reason.split(": ", 2)[-1]
        reason = reason.replace(f"{folder}/", "")[:100]
        print(f"| legitimate + `{name}` ({reason}) | {len(blob) / 1024:.1f} KiB | {code} | {peak:.0f} MiB |")


def campaign(examples: int) -> None:
    env = {"FACEVEIL_FUZZ_EXAMPLES": str(examples), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "tests/test_fuzz.py", "-k", "not bombs"]
    code, peak, wall, tail = run_one(command, env)
    summary = next((line for line in reversed(tail.splitlines()) if "passed" in line or "failed" in line), tail[-200:])
    print(f"\nfuzz campaign: {4 * examples} generated cases (4 properties x {examples}); pytest exit {code}; "
          f"{summary.strip()}; wall {wall:.0f} s; peak RSS {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2500, help="cases per fuzz property (default 2500: 10,000 in all)")
    parser.add_argument("--skip-campaign", action="store_true", help="only the header bombs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bombs(Path(tmp))
    if not args.skip_campaign:
        campaign(args.examples)


if __name__ == "__main__":
    main()

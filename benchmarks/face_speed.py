"""Speed at the defaults: seconds to anonymize one face, as a user waits for it.

    python benchmarks/face_speed.py                       # 5 photos, 1 thread, the default model
    python benchmarks/face_speed.py --photos 10 --threads 1 --model faceveil-faces-96

Each photo (held-out LFW first photos from ``../shared``, else the free photos of
scikit-image) is anonymized twice with the default settings and the model's own noise gain:

- **command**: ``faceveil anonymize PHOTO --threads N`` in a fresh process, wall-clock from
  start to exit (imports, model loading, detection, the diffusion model, verification,
  writing): what one photo costs from the command line;
- **in process**: ``faceveil.anonymize`` with the model already loaded, wall-clock per face
  (detection, diffusion, residual, sealing, writing): what each further photo of a batch costs.

The load average is printed at the start and the end: the figures are only those of an
idle machine when it is near 0 (pause other work first).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(os.environ.get("FACEVEIL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def photos(n: int, folder: Path) -> list[Path]:
    """``n`` held-out LFW photos (first photo of the people ``pairs.txt`` names), else free photos."""
    lfw = SHARED / "data" / "lfw"
    if (lfw / "pairs.txt").is_file():
        from faceveil.train.data import parse_lfw_pairs

        names = sorted(parse_lfw_pairs(lfw / "pairs.txt"))
        found = [lfw / "images" / name / f"{name}_0001.jpg" for name in names[:: max(1, len(names) // n)]]
        return [p for p in found if p.is_file()][:n]
    found: list[Path] = []
    from skimage import data

    for name, image in (("astronaut", data.astronaut()), ("cameraman", data.camera())):
        path = folder / f"{name}.png"
        Image.fromarray(image if image.ndim == 3 else np.stack([image] * 3, -1)).save(path)
        found.append(path)
    return found[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="default: the embedded default model")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    import faceveil
    from faceveil.keys import Key
    from faceveil.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    print(f"faceveil {faceveil.__version__}, model {model.model_id} (noise gain {model.noise_gain:g}), "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = Key.generate()
        keyfile = folder / "k.key"
        key.save(keyfile)
        command, in_process = [], []
        for i, photo in enumerate(photos(args.photos, folder)):
            out = folder / f"c{i}.png"
            cmd = [sys.executable, "-m", "faceveil", "anonymize", str(photo), "--key", str(keyfile), "-o", str(out),
                   "--threads", str(args.threads), "--quiet"]
            if args.model:
                cmd += ["--model", args.model]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if run.returncode not in (0, 5):  # 5: --verify's notes, the photo is written
                raise SystemExit(f"{photo.name}: exit {run.returncode}: {run.stderr.strip()[-400:]}")
            t0 = time.perf_counter()
            result = faceveil.anonymize(photo, key, folder / f"p{i}.png", model=model)
            faces = max(len(result.faces), 1)
            per_face = (time.perf_counter() - t0) / faces
            command.append(wall)
            in_process.append(per_face)
            print(f"  {photo.name}: {len(result.faces)} face(s); command {wall:.1f} s; in process {per_face:.1f} s per face")
    print(f"command (fresh process, one photo): median {statistics.median(command):.1f} s, max {max(command):.1f} s")
    print(f"in process (model loaded): median {statistics.median(in_process):.1f} s per face, max {max(in_process):.1f} s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

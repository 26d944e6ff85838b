"""Header bytes per recipient and per face, and the time of ``rekey`` per file (issue 23).

Usage: python benchmarks/keys_benchmark.py [PHOTO] [--files N] [--model M]
(default: three LFW people side by side from ../shared, else scikit-image's astronaut
three times; 20 files for rekey; the embedded default model).

Anonymizes the photo once, then seals the same public and private parts again as the
format-2 header (one seal under the key) and as format 3 with 1, 2, 4, 8 and 16
recipients, and prints the packed header sizes: bytes per recipient is the slope, bytes
per face the format-3 minus format-2 difference with one recipient, over the faces.
Then copies the veiled PNG ``--files`` times and times ``rekey`` (one recipient added,
one removed) per file.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faceveil import api
from faceveil.container import pack_record, read_record, seal_header, seal_legacy_header, unlock
from faceveil.envelope import Envelope, Recipient
from faceveil.keys import Identity, Key
from faceveil.rekey import rekey_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def _photo(folder: Path) -> Path:
    people = ("Abel_Pacheco", "Angela_Bassett", "Ann_Veneman")
    files = [SHARED / p / f"{p}_0001.jpg" for p in people]
    if all(f.is_file() for f in files):
        image = np.concatenate([np.asarray(Image.open(f).convert("RGB")) for f in files], axis=1)
    else:
        from skimage.data import astronaut

        face = np.asarray(Image.fromarray(astronaut()).crop((100, 0, 300, 220)).resize((150, 165)))
        image = np.concatenate([face, face[:, ::-1], face], axis=1)
    path = folder / "group.png"
    Image.fromarray(image).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", default=None)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceveil-keys-"))
    try:
        photo = Path(args.photo) if args.photo else _photo(work)
        key = Key.generate()
        result = api.anonymize(photo, key, work / "v.png", model=args.model)
        faces = len(result.faces)
        opened = unlock(key, read_record(work / "v.png"))
        public, private = opened.public, opened.private
        legacy = len(pack_record(seal_legacy_header(key, public, private)))
        print(f"photo {photo.name}: {faces} faces; format-2 header {legacy} bytes")
        sizes = {}
        for n in (1, 2, 4, 8, 16):
            recipients = [key] + [Identity.generate() for _ in range(n - 1)]
            sizes[n] = len(pack_record(seal_header(Envelope.new(recipients), public, private)))
            print(f"format 3, {n:2d} recipient(s): {sizes[n]} bytes")
        slope = (sizes[16] - sizes[1]) / 15
        print(f"bytes per added recipient: {slope:.1f} (80-byte stanza, base64 in the JSON, plus its sealed name)")
        print(f"format 3 minus format 2, one recipient: {sizes[1] - legacy} bytes; per face: "
              f"{(sizes[1] - legacy) / max(faces, 1):.1f} (the file-level part shared by all faces included)")

        copies = []
        for i in range(args.files):
            copy = work / f"c{i}.png"
            shutil.copy(work / "v.png", copy)
            copies.append(copy)
        added, removed = Identity.generate(), f"key:{key.fingerprint}"
        times = []
        for copy in copies:
            start = time.perf_counter()
            changed, _ = rekey_file(copy, key, [Recipient(added.public)], [removed])
            times.append(time.perf_counter() - start)
            assert changed
        size = (work / "v.png").stat().st_size
        print(f"rekey of {len(copies)} files of {size / 1024:.0f} KiB (one recipient added, one removed): median "
              f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms per file")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""``faceveil rekey``: rewrap anonymized files' keys in place, atomically, over files and folders.

Only the header's recipient stanzas and its sealed recipient list change (for a video, in
every frame record, and the video record's sealed list of their digests with them)
(:func:`faceveil.container.rekey_record`): the pixels, the public part and every seal
stay byte for byte, so recovery stays bit-exact. A PNG's ``veIL`` chunk is replaced in
the file's own bytes (no re-encoding); a sidecar is rewritten. Rekeying is idempotent,
so an interrupted run over a folder is resumed by running it again; each folder given
gets a ``rekey-manifest.json`` of what happened to each file (counts, never names).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

from faceveil.atomic import write_file
from faceveil.batch import VIDEO_SUFFIXES
from faceveil.container import PNG_CHUNK, pack_record, read_record, rekey_record, sidecar_path
from faceveil.envelope import Wrapper
from faceveil.errors import FaceveilError, UsageError
from faceveil.keys import Identity, Key

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST = "rekey-manifest.json"


def splice_png_record(png: bytes, record: dict) -> bytes:
    """``png`` with its ``veIL`` chunk's data replaced by ``record`` (every other chunk byte for byte)."""
    if not png.startswith(_PNG_SIGNATURE):
        raise UsageError("not a PNG file")
    out, pos, replaced = [png[:8]], 8, False
    while pos + 8 <= len(png):
        length, ctype = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if end > len(png):
            raise UsageError("the PNG is truncated")
        if ctype == PNG_CHUNK and not replaced:
            data = pack_record(record)
            out.append(struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data)))
            replaced = True
        else:
            out.append(png[pos:end])
        pos = end
        if ctype == b"IEND":
            break
    if not replaced:
        raise UsageError("the PNG has no faceveil chunk")
    return b"".join(out) + png[pos:]


def rekey_file(path: Path, opener: Key | Identity, add: list[Wrapper], remove: list[str]) -> tuple[bool, int]:
    """Rekey one anonymized image in place; (whether it changed, its recipient count)."""
    record = read_record(path)
    new, names = rekey_record(opener, record, add, remove)
    if new is record:
        return False, len(names)
    mode = os.stat(path).st_mode & 0o777
    data = path.read_bytes()
    if data.startswith(_PNG_SIGNATURE) and PNG_CHUNK in data:
        try:
            spliced = splice_png_record(data, new)
        except UsageError:
            spliced = None
        if spliced is not None:
            write_file(path, spliced, overwrite=True, mode=mode)
            return True, len(names)
    sidecar = sidecar_path(path)
    write_file(sidecar, pack_record(new), overwrite=True, mode=os.stat(sidecar).st_mode & 0o777)
    return True, len(names)


def rekey_video(path: Path, opener: Key | Identity, add: list[Wrapper], remove: list[str]) -> tuple[bool, int]:
    """Rekey a veiled video's sidecar in place: every frame record rewrapped, and the video record
    rewrapped with its list of frame-record digests resealed; the frames' own seals and pixels untouched."""
    from faceveil.atomic import atomic_output
    from faceveil.container import reseal, unlock
    from faceveil.video.header import Sidecar, digest, write_sidecar
    from faceveil.video.io import probe

    info = probe(path)
    sidecar = sidecar_path(path)
    with Sidecar(sidecar, info.height, info.width) as reader:
        reader.open(opener)
        video = reader.record
        frames = list(reader.frames())
        count = reader.count
    packed, changed = [], False
    for record in frames:
        new, _ = rekey_record(opener, record, add, remove)
        changed |= new is not record
        packed.append(pack_record(new))
    new_video, names = rekey_record(opener, video, add, remove)
    if not changed and new_video is video:
        return False, len(names)
    opened = unlock(opener, video)  # the file key, opened before this opener may have been removed
    new_video = reseal(new_video, opened.key, {"frame_records_sha256": b"".join(digest(f) for f in packed)})  # type: ignore[arg-type]
    with atomic_output(sidecar, os.stat(sidecar).st_mode & 0o777) as handle:
        write_sidecar(handle, new_video, iter(packed), count)
    return True, len(names)


def _files(inputs: list[str], recursive: bool) -> list[tuple[Path | None, Path]]:
    """(folder given or None, file) for every anonymized image named or found."""
    found = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(path.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + tuple(VIDEO_SUFFIXES) and ".recovered" not in f.name:
                    if f.suffix.lower() == ".png" or sidecar_path(f).is_file():
                        found.append((path, f))
        elif path.exists():
            found.append((None, path))
        else:
            raise UsageError(f"{path} does not exist")
    return found


def rekey_paths(inputs: list[str], opener: Key | Identity, add: list[Wrapper], remove: list[str],
                recursive: bool = False, quiet: bool = False) -> int:
    """Rekey every file; one failure never stops the others. Exit code of the first failure, else 0."""
    files = _files(inputs, recursive)
    if not files:
        raise UsageError("no anonymized images found" + ("" if recursive else " (folders: add --recursive)"))
    status, counts = 0, {"rekeyed": 0, "unchanged": 0, "failed": 0}
    manifests: dict[Path, list[dict]] = {}
    for folder, path in files:
        entry: dict = {"file": str(path.relative_to(folder)) if folder else path.name}
        try:
            video = path.suffix.lower() in VIDEO_SUFFIXES
            changed, count = (rekey_video if video else rekey_file)(path, opener, add, remove)
            entry.update(status="rekeyed" if changed else "unchanged", recipients=count)
            counts[entry["status"]] += 1
            if not quiet:
                print(f"{path}: {'rekeyed' if changed else 'already so'} ({count} recipient{'s' if count != 1 else ''})")
        except FaceveilError as exc:
            entry.update(status="failed", error=str(exc))
            counts["failed"] += 1
            status = status or exc.exit_code
            print(f"faceveil: {path}: {exc}", file=sys.stderr)
        if folder is not None:
            manifests.setdefault(folder, []).append(entry)
    for folder, entries in manifests.items():
        data = {"files": entries, "summary": {k: sum(e["status"] == k for e in entries) for k in counts}}
        write_file(folder / MANIFEST, (json.dumps(data, indent=2) + "\n").encode(), overwrite=True)
    print(f"rekey: {counts['rekeyed']} rekeyed, {counts['unchanged']} already so, {counts['failed']} failed")
    return status

"""Chunked face sets: several ``.npz`` files of at most a few tens of MiB plus a manifest.

A device call carries at most 64 MiB (the project's working tree included), so a large
set travels as chunks over consecutive calls. A set is a folder holding
``<name>-000.npz``, ``<name>-001.npz``, ... and ``provenance.json``, which lists every
chunk with its crop count, size and SHA-256. Each chunk is a complete
``faceveil-faces-1`` file (:func:`faceveil.train.data.load_faces` reads it alone) with
per-crop extras: the perceptual hash, the filled fraction, the alignment matrix and the
source image's shape (from which the filled region can be recomputed).

:func:`load_face_set` reads a single ``.npz``, a set folder or its ``provenance.json``
and returns one :class:`~faceveil.train.data.FaceData` (identities merged by name).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.atomic import atomic_output
from faceveil.errors import UsageError
from faceveil.train.data import DATA_FORMAT, FaceData, _encode, load_faces

__all__ = [
    "MANIFEST_NAME",
    "SET_FORMAT",
    "file_sha256",
    "load_face_set",
    "read_manifest",
    "set_summary",
    "write_chunks",
]

SET_FORMAT = "faceveil-face-set-1"
MANIFEST_NAME = "provenance.json"
MIB = 1 << 20
DEFAULT_CHUNK_BYTES = 48 * MIB


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _chunk_arrays(
    blobs: Sequence[bytes],
    identities: Sequence[str],
    sources: Sequence[str],
    extras: dict[str, np.ndarray],
    manifest: dict[str, Any],
) -> dict[str, np.ndarray]:
    names = sorted(set(identities))
    index = {k: i for i, k in enumerate(names)}
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return {
        "format": np.array(DATA_FORMAT),
        "labels": np.array([index[k] for k in identities], dtype=np.int32),
        "identity_names": np.array(names, dtype=np.str_),
        "sources": np.array(list(sources), dtype=np.str_),
        "blob": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
        "manifest": np.array(json.dumps(manifest, sort_keys=True)),
        **extras,
    }


def _overhead(identity: str, source: str, extras_per_crop: int) -> int:
    """Bytes a crop costs in a chunk besides its image (numpy strings are UTF-32)."""
    return 4 * len(source) + 4 * len(identity) + 4 + 8 + extras_per_crop + 64


def write_chunks(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    identities: Sequence[str],
    sources: Sequence[str],
    extras: dict[str, np.ndarray],
    *,
    encoding: dict[str, Any],
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    stem: str | None = None,
) -> list[dict[str, Any]]:
    """Encode ``images`` and write them, in order, to chunk files of at most ``max_bytes``.

    ``extras`` are per-crop arrays (first axis N) stored alongside. ``encoding`` is
    ``{"kind": "jpeg", "quality": q}`` (4:4:4) or ``{"kind": "webp"}`` (lossless).
    Returns one entry per chunk: file name, first index, crop count, bytes, SHA-256.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or out.name
    kind = encoding.get("kind")
    if kind not in ("jpeg", "webp"):
        raise UsageError(f"chunk encoding must be jpeg or webp, got {kind!r}")
    n = len(images)
    if not (len(identities) == len(sources) == n and all(len(v) == n for v in extras.values())):
        raise UsageError("images, identities, sources and extras must have the same length")
    size = int(images.shape[1])
    quality = int(encoding.get("quality", 100))
    info = {"kind": "jpeg", "quality": quality, "subsampling": "4:4:4"} if kind == "jpeg" else {"kind": "webp", "lossless": True}
    per_crop_extra = sum(int(v[:1].nbytes) for v in extras.values())
    blobs: list[bytes] = []
    for start in range(0, n, 512):
        data, offs = _encode(images[start : start + 512], "jpeg" if kind == "jpeg" else "webp", quality)
        raw = data.tobytes()
        blobs += [raw[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]
    cost = [len(b) + _overhead(identities[i], sources[i], per_crop_extra) for i, b in enumerate(blobs)]
    budget = max(max_bytes // 2, max_bytes - 16 * 1024)  # zip and array headers, the manifest
    entries: list[dict[str, Any]] = []
    start = 0
    while start < n:
        end, total = start, 0
        while end < n and (end == start or total + cost[end] <= budget):
            total += cost[end]
            end += 1
        while True:
            name = f"{stem}-{len(entries):03d}.npz"
            manifest = {"format": DATA_FORMAT, "set": SET_FORMAT, "size": size, "encoding": info,
                        "chunk": len(entries), "first": start, "images": end - start,
                        "provenance": MANIFEST_NAME}
            arrays = _chunk_arrays(
                blobs[start:end], identities[start:end], sources[start:end],
                {k: v[start:end] for k, v in extras.items()}, manifest,
            )
            path = out / name
            with atomic_output(path) as fh:
                np.savez(fh, **arrays)
            nbytes = os.path.getsize(path)
            if nbytes <= max_bytes:
                break
            if end - start <= 1:
                raise UsageError(f"one crop does not fit in a chunk of {max_bytes} bytes")
            end = start + max(1, int((end - start) * 0.97))  # estimate was short: shrink
        entries.append({"file": name, "first": start, "images": end - start,
                        "bytes": nbytes, "sha256": file_sha256(path)})
        start = end
    for stale in sorted(out.glob(f"{stem}-[0-9][0-9][0-9].npz")):
        if stale.name not in {e["file"] for e in entries}:
            stale.unlink()
    return entries


def read_manifest(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``(folder, provenance)`` of a set given its folder or its ``provenance.json``."""
    p = Path(path)
    manifest_path = p / MANIFEST_NAME if p.is_dir() else p
    if not manifest_path.is_file():
        raise UsageError(f"face set manifest not found: {manifest_path}")
    try:
        prov = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read face set manifest {manifest_path}: {exc}") from None
    if prov.get("format") != SET_FORMAT:
        raise UsageError(f"{manifest_path}: not a faceveil face set (format {prov.get('format')!r})")
    return manifest_path.parent, prov


def load_face_set(path: str | os.PathLike[str], *, verify: bool = True) -> FaceData:
    """Load a face file (``.npz``) or a chunked set (its folder or ``provenance.json``).

    For a set, every chunk the manifest lists must be present (and, with ``verify``,
    match its SHA-256); crops come in manifest order, identities merged by name, and the
    returned manifest is the set's provenance.
    """
    p = Path(path)
    if p.suffix == ".npz" or (p.is_file() and p.suffix != ".json"):
        return load_faces(p)
    folder, prov = read_manifest(p)
    chunks = prov.get("chunks") or []
    missing = [c["file"] for c in chunks if not (folder / c["file"]).is_file()]
    if missing:
        raise UsageError(
            f"{folder}: {len(missing)} of {len(chunks)} chunks missing ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); carry them first"
        )
    if not chunks:
        raise UsageError(f"{folder}: the face set lists no chunks")
    images, keys, sources, masks = [], [], [], []
    for c in chunks:
        f = folder / c["file"]
        if verify and file_sha256(f) != c["sha256"]:
            raise UsageError(f"{f}: SHA-256 does not match {MANIFEST_NAME} (incomplete copy?)")
        part = load_faces(f)
        if len(part) != c["images"]:
            raise UsageError(f"{f}: {len(part)} crops, the manifest says {c['images']}")
        images.append(part.images)
        masks.append(part.masks)
        keys += [part.identity_names[i] for i in part.labels]
        sources += part.sources
    names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    labels = np.array([index[k] for k in keys], dtype=np.int64)
    all_masks = np.concatenate(masks) if all(m is not None for m in masks) else None
    return FaceData(np.concatenate(images), labels, names, sources, prov, all_masks)


def set_summary(path: str | os.PathLike[str], prov: dict[str, Any]) -> dict[str, Any]:
    """What a model's provenance records of the chunked set it was trained on."""
    folder, _ = read_manifest(path)
    return {
        "source": folder.name,
        "set_format": prov.get("format"),
        "provenance_sha256": file_sha256(folder / MANIFEST_NAME),
        "images": prov.get("images"),
        "identities_known": prov.get("identities_known"),
        "encoding": prov.get("encoding"),
        "framing": prov.get("framing", "ffhq"),
        "masks": prov.get("masks"),
        "licence": prov.get("licence"),
        "sources": {
            name: {k: s.get(k) for k in ("repository", "commit", "folders", "files", "sha256", "counts", "licence")}
            for name, s in (prov.get("sources") or {}).items()
        },
        "exclusions": {
            "exclude_identities": (prov.get("exclusions") or {}).get("exclude_identities"),
            "celeba_holdout_identities": ((prov.get("exclusions") or {}).get("celeba_holdout") or {}).get("identities"),
            "lfw_evaluation": (prov.get("exclusions") or {}).get("lfw_evaluation"),
        },
        "dedup": {k: v for k, v in (prov.get("dedup") or {}).items() if k != "calibration"},
        "chunks": [{k: c[k] for k in ("file", "images", "sha256")} for c in prov.get("chunks") or []],
    }

"""The full training set: shared and external faces, exclusions, deduplication, chunks.

:func:`prepare_face_set` builds a chunked set (:mod:`faceveil.train.chunks`) from the
shared CelebA and LFW photos and the external sources of :mod:`faceveil.train.sources`:

1. **Candidates.** Every image file of every source, with its identity: CelebA-derived
   files through CelebA's ``identity_CelebA.txt``, LFW by folder, UTKFace none known.
2. **Exclusions.** Dropped (and kept aside as a block list): every image of an identity
   in ``exclude_identities.txt``, of a held-out CelebA identity
   (:func:`~faceveil.train.data.celeba_holdout_identities` over the shared
   ``identity.txt``, as for the single-file set), of a person in LFW's evaluation pair
   lists, and CelebA-named files whose identity is unknown.
3. **Crops.** Detection and the inference alignment (``detect_faces``, the FFHQ quad),
   filled FFHQ-style beyond tight source images (:func:`faceveil.train.crops.align_filled`).
   Aligned crops are cached per source (``cache_dir``), keyed by the source's files,
   the crop size and :data:`ALIGN_VERSION`, so that a rerun only re-does the assembly.
4. **Deduplication.** By CelebA image number across the CelebA sources (the first source
   in priority order keeps it), then by content across everything: a pair of crops whose
   face-region hashes differ in at most ``max_hash_distance`` bits is the same photo when
   their fine detail agrees (signature dot product at least ``min_similarity``); a crop
   is dropped when it is the same photo as a crop kept before it or as any excluded crop.
   Both thresholds are calibrated on the pairs that share a CelebA number.
5. **Output.** Kept crops in a fixed pseudo-random order (SHA-256 of the source path, so
   every chunk samples every source), written as chunks of at most ``max_chunk_bytes``,
   and ``provenance.json``: sources (repository, commit, folders, files, kept, SHA-256),
   exclusions, deduplication counts and the hash calibration, filled fractions,
   landmark positions in the crops and the chunks' SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.atomic import atomic_output
from faceveil.errors import UsageError
from faceveil.train import sources as srcmod
from faceveil.train.chunks import DEFAULT_CHUNK_BYTES, MANIFEST_NAME, SET_FORMAT, file_sha256, write_chunks
from faceveil.faces.mask import FOREHEAD
from faceveil.train.data import (
    HOLDOUT_SALT,
    LFW_EXCLUSION_FILES,
    _natural_key,
    _pick_face,
    _read_rgb,
    _subsample,
    celeba_holdout_identities,
    lfw_excluded_names,
    read_celeba_identities,
)

__all__ = ["ALIGN_VERSION", "SetReport", "prepare_face_set"]

ALIGN_VERSION = "ffhq-quad+ffhq-fill-2"
DEFAULT_MAX_HASH_DISTANCE = 6
DEFAULT_MIN_SIMILARITY = 0.8
STATUS = ("ok", "unreadable", "no_face", "too_small")
_OK, _UNREADABLE, _NO_FACE, _TOO_SMALL = range(4)


@dataclass
class _Source:
    """One source as the pipeline sees it."""

    name: str
    root: Path  # file paths are relative to this
    files: list[str]  # all image files (relative)
    info: dict[str, Any]  # provenance entry
    identities: list[str] = field(default_factory=list)  # per selected file
    celeba: list[str | None] = field(default_factory=list)  # CelebA image name per selected file
    excluded: list[str | None] = field(default_factory=list)  # exclusion reason per selected file
    selected: list[str] = field(default_factory=list)


@dataclass
class SetReport:
    """What :func:`prepare_face_set` did."""

    out_dir: Path
    images: int
    bytes: int
    chunks: int
    seconds: float
    provenance: dict[str, Any]

    def summary(self) -> str:
        lines = [
            f"{self.out_dir}: {self.images} crops in {self.chunks} chunks, "
            f"{self.bytes / 1e6:.1f} MB, {self.seconds:.0f} s"
        ]
        for name, s in self.provenance["sources"].items():
            c = s["counts"]
            lines.append(
                f"  {name}: {c['kept']}/{s['selected']} kept; excluded {c['excluded']}, "
                f"no face {c['no_face'] + c['too_small']}, unreadable {c['unreadable']}, "
                f"duplicates {c['dup_celeba_number']} by number + {c['dup_content']} by content "
                f"+ {c['dup_excluded']} of excluded; filled {s['filled'].get('mean', 0.0):.1%}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- candidates


def _shared_sources(shared: Path, limit: int | None) -> list[_Source]:
    out = []
    for name, kind, present, description, licence in (
        ("shared-celeba", "celeba", lambda root: (root / "identity.txt").is_file(),
         "shared CelebA photos (face-centred 256x256 crops)", srcmod.CELEBA_TERMS),
        ("shared-lfw", "lfw", lambda root: (root / "images").is_dir(),
         "shared LFW photos (150x150)", "LFW: research benchmark, no commercial-use warranty"),
    ):
        root = shared / "data" / kind
        if present(root):
            files = srcmod.list_source_files(root, ["images"])
            out.append(_Source(name, root, files, {
                "repository": None, "commit": None, "folders": [f"data/{kind}/images"], "kind": kind,
                "description": description, "licence": licence,
            }))
    for s in out:
        s.selected = _subsample(s.files, limit)
    return out


def _external_sources(root: Path, names: Sequence[str], limit: int | None) -> list[_Source]:
    out = []
    for name in names:
        spec = srcmod.known_source(name)
        base = root / spec.name
        files = srcmod.list_source_files(base, spec.folders)
        s = _Source(spec.name, base, files, spec.to_json())
        s.selected = _subsample(files, limit)
        out.append(s)
    return out


def _label(sources: list[_Source], celeba_ids: dict[str, str], exclude: set[str], holdout: set[str],
           lfw_names: set[str]) -> None:
    """Fill in identities, CelebA names and exclusion reasons of the selected files."""
    for s in sources:
        kind = s.info["kind"]
        for rel in s.selected:
            img = srcmod.celeba_image_name(rel) if kind == "celeba" else None
            reason = None
            if kind == "celeba":
                pid = celeba_ids.get(img) if img else None
                ident = f"celeba:{pid}" if pid else f"celeba:?{rel}"
                if pid is None:
                    reason = "unknown_identity"
                elif pid in exclude:
                    reason = "exclude_identities"
                elif pid in holdout:
                    reason = "celeba_holdout"
            elif kind == "lfw":
                person = Path(rel).parent.name
                ident = f"lfw:{person}"
                if person in lfw_names:
                    reason = "lfw_evaluation"
            else:
                ident = f"{kind}:{Path(rel).name.split('.')[0]}"  # identity unknown: one per image
            s.identities.append(ident)
            s.celeba.append(img)
            s.excluded.append(reason)


# --------------------------------------------------------------------------- crops


def _align_all(
    s: _Source, size: int, cache_dir: Path | None, progress: bool, framing: str = "ffhq", masks: bool = False
) -> dict[str, np.ndarray]:
    """Detect and align every selected file of a source (cached); with ``masks``, also each
    crop's inference mask (:func:`faceveil.train.data.inference_mask`)."""
    from tqdm.auto import tqdm

    from faceveil.train.data import inference_mask

    options = [] if (framing, masks) == ("ffhq", False) else [framing, masks]  # older caches keep their keys
    if masks and FOREHEAD != 1.0:
        options.append(["forehead", FOREHEAD])  # the masks' outline reaches up the forehead (faces.mask)
    key = hashlib.sha256(
        json.dumps([ALIGN_VERSION, size, s.info["sha256"], s.selected, *options]).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"{s.name}-{size}px-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from faceveil.faces import detect_faces, transform_points

    n = len(s.selected)
    res = {
        "status": np.zeros(n, dtype=np.int8),
        "crops": np.zeros((n, size, size, 3), dtype=np.uint8),
        "filled": np.zeros(n, dtype=np.float32),
        "matrix": np.zeros((n, 2, 3), dtype=np.float64),
        "shape": np.zeros((n, 2), dtype=np.int32),
        "landmarks": np.zeros((n, 5, 2), dtype=np.float32),
        "score": np.zeros(n, dtype=np.float32),
        **({"masks": np.zeros((n, size, size), dtype=bool)} if masks else {}),
    }
    from faceveil.train.crops import align_filled

    for i, rel in enumerate(tqdm(s.selected, desc=f"{s.name} {size}px", unit="img", disable=not progress)):
        image = _read_rgb(s.root / rel)
        if image is None or min(image.shape[:2]) < 2:
            res["status"][i] = _UNREADABLE
            continue
        faces = detect_faces(image)
        face = _pick_face(faces, image.shape)
        if face is None:
            res["status"][i] = _TOO_SMALL if faces else _NO_FACE
            continue
        crop, transform, filled = align_filled(image, face, size, framing)
        if masks:
            res["masks"][i] = inference_mask(image.shape, face, transform)
        res["crops"][i] = crop
        res["filled"][i] = filled
        res["matrix"][i] = transform.matrix
        res["shape"][i] = image.shape[:2]
        res["landmarks"][i] = (transform_points(face.landmarks5, transform) + 0.5) / size
        res["score"][i] = face.score
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as fh:
            np.savez(fh, **res)
    return res


# --------------------------------------------------------------------------- dedup


_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances of uint64 arrays (broadcast), as int64."""
    x = np.ascontiguousarray(np.bitwise_xor(a, b), dtype=np.uint64)
    return _POPCOUNT16[x.view(np.uint16).reshape(*x.shape, 4)].sum(axis=-1, dtype=np.int64)


def _close_pairs(hashes: np.ndarray, max_distance: int, rows: int = 256) -> list[tuple[int, int]]:
    """All index pairs (i < j) whose hashes differ in at most ``max_distance`` bits.

    Pigeonhole search: split 64 bits into ``max_distance + 1`` blocks; close hashes
    agree exactly on at least one block. Large groups are compared ``rows`` at a time.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    blocks = max_distance + 1
    edges = np.linspace(0, 64, blocks + 1).round().astype(int)
    pairs: set[tuple[int, int]] = set()
    for b in range(blocks):
        lo, hi = edges[b], edges[b + 1]
        part = (hashes >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(part, kind="stable")
        cuts = np.flatnonzero(np.diff(part[order])) + 1
        for group in np.split(order, cuts):
            if len(group) < 2:
                continue
            g = np.sort(group)
            hg = hashes[g]
            for r0 in range(0, len(g) - 1, rows):
                d = _distance(hg[r0 : r0 + rows, None], hg[None, r0 + 1 :])
                ii, jj = np.nonzero(d <= max_distance)
                jj = jj + r0 + 1
                keep = jj > ii + r0
                pairs.update(zip(g[ii[keep] + r0].tolist(), g[jj[keep]].tolist()))
    return sorted(pairs)


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"n": 0}
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return {"n": int(len(values)), "mean": float(values.mean()), "p5": float(q[0]), "p25": float(q[1]),
            "median": float(q[2]), "p75": float(q[3]), "p95": float(q[4])}


class _Signatures:
    """Detail signatures of crops, computed on first use."""

    def __init__(self, crop: Any) -> None:
        self._crop = crop
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            from faceveil.train.crops import detail_signature

            self._cache[i] = detail_signature(self._crop(i))
        return self._cache[i]

    def similarity(self, i: int, j: int) -> float:
        return float(self(i) @ self(j))


def _same_photo_pairs(
    hashes: np.ndarray, ok: np.ndarray, signatures: _Signatures, max_distance: int, min_similarity: float
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(candidates, confirmed)``: index pairs with close hashes, and those whose detail agrees."""
    usable = np.flatnonzero(ok)
    if len(usable) < 2:
        return [], []
    candidates = [(int(usable[a]), int(usable[b])) for a, b in _close_pairs(hashes[usable], max_distance)]
    confirmed = [(a, b) for a, b in candidates if signatures.similarity(a, b) >= min_similarity]
    return candidates, confirmed


def _calibrate(
    hashes: np.ndarray,
    signatures: _Signatures,
    number_pairs: Sequence[tuple[int, int]],
    celeba_ok: Sequence[int],
    identities: Sequence[str],
    max_distance: int,
    min_similarity: float,
    random_pairs: int = 5000,
) -> dict[str, Any]:
    """How the duplicate rule fares on the same photo in two sources (same CelebA number)
    and on random pairs of different CelebA identities."""

    def measure(pairs: Sequence[tuple[int, int]]) -> dict[str, Any]:
        a = np.array([p[0] for p in pairs], dtype=np.int64)
        b = np.array([p[1] for p in pairs], dtype=np.int64)
        d = _distance(hashes[a], hashes[b])
        sim = np.array([signatures.similarity(int(x), int(y)) for x, y in zip(a, b)], dtype=np.float64)
        return {
            "pairs": int(len(a)),
            "found_by_rule": int(((d <= max_distance) & (sim >= min_similarity)).sum()),
            "hash_distance": _stats(d.astype(np.float64)),
            "similarity": _stats(sim),
            "similarity_max": float(sim.max()) if len(sim) else None,
        }

    rng = np.random.default_rng(0)
    different: list[tuple[int, int]] = []
    if len(celeba_ok) > 1:
        for x, y in rng.choice(np.asarray(celeba_ok), (4 * random_pairs, 2)):
            if identities[x] != identities[y]:
                different.append((int(x), int(y)))
            if len(different) == random_pairs:
                break
    return {"same_photo_two_sources": measure(number_pairs),
            "random_different_celeba_identities": measure(different)}


# --------------------------------------------------------------------------- main


def prepare_face_set(
    shared_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    size: int = 64,
    *,
    sources_root: str | os.PathLike[str] | None = None,
    source_names: Sequence[str] | None = None,
    holdout_fraction: float = 0.1,
    cache_dir: str | os.PathLike[str] | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    encoding: dict[str, Any] | None = None,
    max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    max_filled: float = 1.0,
    limit_per_source: int | None = None,
    progress: bool = True,
    framing: str = "ffhq",
    masks: bool = False,
) -> SetReport:
    """Build the chunked training set in ``out_dir``; see the module docstring.

    ``sources_root`` holds the extracted external sources (``<root>/<name>/...``);
    ``source_names`` picks among :data:`~faceveil.train.sources.KNOWN_SOURCES` (default:
    all of them when ``sources_root`` is given). Crops filled beyond ``max_filled`` are
    dropped (and counted). ``limit_per_source`` keeps an evenly spaced subset of each
    source (tests). ``framing`` and ``masks`` as for :func:`faceveil.train.data.prepare_dataset`
    (the masks travel packed, one bit per pixel, as the chunks' ``masks`` array).
    """
    t0 = time.perf_counter()
    size = int(size)
    if size < 8:
        raise UsageError(f"crop size must be at least 8, got {size}")
    if not 0 <= max_hash_distance <= 15:
        raise UsageError(f"max hash distance must be in 0..15, got {max_hash_distance}")
    if not -1.0 <= min_similarity <= 1.0:
        raise UsageError(f"min similarity must be in [-1, 1], got {min_similarity}")
    encoding = dict(encoding or {"kind": "jpeg", "quality": 95})
    shared = Path(shared_dir)
    celeba_dir = shared / "data" / "celeba"
    lfw_dir = shared / "data" / "lfw"
    out = Path(out_dir)
    if out.suffix == ".npz":
        raise UsageError(f"a chunked set is written to a folder, not {out}")

    sources = _shared_sources(shared, limit_per_source)
    if sources_root is not None:
        names = list(source_names) if source_names else [s.name for s in srcmod.KNOWN_SOURCES]
        sources += _external_sources(Path(sources_root), names, limit_per_source)
    elif source_names:
        raise UsageError("source names given without a sources root")
    if not sources:
        raise UsageError(f"no sources: nothing under {shared / 'data'} and no sources root")

    # Identities and exclusions.
    full_ids_file = celeba_dir / "identity_CelebA.txt"
    local_ids_file = celeba_dir / "identity.txt"
    celeba_ids: dict[str, str] = {}
    if full_ids_file.is_file():
        celeba_ids = read_celeba_identities(full_ids_file)
    elif local_ids_file.is_file():
        celeba_ids = read_celeba_identities(local_ids_file)
    needs_celeba = any(s.info["kind"] == "celeba" for s in sources)
    if needs_celeba and not celeba_ids:
        raise UsageError(f"CelebA identity file not found: {full_ids_file}")
    exclude_file = celeba_dir / "exclude_identities.txt"
    exclude: set[str] = set()
    if exclude_file.is_file():
        exclude = {ln.split()[0] for ln in exclude_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    elif needs_celeba:
        raise UsageError(f"CelebA exclusion list not found: {exclude_file}")
    holdout = (
        celeba_holdout_identities(read_celeba_identities(local_ids_file).values(), holdout_fraction)
        if local_ids_file.is_file() else []
    )
    lfw_names = lfw_excluded_names(lfw_dir) if any(s.info["kind"] == "lfw" for s in sources) else []
    _label(sources, celeba_ids, exclude, set(holdout), set(lfw_names))

    # Hash the files, then align (cached).
    aligned: dict[str, dict[str, np.ndarray]] = {}
    for s in sources:
        s.info["files"] = len(s.files)
        s.info["sha256"] = srcmod.source_digest(s.root, s.files)
        s.info["selected"] = len(s.selected)
        aligned[s.name] = _align_all(s, size, Path(cache_dir) if cache_dir else None, progress, framing, masks)

    # Flatten in priority order (shared first, then KNOWN_SOURCES order).
    order = {n: i for i, n in enumerate(["shared-celeba", "shared-lfw"] + [k.name for k in srcmod.KNOWN_SOURCES])}
    sources.sort(key=lambda s: order.get(s.name, len(order)))
    src_idx, pos = [], []
    for k, s in enumerate(sources):
        src_idx += [k] * len(s.selected)
        pos += list(range(len(s.selected)))
    src_idx_a = np.array(src_idx, dtype=np.int64)
    n = len(src_idx)
    status = np.concatenate([aligned[s.name]["status"] for s in sources]) if n else np.zeros(0, np.int8)
    ok = status == _OK
    excluded = np.array([sources[k].excluded[p] is not None for k, p in zip(src_idx, pos)], dtype=bool)
    from faceveil.train.crops import perceptual_hash

    def crop(i: int) -> np.ndarray:
        return aligned[sources[src_idx[i]].name]["crops"][pos[i]]

    hashes = np.zeros(n, dtype=np.uint64)
    for i in np.flatnonzero(ok):
        hashes[i] = perceptual_hash(crop(int(i)))

    # Deduplicate by CelebA image number (among usable, not excluded).
    reason = np.array([""] * n, dtype=object)
    reason[~ok] = "failed"
    reason[ok & excluded] = "excluded"
    first_by_number: dict[str, int] = {}
    number_pairs: list[tuple[int, int]] = []
    for i in range(n):
        img = sources[src_idx[i]].celeba[pos[i]]
        if img is None or not ok[i]:
            continue
        if img in first_by_number:
            number_pairs.append((first_by_number[img], i))
            if reason[i] == "":
                reason[i] = "dup_celeba_number"
        else:
            first_by_number[img] = i

    # Deduplicate by content: the same photo as an earlier kept crop, or as any excluded crop.
    signatures = _Signatures(crop)
    candidates, pairs = _same_photo_pairs(hashes, ok, signatures, max_hash_distance, min_similarity)
    partners: dict[int, list[int]] = {}
    for ia, ib in pairs:
        partners.setdefault(ib, []).append(ia)
        partners.setdefault(ia, []).append(ib)
    for i in range(n):
        if reason[i] != "":
            continue
        near = partners.get(i, ())
        if any(reason[j] == "excluded" for j in near):
            reason[i] = "dup_excluded"
        elif any(j < i and reason[j] == "" for j in near):
            reason[i] = "dup_content"
    filled_all = np.concatenate([aligned[s.name]["filled"] for s in sources]) if n else np.zeros(0, np.float32)
    for i in np.flatnonzero((reason == "") & (filled_all > max_filled)):
        reason[i] = "too_filled"
    keep = np.flatnonzero(reason == "")
    if len(keep) == 0:
        raise UsageError("no crop left after exclusions and deduplication")

    idents = [sources[src_idx[i]].identities[pos[i]] for i in range(n)]
    celeba_ok = [int(i) for i in np.flatnonzero(ok) if sources[src_idx[i]].info["kind"] == "celeba"]
    calibration = _calibrate(hashes, signatures, number_pairs, celeba_ok, idents, max_hash_distance, min_similarity)

    # Order, chunk, write.
    rels = [f"{sources[src_idx[i]].name}/{sources[src_idx[i]].selected[pos[i]]}" for i in range(n)]
    keep = np.array(sorted(keep.tolist(), key=lambda i: hashlib.sha256(rels[i].encode()).digest()))
    images = np.stack([crop(int(i)) for i in keep])
    matrix = np.stack([aligned[sources[src_idx[i]].name]["matrix"][pos[i]] for i in keep])
    shape = np.stack([aligned[sources[src_idx[i]].name]["shape"][pos[i]] for i in keep])
    extras = {
        "phash": hashes[keep],
        "filled": filled_all[keep].astype(np.float32),
        "align_matrix": matrix,
        "source_shape": shape.astype(np.int32),
    }
    if masks:
        crop_masks = np.stack([aligned[sources[src_idx[i]].name]["masks"][pos[i]] for i in keep])
        extras["masks"] = np.packbits(crop_masks.reshape(len(keep), -1), axis=1)
    ids_keep = [sources[src_idx[i]].identities[pos[i]] for i in keep]
    entries = write_chunks(out, images, ids_keep, [rels[i] for i in keep], extras,
                           encoding=encoding, max_bytes=max_chunk_bytes)

    # Provenance.
    prov_sources: dict[str, Any] = {}
    kept_mask = reason == ""
    for k, s in enumerate(sources):
        sel = src_idx_a == k
        r = reason[sel]
        st = status[sel]
        ex = s.excluded
        lm = aligned[s.name]["landmarks"][kept_mask[sel]]
        fill = aligned[s.name]["filled"][kept_mask[sel]]
        info = dict(s.info)
        info["counts"] = {
            "kept": int((r == "").sum()),
            "unreadable": int((st == _UNREADABLE).sum()),
            "no_face": int((st == _NO_FACE).sum()),
            "too_small": int((st == _TOO_SMALL).sum()),
            "excluded": int(sum(e is not None for e in ex)),
            "excluded_aligned": int((r == "excluded").sum()),
            "excluded_by_reason": {
                why: int(sum(e == why for e in ex))
                for why in ("exclude_identities", "celeba_holdout", "lfw_evaluation", "unknown_identity")
                if any(e == why for e in ex)
            },
            "dup_celeba_number": int((r == "dup_celeba_number").sum()),
            "dup_content": int((r == "dup_content").sum()),
            "dup_excluded": int((r == "dup_excluded").sum()),
            "too_filled": int((r == "too_filled").sum()),
        }
        kept_ids = {s.identities[p] for p in np.flatnonzero(kept_mask[sel])}
        info["identities_kept"] = len(kept_ids) if s.info["kind"] != "utkface" else None
        info["filled"] = {**_stats(fill), "share_with_fill": float((fill > 0).mean()) if len(fill) else 0.0}
        info["landmarks_in_crop_mean"] = lm.mean(axis=0).round(4).tolist() if len(lm) else None
        info["landmarks_in_crop_std"] = lm.std(axis=0).round(4).tolist() if len(lm) else None
        prov_sources[s.name] = info
    from faceveil.faces import CANONICAL_LANDMARKS5

    kept_names = {x for x in ids_keep if not x.startswith("utkface:")}
    total_bytes = sum(e["bytes"] for e in entries)
    prov: dict[str, Any] = {
        "format": SET_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "size": size,
        "framing": framing,
        "masks": "pipeline.face_geometry latent cells of the mesh outline" if masks else None,
        "images": int(len(keep)),
        "identities_known": len(kept_names),
        "encoding": {"kind": encoding["kind"], **({"quality": int(encoding.get("quality", 95)), "subsampling": "4:4:4"}
                                                  if encoding["kind"] == "jpeg" else {"lossless": True})},
        "alignment": {
            "version": ALIGN_VERSION,
            "detector": "faceveil.faces.detect_faces (largest central face, faceveil.train.data._pick_face)",
            "crop": f"faceveil.faces.alignment_transform (FFHQ quad orientation, framing {framing!r}) "
                    "+ faceveil.faces.align.warp_crop",
            "fill": "FFHQ recreate_aligned_images: reflect pad, blur sigma 0.02*quad fading in, median fade outwards",
            "canonical_landmarks5": CANONICAL_LANDMARKS5.round(4).tolist(),
        },
        "licence": "CelebA and UTKFace: non-commercial research purposes only; every model trained on this set inherits that",
        "sources": prov_sources,
        "exclusions": {
            "exclude_identities": {"file": "data/celeba/exclude_identities.txt", "identities": len(exclude),
                                   "sha256": file_sha256(exclude_file) if exclude_file.is_file() else None},
            "celeba_holdout": {"fraction": holdout_fraction, "salt": HOLDOUT_SALT, "of": "data/celeba/identity.txt",
                               "identities": sorted(holdout, key=_natural_key)},
            "lfw_evaluation": {"files": list(LFW_EXCLUSION_FILES), "people": len(lfw_names)},
            "identity_file": {"file": "data/celeba/identity_CelebA.txt" if full_ids_file.is_file() else "data/celeba/identity.txt",
                              "sha256": file_sha256(full_ids_file if full_ids_file.is_file() else local_ids_file)
                              if celeba_ids else None},
        },
        "dedup": {
            "celeba_number": {"duplicates": int((reason == "dup_celeba_number").sum()),
                              "priority": [s.name for s in sources]},
            "content": {
                "rule": "perceptual_hash Hamming distance <= max_distance and detail_signature dot >= min_similarity "
                        "(faceveil.train.crops; face region of the aligned crop)",
                "max_distance": max_hash_distance,
                "min_similarity": min_similarity,
                "candidate_pairs": len(candidates),
                "confirmed_pairs": len(pairs),
                "duplicates": int((reason == "dup_content").sum()),
                "duplicates_of_excluded": int((reason == "dup_excluded").sum()),
            },
            "calibration": calibration,
        },
        "max_filled": max_filled,
        "limit_per_source": limit_per_source,
        "chunks": entries,
        "bytes": total_bytes,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    with atomic_output(out / MANIFEST_NAME) as fh:
        fh.write((json.dumps(prov, indent=2, sort_keys=False) + "\n").encode())
    return SetReport(out, int(len(keep)), total_bytes, len(entries), time.perf_counter() - t0, prov)

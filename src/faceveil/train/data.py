"""Training data for faceveil's face diffusion model.

:func:`prepare_dataset` turns the shared CelebA and LFW photos into one compact file of
FFHQ-aligned face crops, made by :mod:`faceveil.faces` exactly as at inference. Who is
left out, and why:

* CelebA: a fixed ``holdout_fraction`` of identities (chosen by hashing the identity
  with a fixed salt, so the choice never depends on file order or on a random seed) is
  held out for evaluation; see :func:`celeba_holdout_identities`.
* LFW: every person named in the evaluation protocols ``pairs.txt`` (View 2) and
  ``pairsDevTest.txt`` (View 1 test) is left out; see :func:`lfw_excluded_names`.

The file is an ``.npz`` (no pickled objects) holding the crops, an identity label per
crop, the identity names, the source path of each crop and a JSON manifest (sources,
counts, excluded identities, encoding). Crops are stored as raw ``uint8`` when that fits
the size budget, else as lossless WebP, else as JPEG (4:4:4) at the highest quality that
fits (the manifest says which); :func:`load_faces`
returns ``uint8`` N x S x S x 3 in every case. :class:`FaceCropDataset` serves them to
torch with random horizontal flips, scaled to [-1, 1].
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.atomic import atomic_output
from faceveil.errors import UsageError

__all__ = [
    "DATA_FORMAT",
    "FaceCropDataset",
    "FaceData",
    "PrepareReport",
    "celeba_holdout_identities",
    "lfw_excluded_names",
    "load_faces",
    "prepare_dataset",
    "save_faces",
]

DATA_FORMAT = "faceveil-faces-1"
HOLDOUT_SALT = "faceveil-celeba-holdout-v1"
MAX_BYTES = 40_000_000  # the file must travel to the GPU machine (64 MiB in all)
JPEG_QUALITIES = (98, 95, 92, 90, 87, 85, 82, 80)
ENCODINGS = ("auto", "raw", "webp", "jpeg")
LFW_EXCLUSION_FILES = ("pairs.txt", "pairsDevTest.txt")


# --------------------------------------------------------------------------- splits


def read_celeba_identities(identity_file: str | os.PathLike[str]) -> dict[str, str]:
    """``{image file name: identity}`` from CelebA's ``identity.txt``.

    Lines are ``image identity``; a header line (``image identity``) is skipped.
    """
    out: dict[str, str] = {}
    with open(identity_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise UsageError(f"{identity_file}:{lineno}: expected 'image identity'")
            if lineno == 1 and parts == ["image", "identity"]:
                continue
            out[parts[0]] = parts[1]
    return out


def celeba_holdout_identities(
    identities: Iterable[str] | str | os.PathLike[str],
    fraction: float = 0.1,
    salt: str = HOLDOUT_SALT,
) -> list[str]:
    """The CelebA identities held out of training, for evaluation (sorted).

    ``identities`` is an iterable of identity strings or the path of ``identity.txt``.
    Identities are ranked by SHA-256 of ``salt:identity`` and the first
    ``round(fraction * n)`` (at least one when ``fraction > 0``) are held out: the choice
    is fixed for a given salt and independent of order, seeds and platform.
    """
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"holdout fraction must be in [0, 1), got {fraction}")
    if isinstance(identities, (str, os.PathLike)):
        ids = set(read_celeba_identities(identities).values())
    else:
        ids = {str(i) for i in identities}
    if fraction == 0.0 or not ids:
        return []
    n = max(1, round(fraction * len(ids)))
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())
    return sorted(ranked[:n], key=_natural_key)


def parse_lfw_pairs(path: str | os.PathLike[str]) -> set[str]:
    """Names of the people in an LFW pairs file (``pairs.txt`` format, README 3c).

    The first line is a header (``folds pairs`` or ``pairs``); then ``name n1 n2`` for a
    matched pair and ``name1 n1 name2 n2`` for a mismatched pair.
    """
    names: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if lineno == 1 or not parts:
                continue
            if len(parts) == 3:
                names.add(parts[0])
            elif len(parts) == 4:
                names.add(parts[0])
                names.add(parts[2])
            else:
                raise UsageError(f"{path}:{lineno}: not an LFW pairs line: {line.strip()!r}")
    return names


def lfw_excluded_names(
    lfw_dir: str | os.PathLike[str], files: Sequence[str] = LFW_EXCLUSION_FILES
) -> list[str]:
    """Everyone named in LFW's evaluation pair lists (sorted); never trained on."""
    lfw_dir = Path(lfw_dir)
    names: set[str] = set()
    for name in files:
        path = lfw_dir / name
        if not path.is_file():
            raise UsageError(f"LFW pairs file not found: {path}")
        names |= parse_lfw_pairs(path)
    return sorted(names)


def _natural_key(s: str) -> tuple[int, int | str]:
    return (0, int(s)) if s.isdigit() else (1, s)


# --------------------------------------------------------------------------- file format


@dataclass
class FaceData:
    """Aligned face crops as loaded from a prepared file."""

    images: np.ndarray  # uint8 N x S x S x 3, RGB
    labels: np.ndarray  # int32 N, index into identity_names
    identity_names: list[str]  # "celeba:<id>" / "lfw:<Name>"
    sources: list[str]  # per crop, e.g. "celeba/000093.jpg", "lfw/<Name>/<Name>_0001.jpg"
    manifest: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None  # bool N x S x S: the cells inference would replace (inpainting training)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def _encode(images: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode each image (``fmt`` "webp": lossless; "jpeg": 4:4:4 at ``quality``)."""
    from PIL import Image

    chunks: list[bytes] = []
    offsets = np.zeros(len(images) + 1, dtype=np.int64)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        if fmt == "webp":
            Image.fromarray(img).save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
        else:
            Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=True)
        chunks.append(buf.getvalue())
        offsets[i + 1] = offsets[i] + len(chunks[-1])
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    return data, offsets


def _estimate(images: np.ndarray, fmt: str, quality: int, sample: int = 200) -> float:
    """Encoded size of all ``images`` extrapolated from an evenly spaced sample."""
    n = len(images)
    if n <= sample:
        return float(_encode(images, fmt, quality)[0].nbytes)
    idx = np.linspace(0, n - 1, sample).round().astype(int)
    return _encode(images[idx], fmt, quality)[0].nbytes * n / sample


def _decode(data: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    n = len(offsets) - 1
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    raw = data.tobytes()
    for i in range(n):
        with Image.open(io.BytesIO(raw[offsets[i] : offsets[i + 1]])) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> int:
    """Write atomically; return the file size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return os.path.getsize(path)


def save_faces(
    path: str | os.PathLike[str],
    data: FaceData,
    *,
    max_bytes: int | None = MAX_BYTES,
    encoding: str = "auto",
    jpeg_qualities: Sequence[int] = JPEG_QUALITIES,
) -> dict[str, Any]:
    """Write ``data`` to ``path`` (``.npz``) within ``max_bytes``; return encoding info.

    ``encoding``: ``"raw"`` (uint8 array, zlib), ``"webp"`` (lossless WebP per crop),
    ``"jpeg"`` (4:4:4, the first of ``jpeg_qualities`` that fits) or ``"auto"``: the
    first of raw, webp, jpeg that fits. Raises :class:`UsageError` when nothing fits
    (nothing is written then).
    """
    if encoding not in ENCODINGS:
        raise UsageError(f"unknown encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
    path = Path(path)
    images = np.ascontiguousarray(data.images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise UsageError(f"images must be N x S x S x 3, got {images.shape}")
    common = {
        "format": np.array(DATA_FORMAT),
        "labels": np.asarray(data.labels, dtype=np.int32),
        "identity_names": np.array(list(data.identity_names), dtype=np.str_),
        "sources": np.array(list(data.sources), dtype=np.str_),
    }
    if data.masks is not None:
        masks = np.asarray(data.masks, dtype=bool)
        if masks.shape != images.shape[:3]:
            raise UsageError(f"masks must be N x S x S like the images, got {masks.shape}")
        common["masks"] = np.packbits(masks.reshape(len(masks), -1), axis=1)
    limit = math.inf if max_bytes is None else int(max_bytes)
    auto = encoding == "auto"
    tried: list[str] = []

    def manifest_with(info: dict[str, Any]) -> np.ndarray:
        manifest = dict(data.manifest)
        manifest["size"] = int(images.shape[1])
        manifest["encoding"] = info
        return np.array(json.dumps(manifest, sort_keys=True))

    def attempt(info: dict[str, Any], arrays: dict[str, np.ndarray], compressed: bool) -> int | None:
        arrays = {**common, **arrays, "manifest": manifest_with(info)}
        size = _write_npz(path, arrays, compressed)
        if size <= limit:
            return size
        os.unlink(path)
        tried.append(f"{_describe(info)}: {size / 1e6:.1f} MB")
        return None

    if encoding == "raw" or (auto and images.nbytes * 0.85 <= limit):
        info: dict[str, Any] = {"kind": "raw"}
        size = attempt(info, {"images": images}, True)
        if size is not None:
            return {**info, "bytes": size}
    elif auto:
        tried.append(f"raw: {images.nbytes / 1e6:.0f} MB before compression")
    if encoding in ("auto", "webp"):
        info = {"kind": "webp", "lossless": True}
        estimate = _estimate(images, "webp", 100) if auto and limit < math.inf else 0.0
        if estimate > 1.05 * limit:  # lossless WebP is slow: skip a hopeless attempt
            tried.append(f"webp lossless: about {estimate / 1e6:.0f} MB (estimated)")
        else:
            blob, offsets = _encode(images, "webp", 100)
            if blob.nbytes > limit:
                tried.append(f"webp lossless: {blob.nbytes / 1e6:.1f} MB")
            else:
                size = attempt(info, {"blob": blob, "offsets": offsets}, False)
                if size is not None:
                    return {**info, "bytes": size}
    if encoding in ("auto", "jpeg"):
        for q in jpeg_qualities:
            info = {"kind": "jpeg", "quality": int(q), "subsampling": "4:4:4"}
            if limit < math.inf and q != jpeg_qualities[-1]:
                estimate = _estimate(images, "jpeg", int(q))
                if estimate > 1.05 * limit:
                    tried.append(f"jpeg q{q}: about {estimate / 1e6:.0f} MB (estimated)")
                    continue
            blob, offsets = _encode(images, "jpeg", int(q))
            if blob.nbytes > limit:  # the payload alone is over: no need to write
                tried.append(f"jpeg q{q}: {blob.nbytes / 1e6:.1f} MB")
                continue
            size = attempt(info, {"blob": blob, "offsets": offsets}, False)
            if size is not None:
                return {**info, "bytes": size}
    raise UsageError(
        f"{len(images)} crops of {images.shape[1]}x{images.shape[1]} do not fit in "
        f"{limit / 1e6:.1f} MB ({'; '.join(tried)}); use a smaller --size or fewer images"
    )


def _describe(info: dict[str, Any]) -> str:
    kind = str(info.get("kind", "?"))
    if kind == "jpeg":
        return f"jpeg q{info['quality']}"
    if kind == "webp":
        return "webp lossless"
    return kind


def load_faces(path: str | os.PathLike[str]) -> FaceData:
    """Load a file written by :func:`prepare_dataset` / :func:`save_faces`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"face data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z.files else ""
            if fmt != DATA_FORMAT:
                raise UsageError(f"{path}: not a faceveil face data file (format {fmt!r})")
            manifest = json.loads(str(z["manifest"]))
            labels = z["labels"].astype(np.int64)
            names = [str(s) for s in z["identity_names"]]
            sources = [str(s) for s in z["sources"]]
            if "images" in z.files:
                images = z["images"]
            else:
                images = _decode(z["blob"], z["offsets"], int(manifest["size"]))
            masks = None
            if "masks" in z.files:
                side = int(manifest["size"])
                masks = np.unpackbits(z["masks"], axis=1, count=side * side).reshape(-1, side, side).astype(bool)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot read face data file {path}: {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise UsageError(f"{path}: malformed face data (images {images.shape} {images.dtype})")
    if masks is not None and len(masks) != len(images):
        raise UsageError(f"{path}: {len(masks)} masks for {len(images)} crops")
    return FaceData(images, labels, names, sources, manifest, masks)


# --------------------------------------------------------------------------- torch dataset


class FaceCropDataset:
    """A ``torch.utils.data.Dataset`` of aligned face crops.

    Items are float32 tensors 3 x S x S in [-1, 1], flipped left-right with probability
    ``flip_p`` (random, from torch's global RNG, so DataLoader worker seeding applies).
    With ``return_labels=True`` items are ``(image, identity label)``.
    """

    def __init__(
        self,
        source: FaceData | np.ndarray | str | os.PathLike[str],
        *,
        flip_p: float = 0.5,
        return_labels: bool = False,
    ) -> None:
        import torch

        if isinstance(source, (str, os.PathLike)):
            source = load_faces(source)
        if isinstance(source, FaceData):
            images, labels = source.images, source.labels
        else:
            images = np.asarray(source)
            labels = np.zeros(len(images), dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise UsageError(f"expected uint8 N x S x S x 3 images, got {images.shape} {images.dtype}")
        self._images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self._labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.flip_p = float(flip_p)
        self.return_labels = return_labels

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __getitem__(self, index: int) -> Any:
        import torch

        x = self._images[index].float().div_(127.5).sub_(1.0)
        if self.flip_p > 0 and torch.rand(()) < self.flip_p:
            x = x.flip(-1)
        if self.return_labels:
            return x, int(self._labels[index])
        return x


# --------------------------------------------------------------------------- preparation


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did."""

    path: Path
    size: int
    images: int  # crops written
    identities: int  # identities among them
    bytes: int
    encoding: dict[str, Any]
    seconds: float
    counts: dict[str, dict[str, int]]  # per source: candidates, used, no_face, too_small, unreadable
    celeba_holdout: list[str]
    lfw_excluded: list[str]

    def summary(self) -> str:
        parts = []
        for src, c in self.counts.items():
            parts.append(
                f"{src}: {c['used']}/{c['candidates']} used, {c['no_face']} no face, "
                f"{c['too_small']} too small, {c['unreadable']} unreadable"
            )
        enc = _describe(self.encoding)
        return (
            f"{self.path}: {self.images} crops {self.size}x{self.size} of {self.identities} "
            f"identities, {self.bytes / 1e6:.1f} MB ({enc}), {self.seconds:.0f} s; "
            + "; ".join(parts)
            + f"; held out {len(self.celeba_holdout)} CelebA identities, "
            f"excluded {len(self.lfw_excluded)} LFW people"
        )


def _subsample(items: list[Any], limit: int | None) -> list[Any]:
    """Evenly spaced, deterministic subset of at most ``limit`` items."""
    if limit is None or len(items) <= limit:
        return items
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _read_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None


def _pick_face(faces: Sequence[Any], shape: tuple[int, ...]) -> Any | None:
    """The subject of a centred portrait: the face nearest the centre among the large ones."""
    usable = [f for f in faces if not getattr(f, "too_small", False)]
    if not usable:
        return None
    h, w = shape[:2]
    centre = np.array([w / 2.0, h / 2.0])

    def scale(f: Any) -> float:
        lm = np.asarray(f.landmarks5, dtype=np.float64)
        return float(np.linalg.norm(lm[1] - lm[0]) + np.linalg.norm((lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2))

    biggest = max(scale(f) for f in usable)
    large = [f for f in usable if scale(f) >= 0.5 * biggest]
    return min(large, key=lambda f: float(np.linalg.norm(np.asarray(f.landmarks5).mean(axis=0) - centre)))


def inference_mask(image_shape: tuple[int, ...], face: Any, transform: Any) -> np.ndarray:
    """The crop cells anonymization would replace for ``face`` (bool S x S), as the
    pipeline derives them for a pixel model: mesh outline, paste region, resampling reach."""
    from types import SimpleNamespace

    from faceveil.faces import face_outline
    from faceveil.pipeline import face_geometry

    pixel_model = SimpleNamespace(downscale=1, latent_size=transform.size)
    geometry = face_geometry(image_shape, transform, face_outline(face, transform), pixel_model)  # type: ignore[arg-type]
    return geometry.latent[0, 0].numpy() > 0


def prepare_dataset(
    shared_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    size: int = 64,
    *,
    holdout_fraction: float = 0.1,
    lfw_exclusion_files: Sequence[str] = LFW_EXCLUSION_FILES,
    sources: Sequence[str] = ("celeba", "lfw"),
    limit_per_source: int | None = None,
    max_bytes: int | None = MAX_BYTES,
    encoding: str = "auto",
    progress: bool = True,
    framing: str = "ffhq",
    masks: bool = False,
) -> PrepareReport:
    """Detect, align and store the training faces of ``shared_dir`` in ``out_path``.

    ``shared_dir`` is the shared folder (holding ``data/celeba`` and ``data/lfw``).
    Images with no usable face (none detected, or only too small ones) are skipped and
    counted. ``limit_per_source`` keeps an evenly spaced subset of each source's
    candidate images (for tests). The file is refused (:class:`UsageError`) when it
    cannot be made to fit ``max_bytes``. ``framing`` is the crop's (``faces.align.FRAMINGS``);
    ``masks`` also stores, per crop, the cells inference would replace (the mesh outline's
    region as ``pipeline.face_geometry`` derives it), for inpainting models.
    """
    from tqdm.auto import tqdm

    from faceveil.faces import align_face, detect_faces

    t0 = time.perf_counter()
    size = int(size)
    if size < 8:
        raise UsageError(f"crop size must be at least 8, got {size}")
    shared = Path(shared_dir)
    data_dir = shared / "data"
    celeba_dir = data_dir / "celeba"
    lfw_dir = data_dir / "lfw"
    unknown = set(sources) - {"celeba", "lfw"}
    if unknown or not sources:
        raise UsageError(f"sources must be among 'celeba', 'lfw', got {list(sources)}")

    # (source name, identity key, relative source path, absolute path)
    candidates: dict[str, list[tuple[str, str, Path]]] = {}
    holdout: list[str] = []
    excluded: list[str] = []
    if "celeba" in sources:
        ident_file = celeba_dir / "identity.txt"
        if not ident_file.is_file():
            raise UsageError(f"CelebA identity file not found: {ident_file}")
        ident = read_celeba_identities(ident_file)
        holdout = celeba_holdout_identities(ident.values(), holdout_fraction)
        held = set(holdout)
        items = [
            (f"celeba:{pid}", f"celeba/{img}", celeba_dir / "images" / img)
            for img, pid in sorted(ident.items())
            if pid not in held
        ]
        candidates["celeba"] = _subsample(items, limit_per_source)
    if "lfw" in sources:
        excluded = lfw_excluded_names(lfw_dir, lfw_exclusion_files)
        excl = set(excluded)
        img_root = lfw_dir / "images"
        if not img_root.is_dir():
            raise UsageError(f"LFW images folder not found: {img_root}")
        items = []
        for person in sorted(p.name for p in img_root.iterdir() if p.is_dir()):
            if person in excl:
                continue
            for f in sorted((img_root / person).glob("*.jpg")):
                items.append((f"lfw:{person}", f"lfw/{person}/{f.name}", f))
        candidates["lfw"] = _subsample(items, limit_per_source)

    counts = {
        src: {"candidates": len(items), "used": 0, "no_face": 0, "too_small": 0, "unreadable": 0}
        for src, items in candidates.items()
    }
    crops: list[np.ndarray] = []
    crop_masks: list[np.ndarray] = []
    keys: list[str] = []
    rel_paths: list[str] = []
    total = sum(len(v) for v in candidates.values())
    with tqdm(total=total, desc=f"aligning faces {size}px", unit="img", disable=not progress) as bar:
        for src, items in candidates.items():
            c = counts[src]
            for key, rel, path in items:
                bar.update(1)
                image = _read_rgb(path)
                if image is None:
                    c["unreadable"] += 1
                    continue
                faces = detect_faces(image)
                face = _pick_face(faces, image.shape)
                if face is None:
                    c["too_small" if faces else "no_face"] += 1
                    continue
                crop, transform = align_face(image, face, size, framing)
                crops.append(np.ascontiguousarray(crop[..., :3], dtype=np.uint8))
                if masks:
                    crop_masks.append(inference_mask(image.shape, face, transform))
                keys.append(key)
                rel_paths.append(rel)
                c["used"] += 1
            bar.set_postfix(used=len(crops))
    if not crops:
        raise UsageError(f"no usable face found in {total} images under {data_dir}")

    names = sorted(set(keys), key=lambda k: (k.split(":", 1)[0], _natural_key(k.split(":", 1)[1])))
    index = {k: i for i, k in enumerate(names)}
    labels = np.array([index[k] for k in keys], dtype=np.int32)
    manifest: dict[str, Any] = {
        "format": DATA_FORMAT,
        "size": size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "alignment": f"faceveil.faces.align_face (FFHQ quad orientation, framing {framing!r}), "
        "detector faceveil.faces.detect_faces",
        "framing": framing,
        "masks": "pipeline.face_geometry latent cells of the mesh outline" if masks else None,
        "sources": {
            "celeba": "data/celeba/images (identity.txt)" if "celeba" in candidates else None,
            "lfw": "data/lfw/images" if "lfw" in candidates else None,
        },
        "counts": counts,
        "limit_per_source": limit_per_source,
        "celeba_holdout": {
            "fraction": holdout_fraction,
            "salt": HOLDOUT_SALT,
            "rule": "sha256(salt:identity) ascending, first round(fraction*n)",
            "identities": holdout,
        },
        "lfw_excluded": {"files": list(lfw_exclusion_files), "names": excluded},
        "images": len(crops),
        "identities": len(names),
    }
    data = FaceData(np.stack(crops), labels, names, rel_paths, manifest, np.stack(crop_masks) if masks else None)
    enc = save_faces(out_path, data, max_bytes=max_bytes, encoding=encoding)
    return PrepareReport(
        path=Path(out_path),
        size=size,
        images=len(crops),
        identities=len(names),
        bytes=int(enc["bytes"]),
        encoding=enc,
        seconds=time.perf_counter() - t0,
        counts=counts,
        celeba_holdout=holdout,
        lfw_excluded=excluded,
    )

"""What the web page does, on bytes held in memory, through :mod:`faceveil.api`.

No second code path for the method: every photo goes through ``faceveil.api.anonymize``
or ``faceveil.api.recover``, as with the CLI. Each call writes its upload into a fresh
private folder (``mkdtemp``, mode 0700) under ``work_root``, runs there, reads the outputs
back into memory and removes the folder when it ends, whatever happens. Errors are the
API's own messages (what the CLI prints), with the temporary paths replaced by the
uploaded file's name. This module knows nothing about Gradio.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from faceveil import api
from faceveil.container import sidecar_path
from faceveil.errors import FaceveilError, KeyFileError
from faceveil.imageio import DEFAULT_MAX_PIXELS, read_image
from faceveil.envelope import TOKEN_FORMAT, DisclosureToken, Recipient
from faceveil.keys import IDENTITY_KIND, Identity, Key
from faceveil.models import DiffusionModel
from faceveil.pipeline import Progress

#: Longest side of the pictures shown in the page (the downloads keep every pixel).
DISPLAY_SIDE = 768
#: Colour of the outline drawn around the replaced faces.
OUTLINE_RGB = (0, 230, 118)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, repr=False)
class Upload:
    """A file the browser sent: its name (for display and naming only, never a path) and bytes."""

    name: str
    data: bytes

    def __repr__(self) -> str:  # never the content
        return f"Upload({self.name!r}, {len(self.data)} bytes)"


@dataclass(repr=False)
class Veiled:
    """One anonymized photo, in memory: the veiled PNG (header inside) and the pictures to show."""

    name: str
    png: bytes
    before: bytes  # PNG, display size, replaced faces outlined
    after: bytes
    faces: int
    notes: list[str] = field(default_factory=list)


@dataclass(repr=False)
class Recovered:
    """One recovered photo, in memory."""

    name: str
    png: bytes
    picture: bytes  # PNG, display size
    notes: list[str] = field(default_factory=list)


def safe_name(name: str, fallback: str = "photo") -> str:
    """A plain file name from a browser's name: no folders, no odd characters, not hidden."""
    base = _UNSAFE.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return base[-120:] or fallback


@contextmanager
def private_dir(work_root: Path) -> Iterator[Path]:
    """A fresh folder only this user can read, removed with everything in it when the block ends."""
    Path(work_root).mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="request-", dir=work_root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _clean(text: str, work: Path, source: Path, name: str) -> str:
    """An API message or note with the private paths replaced by the name the user gave."""
    text = str(text).replace(str(source), name)
    for folder in (work / "in", work / "out", work):
        text = text.replace(str(folder) + "/", "").replace(str(folder), "")
    return text


def _rethrow(exc: FaceveilError, work: Path, source: Path, name: str) -> FaceveilError:
    """The same error class (so the same exit code and meaning), with the page's message."""
    return type(exc)(_clean(str(exc), work, source, name))


def _place(work: Path, name: str, data: bytes) -> Path:
    """Write the upload as ``work/in/NAME``; outputs go to ``work/out/`` (apart, so no name can clash)."""
    (work / "in").mkdir()
    (work / "out").mkdir()
    source = work / "in" / name
    source.write_bytes(data)
    return source


def anonymize_upload(
    upload: Upload,
    key: Key | Identity | Recipient | list,
    model: DiffusionModel,
    work_root: Path,
    allow_no_face: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
    style: str = "face",
) -> Veiled:
    """Anonymize one uploaded photo with ``faceveil.api.anonymize``; the veiled PNG comes back in memory.

    ``style``: ``face`` (the model) or a visible sealed treatment (``pixelate``, ``blur``, ``solid``)."""
    name = safe_name(upload.name)
    with private_dir(work_root) as work:
        source = _place(work, name, upload.data)
        target = work / "out" / api.default_output(source, api.VEILED_TAG).name
        try:
            result = api.anonymize(
                source, key, target, model=model, allow_no_face=allow_no_face, max_pixels=max_pixels, progress=progress,
                style=style,
            )
            from faceveil.verify import Verifier  # the output check: its warnings are shown as notes

            Verifier().check(source, result)
            before = read_image(source, max_pixels=None).rgb
            after = read_image(target, max_pixels=None).rgb
        except FaceveilError as exc:
            raise _rethrow(exc, work, source, name) from None
        shown_before, shown_after = outlined_pair(before, after)
        notes = [_clean(n, work, source, name) for n in result.notes]
        return Veiled(target.name, target.read_bytes(), shown_before, shown_after, len(result.faces), notes)


def recover_upload(
    image: Upload,
    key: Key | Identity | DisclosureToken,
    work_root: Path,
    sidecar: Upload | None = None,
    model: DiffusionModel | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> Recovered:
    """Recover one uploaded veiled photo (a PNG, or a JPEG/WebP with its ``.veil`` sidecar) with ``faceveil.api.recover``."""
    name = safe_name(image.name)
    with private_dir(work_root) as work:
        source = _place(work, name, image.data)
        if sidecar is not None:
            sidecar_path(source).write_bytes(sidecar.data)
        target = work / "out" / api.default_output(source, api.RECOVERED_TAG).name
        try:
            result = api.recover(source, key, target, model=model, max_pixels=max_pixels, progress=progress)
            picture = read_image(target, max_pixels=None).rgb
        except FaceveilError as exc:
            raise _rethrow(exc, work, source, name) from None
        notes = [_clean(n, work, source, name) for n in result.notes]
        return Recovered(target.name, target.read_bytes(), png_bytes(_fit(Image.fromarray(picture))), notes)


# ---- keys -----------------------------------------------------------------------
def _protected(data: bytes) -> bool:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and record.get("protection", "none") != "none"


def load_key(data: bytes, passphrase: str | None = None) -> Key | Identity | DisclosureToken:
    """A key, an X25519 identity or a disclosure token from an uploaded file; a clear ``KeyFileError`` otherwise."""
    try:
        kind = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        kind = None
    if isinstance(kind, dict) and kind.get("format") == TOKEN_FORMAT:
        return DisclosureToken.from_bytes(data, "the uploaded token")
    if _protected(data) and not passphrase:
        raise KeyFileError("the uploaded key file is protected by a passphrase: type it in the passphrase field")
    if isinstance(kind, dict) and kind.get("kind") == IDENTITY_KIND:
        return Identity.from_file_bytes(data, passphrase or None, source="the uploaded identity file")
    return Key.from_file_bytes(data, passphrase or None, source="the uploaded key file")


def parse_recipients(text: str) -> list[Recipient]:
    """Recipient strings pasted in the page, one per line or separated by spaces or commas (``#`` lines ignored)."""
    lines = [line for line in str(text or "").splitlines() if not line.lstrip().startswith("#")]
    return [Recipient.parse(word) for word in re.split(r"[\s,]+", " ".join(lines)) if word]


def new_key_file(passphrase: str | None = None) -> tuple[Key, bytes]:
    """A fresh key and its key file's bytes (sealed with Argon2id when a passphrase is given)."""
    key = Key.generate()
    return key, key.to_file_bytes(passphrase or None)


# ---- pictures and downloads -------------------------------------------------------
def _fit(image: Image.Image) -> Image.Image:
    scale = DISPLAY_SIDE / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def outlined_pair(before: np.ndarray, after: np.ndarray) -> tuple[bytes, bytes]:
    """Both pictures at display size (PNG), the replaced regions (pixels that differ) outlined on each."""
    changed = np.any(np.asarray(before) != np.asarray(after), axis=2)
    shown = [_fit(Image.fromarray(np.ascontiguousarray(a))) for a in (before, after)]
    size = shown[0].size
    region = np.asarray(Image.fromarray(changed.astype(np.uint8) * 255).resize(size, Image.BOX)) > 0
    width = max(2, round(max(size) / 200))
    grown = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * width + 1))) > 0
    ring = grown & ~region
    out = []
    for picture in shown:
        pixels = np.array(picture.convert("RGB"))
        pixels[ring] = OUTLINE_RGB
        out.append(png_bytes(Image.fromarray(pixels)))
    return out[0], out[1]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    """The bytes as a ``data:`` URL: pictures and downloads reach the browser inside the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def unique_names(names: list[str]) -> list[str]:
    """The names with ``-2``, ``-3``... added before the suffixes where they repeat."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            stem, dot, rest = name.partition(".")
            name = f"{stem}-{count}{dot}{rest}"
        out.append(name)
    return out


def zip_bytes(files: list[tuple[str, bytes]]) -> bytes:
    """A zip archive (stored: PNG is compressed already) of the named files, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()

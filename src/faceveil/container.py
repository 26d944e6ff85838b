"""The faceveil header: a versioned, authenticated record carried with an anonymized image.

Layout (JSON)::

    {"faceveil": 1, "file_nonce": b64, "check": b64, "public": {...},
     "seal_nonce": b64, "sealed": b64}

``public`` holds what anyone may read (model, engine settings, per-face nonces and
geometry, a hash of the anonymized pixels); ``sealed`` is ChaCha20-Poly1305 over the
private part (face masks, recovery hints, residuals) with everything else as associated
data, so changing any byte of the header is detected. ``check`` is an HMAC of
``file_nonce`` under the key: it tells "wrong key" apart from "tampered header".

In a PNG the record is an ``iTXt`` chunk named ``faceveil``; other formats get a
sidecar file ``NAME.veil.json`` beside the image.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import secrets
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from faceveil.atomic import write_file
from faceveil.errors import HeaderError, UsageError, WrongKeyError
from faceveil.keys import InvalidTag, Key, canonical_json, new_nonce

FORMAT_VERSION = 1
PNG_KEYWORD = "faceveil"
SIDECAR_SUFFIX = ".veil.json"
MAX_HEADER_BYTES = 256 * 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def encode_array(array: np.ndarray) -> dict:
    """A numpy array as a JSON-safe dict (zlib-compressed bytes)."""
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": b64(zlib.compress(array.tobytes(), 9))}


def decode_array(obj: dict) -> np.ndarray:
    return np.frombuffer(zlib.decompress(unb64(obj["data"])), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()


def pixels_sha256(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _aad(record: dict) -> bytes:
    return canonical_json({k: record[k] for k in ("faceveil", "file_nonce", "check", "public", "seal_nonce")})


def seal_header(key: Key, public: dict, private: dict) -> dict:
    """Build an authenticated header record; ``private`` is encrypted under ``key``."""
    file_nonce = new_nonce()
    record = {
        "faceveil": FORMAT_VERSION,
        "file_nonce": b64(file_nonce),
        "check": b64(key.check_tag(file_nonce)),
        "public": public,
        "seal_nonce": b64(secrets.token_bytes(12)),
    }
    plaintext = zlib.compress(canonical_json(private), 9)
    record["sealed"] = b64(key.seal(unb64(record["seal_nonce"]), plaintext, _aad(record)))
    return record


def open_header(key: Key, record: dict) -> tuple[dict, dict]:
    """Verify a header record and decrypt its private part.

    Raises ``WrongKeyError`` when the key is not the one used, ``HeaderError`` when
    the record is malformed, of an unknown version, or altered in any byte.
    """
    if not isinstance(record, dict) or "faceveil" not in record:
        raise HeaderError("not a faceveil header")
    if record["faceveil"] != FORMAT_VERSION:
        raise HeaderError(f"unsupported faceveil header version {record['faceveil']!r} (this is faceveil format {FORMAT_VERSION})")
    try:
        file_nonce = unb64(record["file_nonce"])
        check = unb64(record["check"])
        seal_nonce = unb64(record["seal_nonce"])
        sealed = unb64(record["sealed"])
        public = record["public"]
        aad = _aad(record)
    except (KeyError, TypeError, ValueError):
        raise HeaderError("the faceveil header is malformed (missing or invalid fields)") from None
    if not hmac.compare_digest(check, key.check_tag(file_nonce)):
        raise WrongKeyError("wrong key: this file was anonymized with a different key")
    try:
        private = json.loads(zlib.decompress(key.open(seal_nonce, sealed, aad)))
    except InvalidTag:
        raise HeaderError("the faceveil header has been tampered with (authentication failed)") from None
    except (zlib.error, ValueError):
        raise HeaderError("the faceveil header's private part is corrupt") from None
    return public, private


# ---- carrying the record with an image ----------------------------------------------
def sidecar_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.name + SIDECAR_SUFFIX)


def encode_png(array: np.ndarray, record: dict | None) -> bytes:
    """PNG bytes of ``array`` (H×W, H×W×3 or H×W×4 uint8) with the record in an iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    if record is not None:
        info.add_itxt(PNG_KEYWORD, json.dumps(record, separators=(",", ":")), zip=True)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info, compress_level=6)
    return buffer.getvalue()


def encode_image(array: np.ndarray, suffix: str, record: dict | None = None) -> bytes:
    """Image file bytes for ``suffix`` (.png carries ``record`` inside; others cannot)."""
    suffix = suffix.lower()
    if suffix == ".png":
        return encode_png(array, record)
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"cannot write images with extension {suffix!r}; use .png (recommended), .jpg or .webp")
    image = Image.fromarray(array)
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise UsageError("JPEG cannot keep the alpha channel; write .png instead")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def write_image(path: Path, array: np.ndarray, overwrite: bool = False) -> Path:
    """Write a plain image (no header) atomically."""
    return write_file(Path(path), encode_image(array, Path(path).suffix), overwrite=overwrite)


def write_veiled(path: Path, array: np.ndarray, record: dict, overwrite: bool = False) -> list[Path]:
    """Write the anonymized image with its header; returns the files written.

    PNG carries the header inside; any other format gets a sidecar ``NAME.veil.json``.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        return [write_file(path, encode_png(array, record), overwrite=overwrite)]
    data = encode_image(array, path.suffix)
    sidecar = sidecar_path(path)
    if not overwrite and sidecar.exists():
        raise UsageError(f"{sidecar} already exists; refusing to overwrite it")
    written = [write_file(path, data, overwrite=overwrite)]
    written.append(write_file(sidecar, (json.dumps(record) + "\n").encode(), overwrite=overwrite))
    return written


def read_record(path: Path) -> dict:
    """The header record of an anonymized image: from its PNG chunk, else its sidecar."""
    path = Path(path)
    record_text = None
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_HEADER_BYTES)
                PngImagePlugin.MAX_TEXT_MEMORY = max(PngImagePlugin.MAX_TEXT_MEMORY, MAX_HEADER_BYTES)
                image.load()
                record_text = image.text.get(PNG_KEYWORD) if hasattr(image, "text") else None
    except (OSError, SyntaxError, ValueError):
        raise UsageError(f"{path} is not a readable image") from None
    if record_text is None:
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            raise HeaderError(f"{path} has no faceveil header (no PNG chunk and no {sidecar.name}): nothing to recover")
        record_text = sidecar.read_text()
    try:
        return json.loads(record_text)
    except ValueError:
        raise HeaderError(f"the faceveil header of {path} is not valid JSON") from None

"""The faceveil header: a versioned, authenticated, compact record carried with an anonymized image.

Record (in memory)::

    {"faceveil": 2, "file_nonce": b64, "check": b64, "public": {...}, "seal_nonce": b64,
     "sealed": bytes}

``public`` holds what anyone may read (model, engine settings, per-face nonces and
geometry, a hash of the anonymized pixels); ``sealed`` is ChaCha20-Poly1305 over the
private part (face outlines, colour fits, recovery hints, residuals) with everything
else as associated data, so changing any byte of the header is detected (the public JSON
must be stored in the canonical form that was authenticated: re-indented or reordered
JSON is refused). ``check`` is
an HMAC of ``file_nonce`` under the key: it tells "wrong key" apart from "tampered".

On disk the record is binary (``pack_record``): ``faceveil`` magic, version byte, the
length-prefixed canonical JSON of everything but ``sealed``, then the sealed bytes. The
private part is binary too (``pack_private``): byte strings in it (residual images,
hints) travel as raw blobs, not base64. In a PNG the record is a private ancillary
chunk ``veIL`` (read here with a bound, never through Pillow's text limits); other
formats get a sidecar ``NAME.veil`` with the same bytes.

Format 3 (``faceveil.envelope``) adds envelope encryption: a fresh file key per file,
wrapped once per recipient in ``recipients`` (fixed-size stanzas), a sealed list of the
recipients' names (``envelope``, rewritten by ``rekey``), and each face's private data
sealed apart under its own face key (``face_seals``), so that one face can be disclosed.
On disk, after the public JSON: the envelope, the file seal, then the face seals, each
length-prefixed. Format 2 files (one seal under the key itself) are still read.

Bounds: a record may be at most ``header_bound(height, width)`` bytes (1 MiB plus 4
bytes per pixel, at most ``MAX_HEADER_BYTES``); a larger one is refused before it is read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from PIL import Image, PngImagePlugin

from faceveil.atomic import PRIVATE, open_regular, write_file
from faceveil.errors import HeaderError, UsageError, WrongKeyError
from faceveil.imageio import metadata_save_options
from faceveil.envelope import (
    MAX_RECIPIENTS,
    STANZA_BYTES,
    DisclosureToken,
    Envelope,
    FileKey,
    Wrapper,
    envelope_for,
    recipient_name,
    unwrap,
    wrap,
)
from faceveil.keys import NONCE_BYTES, Identity, InvalidTag, Key, canonical_json, new_nonce
from faceveil.schema import check_public

FORMAT_VERSION = 3  # written; format 2 (before envelopes) is still read
LEGACY_VERSION = 2
READ_VERSIONS = (LEGACY_VERSION, FORMAT_VERSION)
MAGIC = b"faceveil"
PNG_CHUNK = b"veIL"  # ancillary, private, not safe to copy (it depends on the pixels)
LEGACY_PNG_KEYWORD = b"faceveil"  # format 1: an iTXt chunk
SIDECAR_SUFFIX = ".veil"
MAX_HEADER_BYTES = 256 * 1024 * 1024  # hard ceiling, whatever the image
MAX_PUBLIC_BYTES = 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BLOB = "$blob"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def header_bound(height: int, width: int) -> int:
    """The largest record accepted for an image of ``height`` x ``width`` pixels."""
    return min(MAX_HEADER_BYTES, (1 << 20) + 4 * max(0, int(height)) * max(0, int(width)))


def pixels_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---- arrays and the private part ----------------------------------------------------
def encode_array(array: np.ndarray) -> dict:
    """A small numpy array as a dict for the private part (raw bytes, zlib-compressed)."""
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": zlib.compress(array.tobytes(), 9)}


def decode_array(obj: dict, max_bytes: int = MAX_HEADER_BYTES) -> np.ndarray:
    """Inverse of :func:`encode_array`; refuses shapes whose size does not match the data."""
    dtype = np.dtype(obj["dtype"])
    shape = [int(n) for n in obj["shape"]]
    if any(n < 0 for n in shape):
        raise ValueError("negative array dimension")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > max_bytes:
        raise ValueError("array too large")
    if not isinstance(obj["data"], bytes):
        raise TypeError("array data must be bytes")
    try:
        raw = zlib.decompressobj().decompress(obj["data"], expected + 1)
    except zlib.error as exc:
        raise ValueError(f"array data is corrupt ({exc})") from None
    if len(raw) != expected:
        raise ValueError("array data does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def pack_private(obj: Any) -> bytes:
    """Binary form of a JSON-like tree whose leaves may be ``bytes`` (kept raw, not base64)."""
    blobs: list[bytes] = []

    def strip(node: Any) -> Any:
        if isinstance(node, (bytes, bytearray)):
            blobs.append(bytes(node))
            return {_BLOB: len(blobs) - 1}
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node

    tree = canonical_json(strip(obj))
    parts = [struct.pack(">II", len(tree), len(blobs)), tree]
    for blob in blobs:
        parts += [struct.pack(">I", len(blob)), blob]
    return b"".join(parts)


def unpack_private(data: bytes) -> Any:
    """Inverse of :func:`pack_private`."""
    view = memoryview(data)
    tree_len, count = struct.unpack_from(">II", view, 0)
    pos = 8 + tree_len
    if pos > len(view) or count > len(view):
        raise ValueError("truncated private part")
    tree = json.loads(bytes(view[8:pos]))
    blobs = []
    for _ in range(count):
        (size,) = struct.unpack_from(">I", view, pos)
        pos += 4
        if pos + size > len(view):
            raise ValueError("truncated private part")
        blobs.append(bytes(view[pos : pos + size]))
        pos += size

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_BLOB}:
                return blobs[int(node[_BLOB])]
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(tree)


# ---- sealing ----------------------------------------------------------------------
_V2_FIELDS = ("faceveil", "file_nonce", "check", "public", "seal_nonce")
_V3_FIELDS = ("faceveil", "file_nonce", "recipients", "check", "public", "seal_nonce")


def _aad(record: dict) -> bytes:
    """What the file seal authenticates besides its plaintext: every head field but the stanzas
    (``rekey`` rewrites those alone), and in format 3 the digest of every face seal."""
    head = canonical_json({k: record[k] for k in _V2_FIELDS})
    if record["faceveil"] == LEGACY_VERSION:
        return head
    return head + b"".join(hashlib.sha256(blob).digest() for blob in record["face_seals"])


def _public_digest(record: dict) -> str:
    """SHA-256 of the public part, which every face seal authenticates (hashed once per record, not per face)."""
    return hashlib.sha256(canonical_json(record["public"])).hexdigest()


def _face_aad(record: dict, index: int, public_digest: str) -> bytes:
    return canonical_json({"faceveil": record["faceveil"], "file_nonce": record["file_nonce"], "face": index,
                           "public_sha256": public_digest})


def _envelope_aad(record: dict) -> bytes:
    return canonical_json({"file_nonce": record["file_nonce"], "recipients": record["recipients"]})


def _face_nonces(public: Any) -> list[bytes]:
    """The faces' public nonces (hex in the public part), in header order."""
    faces = public.get("faces", []) if isinstance(public, dict) else []
    return [bytes.fromhex(f["nonce"]) for f in faces]


def _seal_envelope(file_key: FileKey, record: dict, names: list[str]) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + ChaCha20Poly1305(file_key.derive(b"envelope")).encrypt(
        nonce, canonical_json({"recipients": names}), _envelope_aad(record))


def seal_header(keys: Key | Envelope | object, public: dict, private: Any) -> dict:
    """Build an authenticated header record (format 3).

    ``keys`` is what the file is for: an :class:`~faceveil.envelope.Envelope` (its file
    key and recipients), else a key, recipient, identity or list of them, for which a
    fresh file key is drawn. A face list in ``private["faces"]`` is sealed face by face,
    each under its face key (the nonces come from ``public["faces"]``); the rest under the file key.
    """
    envelope = envelope_for(keys)
    file_key = envelope.file_key
    file_nonce = new_nonce()
    record = {
        "faceveil": FORMAT_VERSION,
        "file_nonce": b64(file_nonce),
        "recipients": [b64(s) for s in envelope.stanzas(file_nonce)],
        "check": b64(file_key.check_tag(file_nonce)),
        "public": public,
        "seal_nonce": b64(secrets.token_bytes(12)),
    }
    try:  # faces sealed apart need their public nonces (a baseline's record may have none: sealed whole)
        nonces = _face_nonces(public)
    except (KeyError, TypeError, ValueError, AttributeError):
        nonces = []
    split = isinstance(private, dict) and isinstance(private.get("faces"), list) and private["faces"]
    if split and len(nonces) >= len(private["faces"]):
        rest, faces = {k: v for k, v in private.items() if k != "faces"}, private["faces"]
    else:
        rest, faces = private, []
    seals, digest = [], _public_digest(record)
    for index, (face, nonce) in enumerate(zip(faces, nonces)):
        seal_nonce = secrets.token_bytes(12)
        seals.append(seal_nonce + file_key.face_key(nonce).seal(seal_nonce, pack_private(face), _face_aad(record, index, digest)))
    record["face_seals"] = seals
    record["envelope"] = _seal_envelope(file_key, record, envelope.names)
    record["sealed"] = file_key.seal(unb64(record["seal_nonce"]), pack_private(rest), _aad(record))
    return record


def seal_legacy_header(key: Key, public: dict, private: Any) -> dict:
    """A format-2 record (one seal under the key itself), as faceveil wrote before envelopes: for tests of compatibility."""
    file_nonce = new_nonce()
    record = {
        "faceveil": LEGACY_VERSION,
        "file_nonce": b64(file_nonce),
        "check": b64(key.check_tag(file_nonce)),
        "public": public,
        "seal_nonce": b64(secrets.token_bytes(12)),
    }
    record["sealed"] = key.seal(unb64(record["seal_nonce"]), pack_private(private), _aad(record))
    return record


@dataclass
class Opened:
    """A header opened by a key, an identity or a disclosure token."""

    public: dict
    private: dict  # format 3 by a token: {"faces": [None, ..., the token's face, ..., None]} and nothing else
    key: Key  # what draws the faces' sign patterns: the file key (format 3), the key itself (format 2), a face key
    recipients: list[str] | None = None  # the sealed names of the file's recipients (format 3, not by a token)
    face: int | None = None  # the one face a token opened


def _unpacked(plaintext: bytes) -> Any:
    try:
        return unpack_private(plaintext)
    except (struct.error, ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise HeaderError("the faceveil header's private part is corrupt") from None


def _opener_name(opener: object) -> str:
    return {"Identity": "identity", "DisclosureToken": "disclosure token"}.get(type(opener).__name__, "key")


def unlock(opener: Key | Identity | DisclosureToken, record: dict) -> Opened:
    """Verify a header record and open what ``opener`` may open.

    Raises ``WrongKeyError`` when ``opener`` is not one the file was made for, ``HeaderError``
    when the record is malformed, of an unknown version, or altered in any byte it can check.
    """
    if not isinstance(record, dict) or "faceveil" not in record:
        raise HeaderError("not a faceveil header")
    version = record["faceveil"]
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise HeaderError(f"unsupported faceveil header version {version!r:.20} (this faceveil reads formats "
                          f"{', '.join(map(str, READ_VERSIONS))})")
    check_record(record)
    try:
        seal_nonce = unb64(record["seal_nonce"])
        file_nonce = unb64(record["file_nonce"])
        sealed = record["sealed"]
        if not isinstance(sealed, bytes) or not isinstance(record["public"], dict):
            raise TypeError
        public = record["public"]
        if version == FORMAT_VERSION:
            face_seals = record["face_seals"]
            envelope = record["envelope"]
            if not isinstance(envelope, bytes) or not all(isinstance(b, bytes) and len(b) > 12 for b in face_seals):
                raise TypeError
            stanzas = [unb64(s) for s in record["recipients"]]
            nonces = _face_nonces(public) if face_seals else []
        aad = _aad(record)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise HeaderError("the faceveil header is malformed (missing or invalid fields)") from None
    if version == LEGACY_VERSION:
        if not isinstance(opener, Key) or isinstance(opener, FileKey):
            raise WrongKeyError(f"this file predates recipients (header format 2): only the symmetric key it was made "
                                f"with opens it, not a {_opener_name(opener)}")
        if not opener.made(record):
            raise WrongKeyError("wrong key: this file was anonymized with a different key")
        try:
            return Opened(public, _unpacked(opener.open(seal_nonce, sealed, aad)), opener)
        except InvalidTag:
            raise HeaderError("the faceveil header has been tampered with (authentication failed)") from None
        except ValueError:
            raise HeaderError("the faceveil header is malformed (invalid seal)") from None
    if isinstance(opener, DisclosureToken):
        return _open_face(opener, record, nonces, face_seals)
    if not isinstance(opener, (Key, Identity)):
        raise TypeError(f"cannot open a header with {type(opener).__name__}")
    found = unwrap(opener, stanzas, file_nonce)
    if found is None:
        count = len(stanzas)
        raise WrongKeyError(f"wrong key: this {_opener_name(opener)} is not among the file's {count} "
                            f"recipient{'s' if count != 1 else ''} (or its entry was altered)")
    file_key = FileKey(found[1])
    if not hmac.compare_digest(file_key.check_tag(file_nonce), unb64(record["check"])):
        raise HeaderError("the faceveil header has been tampered with (check tag)")
    try:
        rest = _unpacked(file_key.open(seal_nonce, sealed, aad))
        names = json.loads(ChaCha20Poly1305(file_key.derive(b"envelope")).decrypt(envelope[:12], envelope[12:], _envelope_aad(record)))
        digest = _public_digest(record)
        faces = [_unpacked(file_key.face_key(n).open(b[:12], b[12:], _face_aad(record, i, digest)))
                 for i, (n, b) in enumerate(zip(nonces, face_seals))]
    except InvalidTag:
        raise HeaderError("the faceveil header has been tampered with (authentication failed)") from None
    except (ValueError, TypeError):
        raise HeaderError("the faceveil header is malformed (invalid seal)") from None
    if len(face_seals) != len(nonces) and face_seals:
        raise HeaderError("the faceveil header is malformed (face seals do not match the faces)")
    if (face_seals and not isinstance(rest, dict)) or not isinstance(names, dict) or not isinstance(names.get("recipients"), list):
        raise HeaderError("the faceveil header's private part is corrupt")
    private = {**rest, "faces": faces} if face_seals else rest
    return Opened(public, private, file_key, [str(n) for n in names["recipients"]])


def _open_face(token: DisclosureToken, record: dict, nonces: list[bytes], face_seals: list[bytes]) -> Opened:
    if unb64(record["file_nonce"]) != token.file_nonce:
        raise WrongKeyError("this disclosure token is for another file")
    index = token.face
    if index >= len(nonces) or index >= len(face_seals) or nonces[index] != token.face_nonce:
        raise WrongKeyError(f"this disclosure token is not for face {index + 1} of this file")
    blob = face_seals[index]
    try:
        face = _unpacked(token.key.open(blob[:12], blob[12:], _face_aad(record, index, _public_digest(record))))
    except (InvalidTag, ValueError):
        raise HeaderError(f"the disclosure token does not open face {index + 1} (the token or the header was altered)") from None
    if token.original is not None:  # its region, restored by the key holder (verified against the sealed SHA-256)
        if not isinstance(face, dict):
            raise HeaderError("the faceveil header's private part is corrupt")
        face = {**face, "original": token.original}
    faces: list = [None] * len(nonces)
    faces[index] = face
    return Opened(record["public"], {"faces": faces}, token.key, None, index)


def open_header(opener: Key | Identity | DisclosureToken, record: dict) -> tuple[dict, Any]:
    """``unlock``'s public and private parts: (public, private)."""
    opened = unlock(opener, record)
    return opened.public, opened.private


def rekey_record(opener: Key | Identity, record: dict, add: list[Wrapper], remove: list[str]) -> tuple[dict, list[str]]:
    """The record with its file key rewrapped: ``remove`` (recipient names) taken out, ``add`` put in.

    Nothing else changes (the public part, the seals, the pixels they describe), so recovery
    stays bit-exact. Returns the new record (the same object when nothing changed) and the
    recipient names it is for. A file left with no recipient is refused.
    """
    if record.get("faceveil") != FORMAT_VERSION:
        raise UsageError("this file predates recipients (header format 2): it cannot be rekeyed; recover it and "
                         "anonymize it again")
    opened = unlock(opener, record)
    names = list(opened.recipients or [])
    stanzas = list(record["recipients"])
    if len(names) != len(stanzas):
        raise HeaderError("the faceveil header's recipient list does not match its stanzas")
    keep = [(n, s) for n, s in zip(names, stanzas) if n not in set(remove)]
    file_nonce = unb64(record["file_nonce"])
    for recipient in add:
        name = recipient_name(recipient)
        if name not in {n for n, _ in keep}:
            keep.append((name, b64(wrap(recipient, opened.key.secret, file_nonce))))
    if [n for n, _ in keep] == names:
        return record, names
    if not keep:
        raise UsageError("refusing to remove every recipient: nobody could recover the file")
    if len(keep) > MAX_RECIPIENTS:
        raise UsageError(f"at most {MAX_RECIPIENTS} recipients per file")
    new = dict(record)
    new["recipients"] = [s for _, s in keep]
    new["envelope"] = _seal_envelope(opened.key, new, [n for n, _ in keep])  # type: ignore[arg-type]
    return new, [n for n, _ in keep]


def reseal(record: dict, file_key: FileKey, private: Any) -> dict:
    """``record`` (format 3, no face seals) with its file-level private part replaced, under a fresh seal nonce:
    how ``rekey`` updates a video record's list of frame-record digests once the frames were rewrapped."""
    if record.get("faceveil") != FORMAT_VERSION or record.get("face_seals"):
        raise ValueError("only a format-3 record without face seals is resealed")
    new = dict(record)
    new["seal_nonce"] = b64(secrets.token_bytes(12))
    new["sealed"] = file_key.seal(unb64(new["seal_nonce"]), pack_private(private), _aad(new))
    return new


def disclosure_token(opener: Key | Identity, record: dict, face: int, original: bytes | None = None) -> DisclosureToken:
    """The token that opens face ``face`` (0-based) of this record's file, and nothing else
    (``original``: the face's region, when it cannot be restored alone: ``pipeline.disclosed_region``)."""
    if record.get("faceveil") != FORMAT_VERSION:
        raise UsageError("this file predates per-face keys (header format 2): one face cannot be disclosed")
    opened = unlock(opener, record)
    nonces = _face_nonces(opened.public)
    if not 0 <= face < len(nonces):
        raise UsageError(f"the file has {len(nonces)} face(s); --face must be between 1 and {len(nonces)}")
    face_key = opened.key.face_key(nonces[face])  # type: ignore[attr-defined]
    return DisclosureToken(unb64(record["file_nonce"]), face, nonces[face], face_key.secret, original)


# ---- the record on disk ---------------------------------------------------------------
def pack_record(record: dict) -> bytes:
    """The binary form of a record (what the PNG chunk and the sidecar hold)."""
    version = record["faceveil"]
    fields = _V3_FIELDS if version == FORMAT_VERSION else _V2_FIELDS
    head = canonical_json({k: record[k] for k in fields})
    out = MAGIC + struct.pack(">BI", version, len(head)) + head
    if version != FORMAT_VERSION:
        return out + record["sealed"]
    parts = [record["envelope"], record["sealed"]]
    blobs = b"".join(struct.pack(">I", len(b)) + b for b in parts)
    faces = b"".join(struct.pack(">I", len(b)) + b for b in record["face_seals"])
    return out + blobs + struct.pack(">I", len(record["face_seals"])) + faces


def blobs_v3(data: bytes, start: int, where: str) -> tuple[bytes, bytes, list[bytes]]:
    """The envelope, the file seal and the face seals after a format-3 record's public JSON."""
    view = memoryview(data)
    pos = start

    def take() -> bytes:
        nonlocal pos
        if pos + 4 > len(view):
            raise HeaderError(f"the faceveil header of {where} is truncated")
        (size,) = struct.unpack_from(">I", view, pos)
        pos += 4
        if size > len(view) - pos:
            raise HeaderError(f"the faceveil header of {where} is truncated")
        blob = bytes(view[pos : pos + size])
        pos += size
        return blob

    envelope, sealed = take(), take()
    if pos + 4 > len(view):
        raise HeaderError(f"the faceveil header of {where} is truncated")
    (count,) = struct.unpack_from(">I", view, pos)
    pos += 4
    if count > (len(view) - pos) // 4:
        raise HeaderError(f"the faceveil header of {where} is malformed (face seal count)")
    faces = [take() for _ in range(count)]
    if pos != len(view):
        raise HeaderError(f"the faceveil header of {where} has trailing bytes")
    return envelope, sealed, faces


def unpack_record(data: bytes, where: str = "the file", shape: tuple[int, int] | None = None) -> dict:
    """Inverse of :func:`pack_record`; a clear ``HeaderError`` for anything malformed.

    Every field but the sealed bytes is validated (:func:`check_record`,
    :func:`faceveil.schema.check_public`), against the image's ``shape`` (height, width) when given.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 5:
        raise HeaderError(f"the faceveil header of {where} is malformed")
    version, head_len = struct.unpack_from(">BI", data, len(MAGIC))
    if version not in READ_VERSIONS:
        raise HeaderError(f"{where} has faceveil header format {version}; this faceveil reads formats "
                          f"{', '.join(map(str, READ_VERSIONS))}")
    start = len(MAGIC) + 5
    if head_len > min(MAX_PUBLIC_BYTES, len(data) - start):
        raise HeaderError(f"the faceveil header of {where} is malformed (public part too large or truncated)")
    raw = bytes(data[start : start + head_len])
    try:
        head = json.loads(raw)
    except (ValueError, RecursionError):
        raise HeaderError(f"the faceveil header of {where} is not valid JSON") from None
    check_record(head, where)
    try:
        canonical = canonical_json(head)
    except (ValueError, RecursionError):
        canonical = None
    if canonical != raw:
        # the seal authenticates the canonical bytes; requiring them here makes it cover the exact bytes stored
        raise HeaderError(f"the faceveil header of {where} has been altered (its JSON is not byte for byte what was sealed)")
    if head["faceveil"] != version:
        raise HeaderError(f"the faceveil header of {where} is malformed (two versions)")
    check_public(head["public"], *(shape or (None, None)))
    if version == FORMAT_VERSION:
        head["envelope"], head["sealed"], head["face_seals"] = blobs_v3(data, start + head_len, where)
        if len(head["face_seals"]) not in (0, len(head["public"]["faces"])):
            raise HeaderError(f"the faceveil header of {where} is malformed (face seals do not match the faces)")
    else:
        head["sealed"] = bytes(data[start + head_len :])
    return head


_RECORD_BYTES = {"file_nonce": NONCE_BYTES, "check": 16, "seal_nonce": 12}
_BLOB_FIELDS = {"sealed", "envelope", "face_seals"}


def check_record(head: Any, where: str = "the file") -> None:
    """Validate a record's own fields (version, nonces, check tag, stanzas; not ``public``, not the seals)."""
    if not isinstance(head, dict) or isinstance(head.get("faceveil"), bool) or head.get("faceveil") not in READ_VERSIONS:
        version = head.get("faceveil") if isinstance(head, dict) else None
        raise HeaderError(f"the faceveil header of {where} has an unsupported version {version!r:.20}")
    fields = set(_V3_FIELDS if head["faceveil"] == FORMAT_VERSION else _V2_FIELDS)
    if set(head) - _BLOB_FIELDS != fields:
        raise HeaderError(f"the faceveil header of {where} is malformed (unexpected fields)")
    for name, size in _RECORD_BYTES.items():
        value = head[name]
        try:
            if not isinstance(value, str) or len(value) > 4 * size or len(unb64(value)) != size:
                raise ValueError
        except ValueError:
            raise HeaderError(f"the faceveil header of {where} is malformed ({name})") from None
    if head["faceveil"] == FORMAT_VERSION:
        stanzas = head["recipients"]
        if not isinstance(stanzas, list) or not 1 <= len(stanzas) <= MAX_RECIPIENTS:
            raise HeaderError(f"the faceveil header of {where} is malformed (recipients: 1 to {MAX_RECIPIENTS})")
        for stanza in stanzas:
            try:
                if not isinstance(stanza, str) or len(stanza) > 4 * STANZA_BYTES or len(unb64(stanza)) != STANZA_BYTES:
                    raise ValueError
            except ValueError:
                raise HeaderError(f"the faceveil header of {where} is malformed (a recipient stanza)") from None


def sidecar_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.name + SIDECAR_SUFFIX)


def encode_png(array: np.ndarray, record: dict | None, metadata: dict | None = None) -> bytes:
    """PNG bytes of ``array`` (H×W, H×W×2, H×W×3 or H×W×4 uint8) with the record in a ``veIL`` chunk.

    ``metadata`` (``imageio.read_metadata``'s form) is written only for recovered images,
    never beside a record: a veiled file carries nothing of the input's metadata.
    """
    options = metadata_save_options(metadata or {}, "PNG")
    info = options.pop("pnginfo", PngImagePlugin.PngInfo())
    if record is not None:
        info.add(PNG_CHUNK, pack_record(record))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info, compress_level=6, **options)
    return buffer.getvalue()


def encode_image(array: np.ndarray, suffix: str, record: dict | None = None, metadata: dict | None = None) -> bytes:
    """Image file bytes for ``suffix`` (.png carries ``record`` inside; others cannot), with ``metadata`` if given."""
    suffix = suffix.lower()
    if suffix == ".png":
        return encode_png(array, record, metadata)
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"cannot write images with extension {suffix!r}; use .png (recommended), .jpg or .webp")
    image = Image.fromarray(array)
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise UsageError("JPEG cannot keep the alpha channel; write .png instead")
    buffer = io.BytesIO()
    options = metadata_save_options(metadata or {}, fmt)
    image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}), **options)
    return buffer.getvalue()


def write_image(path: Path, array: np.ndarray, overwrite: bool = False, metadata: dict | None = None,
                mode: int = PRIVATE) -> Path:
    """Write a plain image (no header) atomically, with ``metadata`` (a recovered photo's own) if given.

    A recovered photo holds the original faces: it is written owner-only (``mode`` 0600, less if the umask says so).
    """
    return write_file(Path(path), encode_image(array, Path(path).suffix, metadata=metadata), overwrite=overwrite, mode=mode)


def write_veiled(path: Path, array: np.ndarray, record: dict, overwrite: bool = False) -> list[Path]:
    """Write the anonymized image with its header; returns the files written.

    PNG carries the header inside; any other format gets a sidecar ``NAME.veil``.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        return [write_file(path, encode_png(array, record), overwrite=overwrite)]
    data = encode_image(array, path.suffix)
    sidecar = sidecar_path(path)
    if not overwrite and (sidecar.exists() or path.exists()):
        raise UsageError(f"{sidecar if sidecar.exists() else path} already exists; refusing to overwrite it")
    # the sidecar first, the image last: an image on disk always has its header beside it
    write_file(sidecar, pack_record(record), overwrite=overwrite)
    try:
        write_file(path, data, overwrite=overwrite)
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise
    return [path, sidecar]


def _png_header_chunk(stream: BinaryIO, where: str) -> tuple[bytes | None, tuple[int, int] | None]:
    """The ``veIL`` chunk's data of a PNG stream (after its signature) and the image's (height, width).

    The chunk is read only once ``IHDR`` has bounded it; other chunks are skipped without
    being read. A format-1 header (an iTXt chunk named ``faceveil``) gets a clear message.
    """
    shape = None
    while True:
        head = stream.read(8)
        if len(head) < 8:
            return None, shape
        length, ctype = struct.unpack(">I4s", head)
        if ctype == b"IHDR" and shape is None:
            data = stream.read(length)
            if length != 13 or len(data) != 13:
                raise HeaderError(f"{where} is not a valid PNG (bad IHDR chunk)")
            width, height = struct.unpack(">II", data[:8])
            shape = (height, width)
            stream.seek(4, io.SEEK_CUR)
            continue
        if ctype == PNG_CHUNK:
            if shape is None:
                raise HeaderError(f"{where} is not a valid PNG (the faceveil header comes before IHDR)")
            bound = header_bound(*shape)
            if length > bound:
                raise HeaderError(
                    f"the faceveil header of {where} is {length} bytes, more than this image can need ({bound}): refused"
                )
            data = stream.read(length)
            crc = stream.read(4)
            if len(data) != length or len(crc) != 4 or zlib.crc32(ctype + data) != struct.unpack(">I", crc)[0]:
                raise HeaderError(f"the faceveil header of {where} is truncated or corrupt (chunk checksum)")
            return data, shape
        if ctype == b"iTXt" and length >= len(LEGACY_PNG_KEYWORD) + 1:
            keyword = stream.read(len(LEGACY_PNG_KEYWORD) + 1)
            if keyword == LEGACY_PNG_KEYWORD + b"\0":
                raise HeaderError(
                    f"{where} was anonymized by faceveil 0.1 (header format 1); recover it with faceveil 0.1 "
                    "(pip install 'faceveil==0.1.*')"
                )
            stream.seek(length - len(keyword) + 4, io.SEEK_CUR)
            continue
        if ctype == b"IEND":
            return None, shape
        stream.seek(length + 4, io.SEEK_CUR)


def _image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the image's own header, without decoding its pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise UsageError(f"{path} is not a readable image") from None
    return int(height), int(width)


def read_record(path: Path) -> dict:
    """The validated header record of an anonymized image: from its PNG chunk, else its sidecar.

    Reads at most :func:`header_bound` bytes for the image's size (known from its own
    header before any header byte is read), validates every public field against that
    size, and changes no library-wide setting.
    """
    path = Path(path)
    data, shape = None, None
    try:
        with open_regular(path, "input") as stream:  # a FIFO or device is refused, never waited on
            if stream.read(8) == _PNG_SIGNATURE:
                data, shape = _png_header_chunk(stream, str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data is None:
        sidecar = sidecar_path(path)
        if not sidecar.exists():
            legacy = path.with_name(path.name + ".veil.json")
            if legacy.is_file():
                raise HeaderError(f"{legacy.name} is a faceveil 0.1 sidecar (format 1); recover it with faceveil 0.1")
            raise HeaderError(f"{path} has no faceveil header (no PNG chunk and no {sidecar.name}): nothing to recover")
        shape = shape or _image_shape(path)
        limit = header_bound(*shape)
        try:
            with open_regular(sidecar, "sidecar") as stream:
                data = stream.read(limit + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {sidecar}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise HeaderError(f"{sidecar.name} is larger than any faceveil header of this image can be ({limit} bytes): refused")
    return unpack_record(data, str(path), shape)

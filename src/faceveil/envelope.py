"""Envelope encryption (header format 3): a fresh file key per file, wrapped once per recipient.

As in age: every anonymized file gets a random 256-bit *file key*; every key-derived
value of that file (sign patterns, pairings, the seals, the check tag) comes from it. The
header carries the file key *wrapped* once for each recipient, in stanzas of
``STANZA_BYTES`` bytes that all look alike:

- an X25519 recipient (``faceveil1...``, the public half of an :class:`~faceveil.keys.Identity`):
  ``E || ChaCha20-Poly1305(HKDF(X25519(e, R), salt=E||R), file key)`` with a fresh
  ephemeral ``e``; anonymizing needs no secret at all;
- a symmetric :class:`~faceveil.keys.Key`: ``salt || ChaCha20-Poly1305(HKDF(key, salt), file key)``.

Both bind the stanza to the file (the file nonce is the associated data). A stanza does
not say whom it is for: the holder of a key tries each. Each face gets its own *face key*
(HKDF of the file key and the face's public nonce), which draws that face's sign pattern
and seals that face's private data: a :class:`DisclosureToken` hands over one face key.
SECURITY.md has the reasoning and the threat model.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bech32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from faceveil.atomic import PRIVATE, open_regular, write_new_file
from faceveil.errors import KeyFileError, UsageError, WrongKeyError
from faceveil.keys import NONCE_BYTES, SECRET_BYTES, Identity, Key, _b64, _unb64, json_record

RECIPIENT_HRP = "faceveil"
STANZA_BYTES = 32 + SECRET_BYTES + 16  # ephemeral share or salt, wrapped file key, Poly1305 tag
MAX_RECIPIENTS = 64
TOKEN_FORMAT = "faceveil-token"
TOKEN_VERSION = 1
MAX_TOKEN_BYTES = 64 << 20  # a token may carry its face's region (see ``DisclosureToken.original``)
_ZERO_NONCE = bytes(12)  # every wrapping key below is used exactly once
_LABEL = b"faceveil/v3/"


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_LABEL + info).derive(ikm)


def _stanza_aad(file_nonce: bytes) -> bytes:
    return _LABEL + b"stanza/" + file_nonce


# ---- recipients ----------------------------------------------------------------------
@dataclass(frozen=True)
class Recipient:
    """An X25519 public key, written ``faceveil1...`` (bech32): anonymizes for its identity, cannot recover."""

    public: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public, bytes) or len(self.public) != 32:
            raise UsageError("an X25519 recipient is 32 bytes")

    def __str__(self) -> str:
        return bech32.bech32_encode(RECIPIENT_HRP, bech32.convertbits(list(self.public), 8, 5))

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """A recipient from its string; a typo (bech32 checksum), another kind of string or a bad point is refused."""
        text = text.strip()
        hrp, data = bech32.bech32_decode(text)
        if hrp != RECIPIENT_HRP or data is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise UsageError(f"{shown!r} is not a faceveil recipient (faceveil1..., printed by `faceveil keygen --x25519`)")
        raw = bech32.convertbits(data, 5, 8, False)
        if raw is None or len(raw) != 32:
            raise UsageError(f"{text!r} is not a faceveil recipient (wrong length)")
        try:  # a low-order point would make every exchange zero: refused here, not in the middle of a batch
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError:
            raise UsageError(f"{text!r} is not a usable X25519 public key") from None
        return cls(bytes(raw))

    def wrap(self, file_secret: bytes, file_nonce: bytes) -> bytes:
        """A stanza that gives ``file_secret`` to this recipient's identity, bound to the file's nonce."""
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public))
        except ValueError:  # a low-order point: the exchange gives zero
            raise UsageError(f"recipient {self} is not a usable X25519 public key") from None
        wrapping = _hkdf(shared, share + self.public, b"x25519")
        return share + ChaCha20Poly1305(wrapping).encrypt(_ZERO_NONCE, file_secret, _stanza_aad(file_nonce))


def _identity_unwrap(identity: Identity, stanza: bytes, file_nonce: bytes) -> bytes | None:
    share, body = stanza[:32], stanza[32:]
    try:
        shared = X25519PrivateKey.from_private_bytes(identity.secret).exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:
        return None
    wrapping = _hkdf(shared, share + identity.public, b"x25519")
    try:
        return ChaCha20Poly1305(wrapping).decrypt(_ZERO_NONCE, body, _stanza_aad(file_nonce))
    except InvalidTag:
        return None


def _key_wrap(key: Key, file_secret: bytes, file_nonce: bytes) -> bytes:
    salt = secrets.token_bytes(32)
    return salt + ChaCha20Poly1305(_hkdf(key.secret, salt, b"key-wrap")).encrypt(
        _ZERO_NONCE, file_secret, _stanza_aad(file_nonce))


def _key_unwrap(key: Key, stanza: bytes, file_nonce: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(_hkdf(key.secret, stanza[:32], b"key-wrap")).decrypt(
            _ZERO_NONCE, stanza[32:], _stanza_aad(file_nonce))
    except InvalidTag:
        return None


Wrapper = Key | Recipient  # what a stanza can be made for


def recipient_name(recipient: Wrapper | Identity) -> str:
    """How a recipient is named (in the sealed recipient list, ``key info`` and ``rekey``):
    its ``faceveil1...`` string, or ``key:FINGERPRINT`` for a symmetric key."""
    if isinstance(recipient, Identity):
        return recipient.recipient
    if isinstance(recipient, Recipient):
        return str(recipient)
    return f"key:{recipient.fingerprint}"


def wrap(recipient: Wrapper, file_secret: bytes, file_nonce: bytes) -> bytes:
    """The stanza of one recipient (``STANZA_BYTES``, random-looking whatever the kind)."""
    if isinstance(recipient, Recipient):
        return recipient.wrap(file_secret, file_nonce)
    if isinstance(recipient, Key) and not isinstance(recipient, FileKey):
        return _key_wrap(recipient, file_secret, file_nonce)
    raise TypeError(f"cannot wrap a file key for {type(recipient).__name__}")


def unwrap(opener: Key | Identity, stanzas: list[bytes], file_nonce: bytes) -> tuple[int, bytes] | None:
    """(index, file secret) of the first stanza ``opener`` opens, or ``None``."""
    for index, stanza in enumerate(stanzas):
        if len(stanza) != STANZA_BYTES:
            continue
        secret = _identity_unwrap(opener, stanza, file_nonce) if isinstance(opener, Identity) else _key_unwrap(opener, stanza, file_nonce)
        if secret is not None and len(secret) == SECRET_BYTES:
            return index, secret
    return None


def opens(opener: Key | Identity, record: dict) -> bool:
    """Whether ``opener`` unwraps one of a format-3 record's stanzas (and the file key passes the check tag)."""
    try:
        nonce = base64.b64decode(record["file_nonce"], validate=True)
        stanzas = [base64.b64decode(s, validate=True) for s in record["recipients"]]
        check = base64.b64decode(record["check"], validate=True)
    except (KeyError, TypeError, ValueError):
        return False
    found = unwrap(opener, stanzas, nonce)
    return found is not None and FileKey(found[1]).check_tag(nonce) == check


# ---- file and face keys ----------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class FaceKey(Key):
    """The key of one face of one file: its sign pattern, pairing and seal. What a disclosure token holds."""

    nonce: bytes = b""

    def __repr__(self) -> str:
        return "FaceKey(...)"

    def _mine(self, nonce: bytes) -> None:
        if nonce != self.nonce:
            raise WrongKeyError("this face key is for another face")

    def sign_pattern(self, nonce, shape):  # type: ignore[override]
        self._mine(nonce)
        return super().sign_pattern(nonce, shape)

    def pairing(self, nonce, shape, inside):  # type: ignore[override]
        self._mine(nonce)
        return super().pairing(nonce, shape, inside)


@dataclass(frozen=True, repr=False)
class FileKey(Key):
    """A file's own key. Each face's values come from its :meth:`face_key`, never from the file key directly."""

    def __repr__(self) -> str:
        return "FileKey(...)"

    def face_key(self, nonce: bytes) -> FaceKey:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        return FaceKey(self._derive(b"face/" + nonce), nonce)

    def sign_pattern(self, nonce, shape):  # type: ignore[override]
        return self.face_key(nonce).sign_pattern(nonce, shape)

    def pairing(self, nonce, shape, inside):  # type: ignore[override]
        return self.face_key(nonce).pairing(nonce, shape, inside)

    def derive(self, label: bytes) -> bytes:
        """A 32-byte value of this file under ``label`` (the seals of ``faceveil.container``)."""
        return self._derive(label)


def new_file_key() -> FileKey:
    """A fresh random file key from the operating system's CSPRNG (never stored unwrapped)."""
    return FileKey(secrets.token_bytes(SECRET_BYTES))


@dataclass(frozen=True)
class Envelope:
    """What a file is sealed with: its file key and the recipients the key is wrapped for."""

    file_key: FileKey
    recipients: tuple[Wrapper, ...]

    def __post_init__(self) -> None:
        if not self.recipients:
            raise UsageError("a file needs at least one recipient or key")
        if len(self.recipients) > MAX_RECIPIENTS:
            raise UsageError(f"at most {MAX_RECIPIENTS} recipients per file")

    @classmethod
    def new(cls, recipients: Iterable[Wrapper | Identity]) -> Envelope:
        """A fresh file key for ``recipients`` (an identity stands for its recipient; duplicates dropped)."""
        unique: dict[str, Wrapper] = {}
        for r in recipients:
            r = Recipient(r.public) if isinstance(r, Identity) else r
            if not isinstance(r, (Key, Recipient)) or isinstance(r, FileKey):
                raise UsageError(f"not a recipient or key: {type(r).__name__}")
            unique.setdefault(recipient_name(r), r)
        return cls(new_file_key(), tuple(unique.values()))

    @property
    def names(self) -> list[str]:
        return [recipient_name(r) for r in self.recipients]

    def stanzas(self, file_nonce: bytes) -> list[bytes]:
        return [wrap(r, self.file_key.secret, file_nonce) for r in self.recipients]


def envelope_for(keys: object) -> Envelope:
    """An :class:`Envelope` for what the caller gave: one as is, else a fresh file key for a key,
    a recipient (object or ``faceveil1...`` string), an identity, or a list of them."""
    if isinstance(keys, Envelope):
        return keys
    if isinstance(keys, (Key, Recipient, Identity, str)):
        keys = [keys]
    items = [Recipient.parse(k) if isinstance(k, str) else k for k in keys]  # type: ignore[union-attr]
    return Envelope.new(items)


def read_recipients_file(path: str | os.PathLike) -> list[Recipient]:
    """Recipients, one per line (``#`` comments and blank lines ignored), as age reads them."""
    path = Path(path)
    try:
        with open_regular(path, "recipients file") as handle:
            text = handle.read(1 << 20).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"recipients file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read recipients file {path}: {exc}") from None
    found = [Recipient.parse(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise UsageError(f"recipients file {path} names no recipient")
    return found


# ---- disclosure tokens -------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class DisclosureToken:
    """The key of face ``face`` (0-based) of the one file whose nonce is ``file_nonce``: recovers that face only."""

    file_nonce: bytes
    face: int
    face_nonce: bytes
    secret: bytes = field(repr=False)
    # the face's original region (lossless), when a later face of the file pastes into what the face's
    # prediction reads, so that it cannot be restored alone from the model: checked against the sealed SHA-256
    original: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"DisclosureToken(face={self.face})"

    @property
    def key(self) -> FaceKey:
        return FaceKey(self.secret, self.face_nonce)

    def to_bytes(self) -> bytes:
        record = {"format": TOKEN_FORMAT, "version": TOKEN_VERSION, "file_nonce": _b64(self.file_nonce),
                  "face": self.face, "face_nonce": _b64(self.face_nonce), "secret": _b64(self.secret)}
        if self.original is not None:
            record["original"] = _b64(self.original)
        return (json.dumps(record, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "token") -> DisclosureToken:
        record = json_record(data, source, TOKEN_FORMAT, MAX_TOKEN_BYTES, "faceveil disclosure token")
        if record.get("version") != TOKEN_VERSION:
            raise KeyFileError(f"{source} has unsupported token version {record.get('version')!r}")
        try:
            face = record["face"]
            if isinstance(face, bool) or not isinstance(face, int) or not 0 <= face < 1 << 20:
                raise ValueError
            original = record.get("original")
            token = cls(_unb64(record["file_nonce"]), face, _unb64(record["face_nonce"]), _unb64(record["secret"]),
                        None if original is None else _unb64(original))
        except (ValueError, KeyError, TypeError, base64.binascii.Error):
            raise KeyFileError(f"{source} is not a faceveil disclosure token") from None
        if len(token.file_nonce) != NONCE_BYTES or len(token.face_nonce) != NONCE_BYTES or len(token.secret) != SECRET_BYTES:
            raise KeyFileError(f"{source} is not a faceveil disclosure token (bad field sizes)")
        return token

    def save(self, path: str | os.PathLike) -> Path:
        """Write the token with mode 0600 (it opens a face); refuses to overwrite."""
        return write_new_file(Path(path), self.to_bytes(), mode=PRIVATE)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DisclosureToken:
        path = Path(path)
        try:
            with open_regular(path, "token", KeyFileError) as handle:
                data = handle.read(MAX_TOKEN_BYTES + 1)
        except FileNotFoundError:
            raise KeyFileError(f"token {path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read token {path}: {exc.strerror or exc}") from None
        return cls.from_bytes(data, f"token {path}")


def job_tag(keys: object, nonce: bytes) -> bytes:
    """A tag naming who a resumable job is for, without storing a secret: a key's check tag, an identity's or
    token's keyed tag, or for anonymizing to recipients the digest of their public names (no secret exists)."""
    import hashlib
    import hmac

    if isinstance(keys, Envelope):
        return hashlib.sha256(_LABEL + b"job/" + nonce + "\n".join(sorted(keys.names)).encode()).digest()[:16]
    if isinstance(keys, Key):
        return keys.check_tag(nonce)
    secret = keys.secret  # an Identity or a DisclosureToken
    return hmac.new(_hkdf(secret, b"", b"job"), b"job/" + nonce, hashlib.sha256).digest()[:16]


def is_token_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a disclosure token file (a quick look at its format field; nothing is trusted)."""
    try:
        with open_regular(path, "token", KeyFileError) as handle:
            data = handle.read(MAX_TOKEN_BYTES + 1)
        return len(data) <= MAX_TOKEN_BYTES and json.loads(data.decode("utf-8")).get("format") == TOKEN_FORMAT
    except (OSError, UsageError, ValueError, AttributeError, RecursionError):
        return False


Opener = Key | Identity | DisclosureToken  # what can open a header


__all__ = ["Recipient", "Envelope", "FileKey", "FaceKey", "DisclosureToken", "envelope_for", "read_recipients_file",
           "recipient_name", "wrap", "unwrap", "new_file_key", "STANZA_BYTES", "MAX_RECIPIENTS", "Opener"]

"""Secret keys: key files, passphrase protection, and every value derived from a key.

A faceveil key is 256 random bits. Everything else is derived from it with
HKDF-SHA256 under distinct labels, so no derived value reveals another:

- ``sign_pattern``: the secret Rademacher (+1/-1) pattern for one face, a ChaCha20
  key stream keyed by the secret, the face's public nonce and the latent shape;
- ``seal``/``open``: ChaCha20-Poly1305 for the private part of a faceveil header;
- ``check_tag``: an HMAC over a file's public nonce that tells a wrong key apart
  from a tampered header.

This module never imports torch: it deals in bytes and numpy arrays only.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from faceveil.atomic import PRIVATE, open_regular, write_new_file
from faceveil.errors import KeyFileError

SECRET_BYTES = 32
NONCE_BYTES = 16
KEY_FILE_FORMAT = "faceveil-key"
KEY_FILE_VERSION = 1
IDENTITY_FILE_VERSION = 2  # an older faceveil refuses it instead of taking it for a symmetric key
IDENTITY_KIND = "x25519"
PASSPHRASE_ENV = "FACEVEIL_PASSPHRASE"

# RFC 9106, second recommended option (64 MiB, 3 passes, 4 lanes).
DEFAULT_ARGON2 = {"memory_kib": 65536, "iterations": 3, "lanes": 4}
# What a key file may ask of Argon2id (a hostile file must not make us allocate gigabytes).
ARGON2_LIMITS = {"memory_kib": (8, 1 << 20), "iterations": (1, 64), "lanes": (1, 64)}
MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is under 1 KB


class KeyFileWarning(UserWarning):
    """A key file others can read (like ssh's "UNPROTECTED PRIVATE KEY FILE")."""


def key_file_exposure(path: str | os.PathLike) -> str | None:
    """A warning when a key file is readable or writable by others than its owner, else ``None``."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (f"key file {path} is accessible by others (mode {mode:04o}); anyone who can read it can "
            f"recover every face anonymized with it: chmod 600 {path}")

_LABEL = b"faceveil/v1/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(obj: object) -> bytes:
    """The one byte encoding of ``obj`` that is authenticated and hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def new_nonce() -> bytes:
    """A fresh random public nonce (one per face, one per file)."""
    return secrets.token_bytes(NONCE_BYTES)


def _argon2(passphrase: str, salt: bytes, params: dict) -> bytes:
    return Argon2id(
        salt=salt,
        length=32,
        iterations=int(params["iterations"]),
        lanes=int(params["lanes"]),
        memory_cost=int(params["memory_kib"]),
    ).derive(passphrase.encode("utf-8"))


def _stream(key: bytes, nbytes: int) -> bytes:
    """``nbytes`` of ChaCha20 key stream under a one-use ``key`` (zero nonce, counter 0)."""
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(nbytes))


def public_gaussian(seed: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic standard Gaussian noise from a public ``seed`` (Box-Muller on a ChaCha20 stream).

    Portable across machines and library versions, unlike framework RNGs.
    """
    n = int(np.prod(shape))
    half = (n + 1) // 2
    key = hashlib.sha256(_LABEL + b"public-gaussian" + seed).digest()
    words = np.frombuffer(_stream(key, 8 * half), dtype="<u4").reshape(2, half).astype(np.float64)
    u1 = (words[0] + 1.0) / 4294967297.0  # in (0, 1): log is finite
    u2 = words[1] / 4294967296.0
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return normal[:n].reshape(shape).astype(np.float32)


@dataclass(frozen=True, repr=False)
class Key:
    """A 256-bit faceveil secret. ``repr`` never shows the secret."""

    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise KeyFileError(f"a faceveil key is exactly {SECRET_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Key(fingerprint={self.fingerprint!r})"

    # ---- creation and storage -------------------------------------------------
    @classmethod
    def generate(cls) -> "Key":
        """A new random key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @property
    def fingerprint(self) -> str:
        """A short public name for the key (for humans; never stored in anonymized files)."""
        return self._derive(b"fingerprint", 8).hex()

    def to_file_bytes(self, passphrase: str | None = None, argon2: dict | None = None) -> bytes:
        """The key file's content: versioned JSON, the secret sealed when a passphrase is given."""
        record: dict = {"format": KEY_FILE_FORMAT, "version": KEY_FILE_VERSION, "fingerprint": self.fingerprint}
        return _protected_file(record, self.secret, passphrase, argon2)

    def save(self, path: str | os.PathLike, passphrase: str | None = None, argon2: dict | None = None) -> Path:
        """Write a new key file with mode 0600; refuses to overwrite an existing file."""
        return write_new_file(Path(path), self.to_file_bytes(passphrase, argon2), mode=PRIVATE)

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: str | None = None, source: str = "key file") -> "Key":
        """Parse a key file's content; a wrong passphrase or a corrupt file raises KeyFileError."""
        record = _key_file_record(data, source)
        if record.get("version") == IDENTITY_FILE_VERSION and record.get("kind") == IDENTITY_KIND:
            raise KeyFileError(f"{source} is an X25519 identity, not a symmetric key: use it to recover (or give its "
                               "recipient string to anonymize)")
        if record.get("version") != KEY_FILE_VERSION:
            raise KeyFileError(f"{source} has unsupported key file version {record.get('version')!r}")
        key = cls(_unprotected_secret(record, passphrase, source))
        if record.get("fingerprint") not in (None, key.fingerprint):
            raise KeyFileError(f"{source} is corrupt (fingerprint does not match the secret)")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike, passphrase: str | None = None) -> "Key":
        """Read a key file. For a protected file without ``passphrase``, use $FACEVEIL_PASSPHRASE.

        A key file that others can read gives a :class:`KeyFileWarning` (the key still loads).
        """
        path = Path(path)
        data = _read_key_file(path)
        exposure = key_file_exposure(path)
        if exposure:
            warnings.warn(exposure, KeyFileWarning, stacklevel=2)
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV)
        return cls.from_file_bytes(data, passphrase, source=f"key file {path}")

    @staticmethod
    def file_needs_passphrase(path: str | os.PathLike) -> bool:
        """Whether a key file is passphrase protected (without decrypting it)."""
        try:
            return json.loads(_read_key_file(Path(path))).get("protection", "none") != "none"
        except (KeyFileError, ValueError, AttributeError, RecursionError):
            return False

    # ---- derived values --------------------------------------------------------
    def _derive(self, label: bytes, length: int = 32) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_LABEL + label).derive(self.secret)

    def sign_pattern(self, nonce: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """The secret +1/-1 pattern (float32, ``shape``) for the face with public ``nonce``.

        Each bit of a ChaCha20 stream keyed by HKDF(secret, nonce, shape) gives one sign,
        so the pattern is a uniform Rademacher vector to anyone without the key.
        """
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        n = int(np.prod(shape))
        label = b"signs/" + nonce + b"/" + "x".join(map(str, shape)).encode()
        bits = np.unpackbits(np.frombuffer(_stream(self._derive(label), (n + 7) // 8), dtype=np.uint8), bitorder="little")
        return (1.0 - 2.0 * bits[:n].astype(np.float32)).reshape(shape)

    def pairing(self, nonce: bytes, shape: tuple[int, ...], inside: np.ndarray) -> np.ndarray:
        """A secret involution of the flat indices of ``shape``: pairs up the ``inside`` ones at random.

        Indices outside map to themselves. Swapping paired noise coordinates (with the
        sign pattern) moves every magnitude to a secret place, which breaks the
        magnitude linkage that a plain sign flip leaves (METHOD.md, security notes).
        """
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        chosen = np.flatnonzero(np.asarray(inside, dtype=bool).reshape(-1))
        n = len(chosen)
        label = b"pairs/" + nonce + b"/" + "x".join(map(str, shape)).encode() + b"/" + str(n).encode()
        draws = np.frombuffer(_stream(self._derive(label), 8 * max(n, 1)), dtype="<u8")
        order = chosen.copy()
        for i in range(n - 1, 0, -1):  # Fisher-Yates; modulo bias below 2**-50 for any latent size
            j = int(draws[i] % np.uint64(i + 1))
            order[i], order[j] = order[j], order[i]
        partner = np.arange(int(np.prod(shape)), dtype=np.int64)
        first, second = order[0 : n - 1 : 2], order[1:n:2]
        partner[first], partner[second] = second, first
        return partner

    def made(self, record: dict) -> bool:
        """Whether a header record (see :mod:`faceveil.container`) was made with this key.

        Compares the record's ``check`` tag, a keyed per-file identifier: it names the key
        to whoever holds it, and to nobody else (two files' tags cannot be linked). For a
        format-3 record, whether one of its recipient stanzas opens with this key.
        """
        if isinstance(record, dict) and record.get("faceveil") == 3:
            from faceveil.envelope import opens

            return opens(self, record)
        try:
            tag = base64.b64decode(record["check"], validate=True)
            nonce = base64.b64decode(record["file_nonce"], validate=True)
        except (KeyError, TypeError, ValueError):
            return False
        return hmac.compare_digest(tag, self.check_tag(nonce))

    def check_tag(self, file_nonce: bytes) -> bytes:
        """A 16-byte tag binding this key to one file; unlinkable across files."""
        return hmac.new(self._derive(b"check"), b"check/" + file_nonce, hashlib.sha256).digest()[:16]

    def seal(self, nonce12: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` (and ``aad``) with ChaCha20-Poly1305."""
        return ChaCha20Poly1305(self._derive(b"seal")).encrypt(nonce12, plaintext, aad)

    def open(self, nonce12: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt what ``seal`` made; raises ``cryptography.exceptions.InvalidTag`` on any change."""
        return ChaCha20Poly1305(self._derive(b"seal")).decrypt(nonce12, ciphertext, aad)


def _protected_file(record: dict, secret: bytes, passphrase: str | None, argon2: dict | None) -> bytes:
    """A key or identity file: ``record`` plus ``secret``, sealed under Argon2id(passphrase) when one is given."""
    record = dict(record)
    if passphrase is None:
        record["protection"] = "none"
        record["secret"] = _b64(secret)
    else:
        if not passphrase:
            raise KeyFileError("the passphrase is empty")
        params = dict(argon2 or DEFAULT_ARGON2)
        salt = secrets.token_bytes(16)
        nonce = secrets.token_bytes(12)
        record["protection"] = "argon2id+chacha20poly1305"
        record["kdf"] = {"name": "argon2id", "salt": _b64(salt), **params}
        record["nonce"] = _b64(nonce)
        sealed = ChaCha20Poly1305(_argon2(passphrase, salt, params)).encrypt(nonce, secret, canonical_json(record))
        record["ciphertext"] = _b64(sealed)
    return (json.dumps(record, indent=2) + "\n").encode()


def json_record(data: bytes, source: str, fmt: str = KEY_FILE_FORMAT, limit: int = MAX_KEY_FILE_BYTES,
                what: str = "faceveil key file") -> dict:
    """The JSON object of a small faceveil file whose ``format`` is ``fmt`` (at most ``limit`` bytes), else KeyFileError.

    Key and identity files read through it, and disclosure tokens (``faceveil.envelope``)."""
    try:
        if len(data) > limit:
            raise ValueError
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict) or record.get("format") != fmt:
            raise ValueError
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyFileError(f"{source} is not a {what}") from None
    return record


def _key_file_record(data: bytes, source: str) -> dict:
    """The JSON record of a key or identity file (bounded, a dict of the faceveil-key format), else KeyFileError."""
    return json_record(data, source)


def _unprotected_secret(record: dict, passphrase: str | None, source: str) -> bytes:
    """The 32-byte secret of a parsed key or identity file (decrypted with ``passphrase`` if protected)."""
    try:
        protection = record["protection"]
        if protection == "none":
            secret = _unb64(record["secret"])
        elif protection == "argon2id+chacha20poly1305":
            if passphrase is None:
                raise KeyFileError(f"{source} is protected by a passphrase; set {PASSPHRASE_ENV} or answer the prompt")
            kdf = _checked_kdf(record["kdf"], source)
            aad = canonical_json({k: v for k, v in record.items() if k != "ciphertext"})
            try:
                secret = ChaCha20Poly1305(_argon2(passphrase, _unb64(kdf["salt"]), kdf)).decrypt(
                    _unb64(record["nonce"]), _unb64(record["ciphertext"]), aad
                )
            except InvalidTag:
                raise KeyFileError(f"wrong passphrase for {source} (or the file was altered)") from None
        else:
            raise KeyFileError(f"{source} uses unknown protection {protection!r}")
    except (KeyError, TypeError, ValueError, AttributeError, base64.binascii.Error):
        raise KeyFileError(f"{source} is corrupt (missing or malformed fields)") from None
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"{source} is corrupt (its secret is not {SECRET_BYTES} bytes)")
    return secret


@dataclass(frozen=True, repr=False)
class Identity:
    """An X25519 private key: opens files anonymized to its recipient string. ``repr`` never shows the secret.

    The public half, :attr:`recipient`, is what cameras and other anonymizers are given
    (``faceveil1...``, see :mod:`faceveil.envelope`): it can anonymize, never recover.
    """

    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise KeyFileError(f"an X25519 identity is exactly {SECRET_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Identity(recipient={self.recipient!r})"

    @classmethod
    def generate(cls) -> "Identity":
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @property
    def public(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self.secret).public_key().public_bytes_raw()

    @property
    def recipient(self) -> str:
        """The public recipient string (``faceveil1...``) that anonymizes for this identity."""
        from faceveil.envelope import Recipient

        return str(Recipient(self.public))

    fingerprint = recipient  # what ``key info`` names it by: its public string reveals nothing secret

    def made(self, record: dict) -> bool:
        """Whether one of a (format-3) header record's recipient stanzas is for this identity."""
        from faceveil.envelope import opens

        return opens(self, record)

    def to_file_bytes(self, passphrase: str | None = None, argon2: dict | None = None) -> bytes:
        record = {"format": KEY_FILE_FORMAT, "version": IDENTITY_FILE_VERSION, "kind": IDENTITY_KIND,
                  "recipient": self.recipient}
        return _protected_file(record, self.secret, passphrase, argon2)

    def save(self, path: str | os.PathLike, passphrase: str | None = None, argon2: dict | None = None) -> Path:
        """Write a new identity file with mode 0600; refuses to overwrite an existing file."""
        return write_new_file(Path(path), self.to_file_bytes(passphrase, argon2), mode=PRIVATE)

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: str | None = None, source: str = "identity file") -> "Identity":
        record = _key_file_record(data, source)
        if record.get("version") != IDENTITY_FILE_VERSION or record.get("kind") != IDENTITY_KIND:
            raise KeyFileError(f"{source} is not an X25519 identity file")
        identity = cls(_unprotected_secret(record, passphrase, source))
        if record.get("recipient") not in (None, identity.recipient):
            raise KeyFileError(f"{source} is corrupt (its recipient does not match the secret)")
        return identity


def load_secret(path: str | os.PathLike, passphrase: str | None = None) -> "Key | Identity":
    """A symmetric key or an X25519 identity, whichever the file holds (``$FACEVEIL_PASSPHRASE`` if protected).

    A file that others can read gives a :class:`KeyFileWarning`.
    """
    path = Path(path)
    data = _read_key_file(path)
    exposure = key_file_exposure(path)
    if exposure:
        warnings.warn(exposure, KeyFileWarning, stacklevel=2)
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    record = _key_file_record(data, f"key file {path}")
    if record.get("kind") == IDENTITY_KIND:
        return Identity.from_file_bytes(data, passphrase, source=f"identity file {path}")
    return Key.from_file_bytes(data, passphrase, source=f"key file {path}")


def file_kind(path: str | os.PathLike) -> str:
    """``"x25519"`` for an identity file, else ``"symmetric"`` (without decrypting anything)."""
    try:
        return "x25519" if json.loads(_read_key_file(Path(path))).get("kind") == IDENTITY_KIND else "symmetric"
    except (KeyFileError, ValueError, AttributeError, RecursionError):
        return "symmetric"


def _read_key_file(path: Path) -> bytes:
    """A key file's bytes, at most ``MAX_KEY_FILE_BYTES`` (a larger file is not a key file)."""
    try:
        with open_regular(path, "key file", KeyFileError) as handle:  # a FIFO would hang: refused
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist (create one with: faceveil keygen {path})") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a folder, not a key file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {path} is not a faceveil key file (larger than {MAX_KEY_FILE_BYTES} bytes)")
    return data


def _checked_kdf(kdf: object, source: str) -> dict:
    """A key file's Argon2id parameters, refused outside ``ARGON2_LIMITS`` before any work."""
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise KeyFileError(f"{source} uses an unknown key derivation")
    for name, (low, high) in ARGON2_LIMITS.items():
        value = kdf.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise KeyFileError(f"{source} asks for Argon2id {name}={value!r:.20}, outside [{low}, {high}]: refused")
    if kdf["memory_kib"] < 8 * kdf["lanes"]:
        raise KeyFileError(f"{source} has inconsistent Argon2id parameters")
    return kdf


def generate_key() -> Key:
    """A new random key (same as ``Key.generate()``)."""
    return Key.generate()


#: Below this rough estimate a passphrase gets a warning (Argon2id slows each guess, it does not make up for few bits).
WEAK_PASSPHRASE_BITS = 50


def passphrase_bits(passphrase: str) -> float:
    """A rough, deliberately generous upper estimate of a passphrase's strength in bits.

    Length times log2 of the character classes used (lower, upper, digits, other ASCII,
    non-ASCII), with the length cut to twice the distinct characters (``aaaaaaaa`` is weak).
    """
    import math

    if not passphrase:
        return 0.0
    pool = (26 * any(c.islower() and c.isascii() for c in passphrase) + 26 * any(c.isupper() and c.isascii() for c in passphrase)
            + 10 * any(c.isdigit() and c.isascii() for c in passphrase)
            + 33 * any(c.isascii() and not c.isalnum() for c in passphrase) + 100 * any(not c.isascii() for c in passphrase))
    length = min(len(passphrase), 2 * len(set(passphrase)))
    return length * math.log2(max(pool, 2))


def passphrase_warning(passphrase: str) -> str | None:
    """A warning for a passphrase below ``WEAK_PASSPHRASE_BITS`` (an empty one is refused elsewhere), else ``None``."""
    bits = passphrase_bits(passphrase)
    if not passphrase or bits >= WEAK_PASSPHRASE_BITS:
        return None
    return (f"weak passphrase (about {bits:.0f} bits by a rough estimate, {WEAK_PASSPHRASE_BITS} or more advised): whoever "
            "copies the key file can guess it offline; use several random words")


def prompt_passphrase(confirm: bool = False) -> str:
    """The passphrase from $FACEVEIL_PASSPHRASE, else from a terminal prompt (never argv)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        return value
    first = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Passphrase (again): ") != first:
        raise KeyFileError("the two passphrases differ")
    return first


__all__ = ["Key", "Identity", "load_secret", "KeyFileWarning", "key_file_exposure", "generate_key", "new_nonce", "public_gaussian", "canonical_json", "prompt_passphrase", "InvalidTag"]

"""Key transport to cluster workers: the secret travels only sealed to one worker's ephemeral key.

Each worker makes an X25519 key pair in memory when it starts and hands out the public
half. The driver seals the 32 secret bytes to it (X25519 with a fresh ephemeral pair,
HKDF-SHA256, ChaCha20-Poly1305, both public keys bound as associated data) and sends
the sealed blob as a method argument. Ray's control plane and object store (and so its
spilling, logs and GCS tables) only ever see the sealed blob; opening it needs the
worker's private half, which never leaves that process and dies with it.

This module never imports ray or torch.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from faceveil.errors import KeyFileError
from faceveil.keys import SECRET_BYTES, Identity, Key

_INFO = b"faceveil/v1/cluster-key-transport"
_RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
PUBLIC_BYTES = 32
NONCE_BYTES = 12
SEALED_BYTES = PUBLIC_BYTES + NONCE_BYTES + 1 + SECRET_BYTES + 16  # ephemeral public | nonce | kind, secret + tag
_KINDS = {b"K": Key, b"I": Identity}  # a symmetric key, or an X25519 identity (recovering with it)


def _cipher(shared: bytes, recipient: bytes, ephemeral: bytes) -> ChaCha20Poly1305:
    wrap_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + recipient + ephemeral).derive(shared)
    return ChaCha20Poly1305(wrap_key)


class KeyReceiver:
    """A worker's side: an in-memory X25519 pair; opens the one sealed key meant for it."""

    def __init__(self) -> None:
        self._private: X25519PrivateKey | None = X25519PrivateKey.generate()
        self.public: bytes = self._private.public_key().public_bytes(**_RAW)

    def __repr__(self) -> str:
        return f"KeyReceiver(public={self.public.hex()[:16]}...)"

    def open(self, sealed: bytes) -> Key | Identity:
        """The key or identity sealed to this receiver; the private half is dropped afterwards (one use)."""
        if self._private is None:
            raise KeyFileError("this worker has already received its key")
        if not isinstance(sealed, bytes) or len(sealed) != SEALED_BYTES:
            raise KeyFileError("the sealed key has the wrong size")
        ephemeral, nonce, body = sealed[:PUBLIC_BYTES], sealed[PUBLIC_BYTES:PUBLIC_BYTES + NONCE_BYTES], sealed[PUBLIC_BYTES + NONCE_BYTES:]
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        try:
            secret = _cipher(shared, self.public, ephemeral).decrypt(nonce, body, self.public + ephemeral)
        except InvalidTag:
            raise KeyFileError("the sealed key does not open with this worker's key pair") from None
        self._private = None
        kind = _KINDS.get(secret[:1])
        if kind is None:
            raise KeyFileError("the sealed key is of an unknown kind")
        return kind(secret[1:])


def seal_key(key: Key | Identity, recipient: bytes) -> bytes:
    """The driver's side: ``key`` sealed to a worker's public key (only that worker can open it)."""
    if not isinstance(recipient, bytes) or len(recipient) != PUBLIC_BYTES:
        raise KeyFileError("a worker's public key is 32 bytes")
    ephemeral_private = X25519PrivateKey.generate()
    ephemeral = ephemeral_private.public_key().public_bytes(**_RAW)
    shared = ephemeral_private.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = secrets.token_bytes(NONCE_BYTES)
    kind = b"I" if isinstance(key, Identity) else b"K"
    return ephemeral + nonce + _cipher(shared, recipient, ephemeral).encrypt(nonce, kind + key.secret, recipient + ephemeral)

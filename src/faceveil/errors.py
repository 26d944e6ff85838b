"""Exceptions of faceveil, each carrying the CLI exit code it maps to.

Exit codes (a stable contract, see README):
    0 success, 2 bad usage or unreadable input, 3 wrong key or tampered/missing
    faceveil header, 4 no face found.
"""

from __future__ import annotations


class FaceveilError(Exception):
    """Base class: a clear, one-line message meant for the user."""

    exit_code = 1


class UsageError(FaceveilError):
    """Bad arguments, unreadable or unsupported input, refused overwrite."""

    exit_code = 2


class KeyFileError(UsageError):
    """A key file that is missing, corrupt, or whose passphrase is wrong."""


class ModelUnavailableError(UsageError):
    """Model weights are neither present locally nor downloadable."""


class HeaderError(FaceveilError):
    """The faceveil header is missing, malformed or tampered with."""

    exit_code = 3


class WrongKeyError(HeaderError):
    """The key does not match the one the file was anonymized with."""


class NoFaceError(FaceveilError):
    """No face was found where one was required."""

    exit_code = 4


class OutputError(FaceveilError):
    """An output could not be written (a full disk, a read-only folder, an I/O error); nothing partial was left."""

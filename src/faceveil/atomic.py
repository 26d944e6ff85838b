"""Atomic file output: a file appears whole or not at all, and nothing is overwritten by accident."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from faceveil.errors import UsageError


@contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on success it replaces ``path`` whole.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    fd, name = tempfile.mkstemp(prefix=".faceveil-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically; refuse if ``path`` already exists (race-free)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists; refusing to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"folder {directory} does not exist")
    tmp = _write_temp(directory, data, mode)
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite it") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_file(path: Path, data: bytes, overwrite: bool = False, mode: int = 0o644) -> Path:
    """Write ``data`` atomically; replace an existing file only when ``overwrite`` is set."""
    path = Path(path)
    if not overwrite:
        return write_new_file(path, data, mode)
    with atomic_output(path, mode) as handle:
        handle.write(data)
    return path

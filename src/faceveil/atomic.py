"""Safe file access: atomic writes that never clobber, modes that respect the umask, regular files only.

Temporary files are named ``.faceveil-*.tmp`` beside their target and stay mode 0600
until the moment they become the output, so a process killed mid-write leaves at most
an owner-only leftover; the next write into that folder removes such leftovers once
they are older than ``STALE_SECONDS`` (:func:`sweep_leftovers`).
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from faceveil.errors import OutputError, UsageError

#: The mode of an ordinary output: what the umask allows of rw-rw-rw-.
PUBLIC = 0o666
#: The mode of an output holding what faceveil protects (recovered originals, keys): owner only.
PRIVATE = 0o600
TEMP_PREFIX = ".faceveil-"
TEMP_SUFFIX = ".tmp"
#: A temporary file untouched for this long is a leftover of a killed run (a write lasts seconds, even on a slow disk).
STALE_SECONDS = 600.0

_swept: set[str] = set()
_swept_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), else by a set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # pragma: no cover - non-Linux
    os.umask(mask)
    return mask


def effective_mode(mode: int) -> int:
    """``mode`` as the umask lets it be (what ``open(..., O_CREAT)`` would give)."""
    return mode & ~current_umask() & 0o777


def sweep_leftovers(directory: Path, now: float | None = None) -> list[Path]:
    """Remove ``.faceveil-*.tmp`` files of killed runs from ``directory``; returns those removed.

    Only regular files older than ``STALE_SECONDS`` go, so another process's write in
    flight is never touched. Each folder is swept once per process.
    """
    directory = Path(directory)
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX) and n.endswith(TEMP_SUFFIX)]
    except OSError:
        return removed
    for name in names:
        path = directory / name
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_SECONDS:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _sweep_once(directory: Path) -> None:
    key = os.path.abspath(directory)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_leftovers(directory)


@contextmanager
def atomic_output(path: Path, mode: int = PUBLIC) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on success it replaces ``path`` whole.

    The file gets ``mode`` as the umask allows. On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    _sweep_once(directory)
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)  # created 0600
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            try:
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), effective_mode(mode))
            except OSError as exc:
                raise _output_error(path, exc) from None
        os.replace(tmp, path)
    except OSError as exc:  # the last buffered bytes, flushed on close, or the replace
        raise _output_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc} (nothing partial was left)")


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    _sweep_once(directory)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), effective_mode(mode))  # only now, just before it is linked
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_new_file(path: Path, data: bytes, mode: int = PUBLIC) -> Path:
    """Write ``data`` to ``path`` atomically; refuse if ``path`` already exists (race-free).

    The file gets ``mode`` as the umask allows (``PRIVATE`` for what must stay the owner's).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists; refusing to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"folder {directory} does not exist")
    try:
        tmp = _write_temp(directory, data, mode)
    except OSError as exc:  # a full disk, a read-only folder: the temporary file is already gone
        raise _output_error(path, exc) from None
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise _output_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_file(path: Path, data: bytes, overwrite: bool = False, mode: int = PUBLIC) -> Path:
    """Write ``data`` atomically; replace an existing file only when ``overwrite`` is set."""
    path = Path(path)
    if not overwrite:
        return write_new_file(path, data, mode)
    with atomic_output(path, mode) as handle:
        handle.write(data)
    return path


def open_regular(path: str | os.PathLike, what: str = "input", error: type[UsageError] = UsageError) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file (a FIFO, device or socket would hang or never end).

    Opened without blocking and checked on the open descriptor, so nothing can be swapped
    in between the check and the read. Missing files raise ``FileNotFoundError`` as ``open`` does.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
            raise error(f"{what} {path} is {kind}; faceveil reads regular files only")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, what: str = "input", error: type[UsageError] = UsageError) -> None:
    """Refuse ``path`` unless it is a regular file (following links), without opening it."""
    try:
        info = os.stat(path)
    except OSError:
        return  # the caller's own open reports a missing or unreadable file
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
        raise error(f"{what} {path} is {kind}; faceveil reads regular files only")

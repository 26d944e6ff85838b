"""Where a dataset lives: local folders, or anything fsspec reads (s3://, gs://, abfs://, ...).

Local paths go straight to the single-machine pieces (``plan_tasks``, the atomic
no-clobber writes of ``faceveil.atomic``, ``write_manifest``). Other URLs are staged:
a worker copies its input (and sidecar) into a private temporary folder, runs the
file API there, then publishes each output under a hidden temporary name and moves it
into place, sidecar before image, so an output name appears only once it is whole.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from faceveil.batch import (
    IMAGE_SUFFIXES,
    _is_output_name,
    merge_manifest,
    plan_tasks,
    write_manifest,
)
from faceveil.errors import UsageError

UPLOAD_MARK = ".faceveil-upload-"
SIDECAR_SUFFIX = ".veil"
MANIFEST = "manifest.json"


def is_local(url: str | Path) -> bool:
    """A plain path or a ``file://`` URL."""
    text = str(url)
    return "://" not in text or text.startswith(("file://", "local://"))


def local_path(url: str | Path) -> Path:
    text = str(url)
    for prefix in ("file://", "local://"):
        if text.startswith(prefix):
            return Path(text[len(prefix):])
    return Path(text)


def _fs(url: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def exists(url: str) -> bool:
    if is_local(url):
        return local_path(url).exists()
    fs, path = _fs(url)
    return fs.exists(path)


def source_key(url: str) -> str:
    """The manifest's key for an input: its absolute path, or its URL as given."""
    return str(local_path(url).resolve()) if is_local(url) else url


# ---- planning -------------------------------------------------------------------------
def plan(inputs: list[str], output: str | None, recursive: bool, recovering: bool, tag: str) -> list[tuple[str, str]]:
    """(source, target) pairs with the single-machine batch's names and layout."""
    from faceveil.api import default_output

    if all(is_local(i) for i in inputs) and (output is None or is_local(output)):
        local_inputs = [str(local_path(i)) for i in inputs]
        out = None if output is None else str(local_path(output))
        return [(str(t.source), str(t.target or default_output(t.source, tag))) for t in plan_tasks(local_inputs, out, recursive, recovering, tag)]
    pairs: list[tuple[str, PurePosixPath]] = []
    for item in inputs:
        fs, root = _fs(item)
        if fs.isdir(root):
            found = fs.find(root) if recursive else [p for p in fs.ls(root, detail=False) if fs.isfile(p)]
            for path in sorted(found):
                name = PurePosixPath(path)
                if name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("."):
                    continue
                if recovering != (".veiled." in name.name) or (not recovering and _is_output_name(Path(name.name))):
                    continue
                pairs.append((fs.unstrip_protocol(path), name.relative_to(PurePosixPath(root.rstrip("/")))))
        else:
            pairs.append((item if "://" in item else fs.unstrip_protocol(root), PurePosixPath(PurePosixPath(root).name)))
    if output is None:
        return [(src, _with_name(src, default_output(PurePosixPath(rel.name), tag).name)) for src, rel in pairs]
    single = len(inputs) == 1 and len(pairs) == 1 and not _isdir(inputs[0])
    if single and not _isdir(output):
        return [(pairs[0][0], output)]
    return [(src, _join(output, str(default_output(rel, tag)))) for src, rel in pairs]


def _isdir(url: str) -> bool:
    if is_local(url):
        return local_path(url).is_dir()
    fs, path = _fs(url)
    return fs.isdir(path)


def _join(folder: str, rel: str) -> str:
    if is_local(folder):
        return str(local_path(folder) / rel)
    return folder.rstrip("/") + "/" + rel


def _with_name(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


# ---- a worker's view of one task --------------------------------------------------------
def _download(url: str, folder: Path) -> Path:
    """Copy ``url`` (and its sidecar, if any) into ``folder``; the local copy's path."""
    fs, path = _fs(url)
    local = folder / PurePosixPath(path).name
    fs.get_file(path, str(local))
    if fs.exists(path + SIDECAR_SUFFIX):
        fs.get_file(path + SIDECAR_SUFFIX, str(local) + SIDECAR_SUFFIX)
    return local


def publish(local: Path, url: str) -> None:
    """Put a finished local file at ``url``: a hidden temporary name first, then a move; never over a file."""
    fs, path = _fs(url)
    if fs.exists(path):
        raise UsageError(f"{url} already exists; refusing to overwrite it")
    parent = str(PurePosixPath(path).parent)
    temporary = f"{parent}/.{PurePosixPath(path).name}{UPLOAD_MARK}{secrets.token_hex(6)}"
    fs.makedirs(parent, exist_ok=True)
    fs.put_file(str(local), temporary)
    if fs.exists(path):
        fs.rm_file(temporary)
        raise UsageError(f"{url} already exists; refusing to overwrite it")
    fs.mv(temporary, path)


@contextmanager
def staged(source: str, target: str) -> Iterator[tuple[Path, Path, Callable[[list[Path]], list[str]]]]:
    """Local stand-ins for a task's files and a ``publish(outputs) -> urls`` for what the file API wrote."""
    if is_local(source) and is_local(target):
        yield local_path(source), local_path(target), lambda outputs: [str(p) for p in outputs]
        return
    scratch = Path(tempfile.mkdtemp(prefix="faceveil-task-"))
    try:
        (scratch / "in").mkdir()
        (scratch / "out").mkdir()
        local_source = local_path(source) if is_local(source) else _download(source, scratch / "in")
        if is_local(target):
            yield local_source, local_path(target), lambda outputs: [str(p) for p in outputs]
            return
        local_target = scratch / "out" / PurePosixPath(_fs(target)[1]).name

        def publish_all(outputs: list[Path]) -> list[str]:
            urls = {p: _with_name(target, p.name) for p in outputs}
            for p in sorted(outputs, key=lambda p: p == local_target):  # sidecar first, the image last
                publish(p, urls[p])
            return [urls[p] for p in outputs]

        yield local_source, local_target, publish_all
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def readable(url: str) -> Iterator[Path]:
    """A local path to read ``url`` (and its sidecar) from."""
    if is_local(url):
        yield local_path(url)
        return
    scratch = Path(tempfile.mkdtemp(prefix="faceveil-read-"))
    try:
        yield _download(url, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- the manifest and leftovers --------------------------------------------------------
def manifest_url(output: str | None, tasks: list[tuple[str, str]]) -> str | None:
    """Where the batch's ``manifest.json`` goes: inside ``-o`` when it names a folder (an object
    store's prefix may not exist yet), nowhere when ``-o`` is the one output file."""
    if output is None or any(target == output for _, target in tasks):
        return None
    return _join(output, MANIFEST)


def read_manifest(url: str) -> list[dict]:
    """The records of an existing manifest; an unreadable one counts as empty (writing keeps it aside)."""
    try:
        if is_local(url):
            text = local_path(url).read_text() if local_path(url).is_file() else ""
        else:
            fs, path = _fs(url)
            text = fs.cat_file(path).decode() if fs.exists(path) else ""
        files = json.loads(text).get("files", []) if text else []
        return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return []


def manifest_names(url: str, inputs: list[str], tasks: list[tuple[str, str]]):
    """The manifest's relative names (:class:`faceveil.names.ManifestNames`): inputs relative to the
    folder they were found in, outputs relative to the manifest's folder."""
    from faceveil.names import ManifestNames, input_names

    folder = str(local_path(url).parent.resolve()) if is_local(url) else url.rsplit("/", 1)[0]
    local = [str(local_path(i)) if is_local(i) else i for i in inputs]
    return ManifestNames(folder, input_names(local, [str(local_path(s)) if is_local(s) else s for s, _ in tasks]))


def save_manifest(url: str, entries: list[dict], names=None) -> None:
    """Merge ``entries`` into the manifest at ``url``, atomically (the batch's own writer where local);
    ``names`` writes its paths relative (``manifest_names``)."""
    if is_local(url):
        write_manifest(local_path(url), entries, names)
        return
    from faceveil import __version__

    previous = read_manifest(url)
    if names is not None:
        previous = [names.from_file(e) for e in previous]
    merged = merge_manifest(previous, entries)
    data = {"faceveil": __version__, "files": [names.to_file(e) for e in merged] if names is not None else merged}
    fs, path = _fs(url)
    temporary = f"{path}{UPLOAD_MARK}{secrets.token_hex(6)}"
    fs.pipe_file(temporary, (json.dumps(data, indent=1) + "\n").encode())
    fs.mv(temporary, path)


def sweep_leftovers(folders: set[str]) -> int:
    """Remove the temporary files that a killed worker left in output folders; how many.

    Only faceveil's own hidden temporaries: ``.faceveil-*.tmp`` (faceveil.atomic) and
    ``.NAME.faceveil-upload-*``. Call it when no worker of this run is writing any more.
    """
    removed = 0
    for folder in folders:
        if is_local(folder):
            base = local_path(folder)
            if not base.is_dir():
                continue
            for path in [*base.glob(".faceveil-*.tmp"), *base.glob(f".*{UPLOAD_MARK}*")]:
                path.unlink(missing_ok=True)
                removed += 1
        else:
            fs, path = _fs(folder)
            for leftover in fs.glob(f"{path.rstrip('/')}/.*{UPLOAD_MARK}*"):
                fs.rm_file(leftover)
                removed += 1
    return removed


def parent(url: str) -> str:
    if is_local(url):
        return str(local_path(url).parent)
    return url.rpartition("/")[0]

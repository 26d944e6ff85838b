"""Batches: expand inputs into (input, output) tasks, run one action on each, keep ``manifest.json``.

One failure never stops a batch; outputs are written atomically by the action, so a
batch stopped at any point leaves only whole files, and ``--resume`` skips them. The
manifest of an output folder is merged, never overwritten (:func:`merge_manifest`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from faceveil import __version__
from faceveil.atomic import check_regular
from faceveil.errors import FaceveilError, UsageError
from faceveil.interrupts import Interrupted, stop_signals

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}  # faceveil.video


@dataclass
class Task:
    source: Path
    target: Path | None  # None: the default name beside the input
    rel: str = ""  # the input's path relative to the folder it was found in (a file given: its name), POSIX


def _is_output_name(path: Path) -> bool:
    return any(tag in path.name for tag in (".veiled.", ".recovered."))


def plan_tasks(inputs: list[str], output: str | None, recursive: bool, recovering: bool, tag: str,
               renamer=None) -> list[Task]:
    """Expand files and folders into (input, output) pairs; ``-o`` is a file for one input file, else a folder.

    With ``renamer`` (a :class:`faceveil.names.Renamer`, ``--rename hash``) outputs are named by
    the keyed hash of their relative path, flat in the output folder (or beside each input).
    """
    from faceveil.api import default_output

    pairs: list[tuple[Path, Path]] = []  # (file, path relative to its root)
    for item in map(Path, inputs):
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            for path in sorted(item.glob(pattern)):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    continue
                if recovering != (".veiled." in path.name) or (not recovering and _is_output_name(path)):
                    continue
                pairs.append((path, path.relative_to(item)))
        else:
            check_regular(item, "input")  # a FIFO or device named on the command line would hang the reader
            pairs.append((item, Path(item.name)))
    if renamer is not None:
        hashed = {rel: renamer.stem(rel) for _, rel in pairs}  # every name first: a collision refuses the batch
    if output is None:
        if renamer is not None:
            return [Task(path, default_output(path.with_name(hashed[rel] + path.suffix), tag), rel.as_posix())
                    for path, rel in pairs]
        return [Task(path, None, rel.as_posix()) for path, rel in pairs]
    out = Path(output)
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if single and not out.is_dir():
        return [Task(pairs[0][0], out, pairs[0][1].as_posix())]
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} must be a folder when the input is a folder or several files")
    if renamer is not None:  # flat: subfolder names are names too
        out.mkdir(parents=True, exist_ok=True)
        return [Task(path, default_output(out / (hashed[rel] + path.suffix), tag), rel.as_posix()) for path, rel in pairs]
    for _, rel in pairs:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    return [Task(path, default_output(out / rel, tag), rel.as_posix()) for path, rel in pairs]



def check_existing(source: Path, target: Path, key, recovering: bool) -> FaceveilError | None:
    """Why an existing ``target`` is not a complete output of ``source`` under ``key``, or ``None`` when it is.

    As the Ray workers check before adopting an output: the veiled file's header opens with
    the key (wrong key, tampering, an empty or truncated file are caught) and the image
    decodes whole. A video output is only checked to be a non-empty file with its sidecar.
    """
    from faceveil.container import open_header, read_record, sidecar_path
    from faceveil.imageio import read_image

    try:
        if source.suffix.lower() in VIDEO_SUFFIXES:
            if target.stat().st_size == 0 or not (recovering or sidecar_path(target).is_file()):
                raise UsageError("empty, or its sidecar is missing")
            return None
        record = read_record(source if recovering else target)
        if key is not None:  # anonymizing to recipients only: nothing here can open it, the record is checked whole
            open_header(key, record)
        read_image(target, max_pixels=None)
    except FaceveilError as exc:
        return exc
    except OSError as exc:
        return UsageError(f"cannot read it ({exc.strerror or exc})")
    return None


def run_batch(args: argparse.Namespace, action, recovering: bool, tag: str, show: bool = False, key=None) -> int:
    """Run ``action`` on every task, in groups of ``args.batch`` files; one failure never stops the batch.

    ``action(pairs, report)`` processes ``[(source, target), ...]`` (a video always alone)
    and calls ``report(index, result_or_error)`` as each file's outcome is known, so a
    file written is recorded at once. Prints a summary. With ``key``, ``--resume`` skips an
    existing output only once :func:`check_existing` accepts it; otherwise the file fails
    (the output is left as it is).
    """
    from tqdm import tqdm

    from faceveil.api import default_output

    renamer = None
    if getattr(args, "rename", "keep") == "hash":
        from faceveil.names import Renamer

        renamer = Renamer(key)
    tasks = plan_tasks(args.inputs, args.output, getattr(args, "recursive", False), recovering, tag, renamer)
    if not tasks:
        raise UsageError("no input images found" + ("" if getattr(args, "recursive", False) else " (folders: add --recursive to go into subfolders)"))
    batch = getattr(args, "batch", 1) or 1
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    done, skipped, refused, failed, manifest = 0, 0, [], [], []
    first_failure = 0
    bar = tqdm(total=len(tasks), desc="images", unit=" image", disable=len(tasks) < 2 or not show, file=sys.stderr)
    try:
        with stop_signals(), bar:
            runnable: list[tuple[Path, Path]] = []
            for task in tasks:
                target = task.target or default_output(task.source, tag)
                if target.exists() and not args.overwrite and not _same_file(target, task.source):
                    # an earlier run's output: --resume skips it quietly; without it the refusal is reported
                    # (exit 2) but the manifest keeps the earlier record: the output is not a failure
                    manifest.append(skipped_entry(str(task.source.resolve()), target))
                    bar.update(1)
                    if args.resume and key is not None:
                        problem = check_existing(task.source, target, key, recovering)
                        if problem is not None:
                            reason = (f"{target} exists but is not a complete output of this key ({problem}); left as it "
                                      "is: remove it, or pass --overwrite to redo it")
                            print(f"faceveil: {task.source}: {reason}", file=sys.stderr)
                            failed.append((task.source, reason))
                            manifest[-1] = {**failed_entry(str(task.source.resolve()), reason), "existing_output": str(target)}
                            first_failure = first_failure or problem.exit_code
                            continue
                    if args.resume:
                        skipped += 1
                        continue
                    reason = f"{target} already exists (--resume skips it, --overwrite redoes it)"
                    print(f"faceveil: {task.source}: {reason}", file=sys.stderr)
                    refused.append((task.source, reason))
                    first_failure = first_failure or UsageError.exit_code
                    continue
                runnable.append((task.source, target))
            for group in _groups(runnable, batch):

                def report(index: int, outcome, group=group) -> None:
                    nonlocal done, first_failure
                    source = group[index][0]
                    source_key = str(source.resolve())
                    bar.update(1)
                    if isinstance(outcome, FaceveilError):
                        print(f"faceveil: {source}: {outcome}", file=sys.stderr)
                        failed.append((source, str(outcome)))
                        manifest.append(failed_entry(source_key, str(outcome)))
                        first_failure = first_failure or outcome.exit_code
                        return
                    done += 1
                    for note in outcome.notes:
                        print(f"faceveil: {source}: note: {note}", file=sys.stderr)
                    print(f"{source} -> {', '.join(str(p) for p in outcome.outputs)}")
                    manifest.append(done_entry(source_key, outcome.outputs, len(outcome.faces), outcome.notes))

                reported: set[int] = set()

                def noted(index: int, outcome, report=report, reported=reported) -> None:
                    reported.add(index)
                    report(index, outcome)

                try:
                    action(group, noted)
                except OSError as exc:  # not one file's refusal: the group's unreported files fail, the batch goes on
                    for index in range(len(group)):
                        if index not in reported:
                            noted(index, FaceveilError(f"{exc.strerror or exc}"))
    except Interrupted as stop:
        # the files in flight wrote nothing (atomic writes); what finished is kept and recorded
        print(f"faceveil: {stop.name}: stopped after {done} of {len(tasks)} (nothing partial was written); "
              "run the same command with --resume to finish", file=sys.stderr)
        first_failure = stop.exit_code
    if len(tasks) > 1:
        extra = f", {len(refused)} refused (output exists)" if refused else ""
        print(f"faceveil: {done} done, {skipped} skipped, {len(failed)} failed{extra}", file=sys.stderr)
        for source, reason in failed:
            print(f"  failed: {source}: {reason}", file=sys.stderr)
        for source, reason in refused:
            print(f"  refused: {source}: {reason}", file=sys.stderr)
    if args.output and Path(args.output).is_dir():
        try:
            write_manifest(Path(args.output) / "manifest.json", manifest, manifest_names(Path(args.output), tasks, renamer))
        except FaceveilError as exc:  # a full disk: say so in one line, keep the exit code of the batch
            print(f"faceveil: manifest not written: {exc}", file=sys.stderr)
            first_failure = first_failure or exc.exit_code
    return first_failure


def _groups(pairs: list[tuple[Path, Path]], size: int) -> list[list[tuple[Path, Path]]]:
    """Consecutive groups of up to ``size`` images; a video is a group of its own."""
    groups: list[list[tuple[Path, Path]]] = []
    for pair in pairs:
        video = pair[0].suffix.lower() in VIDEO_SUFFIXES
        if video or not groups or len(groups[-1]) >= size or groups[-1][0][0].suffix.lower() in VIDEO_SUFFIXES:
            groups.append([pair])
        else:
            groups[-1].append(pair)
    return groups


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


SKIPPED = "skipped (exists)"


def done_entry(source_key: str, outputs: list, faces: int, notes: list[str]) -> dict:
    """The manifest record of an input that was processed (shared by every runner)."""
    return {"input": source_key, "outputs": [str(p) for p in outputs], "status": "done", "faces": faces, "notes": notes}


def failed_entry(source_key: str, reason: str) -> dict:
    """The manifest record of an input that failed, with the reason the user sees."""
    return {"input": source_key, "outputs": [], "status": "failed", "reason": reason}


def skipped_entry(source_key: str, target) -> dict:
    """The manifest record of an input whose output already exists (never replaces an earlier record)."""
    return {"input": source_key, "outputs": [str(target)], "status": SKIPPED}


def merge_manifest(previous: list[dict], entries: list[dict]) -> list[dict]:
    """Records keyed by input; the newest outcome wins, except that nothing good is lost.

    - ``skipped (exists)`` never replaces an earlier record (it only adds a missing one);
    - ``failed`` does not replace a ``done`` whose outputs all still exist (atomic writes
      leave them whole): the record stays ``done`` and gains ``last_attempt``; unless
      ``--resume`` found that very output broken (``existing_output``);
    - ``done`` replaces anything.
    """
    merged: dict[str, dict] = {}
    for entry in previous:
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            merged[entry["input"]] = entry
    for entry in entries:
        old = merged.get(entry["input"])
        if old is not None and entry["status"] == SKIPPED:
            continue
        if (old is not None and entry["status"] == "failed" and old.get("status") == "done"
                and "existing_output" not in entry and all(Path(p).is_file() for p in old.get("outputs", []))):
            merged[entry["input"]] = {**old, "last_attempt": {"status": "failed", "reason": entry.get("reason", "")}}
            continue
        merged[entry["input"]] = entry
    return list(merged.values())


def manifest_names(folder: Path, tasks: list[Task], renamer=None):
    """How the manifest in ``folder`` names this batch's files (:class:`faceveil.names.ManifestNames`):
    inputs relative to the folder they were found in, or by their hashed name with the path sealed."""
    from faceveil.names import ManifestNames

    inputs, sealed, rels = {}, {}, {}
    for task in tasks:
        source = str(task.source.resolve())
        inputs[source] = rels[source] = task.rel or task.source.name
        if renamer is not None:
            stem = renamer.stem(inputs[source])
            inputs[source], sealed[source] = stem, renamer.sealed(stem, inputs[source])
    return ManifestNames(str(folder.resolve()), inputs, sealed, rels if renamer is not None else None)


def write_manifest(path: Path, entries: list[dict], names=None) -> None:
    """Merge this run's entries into the folder's ``manifest.json``, atomically.

    ``names`` (:class:`faceveil.names.ManifestNames`) writes paths relative (inputs to their
    folder, outputs to this one) and reads an earlier manifest's relative records back in this
    run's absolute terms; records of older manifests with absolute paths merge as they are.
    An unreadable manifest is kept aside (``manifest.json.unreadable-N``), never dropped.
    """
    import json

    from faceveil.atomic import write_file

    previous: list[dict] = []
    if path.is_file():
        try:
            files = json.loads(path.read_text()).get("files", [])
            if not isinstance(files, list):
                raise TypeError("files is not a list")
            previous = files
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            n = 1
            while path.with_name(f"{path.name}.unreadable-{n}").exists():
                n += 1
            aside = path.with_name(f"{path.name}.unreadable-{n}")
            os.replace(path, aside)
            print(f"faceveil: note: {path} was unreadable; kept as {aside.name}, a new one started", file=sys.stderr)
    if names is None:
        from faceveil.names import ManifestNames

        names = ManifestNames(str(path.parent.resolve()))
    previous = [names.from_file(entry) if isinstance(entry, dict) else entry for entry in previous]
    files = [names.to_file(entry) for entry in merge_manifest(previous, entries)]
    data = {"faceveil": __version__, "files": files}
    write_file(path, (json.dumps(data, indent=1) + "\n").encode(), overwrite=True)

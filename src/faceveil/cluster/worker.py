"""One cluster worker (a Ray actor): loads the model once, then anonymizes or recovers files, a batch at a time.

A plain class, so it also runs in-process (tests); the driver wraps it with
``ray.remote``. Every file gives one manifest record (``faceveil.batch``'s format),
never an exception: one bad file never stops the dataset. ``process_many`` takes several
files at once and sends their faces through the UNet together (``faceveil.api.anonymize_files``).

Exactly once: an output that already exists is never written again. When a task finds
its output there (an earlier attempt wrote it, then its worker or driver died before the
record was kept), the output is checked (its header opens with the key, so it is whole
and ours) and adopted as ``done``; nothing is anonymized a second time with new nonces.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from faceveil.batch import done_entry, failed_entry
from faceveil.cluster import storage
from faceveil.cluster.transport import KeyReceiver
from faceveil.errors import FaceveilError, UsageError
from faceveil.keys import Identity, Key

ADOPTED_NOTE = "written by an earlier attempt that was interrupted before its record was kept; checked and kept, not redone"


@dataclass(frozen=True)
class Job:
    """What every file of the dataset gets: the direction, the model and the file API's options."""

    recovering: bool
    model: str | None = None  # anonymize: None is the embedded default; recover: None is the header's model
    options: dict = field(default_factory=dict)  # keyword arguments of faceveil.api.anonymize / recover
    recipients: tuple[str, ...] = ()  # anonymize: public recipient strings (no secret needed for them)


class FileWorker:
    """Holds one model (per model id, for recovery) and the key, in this process's memory only."""

    def __init__(self, job: Job, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self._job = job
        self._receiver = KeyReceiver()
        self._key: Key | Identity | None = None
        self._models: dict = {}
        self._device = "cuda" if torch.cuda.is_available() else "cpu"

    def __repr__(self) -> str:  # Ray may print an actor's repr: never the key
        return f"FileWorker(pid={os.getpid()}, device={self._device})"

    # ---- start-up ------------------------------------------------------------------------
    def public_key(self) -> bytes:
        """This worker's ephemeral X25519 public key: the driver seals the secret to it."""
        return self._receiver.public

    def _ready(self) -> bool:
        """Whether this worker can do its job: it holds the key, or it anonymizes to recipients only."""
        return self._key is not None or (not self._job.recovering and bool(self._job.recipients))

    def _keys(self):
        """What files are anonymized for (the key and the recipients), or what recovers them (the key)."""
        if self._job.recovering or not self._job.recipients:
            return self._key
        return ([self._key] if self._key is not None else []) + list(self._job.recipients)

    def accept_key(self, sealed: bytes) -> str:
        """Open the sealed key (only this process can); the key's public fingerprint as a receipt."""
        self._key = self._receiver.open(sealed)
        return self._key.fingerprint

    def prepare(self) -> dict:
        """Load the model now, once: an error comes back as a message, not a crash."""
        started = time.perf_counter()
        try:
            self._model(self._job.model)  # recover: the override, else the default (what headers usually name)
        except FaceveilError as exc:
            return {"error": str(exc), "exit_code": exc.exit_code}
        return {"pid": os.getpid(), "device": self._device, "load_s": time.perf_counter() - started}

    def _model(self, spec: str | None):
        from faceveil.models import load_model, resolve_spec

        name = resolve_spec(spec)
        if name not in self._models:
            self._models[name] = load_model(name, device=self._device)
        return self._models[name]

    # ---- one file ------------------------------------------------------------------------
    def process(self, source: str, target: str) -> dict:
        """Anonymize or recover one file: ``{"record", "seconds", "exit_code"}`` (0 unless it failed)."""
        started = time.perf_counter()
        key = storage.source_key(source)

        def outcome(record: dict, exit_code: int = 0) -> dict:
            return {"record": record, "seconds": time.perf_counter() - started, "exit_code": exit_code}

        if not self._ready():
            return outcome(failed_entry(key, "internal error: this worker never received the key"), 1)
        try:
            if storage.exists(target):
                return outcome(*self._adopt(key, source, target))
            with storage.staged(source, target) as (local_source, local_target, publish):
                result = self._run(local_source, local_target)
                outputs = publish(result.outputs)
            return outcome(done_entry(key, outputs, len(result.faces), result.notes))
        except FaceveilError as exc:
            return outcome(*self._failed(key, source, target, exc))
        except Exception as exc:  # noqa: BLE001 - a worker reports, it never dies of one file
            return outcome(failed_entry(key, f"internal error ({type(exc).__name__}): {exc}"), 1)

    def process_many(self, tasks: list[tuple[str, str]]) -> list[dict]:
        """Several files at once, their faces batched through the UNet: one ``process`` outcome per file, in order.

        Each file is checked, staged and published on its own, as ``process`` does; a
        file's failure is its own record. Should the batch itself break (not one file's
        fault), the files are done one by one instead.
        """
        if len(tasks) <= 1 or not self._ready():
            return [self.process(source, target) for source, target in tasks]
        started = time.perf_counter()
        outcomes: list[dict | None] = [None] * len(tasks)
        try:
            with ExitStack() as stack:
                staged = []  # (index, manifest key, local source, local target, publish)
                for i, (source, target) in enumerate(tasks):
                    key = storage.source_key(source)
                    if storage.exists(target) or self._is_video(source):
                        outcomes[i] = self.process(source, target)  # adopted, or refused, as alone
                        continue
                    try:
                        staged.append((i, key, *stack.enter_context(storage.staged(source, target))))
                    except FaceveilError as exc:
                        outcomes[i] = _untimed(*self._failed(key, source, target, exc))
                results = self._run_many([(local_source, local_target) for _, _, local_source, local_target, _ in staged])
                for (i, key, _, _, publish), result in zip(staged, results):
                    outcomes[i] = self._outcome(key, tasks[i], result, publish)
        except Exception:  # noqa: BLE001 - not one file's fault: redo those without a record, one by one
            for i, (source, target) in enumerate(tasks):
                if outcomes[i] is None:
                    outcomes[i] = self.process(source, target)
        share = (time.perf_counter() - started) / len(tasks)
        return [{**o, "seconds": o["seconds"] or share} for o in outcomes]

    def _outcome(self, key: str, task: tuple[str, str], result, publish) -> dict:
        """One file's outcome in a batch (timed by the caller), as ``process`` would give it."""
        source, target = task
        try:
            if isinstance(result, FaceveilError):
                raise result
            outputs = publish(result.outputs)
        except FaceveilError as exc:
            return _untimed(*self._failed(key, source, target, exc))
        return _untimed(done_entry(key, outputs, len(result.faces), result.notes))

    def _failed(self, key: str, source: str, target: str, exc: FaceveilError) -> tuple[dict, int]:
        """The record of a file that failed, unless another attempt won the race to write its output."""
        if storage.exists(target):
            return self._adopt(key, source, target)
        return failed_entry(key, str(exc)), exc.exit_code

    @staticmethod
    def _is_video(source: str) -> bool:
        from faceveil.batch import VIDEO_SUFFIXES

        return os.path.splitext(source)[1].lower() in VIDEO_SUFFIXES

    def _run_many(self, files: list[tuple]) -> list:
        """``anonymize_files`` / ``recover_files`` on local paths: a Result or FaceveilError per file."""
        from faceveil.api import anonymize_files, recover_files

        options = dict(self._job.options)
        if not self._job.recovering:
            return anonymize_files(files, self._keys(), model=self._model(self._job.model), overwrite=False, **options)
        by_model: dict = {}  # recovery: one batch per model named in the headers
        for index, (source, target) in enumerate(files):
            by_model.setdefault(self._job.model or _header_model(source), []).append(index)
        results: list = [None] * len(files)
        for spec, indices in by_model.items():
            try:
                model = self._model(spec)
            except FaceveilError as exc:
                for i in indices:
                    results[i] = exc
                continue
            for i, result in zip(indices, recover_files([files[i] for i in indices], self._key, model=model, overwrite=False, **options)):
                results[i] = result
        return results

    def _run(self, source, target):
        from faceveil.api import anonymize, recover

        if self._is_video(str(source)):
            raise UsageError("videos are not spread over Ray (yet): run them without --ray")
        options = dict(self._job.options)
        if self._job.recovering:
            model = self._model(self._job.model or _header_model(source))
            return recover(source, self._key, target, model=model, overwrite=False, **options)
        return anonymize(source, self._keys(), target, model=self._model(self._job.model), overwrite=False, **options)

    def _adopt(self, key: str, source: str, target: str) -> tuple[dict, int]:
        """A record for an output that is already there, after checking it is whole and made with this key."""
        from faceveil.container import open_header, read_record
        from faceveil.imageio import read_image

        veiled = source if self._job.recovering else target
        try:
            with storage.readable(veiled) as local:
                record = read_record(local)
                # anonymizing to recipients only: nothing here opens it; the record was read and checked whole
                public = open_header(self._key, record)[0] if self._key is not None else record["public"]
            if self._job.recovering:
                with storage.readable(target) as local:
                    read_image(local, max_pixels=None)
        except FaceveilError as exc:
            reason = f"{target} exists but is not a complete output of this key ({exc}); left as it is"
            return failed_entry(key, reason), exc.exit_code
        outputs = [target]
        if not self._job.recovering and not target.lower().endswith(".png"):
            outputs.append(target + storage.SIDECAR_SUFFIX)
        return done_entry(key, outputs, len(public.get("faces", [])), [ADOPTED_NOTE]), 0


def _untimed(record: dict, exit_code: int = 0) -> dict:
    return {"record": record, "seconds": 0.0, "exit_code": exit_code}


def _header_model(path) -> str | None:
    """The model id named in an anonymized file's public header (recovery loads it once per worker)."""
    from faceveil.container import read_record

    try:
        return read_record(path)["public"].get("model", {}).get("id")
    except FaceveilError:
        return None  # recover() itself reports the missing or broken header

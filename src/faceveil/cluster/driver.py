"""The driver: plan the dataset, start or join Ray, keep every worker busy, keep ``manifest.json``.

Scheduling is the driver's own (no Ray-side retries): files go to workers in groups
of up to ``batch`` (their faces share the UNet's evaluations), each worker has at most
``DEPTH`` groups queued, results come back as manifest records, and a worker that dies
is replaced by a fresh one (new model load, new key hand-over); the files of the group
it was on are tried again one by one (so a file that kills workers fails alone), up to
``MAX_ATTEMPTS`` times, the groups queued behind it go elsewhere at no cost. Since an output is never written twice (atomic, no-clobber, adopted when
found), a retried file is anonymized at most once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from faceveil.batch import SKIPPED, failed_entry, skipped_entry
from faceveil.interrupts import Interrupted
from faceveil.cluster import storage
from faceveil.cluster.transport import seal_key
from faceveil.cluster.worker import ADOPTED_NOTE, FileWorker, Job
from faceveil.errors import UsageError
from faceveil.keys import Identity, Key

LOCAL = "local"
DEPTH = 2  # groups queued per worker: the next one is there the moment one finishes
BATCH = 8  # files per group (at most: smaller where the files left would not keep every worker busy)
MAX_ATTEMPTS = 3  # a file whose worker died this often is reported failed (e.g. it runs the worker out of memory)
LOG_EVERY_S = 10.0


@dataclass
class DatasetSummary:
    """How a dataset run went; ``records`` are this run's manifest records."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    adopted: int = 0
    workers: int = 0
    device: str = ""
    replaced: int = 0
    seconds: float = 0.0  # from the first worker ready to the last result
    startup_seconds: float = 0.0  # Ray start or join, worker start, model loads
    busy_seconds: list[float] = field(default_factory=list)  # per processed file, inside a worker
    records: list[dict] = field(default_factory=list)
    exit_code: int = 0
    interrupted: bool = False

    @property
    def processed(self) -> int:
        return self.done + len(self.failed)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Slot:
    actor: object
    queue: deque = field(default_factory=deque)  # (ref, group of tasks) in submission order: the head is running


def _ray(address: str = LOCAL):
    if address == LOCAL:
        # a run's own Ray listens on 127.0.0.1 only (its workers hold the key: nobody else may join),
        # and sends no usage statistics; both must be set before ray is imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'faceveil[ray]'") from None
    return ray


@contextmanager
def _ray_session(address: str, local_cpus: int | None) -> Iterator[object]:
    """Ray for this run: an existing connection, a new local one, or the cluster at ``address``."""
    ray = _ray(address)
    if ray.is_initialized():
        yield ray
        return
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address == LOCAL:
        # the local raylet and every worker it starts inherit this environment: not the passphrase
        # (the key travels sealed to each worker; a worker's environment is readable in /proc and Ray's logs)
        from faceveil.keys import PASSPHRASE_ENV

        hidden = os.environ.pop(PASSPHRASE_ENV, None)
        try:
            ray.init(num_cpus=local_cpus or os.cpu_count() or 1, object_store_memory=256 * 2**20, **common)
        finally:
            if hidden is not None:
                os.environ[PASSPHRASE_ENV] = hidden
    else:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


class _StopRequest:
    """SIGINT and SIGTERM only set a flag while Ray runs (raising inside Ray's C++ wait would garble it);
    the scheduling loop turns the flag into :class:`faceveil.interrupts.Interrupted` between two waits."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        self.signum = self.signum or signum

    def check(self) -> None:
        if self.signum:
            raise Interrupted(self.signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Workers:
    """Start, hand the key to, and replace the actors."""

    def __init__(self, ray, job: Job, key: Key | Identity | None, count: int, gpu_share: float) -> None:
        self._ray, self._job, self._key = ray, job, key
        self._remote = ray.remote(FileWorker).options(
            num_cpus=1, num_gpus=gpu_share, max_restarts=0, max_task_retries=0, max_concurrency=1,
        )
        self.slots = self._start(count)
        self.replaced = 0

    def _start(self, count: int) -> list[_Slot]:
        ray = self._ray
        actors = [self._remote.remote(self._job, 1) for _ in range(count)]
        if self._key is not None:  # anonymizing to recipients only: no secret exists, none is sent
            publics = ray.get([a.public_key.remote() for a in actors])
            receipts = ray.get([a.accept_key.remote(seal_key(self._key, p)) for a, p in zip(actors, publics)])
            if any(r != self._key.fingerprint for r in receipts):
                raise UsageError("a worker did not receive the key intact")
        infos = ray.get([a.prepare.remote() for a in actors])
        for info in infos:
            if "error" in info:
                for a in actors:
                    ray.kill(a)
                error = UsageError(f"a worker cannot start: {info['error']}")
                error.exit_code = info.get("exit_code", UsageError.exit_code)
                raise error
        self.device = infos[0]["device"]
        return [_Slot(a) for a in actors]

    def replace(self, slot: _Slot) -> None:
        self._ray.kill(slot.actor, no_restart=True)
        slot.actor = self._start(1)[0].actor
        self.replaced += 1

    def stop(self) -> None:
        for slot in self.slots:
            try:
                self._ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


class _Progress:
    """Images per second and time left: a tqdm bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, total: int, show: bool, quiet: bool) -> None:
        from tqdm import tqdm

        self.total, self.count = total, 0
        self.lines = not (quiet or show)  # no terminal bar: a line every LOG_EVERY_S instead
        self.started = self.last = time.monotonic()
        self.bar = tqdm(total=total, desc="images", unit=" image", disable=not show or total < 2, file=sys.stderr)

    def advance(self) -> None:
        self.count += 1
        self.bar.update(1)
        now = time.monotonic()
        if self.lines and (now - self.last >= LOG_EVERY_S or self.count == self.total):
            self.last = now
            print(f"faceveil: {self.line()}", file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else float("nan")
        eta = f"about {_duration(left)} left" if rate > 0 else "time left unknown yet"
        return f"{self.count}/{self.total} images, {rate:.2f} images/s, {eta}"

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def run_dataset(
    inputs: list[str],
    output: str | None,
    key: Key | Identity | None,
    job: Job,
    *,
    address: str = LOCAL,
    workers: int | None = None,
    recursive: bool = False,
    resume: bool = False,
    show: bool = False,
    quiet: bool = False,
    gpus_per_worker: float = 1.0,
    batch: int = BATCH,
) -> DatasetSummary:
    """Anonymize or recover every image of ``inputs`` on Ray; writes ``manifest.json`` in a ``-o`` folder.

    ``gpus_per_worker`` below 1 puts several workers on one GPU (e.g. 0.25: four), which pays
    where a worker's CPU part (detection, residual, PNG) keeps its GPU waiting. ``batch``:
    files per worker call, their faces batched through the UNet (1: file by file).
    """
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    from faceveil.api import RECOVERED_TAG, VEILED_TAG

    summary = DatasetSummary()
    tasks = storage.plan(inputs, output, recursive, job.recovering, RECOVERED_TAG if job.recovering else VEILED_TAG)
    if not tasks:
        raise UsageError("no input images found" + ("" if recursive else " (folders: add --recursive to go into subfolders)"))
    manifest = storage.manifest_url(output, tasks)
    names = storage.manifest_names(manifest, inputs, tasks) if manifest else None
    previous_done = ({names.from_file(r).get("input") for r in storage.read_manifest(manifest) if r.get("status") == "done"}
                     if manifest else set())
    todo: deque = deque()
    for source, target in tasks:
        source_key = storage.source_key(source)
        if not storage.exists(target):
            todo.append((source, target, 0))
        elif not resume:
            reason = f"{target} already exists (--resume skips it; --overwrite is not offered with --ray)"
            print(f"faceveil: {source}: {reason}", file=sys.stderr)
            summary.refused.append((source, reason))
            summary.records.append(skipped_entry(source_key, target))
            summary.exit_code = summary.exit_code or UsageError.exit_code
        elif source_key in previous_done:
            summary.skipped += 1
            summary.records.append(skipped_entry(source_key, target))
        else:
            todo.append((source, target, 0))  # an output without its record (interrupted run): the worker adopts it
    folders = {storage.parent(t) for _, t in tasks}
    started = time.monotonic()
    try:
        if todo:
            count = workers or None
            local_cpus = count if address == LOCAL else None
            with _ray_session(address, local_cpus) as ray, _StopRequest() as stop:  # after ray.init's own SIGTERM handler
                _schedule(ray, todo, key, job, count, summary, manifest, show, quiet, started, stop, gpus_per_worker, batch,
                          names)
    except Interrupted as stop:  # SIGINT or SIGTERM: what finished is recorded, --resume does the rest
        summary.interrupted, summary.exit_code = True, stop.exit_code
    finally:
        if manifest:
            storage.save_manifest(manifest, summary.records, names)
        storage.sweep_leftovers(folders)
        _print_summary(summary, len(tasks))
    return summary


def _schedule(ray, todo: deque, key: Key | Identity | None, job: Job, count: int | None, summary: DatasetSummary,
              manifest: str | None, show: bool, quiet: bool, started: float, stop: _StopRequest,
              gpus_per_worker: float, batch: int, names=None) -> None:
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    share = gpus_per_worker if gpus >= gpus_per_worker > 0 else 0
    count = count or (int(gpus / share) if share else max(1, int(resources.get("CPU", 1))))
    pool = _Workers(ray, job, key, count, share)
    stop.check()
    summary.workers, summary.device = count, pool.device
    summary.startup_seconds = time.monotonic() - started
    progress = _Progress(len(todo), show, quiet)
    running: dict = {}  # ref -> slot
    last_flush, flush_cost = time.monotonic(), 0.0
    try:
        while todo or running:
            stop.check()
            for slot in pool.slots:
                while todo and len(slot.queue) < DEPTH:
                    group = _take(todo, batch, len(pool.slots))
                    ref = slot.actor.process_many.remote([(source, target) for source, target, _ in group])
                    slot.queue.append((ref, group))
                    running[ref] = slot
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                slot = running.pop(ref, None)
                if slot is None:
                    continue  # already handled with its dead worker
                try:
                    outcomes = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # a bug inside the worker's method, not a death
                    reason = f"internal error: {exc.cause!r}"
                    outcomes = [{"record": failed_entry(storage.source_key(task[0]), reason), "seconds": 0.0, "exit_code": 1}
                                for task in slot_task(slot, ref)]
                except ray.exceptions.RayError:
                    stop.check()  # workers dying of the same Ctrl-C are not replaced
                    _worker_died(pool, slot, running, todo, summary, progress)
                    continue
                _drop(slot, ref)
                for outcome in outcomes:
                    _record(outcome, summary)
                    progress.advance()
            if manifest and time.monotonic() - last_flush > max(5.0, 20 * flush_cost):
                t = time.monotonic()
                storage.save_manifest(manifest, summary.records, names)
                last_flush, flush_cost = time.monotonic(), time.monotonic() - t
    except Exception:
        stop.check()  # Ray torn down by the same signal: an interruption, not a crash
        raise
    finally:
        summary.seconds = time.monotonic() - progress.started
        summary.replaced = pool.replaced
        progress.close()
        pool.stop()


def _take(todo: deque, batch: int, workers: int) -> list[tuple]:
    """The next group of tasks: a retried file alone; else up to ``batch`` fresh ones, fewer
    where the files left would not give every worker ``DEPTH`` groups."""
    first = todo.popleft()
    group = [first]
    if first[2] > 0:
        return group
    size = max(1, min(batch, -(-(len(todo) + 1) // (workers * DEPTH))))
    while todo and len(group) < size and todo[0][2] == 0:
        group.append(todo.popleft())
    return group


def slot_task(slot: _Slot, ref) -> list[tuple]:
    return next(group for r, group in slot.queue if r == ref)


def _drop(slot: _Slot, ref) -> list[tuple]:
    for i, (r, group) in enumerate(slot.queue):
        if r == ref:
            del slot.queue[i]
            return group
    raise KeyError(ref)


def _worker_died(pool: _Workers, slot: _Slot, running: dict, todo: deque, summary: DatasetSummary, progress: _Progress) -> None:
    """The files of the group the dead worker was on are charged one attempt each and go back one by one
    (a file that kills its worker then fails alone); the groups queued behind it go back unchanged."""
    lost = list(slot.queue)
    slot.queue.clear()
    for ref, _ in lost:
        running.pop(ref, None)
    (_, group), queued = lost[0], lost[1:]
    for _, other in reversed(queued):
        for task in reversed(other):
            todo.appendleft(task)
    for source, target, attempts in reversed(group):
        if attempts + 1 >= MAX_ATTEMPTS:
            reason = f"its worker died {MAX_ATTEMPTS} times on this file (out of memory, or a crash); not tried again"
            _record({"record": failed_entry(storage.source_key(source), reason), "seconds": 0.0, "exit_code": 1}, summary)
            progress.advance()
        else:
            todo.appendleft((source, target, attempts + 1))
    if pool.replaced >= MAX_ATTEMPTS * max(1, len(pool.slots)):
        raise UsageError(f"workers died {pool.replaced} times; stopping (see the Ray logs); --resume goes on from here")
    names = ", ".join(str(source) for source, _, _ in group)
    print(f"faceveil: a worker died; starting another ({names} tried again)", file=sys.stderr)
    pool.replace(slot)


def _record(outcome: dict, summary: DatasetSummary) -> None:
    record = outcome["record"]
    summary.records.append(record)
    summary.busy_seconds.append(outcome["seconds"])
    if record["status"] == "done":
        summary.done += 1
        summary.adopted += ADOPTED_NOTE in record.get("notes", [])
        for note in record.get("notes", []):
            print(f"faceveil: {record['input']}: note: {note}", file=sys.stderr)
        print(f"{record['input']} -> {', '.join(record['outputs'])}", flush=True)
    elif record["status"] == "failed":
        summary.failed.append((record["input"], record["reason"]))
        print(f"faceveil: {record['input']}: {record['reason']}", file=sys.stderr)
        summary.exit_code = summary.exit_code or outcome["exit_code"] or 1
    elif record["status"] == SKIPPED:
        summary.skipped += 1


def _print_summary(summary: DatasetSummary, total: int) -> None:
    extra = f", {len(summary.refused)} refused (output exists)" if summary.refused else ""
    print(f"faceveil: {summary.done} done, {summary.skipped} skipped, {len(summary.failed)} failed{extra}", file=sys.stderr)
    for source, reason in summary.failed:
        print(f"  failed: {source}: {reason}", file=sys.stderr)
    for source, reason in summary.refused:
        print(f"  refused: {source}: {reason}", file=sys.stderr)
    if summary.workers:
        notes = []
        if summary.adopted:
            notes.append(f"{summary.adopted} output(s) of interrupted attempts checked and kept")
        if summary.replaced:
            notes.append(f"{summary.replaced} worker(s) replaced after dying")
        print(f"faceveil: ray: {summary.workers} worker(s) on {summary.device}, {summary.processed} image(s) in "
              f"{summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s) after {summary.startup_seconds:.1f} s "
              f"of start-up{'; ' + '; '.join(notes) if notes else ''}", file=sys.stderr)
    if summary.interrupted:
        print(f"faceveil: interrupted: {summary.processed} of {total} image(s) finished; the manifest is written; "
              "run the same command with --resume to finish", file=sys.stderr)

"""Whole datasets on Ray: ``anonymize_dataset`` / ``recover_dataset`` and the CLI's ``--ray``.

With ``address="local"`` a Ray instance is started on this machine for the run; with a
cluster address (``ray://host:10001``, ``host:6379`` or ``auto``) the run joins it. Each
worker is an actor that loads the model once; the key reaches it sealed to that
worker's own ephemeral key (:mod:`faceveil.cluster.transport`). Anonymizing to public
recipients alone sends the workers no secret at all: only the recipient strings. Outputs, names and
``manifest.json`` are those of the single-machine batch (:mod:`faceveil.batch`).
Needs the ``ray`` extra: ``pip install 'faceveil[ray]'``.
"""

from __future__ import annotations

import argparse
import os

from faceveil.cluster.driver import BATCH, LOCAL, DatasetSummary, run_dataset
from faceveil.cluster.worker import Job
from faceveil.errors import UsageError
from faceveil.keys import Identity, Key, load_secret

__all__ = ["LOCAL", "DatasetSummary", "Job", "anonymize_dataset", "recover_dataset", "run_from_args"]


def _inputs(inputs: str | os.PathLike | list) -> list[str]:
    return [str(i) for i in inputs] if isinstance(inputs, (list, tuple)) else [str(inputs)]


def _key(key: Key | Identity | str | os.PathLike) -> Key | Identity:
    return key if isinstance(key, (Key, Identity)) else load_secret(key)


def split_recipients(keys: object) -> tuple[Key | None, tuple[str, ...]]:
    """(the one secret to send the workers, or None; the public recipient strings) of what a dataset is for."""
    from faceveil.envelope import Recipient

    items = list(keys) if isinstance(keys, (list, tuple)) else [keys]
    secret: Key | None = None
    public: list[str] = []
    for item in items:
        if isinstance(item, Identity):
            public.append(item.recipient)
        elif isinstance(item, Recipient):
            public.append(str(item))
        elif isinstance(item, str) and item.strip().startswith("faceveil1"):
            public.append(str(Recipient.parse(item)))
        else:
            loaded = _key(item)
            if isinstance(loaded, Identity):
                public.append(loaded.recipient)
            elif secret is not None:
                raise UsageError("a dataset is anonymized with at most one symmetric key (and any recipients)")
            else:
                secret = loaded
    return secret, tuple(public)


def anonymize_dataset(
    inputs: str | os.PathLike | list,
    key: Key | Identity | str | os.PathLike | list,
    output: str | os.PathLike | None = None,
    *,
    address: str = LOCAL,
    workers: int | None = None,
    model: str | None = None,
    recursive: bool = False,
    resume: bool = False,
    quiet: bool = True,
    gpus_per_worker: float = 1.0,
    batch: int = BATCH,
    **options,
) -> DatasetSummary:
    """Anonymize every image of ``inputs`` (files, folders or fsspec URLs) on Ray.

    ``model`` is a preset, hub id or folder every worker can load (``None``: the embedded
    default); ``options`` are :func:`faceveil.api.anonymize`'s (``settings``, ``steps``,
    ``aligned``, ``mask``, ``min_face``, ``allow_no_face``, ``residual``, ``max_pixels``).
    ``workers``: default one per GPU of the cluster (``gpus_per_worker`` below 1: several), else one per CPU.
    ``batch``: files per worker call, their faces batched through the UNet (1: one at a time).
    """
    secret, recipients = split_recipients(key)
    job = Job(recovering=False, model=model, options=options, recipients=recipients)
    return run_dataset(_inputs(inputs), None if output is None else str(output), secret, job,
                       address=address, workers=workers, recursive=recursive, resume=resume, quiet=quiet,
                       gpus_per_worker=gpus_per_worker, batch=batch)


def recover_dataset(
    inputs: str | os.PathLike | list,
    key: Key | Identity | str | os.PathLike | list,
    output: str | os.PathLike | None = None,
    *,
    address: str = LOCAL,
    workers: int | None = None,
    model: str | None = None,
    recursive: bool = False,
    resume: bool = False,
    quiet: bool = True,
    gpus_per_worker: float = 1.0,
    batch: int = BATCH,
    **options,
) -> DatasetSummary:
    """Recover every anonymized image (``*.veiled.*``) of ``inputs`` on Ray; ``options``: ``use_residual``, ``max_pixels``."""
    job = Job(recovering=True, model=model, options=options)
    return run_dataset(_inputs(inputs), None if output is None else str(output), _key(key), job,
                       address=address, workers=workers, recursive=recursive, resume=resume, quiet=quiet,
                       gpus_per_worker=gpus_per_worker, batch=batch)


def run_from_args(args: argparse.Namespace, key, recovering: bool, settings=None, show: bool = False) -> int:
    """The CLI's ``--ray``: the same options as the single-machine batch; the exit code of the first failure."""
    if args.overwrite:
        raise UsageError("--overwrite is not offered with --ray (a retried file must never replace an output); "
                         "delete the outputs to redo them")
    if getattr(args, "rename", "keep") != "keep":
        raise UsageError("--rename hash is not offered with --ray yet; run without --ray, or rename afterwards")
    if recovering:
        options = dict(use_residual=not args.no_residual, max_pixels=args.max_pixels)
    else:
        options = dict(
            settings=settings, aligned=args.aligned, mask=args.mask, min_face=args.min_face,
            allow_no_face=args.allow_no_face, residual=not args.no_residual, max_pixels=args.max_pixels,
            style=getattr(args, "style", "face"), fallback=getattr(args, "fallback", "pixelate"),
        )
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    recipients: tuple[str, ...] = ()
    if not recovering:
        key, recipients = split_recipients(key)
    job = Job(recovering=recovering, model=args.model, options=options, recipients=recipients)
    summary = run_dataset(
        args.inputs, args.output, key, job, address=args.ray, workers=args.workers,
        recursive=args.recursive, resume=args.resume, show=show, quiet=args.quiet, batch=args.batch,
    )
    return summary.exit_code


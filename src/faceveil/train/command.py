"""CLI hooks: ``faceveil prepare-data``, ``faceveil train`` and ``faceveil train-detail``.

:func:`register` adds the subcommands to an argparse subparsers object; each sets
``func`` to a function taking the parsed arguments and returning an exit code. Errors
are raised as :class:`faceveil.errors.FaceveilError` (their ``exit_code`` applies).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run_prepare_data", "run_train", "run_train_detail"]


def register(subparsers: Any) -> None:
    """Add the ``prepare-data``, ``train`` and ``train-detail`` subcommands."""
    p = subparsers.add_parser(
        "prepare-data",
        help="align the shared CelebA/LFW faces into a training file (.npz)",
        description=(
            "Detect and FFHQ-align the training faces of the shared CelebA and LFW photos "
            "(held-out CelebA identities and every person of LFW's pairs.txt and "
            "pairsDevTest.txt left out) and write them to one .npz file of at most 40 MB; with "
            "--sources-root, add the external sources of faceveil.train.sources (CelebA "
            "exclude_identities.txt left out too, duplicates removed, tight crops filled "
            "FFHQ-style) and write a chunked set (a folder of .npz chunks and provenance.json)."
        ),
    )
    p.add_argument("--shared", default="../shared", metavar="DIR", help="shared folder (default: ../shared)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="file to write (OUT.npz), or the folder of a chunked set (with --sources-root)")
    p.add_argument("--size", type=int, default=64, help="crop side in pixels (default: 64)")
    p.add_argument(
        "--holdout-fraction", type=float, default=0.1,
        help="fraction of CelebA identities held out for evaluation (default: 0.1)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images per source (tests)")
    p.add_argument(
        "--max-mb", type=float, default=40.0, help="refuse a file larger than this many MB (default: 40)"
    )
    p.add_argument("--encoding", choices=("auto", "raw", "webp", "jpeg"), default="auto",
                   help="auto: raw uint8 if it fits, else lossless WebP, else JPEG 4:4:4 at the best quality that fits")
    p.add_argument(
        "--sources-root", metavar="DIR", default=None,
        help="extracted external sources (faceveil.train.sources.KNOWN_SOURCES under DIR/<name>/); "
             "writes a chunked set: -o is then a folder",
    )
    p.add_argument("--source", action="append", default=None, metavar="NAME",
                   help="use only this external source (repeatable; default: all known)")
    p.add_argument("--extract-from", metavar="MIRRORS", default=None,
                   help="first extract missing sources from bare mirrors MIRRORS/<owner>+<name>/repo")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="cache of aligned crops per source (chunked sets; reruns only re-assemble)")
    p.add_argument("--chunk-mb", type=float, default=48.0,
                   help="chunk size limit in MiB for a chunked set (default: 48; a device call carries 64 MiB with the tree)")
    p.add_argument("--chunk-encoding", choices=("jpeg", "webp"), default="jpeg",
                   help="chunked set: jpeg 4:4:4 at --jpeg-quality (default) or lossless webp")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--max-hash-distance", type=int, default=6,
                   help="chunked set: face-region hash bits within which two crops are duplicate candidates (default: 6)")
    p.add_argument("--min-similarity", type=float, default=0.8,
                   help="chunked set: fine-detail similarity that confirms a duplicate candidate (default: 0.8)")
    p.add_argument("--max-filled", type=float, default=1.0,
                   help="chunked set: drop crops with a larger fraction filled beyond the source image (default: 1, keep all)")
    p.add_argument("--framing", choices=("ffhq", "face"), default="ffhq",
                   help="crop framing: FFHQ's quad or centred on the face oval (default: ffhq)")
    p.add_argument("--masks", action="store_true",
                   help="also store each crop's inference mask (for --conditional training)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare_data)

    t = subparsers.add_parser(
        "train",
        help="train (or resume) the face diffusion model",
        description=(
            "Train a pixel-space UNet2DModel (epsilon prediction, cosine DDPM schedule) on a "
            "prepared face file, with EMA, periodic DDIM sample grids and checkpoints; "
            "--resume continues from the latest checkpoint in --out, --export writes the EMA "
            "model as a diffusers folder (unet/ + scheduler/)."
        ),
    )
    t.add_argument("--data", metavar="PATH",
                   help="face file (.npz) or chunked set (folder or its provenance.json) from prepare-data")
    t.add_argument("--out", default="runs/faces64", metavar="DIR", help="run folder (default: runs/faces64)")
    t.add_argument("--config", choices=("tiny", "small", "default"), default="default",
                   help="model preset: tiny (tests), small (4.3 M, CPU drafts), default (26.6 M, GPU)")
    t.add_argument("--steps", type=int, default=None, help="total steps of the run (default: 20000; small: 2000; tiny: 200)")
    t.add_argument("--batch-size", type=int, default=None, help="default: 128 (small: 32; tiny: 8)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-4; small: 5e-4; tiny: 1e-3)")
    t.add_argument("--warmup-steps", type=int, default=None)
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    t.add_argument(
        "--max-minutes", type=float, default=None,
        help="stop with a checkpoint after this many minutes (leave ~1.5 min for start-up and saving)",
    )
    t.add_argument("--sample-every", type=int, default=2000, metavar="N", help="sample grid every N steps (0: end only)")
    t.add_argument("--checkpoint-every", type=int, default=2000, metavar="N")
    t.add_argument("--num-samples", type=int, default=16, metavar="N", help="images per sample grid (0: none)")
    t.add_argument("--sample-steps", type=int, default=50, metavar="N", help="DDIM steps for sample grids")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--precision", choices=("auto", "bf16", "no"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA only)")
    t.add_argument("--export", metavar="DIR", help="export the EMA model (diffusers folder) at the end")
    t.add_argument("--export-only", action="store_true",
                   help="do not train: export the latest checkpoint of --out to --export")
    t.add_argument("--export-fp32", action="store_true", help="export fp32 weights (default fp16)")
    t.add_argument("--export-noise-gain", type=float, default=None, metavar="G",
                   help="with --export-only: the keyed noise gain measured best with these weights, written "
                        "into faceveil_train.json (anonymize's default --noise-gain with the model; default 1)")
    t.add_argument("--export-shard-size", default=None, metavar="SIZE",
                   help="split the exported weights into files of at most SIZE (e.g. 15MB)")
    t.add_argument("--conditional", action="store_true",
                   help="inpainting model: mask and masked image as extra inputs (data from prepare-data --masks)")
    t.add_argument("--init-from", metavar="MODEL_DIR", default=None,
                   help="start from a diffusers folder's UNet weights (e.g. the embedded draft)")
    t.add_argument("--no-fill-mask", action="store_true",
                   help="train on the fill beyond tight source photos too (default: no loss there)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)

    d = subparsers.add_parser(
        "train-detail",
        help="train the detail stage: 2x super-resolution of enlarged model faces",
        description=(
            "Train faceveil.detail.DetailNet on a face set prepared at twice the model's crop "
            "(prepare-data --size 192 --framing face): L1 plus a patch discriminator, inputs blurred "
            "and halved. Resumable (--out keeps checkpoints); --export writes a new model folder: "
            "--base's files plus the EMA stage as detail/."
        ),
    )
    d.add_argument("--data", metavar="PATH", help="chunked face set (folder or provenance.json) or .npz")
    d.add_argument("--out", default="runs/detail", metavar="DIR", help="run folder (default: runs/detail)")
    d.add_argument("--source", action="append", default=None, metavar="NAME",
                   help="train only on crops of this source (repeatable; default: all)")
    d.add_argument("--steps", type=int, default=20_000, help="total steps of the run (default: 20000)")
    d.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this many minutes")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--lr", type=float, default=2e-4)
    d.add_argument("--channels", type=int, default=48)
    d.add_argument("--blocks", type=int, default=8)
    d.add_argument("--adv-weight", type=float, default=0.01, help="patch discriminator's weight (0: L1 only)")
    d.add_argument("--adv-start", type=int, default=400, help="L1 alone for this many steps first")
    d.add_argument("--max-blur", type=float, default=1.5, help="largest input blur (sigma, target pixels)")
    d.add_argument("--min-enlargement", type=float, default=1.0,
                   help="the stage runs on faces enlarged at least this many times from the model crop")
    d.add_argument("--checkpoint-every", type=int, default=200, metavar="N")
    d.add_argument("--sample-every", type=int, default=400, metavar="N")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--init-from", metavar="MODEL_DIR",
                   help="a new run starts from this model folder's detail/ stage (the discriminator starts afresh; "
                        "a resumed run ignores it)")
    d.add_argument("--export", metavar="DIR", help="write a new model folder: --base plus this stage as detail/")
    d.add_argument("--export-only", action="store_true", help="do not train: export the latest checkpoint")
    d.add_argument("--base", metavar="MODEL_DIR", help="with --export: the face model folder the stage joins")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run_train_detail)


def run_prepare_data(args: argparse.Namespace) -> int:
    from faceveil.errors import UsageError
    from faceveil.train.data import prepare_dataset

    shared = Path(args.shared)
    if not (shared / "data").is_dir():
        raise UsageError(f"shared folder not found or without data/: {shared}")
    if args.sources_root or Path(args.output).suffix != ".npz":
        return _run_prepare_set(args, shared)
    report = prepare_dataset(
        shared,
        args.output,
        args.size,
        holdout_fraction=args.holdout_fraction,
        limit_per_source=args.limit,
        max_bytes=int(args.max_mb * 1e6),
        encoding=args.encoding,
        progress=not args.quiet,
        framing=args.framing,
        masks=args.masks,
    )
    print(report.summary())
    return 0


def _run_prepare_set(args: argparse.Namespace, shared: Path) -> int:
    from faceveil.errors import UsageError
    from faceveil.train import sources
    from faceveil.train.prepare import prepare_face_set

    if args.extract_from:
        if not args.sources_root:
            raise UsageError("--extract-from needs --sources-root")
        for name in args.source or [s.name for s in sources.KNOWN_SOURCES]:
            spec = sources.known_source(name)
            if not (Path(args.sources_root) / spec.name).is_dir():
                sources.extract_source(sources.mirror_dir(args.extract_from, spec), spec, args.sources_root)
                print(f"extracted {spec.repository}@{spec.commit[:12]} into {Path(args.sources_root) / spec.name}")
    encoding = {"kind": args.chunk_encoding, "quality": args.jpeg_quality}
    report = prepare_face_set(
        shared,
        args.output,
        args.size,
        sources_root=args.sources_root,
        source_names=args.source,
        holdout_fraction=args.holdout_fraction,
        cache_dir=args.cache,
        max_chunk_bytes=int(args.chunk_mb * (1 << 20)),
        encoding=encoding,
        max_hash_distance=args.max_hash_distance,
        min_similarity=args.min_similarity,
        max_filled=args.max_filled,
        limit_per_source=args.limit,
        progress=not args.quiet,
        framing=args.framing,
        masks=args.masks,
    )
    print(report.summary())
    return 0


def run_train(args: argparse.Namespace) -> int:
    from faceveil.errors import UsageError
    from faceveil.train.trainer import TrainConfig, export_checkpoint, train

    if args.export_noise_gain is not None and not args.export_only:
        raise UsageError("--export-noise-gain goes with --export-only: a gain is measured on weights already trained")
    if args.export_only:
        if not args.export:
            raise UsageError("--export-only needs --export DIR")
        if args.export_noise_gain is not None:
            from faceveil.engine import EngineSettings

            try:
                EngineSettings(noise_gain=args.export_noise_gain)  # checks the range
            except ValueError as exc:
                raise UsageError(f"--export-noise-gain: {exc}") from None
        path = export_checkpoint(
            args.out, args.export, fp16=not args.export_fp32, max_shard_size=args.export_shard_size,
            noise_gain=args.export_noise_gain,
        )
        print(f"exported {path}")
        return 0
    steps = args.steps if args.steps is not None else {"tiny": 200, "small": 2000}.get(args.config, 20_000)
    cfg = TrainConfig(
        data=args.data,
        out_dir=args.out,
        preset=args.config,
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        mixed_precision=args.precision,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        max_minutes=args.max_minutes,
        sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every,
        num_samples=args.num_samples,
        sample_steps=args.sample_steps,
        export_dir=args.export,
        export_fp16=not args.export_fp32,
        export_max_shard_size=args.export_shard_size,
        compile=args.compile,
        progress=not args.quiet,
        conditional=args.conditional,
        init_from=args.init_from,
        fill_mask=not args.no_fill_mask,
    )
    result = train(cfg)
    mean = sum(result.losses[-100:]) / max(1, len(result.losses[-100:]))
    print(
        f"step {result.step}/{steps} on {result.device} ({result.num_parameters / 1e6:.1f} M params), "
        f"{result.step - result.start_step} steps in {result.seconds:.0f} s "
        f"({result.seconds_per_step:.3f} s/step), recent loss {mean:.4f}"
        + (", stopped by --max-minutes" if result.stopped_by_time else "")
    )
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if result.samples:
        print(f"samples: {result.samples[-1]}")
    if result.export_dir:
        print(f"exported: {result.export_dir}")
    elif args.export and result.stopped_by_time:
        print("not exported (stopped by time); run again with --resume to finish", file=sys.stderr)
    return 0


def run_train_detail(args: argparse.Namespace) -> int:
    from faceveil.errors import UsageError
    from faceveil.train.detail import DetailConfig, export_detail, train_detail

    if args.export and not args.base:
        raise UsageError("--export needs --base MODEL_DIR: the face model the detail stage joins")
    if args.export_only:
        if not args.export:
            raise UsageError("--export-only needs --export DIR")
        print(f"exported {export_detail(args.out, args.base, args.export)}")
        return 0
    if not args.data:
        raise UsageError("no training data: pass --data (prepare-data --size 192 --framing face)")
    if args.adv_weight < 0 or args.max_blur < 0 or args.min_enlargement <= 0:
        raise UsageError("--adv-weight and --max-blur must be >= 0, --min-enlargement > 0")
    cfg = DetailConfig(
        data=args.data, out_dir=args.out, sources=args.source or [], channels=args.channels, blocks=args.blocks,
        min_enlargement=args.min_enlargement, batch_size=args.batch_size, lr=args.lr, adv_weight=args.adv_weight,
        adv_start=args.adv_start, max_blur=args.max_blur, steps=args.steps, max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every, sample_every=args.sample_every, seed=args.seed, progress=not args.quiet,
        init_from=args.init_from,
    )
    result = train_detail(cfg)
    v = result.validation
    print(
        f"step {result.step}/{cfg.steps} in {result.seconds:.0f} s; held-out L1 {v['l1']:.4f} (bicubic {v['l1_bicubic']:.4f}), "
        f"detail {v['detail']:.2f} (bicubic {v['detail_bicubic']:.2f})\ncheckpoint: {result.checkpoint}"
    )
    if args.export:
        print(f"exported {export_detail(args.out, args.base, args.export)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m faceveil.train.command``) until the CLI wires it."""
    from faceveil.errors import FaceveilError

    parser = argparse.ArgumentParser(prog="faceveil-train")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FaceveilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``faceveil`` command: argument parsing, progress, messages and exit codes only.

Exit codes: 0 success; 2 bad usage or unreadable input; 3 wrong key or tampered or
missing faceveil header; 4 no face found. With several inputs every input is tried
and the exit code is that of the first failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from faceveil import __version__
from faceveil.errors import FaceveilError, UsageError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit code 2 with one line, as argparse does
        self.exit(EXIT_USAGE, f"faceveil: error: {message}\n")


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("diffusers", "huggingface_hub", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlogging

        dlogging.set_verbosity_error()
        dlogging.disable_progress_bar()
    except ImportError:
        pass


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class Task:
    source: Path
    target: Path | None  # None: the default name beside the input


def _is_output_name(path: Path) -> bool:
    return any(tag in path.name for tag in (".veiled.", ".recovered."))


def plan_tasks(inputs: list[str], output: str | None, recursive: bool, recovering: bool, tag: str) -> list[Task]:
    """Expand files and folders into (input, output) pairs; ``-o`` is a file for one input file, else a folder."""
    from faceveil.api import default_output

    pairs: list[tuple[Path, Path]] = []  # (file, path relative to its root)
    for item in map(Path, inputs):
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            for path in sorted(item.glob(pattern)):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if recovering != (".veiled." in path.name) or (not recovering and _is_output_name(path)):
                    continue
                pairs.append((path, path.relative_to(item)))
        else:
            pairs.append((item, Path(item.name)))
    if output is None:
        return [Task(path, None) for path, _ in pairs]
    out = Path(output)
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if single and not out.is_dir():
        return [Task(pairs[0][0], out)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} must be a folder when the input is a folder or several files")
    for _, rel in pairs:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    return [Task(path, default_output(out / rel, tag)) for path, rel in pairs]


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=" UNet evals", leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True)
    return bar, bar.update


def _run_batch(args: argparse.Namespace, action, recovering: bool, tag: str) -> int:
    """Run ``action`` on every task; one failure never stops the batch. Prints a summary."""
    from tqdm import tqdm

    from faceveil.api import default_output

    tasks = plan_tasks(args.inputs, args.output, getattr(args, "recursive", False), recovering, tag)
    if not tasks:
        raise UsageError("no input images found" + ("" if getattr(args, "recursive", False) else " (folders: add --recursive to go into subfolders)"))
    done, skipped, failed, manifest = 0, 0, [], []
    first_failure = 0
    for task in tqdm(tasks, desc="images", unit=" image", disable=len(tasks) < 2 or not sys.stderr.isatty()):
        target = task.target or default_output(task.source, tag)
        if args.resume and target.exists():
            skipped += 1
            manifest.append({"input": str(task.source), "outputs": [str(target)], "status": "skipped (exists)"})
            continue
        try:
            result = action(task.source, target)
        except FaceveilError as exc:
            print(f"faceveil: {task.source}: {exc}", file=sys.stderr)
            failed.append((task.source, str(exc)))
            manifest.append({"input": str(task.source), "outputs": [], "status": "failed", "reason": str(exc)})
            first_failure = first_failure or exc.exit_code
            continue
        done += 1
        for note in result.notes:
            print(f"faceveil: {task.source}: note: {note}", file=sys.stderr)
        print(f"{task.source} -> {', '.join(str(p) for p in result.outputs)}")
        manifest.append({
            "input": str(task.source), "outputs": [str(p) for p in result.outputs], "status": "done",
            "faces": len(result.faces), "notes": result.notes,
        })
    if len(tasks) > 1:
        print(f"faceveil: {done} done, {skipped} skipped, {len(failed)} failed", file=sys.stderr)
        for source, reason in failed:
            print(f"  failed: {source}: {reason}", file=sys.stderr)
    if args.output and Path(args.output).is_dir():
        _write_manifest(Path(args.output) / "manifest.json", manifest)
    return first_failure


def _write_manifest(path: Path, entries: list[dict]) -> None:
    """Merge this run's entries into the folder's manifest (latest entry per input wins)."""
    import json

    from faceveil.atomic import write_file

    merged: dict[str, dict] = {}
    if path.is_file():
        try:
            merged = {e["input"]: e for e in json.loads(path.read_text()).get("files", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            merged = {}
    for entry in entries:
        if entry["status"].startswith("skipped") and entry["input"] in merged:
            continue
        merged[entry["input"]] = entry
    data = {"faceveil": __version__, "files": list(merged.values())}
    write_file(path, (json.dumps(data, indent=1) + "\n").encode(), overwrite=True)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from faceveil.keys import Key, prompt_passphrase

    passphrase = prompt_passphrase(confirm=True) if args.passphrase else None
    key = Key.generate()
    path = key.save(args.keyfile, passphrase=passphrase)
    print(f"wrote key {path} (fingerprint {key.fingerprint}{', passphrase protected' if passphrase else ''}); "
          "keep it secret and backed up: without it anonymized faces cannot be recovered")
    return 0


def _load_key(path: str):
    from faceveil.keys import Key, prompt_passphrase

    passphrase = prompt_passphrase() if Key.file_needs_passphrase(path) else None
    return Key.load(path, passphrase=passphrase)


def _cmd_anonymize(args: argparse.Namespace) -> int:
    from faceveil.api import VEILED_TAG, anonymize
    from faceveil.engine import EngineSettings
    from faceveil.models import load_model
    from faceveil.pipeline import Settings

    key = _load_key(args.key)
    settings = Settings(
        EngineSettings(
            steps=args.steps, refine_iters=args.refine_iters, refine_tol=args.refine_tol, context=args.context,
            mixing=args.mixing,
        ),
        decoder_iters=args.decoder_iters,
        hint=not args.no_hint,
    )
    model = load_model(args.model)

    def action(source: Path, target: Path):
        bar, update = _progress_bar(f"anonymize {source.name}")
        with bar:
            return anonymize(
                source, key, target, model=model, settings=settings, aligned=args.aligned, mask=args.mask,
                min_face=args.min_face, allow_no_face=args.allow_no_face, residual=not args.no_residual,
                max_pixels=args.max_pixels, overwrite=args.overwrite, progress=update,
            )

    return _run_batch(args, action, recovering=False, tag=VEILED_TAG)


def _cmd_recover(args: argparse.Namespace) -> int:
    from faceveil.api import RECOVERED_TAG, recover
    from faceveil.models import load_model

    key = _load_key(args.key)
    model = load_model(args.model) if args.model else None

    def action(source: Path, target: Path):
        bar, update = _progress_bar(f"recover {source.name}")
        with bar:
            return recover(
                source, key, target, model=model, use_residual=not args.no_residual, max_pixels=args.max_pixels,
                overwrite=args.overwrite, progress=update,
            )

    return _run_batch(args, action, recovering=True, tag=RECOVERED_TAG)


def _cmd_models(args: argparse.Namespace) -> int:
    from faceveil.models import DEFAULT_MODEL, PRESETS, model_available

    for name, preset in PRESETS.items():
        state = "available" if model_available(name) else "not available here"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}: {state}\n    source: {preset.source}\n    {preset.description}")
    return 0


def _batch_options(p: argparse.ArgumentParser) -> None:
    from faceveil.imageio import DEFAULT_MAX_PIXELS

    p.add_argument("--recursive", action="store_true", help="go into subfolders of folder inputs")
    p.add_argument("--resume", action="store_true", help="skip inputs whose output already exists")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images larger than this many pixels (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")


def build_parser() -> argparse.ArgumentParser:
    from faceveil.engine import CONTEXTS, MIXINGS, EngineSettings
    from faceveil.faces.detect import DEFAULT_MIN_SIZE
    from faceveil.faces.mask import INCLUDE_OPTIONS
    from faceveil.models import DEFAULT_MODEL

    defaults = EngineSettings()
    parser = _Parser(prog="faceveil", description="Secure, key-reversible face anonymization with diffusion models.")
    parser.add_argument("--version", action="version", version=f"faceveil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("keygen", help="create a new secret key file (mode 0600, never overwrites)")
    p.add_argument("keyfile")
    p.add_argument("--passphrase", action="store_true",
                   help="protect the key with a passphrase (Argon2id); read from $FACEVEIL_PASSPHRASE or a prompt")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("anonymize", help="replace faces by faces of nobody, reversibly with the key")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--key", required=True, metavar="KEYFILE")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input file) or folder (several, or folders)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"preset, hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=defaults.steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--refine-iters", type=int, default=defaults.refine_iters,
                   help="fixed-point refinements per inversion step, 0 = plain DDIM inversion (default %(default)s)")
    p.add_argument("--refine-tol", type=float, default=defaults.refine_tol, help="refinement tolerance (default %(default)s)")
    p.add_argument("--context", choices=CONTEXTS, default=defaults.context,
                   help="trajectory re-injected outside the mask; 'own' is the paper's (not exactly reversible)")
    p.add_argument("--mixing", choices=MIXINGS, default=defaults.mixing,
                   help="what the key does to the noise: flip signs (the paper), or also swap secret pairs of "
                        "coordinates, which stops linking an original to its anonymized version by noise magnitudes")
    p.add_argument("--decoder-iters", type=int, default=0, help="decoder inversion steps for latent models (default 0)")
    p.add_argument("--no-hint", action="store_true", help="do not store the sealed recovery hint (recovery becomes approximate)")
    p.add_argument("--no-residual", action="store_true",
                   help="do not store the sealed residual: recovery gives the model's reconstruction, not the exact pixels")
    p.add_argument("--aligned", action="store_true", help="the input is one aligned face crop: no detection, default mask")
    p.add_argument("--mask", choices=INCLUDE_OPTIONS, default="face", help="what the face mask covers (default %(default)s)")
    p.add_argument("--min-face", type=int, default=DEFAULT_MIN_SIZE,
                   help="faces smaller than this (pixels) are anonymized but reported (default %(default)s)")
    p.add_argument("--allow-no-face", action="store_true", help="write images without faces unchanged instead of failing")
    _batch_options(p)
    p.set_defaults(func=_cmd_anonymize)

    p = sub.add_parser("recover", help="restore the original faces with the key")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--key", required=True, metavar="KEYFILE")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input file) or folder (several, or folders)")
    p.add_argument("--model", default=None, help="override the model named in the header (a local copy, say)")
    p.add_argument("--no-residual", action="store_true", help="ignore the stored residual (show the model's reconstruction)")
    _batch_options(p)
    p.set_defaults(func=_cmd_recover)

    p = sub.add_parser("models", help="list model presets and whether each is available here")
    p.set_defaults(func=_cmd_models)

    from faceveil.evaluate.command import register as register_evaluate
    from faceveil.train.command import register as register_train

    register_evaluate(sub)
    register_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FaceveilError as exc:
        print(f"faceveil: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("faceveil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

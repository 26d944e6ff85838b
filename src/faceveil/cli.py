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


def _outputs(inputs: list[Path], output: str | None) -> list[Path | None]:
    """``-o`` is a file for one input, a folder for several."""
    if output is None:
        return [None] * len(inputs)
    out = Path(output)
    if len(inputs) == 1 and not out.is_dir():
        return [out]
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} must be a folder when several inputs are given")
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"{p.stem}.png" for p in inputs]


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=" UNet evals", leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True)
    return bar, bar.update


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


def _run_each(args: argparse.Namespace, action) -> int:
    inputs = [Path(p) for p in args.inputs]
    outputs = _outputs(inputs, args.output)
    first_failure = 0
    for source, target in zip(inputs, outputs):
        try:
            result = action(source, target)
        except FaceveilError as exc:
            print(f"faceveil: {source}: {exc}", file=sys.stderr)
            first_failure = first_failure or exc.exit_code
            continue
        for note in result.notes:
            print(f"faceveil: {source}: note: {note}", file=sys.stderr)
        print(f"{source} -> {', '.join(str(p) for p in result.outputs)}")
    return first_failure


def _cmd_anonymize(args: argparse.Namespace) -> int:
    from faceveil.api import anonymize
    from faceveil.engine import EngineSettings
    from faceveil.models import load_model
    from faceveil.pipeline import Settings

    key = _load_key(args.key)
    settings = Settings(
        EngineSettings(steps=args.steps, refine_iters=args.refine_iters, refine_tol=args.refine_tol, context=args.context),
        decoder_iters=args.decoder_iters,
        hint=not args.no_hint,
    )
    model = load_model(args.model)

    def action(source: Path, target: Path | None):
        bar, update = _progress_bar(f"anonymize {source.name}")
        with bar:
            return anonymize(source, key, target, model=model, settings=settings, overwrite=args.overwrite, progress=update)

    return _run_each(args, action)


def _cmd_recover(args: argparse.Namespace) -> int:
    from faceveil.api import recover
    from faceveil.models import load_model

    key = _load_key(args.key)
    models: dict[str, object] = {}

    def action(source: Path, target: Path | None):
        model = None
        if args.model:
            model = models.setdefault(args.model, load_model(args.model))
        bar, update = _progress_bar(f"recover {source.name}")
        with bar:
            return recover(source, key, target, model=model, overwrite=args.overwrite, progress=update)

    return _run_each(args, action)


def _cmd_models(args: argparse.Namespace) -> int:
    from faceveil.models import DEFAULT_MODEL, PRESETS, model_available

    for name, preset in PRESETS.items():
        state = "available" if model_available(name) else "not available here"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}: {state}\n    source: {preset.source}\n    {preset.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from faceveil.engine import CONTEXTS, EngineSettings
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
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--key", required=True, metavar="KEYFILE")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input) or folder (several)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"preset, hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=defaults.steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--refine-iters", type=int, default=defaults.refine_iters,
                   help="fixed-point refinements per inversion step, 0 = plain DDIM inversion (default %(default)s)")
    p.add_argument("--refine-tol", type=float, default=defaults.refine_tol, help="refinement tolerance (default %(default)s)")
    p.add_argument("--context", choices=CONTEXTS, default=defaults.context,
                   help="trajectory re-injected outside the mask; 'own' is the paper's (not exactly reversible)")
    p.add_argument("--decoder-iters", type=int, default=0, help="decoder inversion steps for latent models (default 0)")
    p.add_argument("--no-hint", action="store_true", help="do not store the sealed recovery hint (recovery becomes approximate)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.set_defaults(func=_cmd_anonymize)

    p = sub.add_parser("recover", help="restore the original faces with the key")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--key", required=True, metavar="KEYFILE")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input) or folder (several)")
    p.add_argument("--model", default=None, help="override the model named in the header (a local copy, say)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.set_defaults(func=_cmd_recover)

    p = sub.add_parser("models", help="list model presets and whether each is available here")
    p.set_defaults(func=_cmd_models)

    try:
        from faceveil.train.command import register as register_train
    except ImportError:
        register_train = None
    if register_train is not None:
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

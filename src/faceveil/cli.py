"""The ``faceveil`` command: argument parsing, progress, messages and exit codes only.

Exit codes: 0 success; 2 bad usage or unreadable input; 3 wrong key or tampered or
missing faceveil header; 4 no face found; 5 written, but the output check found faces. With several inputs every input is tried
and the exit code is that of the first failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from faceveil import __version__
from faceveil.batch import VIDEO_SUFFIXES, run_batch
from faceveil.errors import FaceveilError

EXIT_USAGE = 2


_NAMES_DEFAULT = re.compile(r"\(default|default:|; default ", re.IGNORECASE)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or _NAMES_DEFAULT.search(text):
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'off' if isinstance(action, argparse._StoreTrueAction) else 'on'})"
        if action.default is None:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # exit code 2 with one line, as argparse does
        self.exit(EXIT_USAGE, f"faceveil: error: {message}\n")


def _quiet_libraries() -> None:
    """The command owns its process: no Python warnings, no hub or diffusers chatter.

    The library-level part (native log levels at ``import faceveil``, diffusers at
    ``import faceveil.models``) is the API's too; this adds what only a command may do.
    """
    from faceveil import _quiet_native_logs, quiet_diffusers

    _quiet_native_logs()
    warnings.filterwarnings("ignore")
    for name in ("huggingface_hub", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_diffusers()
    try:
        from diffusers.utils import logging as dlogging

        dlogging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and not with ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _progress_bar(desc: str, enabled: bool):
    """A bar of the UNet's face-evaluations with the face count and, once the faces are found, the time left."""
    from faceveil.progress import FaceBar

    bar = FaceBar(desc, enabled)
    return bar, bar


def _cmd_keygen(args: argparse.Namespace) -> int:
    from faceveil.keys import Identity, Key, prompt_passphrase

    passphrase = prompt_passphrase(confirm=True) if args.passphrase else None
    if passphrase is not None:
        _warn_weak_passphrase(passphrase)  # an empty one is refused by Key.save
    if args.x25519:
        identity = Identity.generate()
        path = identity.save(args.keyfile, passphrase=passphrase)
        print(f"wrote identity {path}{' (passphrase protected)' if passphrase else ''}; keep it secret and backed up: "
              "it recovers every file anonymized to its recipient. The recipient (public, anonymizes only):",
              file=sys.stderr)
        print(identity.recipient)
        return 0
    key = Key.generate()
    path = key.save(args.keyfile, passphrase=passphrase)
    print(f"wrote key {path} (fingerprint {key.fingerprint}{', passphrase protected' if passphrase else ''}); "
          "keep it secret and backed up: without it anonymized faces cannot be recovered")
    return 0


def _warn_weak_passphrase(passphrase: str) -> None:
    from faceveil.keys import passphrase_warning

    warning = passphrase_warning(passphrase)
    if warning:
        print(f"faceveil: warning: {warning}", file=sys.stderr)


def _load_key(path: str):
    """A symmetric key or an X25519 identity from its file (asks for the passphrase if it has one)."""
    from faceveil.keys import Key, key_file_exposure, load_secret, prompt_passphrase

    exposure = key_file_exposure(path)
    if exposure:
        print(f"faceveil: warning: {exposure}", file=sys.stderr)
    passphrase = prompt_passphrase() if Key.file_needs_passphrase(path) else None
    return load_secret(path, passphrase=passphrase)


def _load_opener(args: argparse.Namespace):
    """What recovers: ``--token``, else ``--key`` (a key, identity or token file)."""
    from faceveil.envelope import DisclosureToken, is_token_file
    from faceveil.errors import UsageError

    token = getattr(args, "token", None)
    if token and args.key:
        raise UsageError("give --key or --token, not both")
    if not token and not args.key:
        raise UsageError("recovering needs --key (a key or identity file) or --token (a disclosure token)")
    path = token or args.key
    if token or is_token_file(path):
        opener = DisclosureToken.load(path)
        face = getattr(args, "face", None)
        if face is not None and face - 1 != opener.face:
            from faceveil.errors import WrongKeyError

            raise WrongKeyError(f"this disclosure token is for face {opener.face + 1}, not face {face}")
        return opener
    return _load_key(path)


def _load_recipients(args: argparse.Namespace) -> list:
    """Whom ``anonymize`` writes for: ``--key`` (a key file, or an identity for its recipient), every
    ``--recipient`` and the lines of every ``--recipients-file``."""
    from faceveil.envelope import Recipient, read_recipients_file
    from faceveil.errors import UsageError

    found: list = []
    if args.key:
        found.append(_load_key(args.key))
    found += [Recipient.parse(r) for r in args.recipient or []]
    for path in args.recipients_file or []:
        found += read_recipients_file(path)
    if not found:
        raise UsageError("anonymizing needs --key, --recipient or --recipients-file (whoever may recover)")
    return found


def _cmd_key_info(args: argparse.Namespace) -> int:
    """The key's fingerprint and protection; for each file given, whether this key made it."""
    import json

    from faceveil.container import read_record
    from faceveil.errors import HeaderError
    from faceveil.keys import key_file_exposure

    from faceveil.keys import Identity

    key = _load_key(args.keyfile)
    protection = json.loads(Path(args.keyfile).read_bytes()).get("protection", "none")
    exposure = key_file_exposure(args.keyfile)
    print(f"key file:    {args.keyfile}")
    if isinstance(key, Identity):
        print("kind:        X25519 identity")
        print(f"recipient:   {key.recipient}")
    else:
        print(f"fingerprint: {key.fingerprint}")
    print(f"protection:  {'passphrase (Argon2id)' if protection != 'none' else 'none (the file itself is the secret)'}")
    print(f"permissions: {'too open, see the warning above' if exposure else 'owner only'}")
    status = 0
    for name in args.files:
        try:
            record = read_record(Path(name))
            made = key.made(record)
        except HeaderError as exc:
            print(f"{name}: {exc}")
            status = status or exc.exit_code
            continue
        if not made:
            print(f"{name}: NOT made with this key")
            continue
        damage = _sealed_damage(key, record)
        print(f"{name}: made with this key, {'intact' if damage is None else f'damaged ({damage})'}")
        if damage is None and record.get("faceveil", 2) >= 3:
            from faceveil.container import unlock

            names = unlock(key, record).recipients or []
            print(f"    recipients ({len(names)}): {', '.join(names)}")
        status = status or (damage.exit_code if damage else 0)
    return status


def _sealed_damage(key, record: dict):
    """``None`` when the header's sealed part opens with ``key`` (authenticated, decrypted, unpacked), else the error."""
    from faceveil.container import open_header
    from faceveil.errors import HeaderError

    try:
        open_header(key, record)
    except HeaderError as exc:
        return exc
    return None


def _outcome(run):
    """``run()``'s result, or the ``FaceveilError`` it raised (a batch records it and goes on)."""
    try:
        return run()
    except FaceveilError as exc:
        return exc


def _bar_name(verb: str, pairs: list) -> str:
    return f"{verb} {pairs[0][0].name}" if len(pairs) == 1 else f"{verb} {len(pairs)} images"


def _cmd_anonymize(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from faceveil.api import VEILED_TAG, anonymize_files
    from faceveil.engine import EngineSettings
    from faceveil.models import load_model, recommended_noise_gain
    from faceveil.keys import Identity, Key
    from faceveil.pipeline import Settings

    recipients = _load_recipients(args)
    key = recipients if len(recipients) > 1 or not isinstance(recipients[0], Key) else recipients[0]
    checker = next((r for r in recipients if isinstance(r, (Key, Identity))), None)  # --resume checks outputs with it
    engine = EngineSettings(  # checks the flags before any weights load
        steps=args.steps, refine_iters=args.refine_iters, refine_tol=args.refine_tol, context=args.context,
        mixing=args.mixing, noise_gain=1.0 if args.noise_gain is None else args.noise_gain,
    )
    if args.ray:
        from faceveil.cluster import run_from_args

        if args.noise_gain is None:  # the model's recommended gain, read without loading its weights here
            engine = replace(engine, noise_gain=recommended_noise_gain(args.model))
            _warn_gain_steps(engine)
        settings = Settings(engine, decoder_iters=args.decoder_iters, hint=args.hint)
        return run_from_args(args, recipients, recovering=False, settings=settings, show=_show_progress(args))
    model = load_model(args.model)  # None: the best embedded model
    if args.noise_gain is None:  # --noise-gain's default: the gain the model's trainers recommend
        engine = replace(engine, noise_gain=model.noise_gain)
        _warn_gain_steps(engine)
    settings = Settings(engine, decoder_iters=args.decoder_iters, hint=args.hint)
    show = _show_progress(args)
    verifier = _verifier(args)

    def action(pairs: list[tuple[Path, Path]], report) -> None:
        report = verifier.wrap(pairs, report)
        source, target = pairs[0]
        if source.suffix.lower() in VIDEO_SUFFIXES:  # a video comes alone
            from faceveil.video import anonymize_video
            from faceveil.video.progress import FrameBars

            with FrameBars(show) as bars:
                report(0, _outcome(lambda: anonymize_video(
                    source, key, target, model=model, settings=settings, mask=args.mask, min_face=args.min_face,
                    allow_no_face=args.allow_no_face, residual=not args.no_residual, max_pixels=args.max_pixels,
                    overwrite=args.overwrite, progress=bars.update, style=args.style,
                )))
            return
        bar, update = _progress_bar(_bar_name("anonymize", pairs), show)
        with bar:
            anonymize_files(
                pairs, key, model=model, settings=settings, aligned=args.aligned, mask=args.mask,
                min_face=args.min_face, allow_no_face=args.allow_no_face, residual=not args.no_residual,
                max_pixels=args.max_pixels, overwrite=args.overwrite, progress=update, batch_size=args.batch,
                on_result=report, style=args.style, fallback=args.fallback, redraws=args.redraws,
            )

    with _detection_settings(args):
        code = run_batch(args, action, recovering=False, tag=VEILED_TAG, show=show, key=checker)
    return code or verifier.exit_code


def _verifier(args: argparse.Namespace):
    """The output check, audit log and preview of ``anonymize`` (faceveil.verify)."""
    from faceveil.verify import Verifier

    several = len(args.inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
    return Verifier(args.verify, args.audit_log, args.draw_boxes, several, renamed=args.rename == "hash")


def _detection_settings(args: argparse.Namespace):
    from faceveil.faces.ensemble import settings

    return settings(detector=args.detector, threshold=args.threshold)


def _detection_options(p: argparse.ArgumentParser) -> None:
    """--detector, --threshold, --verify, --draw-boxes, --audit-log (docs/detection.md)."""
    from faceveil.faces.ensemble import DEFAULT_DETECTOR

    p.add_argument("--detector", default=None, metavar="SPEC",
                   help=f"face detectors joined by '+' (mediapipe, mediapipe-full, centerface, yunet, dlib-hog, "
                        f"dlib-cnn; 'rot' also tries quarter turns); default {DEFAULT_DETECTOR}")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="detection score threshold (0-1) for every detector (default: each detector's own, 0.5 mostly)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction,
                   default=os.environ.get("FACEVEIL_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off"),
                   help="check each output: faces an independent detector finds outside the replaced ones, and "
                        "replaced faces still matching the original (exit 5 if any); on unless FACEVEIL_VERIFY=0")
    p.add_argument("--draw-boxes", default=None, metavar="PATH",
                   help="write a preview of the output with the faces' boxes, scores and treatments "
                        "(a folder for several inputs: NAME.boxes.png)")
    p.add_argument("--audit-log", default=None, metavar="PATH",
                   help="append one JSON line per face (file, face, box, score, treatment, verification)")


def _cmd_recover(args: argparse.Namespace) -> int:
    from faceveil.api import RECOVERED_TAG, recover_files
    from faceveil.keys import Identity, Key
    from faceveil.models import load_model

    key = _load_opener(args)
    if args.ray:
        from faceveil.cluster import run_from_args
        from faceveil.errors import UsageError

        if not isinstance(key, (Key, Identity)):
            raise UsageError("--ray recovers with a key or an identity; a disclosure token runs without --ray")
        return run_from_args(args, key, recovering=True, show=_show_progress(args))
    model = load_model(args.model) if args.model else None
    models: dict = {}  # the models named in the headers, each loaded once for the whole batch
    show = _show_progress(args)

    def action(pairs: list[tuple[Path, Path]], report) -> None:
        source, target = pairs[0]
        if source.suffix.lower() in VIDEO_SUFFIXES:  # a video comes alone
            from faceveil.video import recover_video
            from faceveil.video.progress import FrameBars

            with FrameBars(show) as bars:
                report(0, _outcome(lambda: recover_video(
                    source, key, target, model=model, use_residual=not args.no_residual, max_pixels=args.max_pixels,
                    overwrite=args.overwrite, progress=bars.update,
                )))
            return
        bar, update = _progress_bar(_bar_name("recover", pairs), show)
        with bar:
            recover_files(
                pairs, key, model=model, use_residual=not args.no_residual, max_pixels=args.max_pixels,
                overwrite=args.overwrite, progress=update, batch_size=args.batch, models=models, on_result=report,
                force=args.force,
            )

    return run_batch(args, action, recovering=True, tag=RECOVERED_TAG, show=show, key=key)


def _cmd_models(args: argparse.Namespace) -> int:
    from faceveil.models import (
        PRESETS,
        WEIGHTS_DIR,
        default_model,
        model_available,
        recommended_detail_floor,
        recommended_noise_gain,
    )

    default = default_model()
    for name, preset in PRESETS.items():
        embedded = preset.source.startswith(str(WEIGHTS_DIR))
        gain = ""
        if model_available(name):
            state = "available (embedded, offline)" if embedded else "available (in the hub cache)"
            if embedded:
                gain = f"\n    noise gain: {recommended_noise_gain(name):g} (--noise-gain's default with this model)"
                if (Path(preset.source) / "detail").is_dir():
                    gain += "\n    detail stage: 2x super-resolution of faces the photo enlarges (faceveil.detail)"
                if floor := recommended_detail_floor(name):
                    gain += f"\n    detail floor: {floor:g} of the original's (a smoother new face is drawn again, --redraws)"
        else:
            state = "not shipped in this installation" if embedded else "not available here (downloaded from the hub on first use)"
        tag = " (default)" if name == default else ""
        print(f"{name}{tag}: {state}\n    source: {preset.source}\n    {preset.description}{gain}")
    print(f"default: {default} (the best embedded model; others are chosen with --model NAME)")
    return 0


def _recipient_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipient", action="append", default=[], metavar="RECIPIENT",
                   help="a public recipient string (faceveil1..., from `faceveil keygen --x25519`); repeatable. "
                        "Needs no secret: this machine cannot recover what it writes")
    p.add_argument("--recipients-file", action="append", default=[], metavar="FILE",
                   help="recipient strings, one per line (# comments); repeatable")


def _cmd_rekey(args: argparse.Namespace) -> int:
    from faceveil.envelope import Recipient, read_recipients_file, recipient_name
    from faceveil.keys import Key
    from faceveil.rekey import rekey_paths

    opener = _load_key(args.key)
    add: list = [Recipient.parse(r) for r in args.add_recipient]
    for path in args.add_recipients_file:
        add += read_recipients_file(path)
    add += [Key.load(k) for k in args.add_key]
    remove = list(args.remove_recipient) + [recipient_name(Key.load(k)) for k in args.remove_key]
    if not add and not remove:
        from faceveil.errors import UsageError

        raise UsageError("nothing to do: give --add-recipient, --add-key, --remove-recipient or --remove-key")
    return rekey_paths(args.inputs, opener, add, remove, recursive=args.recursive, quiet=args.quiet)


def _cmd_disclose(args: argparse.Namespace) -> int:
    from faceveil.api import disclose

    opener = _load_key(args.key)
    path, token = disclose(args.input, opener, args.face, args.output, model=args.model)
    carried = " and its restored region (a later face touches what it reads)" if token.original else ""
    print(f"wrote {path}: the key of face {args.face} of {args.input}{carried}; it recovers that face only "
          f"(faceveil recover {args.input} --token {path}). Send it as you would the face itself")
    return 0


def _batch_options(p: argparse.ArgumentParser) -> None:
    from faceveil.imageio import DEFAULT_MAX_PIXELS

    p.add_argument("--recursive", action="store_true", help="go into subfolders of folder inputs")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs whose output already exists (without it they are refused, exit 2)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse images larger than this many pixels")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they show only on a terminal anyway); results, notes and errors still print")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the files over Ray workers: alone, a local Ray on this machine; with an address "
                        "(ray://HOST:10001, HOST:6379, auto), that cluster (needs the ray extra); put it after the inputs "
                        "or write --ray=ADDRESS")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: number of workers (default: one per GPU of the cluster, else one per CPU)")
    p.add_argument("--batch", type=int, default=8, metavar="N",
                   help="images whose faces go through the UNet together (default 8; 1: one file at a time); with --ray, "
                        "files per worker call; recovery is exact whatever the batch")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the model (default: chosen from the CPUs this process may use and the load "
                        "average; OMP_NUM_THREADS, if set, is taken as N)")


def version_text() -> str:
    """faceveil's version, the embedded default model with its weights' SHA-256 (as headers record it), torch's."""
    import torch

    from faceveil.errors import FaceveilError
    from faceveil.models import default_model, load_model

    name = default_model()
    try:
        model = f"{name}, weights sha256 {load_model(name).weights_hash}"
    except FaceveilError as exc:
        model = f"{name} (not loadable: {exc})"
    return f"faceveil {__version__}\ndefault model: {model}\ntorch {torch.__version__}"


class _VersionAction(argparse.Action):
    """``--version``: loads the default model only when asked (its hash names the exact weights)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


# Modules that add their own subcommands: each has ``register(subparsers)``.
COMMAND_MODULES = ["faceveil.evaluate.command", "faceveil.train.command", "faceveil.web.command", "faceveil.names"]

KEY_HELP = ("the secret key or X25519 identity file made by `faceveil keygen` (asks for its passphrase if it has "
            "one), or a disclosure token")
OUTPUT_HELP = ("output file (one input file) or folder (several inputs, or folders: subfolders mirrored, "
               "manifest.json merged there) (default: beside each input, {name})")


def _warn_gain_steps(engine) -> None:
    """A model's recommended noise gain holds at the step count it was measured at (the default):
    inversion with more DDIM steps leaves noise of a larger deviation, which the same gain lifts
    past what the model draws well (TRAINING.md, "Noise gain"; ``benchmarks/inverted_noise.py``)."""
    from faceveil.engine import EngineSettings

    default = EngineSettings().steps
    if engine.noise_gain != 1.0 and engine.steps != default:
        more = engine.steps > default
        print(f"faceveil: warning: the model's noise gain {engine.noise_gain:g} was measured at {default} steps; at "
              f"{engine.steps} the inverted noise is {'larger' if more else 'smaller'}, so faces may "
              f"{'break into speckle' if more else 'come out softer and more alike'}: choose --noise-gain "
              f"({'lower' if more else 'higher'}; docs/command-line.md)", file=sys.stderr)


def _redraws(text: str) -> int:
    """``--redraws``: a count the pipeline takes (``pipeline.check_redraws``), refused by argparse (exit 2) otherwise."""
    from faceveil.errors import UsageError
    from faceveil.pipeline import check_redraws

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    try:
        return check_redraws(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _noise_gain(text: str) -> float:
    """``--noise-gain``: a number ``EngineSettings`` takes, refused by argparse (exit 2) otherwise."""
    from faceveil.engine import EngineSettings

    try:
        return EngineSettings(noise_gain=float(text)).noise_gain
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from faceveil.engine import CONTEXTS, MIXINGS, EngineSettings
    from faceveil.faces.detect import DEFAULT_MIN_SIZE
    from faceveil.faces.mask import INCLUDE_OPTIONS
    from faceveil.faces.visible import DEFAULT_FALLBACK, FALLBACKS, STYLES
    from faceveil.models import default_model
    from faceveil.pipeline import DEFAULT_REDRAWS

    defaults = EngineSettings()
    embedded = default_model()
    parser = _Parser(prog="faceveil", description="Secure, key-reversible face anonymization with diffusion models.")
    parser.add_argument("--version", action=_VersionAction, help="print faceveil's version and the default model's, then exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("keygen", help="create a new secret key file (mode 0600, never overwrites)")
    p.add_argument("keyfile", help="where to write the new key (refused if it exists)")
    p.add_argument("--passphrase", action="store_true",
                   help="protect the key with a passphrase (Argon2id); read from $FACEVEIL_PASSPHRASE or a prompt")
    p.add_argument("--x25519", action="store_true",
                   help="write an X25519 identity instead and print its public recipient string (faceveil1...): "
                        "whoever has the string can anonymize for you, only the identity recovers")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("key", help="inspect key files")
    key_sub = p.add_subparsers(dest="key_command", required=True, parser_class=_Parser)
    p = key_sub.add_parser(
        "info", help="print a key's fingerprint (safe to share: it reveals nothing of the secret) and, for "
                     "anonymized files, whether this key made them",
    )
    p.add_argument("keyfile", help="a key or identity file made by `faceveil keygen`")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="anonymized files to test against this key (their headers name the key only to its holder)")
    p.set_defaults(func=_cmd_key_info)

    p = sub.add_parser("anonymize", help="replace faces by faces of nobody, reversibly with the key")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files (videos: -o NAME.mp4 for lossy H.264, else FFV1 .mkv), or folders")
    p.add_argument("--key", default=None, metavar="KEYFILE",
                   help="the secret key file made by `faceveil keygen` (or an identity file, for its recipient): "
                        "it will recover the files")
    _recipient_options(p)
    p.add_argument("-o", "--output", metavar="OUT", help=OUTPUT_HELP.format(name="photo.veiled.png"))
    p.add_argument("--model", default=None, metavar="M",
                   help=f"preset (see `faceveil models`), hub id or local diffusers folder (default: {embedded}, "
                        "the best model embedded in this installation; runs offline)")
    p.add_argument("--steps", type=int, default=defaults.steps, help="DDIM steps")
    p.add_argument("--refine-iters", type=int, default=defaults.refine_iters,
                   help="fixed-point refinements per inversion step, 0 = plain DDIM inversion")
    p.add_argument("--refine-tol", type=float, default=defaults.refine_tol, help="refinement tolerance")
    p.add_argument("--context", choices=CONTEXTS, default=defaults.context,
                   help="trajectory re-injected outside the mask; 'own' is the paper's (not exactly reversible)")
    p.add_argument("--mixing", choices=MIXINGS, default=defaults.mixing,
                   help="what the key does to the noise: flip signs (the paper), or also swap secret pairs of "
                        "coordinates, which stops linking an original to its anonymized version by noise magnitudes")
    p.add_argument("--noise-gain", type=_noise_gain, default=None, metavar="G",
                   help="gain of the keyed noise inside the face (0.5-2; above 1: more detail and variety "
                        "from the model, and more of its flaws; 1 is the paper's) (default: the model's "
                        "recommendation, from its faceveil_train.json, else 1)")
    p.add_argument("--decoder-iters", type=int, default=0, help="decoder inversion steps for latent models")
    p.add_argument("--hint", action="store_true", help="also store a sealed latent hint (about 5 KB per face; the residual already makes recovery exact)")
    p.add_argument("--no-residual", action="store_true",
                   help="do not store the sealed residual: recovery gives the model's reconstruction, not the exact pixels")
    p.add_argument("--aligned", action="store_true", help="the input is one aligned face crop: no detection, default mask")
    p.add_argument("--mask", choices=INCLUDE_OPTIONS, default="face", help="what the face mask covers")
    p.add_argument("--min-face", type=int, default=DEFAULT_MIN_SIZE,
                   help="faces smaller than this (pixels) are anonymized but reported")
    p.add_argument("--allow-no-face", action="store_true", help="write images without faces unchanged instead of failing")
    p.add_argument("--style", choices=STYLES, default="face",
                   help="face: a new face from the model; pixelate, blur, solid: a visible replacement, the original "
                        "sealed in the header (exact recovery, no model run)")
    p.add_argument("--fallback", choices=FALLBACKS, default=DEFAULT_FALLBACK,
                   help="for a face the model cannot align (no mesh, cut by the border, tiny): a visible treatment "
                        "of its box, or the model on its box; each such face is reported")
    p.add_argument("--redraws", type=_redraws, default=DEFAULT_REDRAWS, metavar="N",
                   help="draw a face again (a fresh nonce) while ArcFace, or dlib where ArcFace's file is missing, "
                        "still matches the new face to the original at FAR 1e-3, or while it is much smoother than "
                        "the original (below the model's detail floor), up to N times, keeping the best face drawn; "
                        "0: off (photos; recovery is unaffected)")
    p.add_argument("--rename", choices=("keep", "hash"), default="keep",
                   help="hash: name outputs by a keyed hash of the input's relative path, flat in the output folder, "
                        "so names and folders name nobody; `faceveil names` maps them back (docs/command-line.md)")
    _detection_options(p)
    _batch_options(p)
    p.set_defaults(func=_cmd_anonymize)

    p = sub.add_parser("recover", help="restore the original faces with the key")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="anonymized image or video files, or folders (*.veiled.*)")
    p.add_argument("--key", default=None, metavar="KEYFILE", help=KEY_HELP)
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="a disclosure token (`faceveil disclose`): restores its one face, the others stay veiled")
    p.add_argument("--face", type=int, default=None, metavar="N",
                   help="with --token: the face (1-based) you expect it to open; another is refused")
    p.add_argument("-o", "--output", metavar="OUT", help=OUTPUT_HELP.format(name="photo.recovered.png"))
    p.add_argument("--model", default=None, metavar="M",
                   help="override the model named in the header, e.g. a local copy of it (default: the header's model)")
    p.add_argument("--no-residual", action="store_true", help="ignore the stored residual (show the model's reconstruction)")
    p.add_argument("--force", action="store_true",
                   help="recover even when the header's sealed fingerprint says it was made for another image")
    _batch_options(p)
    p.set_defaults(func=_cmd_recover)

    p = sub.add_parser("rekey", help="rewrap files' keys in place: add or remove recipients (pixels untouched)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="anonymized images or folders of them")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="a key or identity the files are already for")
    p.add_argument("--add-recipient", action="append", default=[], metavar="RECIPIENT", help="a faceveil1... string to add")
    p.add_argument("--add-recipients-file", action="append", default=[], metavar="FILE", help="recipients to add, one per line")
    p.add_argument("--add-key", action="append", default=[], metavar="KEYFILE", help="a symmetric key file to add")
    p.add_argument("--remove-recipient", action="append", default=[], metavar="NAME",
                   help="a recipient to remove: its faceveil1... string, or key:FINGERPRINT (as `key info` lists them)")
    p.add_argument("--remove-key", action="append", default=[], metavar="KEYFILE", help="a symmetric key file to remove")
    p.add_argument("--recursive", action="store_true", help="go into subfolders of folder inputs")
    p.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    p.set_defaults(func=_cmd_rekey)

    p = sub.add_parser("disclose", help="write a token that recovers one face of one file, and nothing else")
    p.add_argument("input", metavar="FILE", help="an anonymized image")
    p.add_argument("--face", type=int, required=True, metavar="N", help="the face to disclose, 1-based (header order)")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="a key or identity the file is for")
    p.add_argument("-o", "--output", required=True, metavar="TOKEN", help="the token file to write (mode 0600, never overwritten)")
    p.add_argument("--model", default=None, metavar="M",
                   help="override the model named in the header (needed when the face must be restored to be disclosed)")
    p.set_defaults(func=_cmd_disclose)

    p = sub.add_parser("models", help="list model presets and whether each is available here")
    p.set_defaults(func=_cmd_models)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _fit_threads(args: argparse.Namespace):
    """Commands with ``--threads``: set torch's threads for this run (faceveil.threads); returns what to restore."""
    if not hasattr(args, "threads"):
        return None
    import torch

    from faceveil.threads import configure

    if args.threads is not None and args.threads < 1:
        from faceveil.errors import UsageError

        raise UsageError(f"--threads must be at least 1, not {args.threads}")
    before = torch.get_num_threads()
    configure(args.threads)
    return before


def main(argv: list[str] | None = None) -> int:
    from faceveil.threads import prefer_passive_waiting

    if (sys.argv[1:] if argv is None else list(argv))[:1] in (["anonymize"], ["recover"]):
        prefer_passive_waiting()  # before torch loads: OpenMP threads sleep, not spin, while they wait (not train's)
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    threads_before = None
    try:
        threads_before = _fit_threads(args)
        return int(args.func(args) or 0)
    except FaceveilError as exc:
        print(f"faceveil: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("faceveil: interrupted", file=sys.stderr)
        return 130
    finally:
        if threads_before is not None:  # main() called in-process (tests, notebooks): leave torch as it was
            import torch

            torch.set_num_threads(threads_before)


if __name__ == "__main__":
    raise SystemExit(main())

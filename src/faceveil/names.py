"""Output names that name nobody: ``--rename hash``, and the manifest's relative paths.

A folder of ``AJ_Cook_0001.jpg`` files anonymized as ``AJ_Cook_0001.veiled.png`` still names
the people in it. With ``--rename hash`` each output is named by a keyed hash of the input's
path relative to the folder it was found in (``lfw/AJ_Cook/AJ_Cook_0001.jpg`` gives
``AJ_Cook/AJ_Cook_0001.jpg``): HMAC-SHA256 under a subkey derived from the key with its own
label (:func:`rename_key`), base32, 20 characters (100 bits), written flat into the output
folder (subfolder names are names too). The name is the same at every run with the same key,
so ``--resume`` finds the outputs again; without the key it cannot be linked to an input name.

The key holder maps names back two ways (``faceveil names``):

- from the output folder's ``manifest.json``, whose records then hold the input's relative
  path sealed (ChaCha20-Poly1305 under another subkey, padded to 64 bytes): works without
  the originals;
- by recomputation over the input folder (``--inputs``): works without the manifest.

This module never imports torch.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path, PurePath
from typing import Any

from faceveil.errors import HeaderError, UsageError

RENAME_CHOICES = ("keep", "hash")
HASH_CHARS = 20  # base32 characters: 100 bits, so a million files collide with odds of about 1e-18
_LABEL = b"faceveil/v1/rename/"
_PAD = 64


def rename_key(key: Any) -> bytes:
    """The 32-byte subkey that names outputs (HKDF-SHA256 of the key's secret, label ``rename/names``).

    The one place that says where the naming secret comes from: today the symmetric
    secret of a :class:`faceveil.keys.Key`. A key without one (a public-key recipient,
    which can anonymize but holds no secret) is refused with a clear message.
    """
    secret = getattr(key, "secret", None)
    if not isinstance(secret, bytes) or not secret:
        raise UsageError("--rename hash needs a secret key file (made by `faceveil keygen`): the names are keyed "
                         "by its secret, so that only its holder can map them back; this key has no secret")
    return _hkdf(secret, b"names")


def _hkdf(secret: bytes, label: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL + label).derive(secret)


def relative_name(path: PurePath | str) -> str:
    """The hashed form of a relative path: POSIX separators, so a name is the same on every system."""
    return PurePath(path).as_posix()


def hashed_stem(names_key: bytes, rel: PurePath | str) -> str:
    """The output stem of the input at ``rel`` (relative to its root): lowercase base32, :data:`HASH_CHARS` long."""
    digest = hmac.new(names_key, relative_name(rel).encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:HASH_CHARS]


def _seal_key(names_key: bytes) -> bytes:
    return _hkdf(names_key, b"seal")


def seal_name(names_key: bytes, stem: str, rel: PurePath | str) -> str:
    """``rel`` encrypted for the key holder (bound to ``stem``), padded so its length says little; base64 text."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    data = relative_name(rel).encode("utf-8", "surrogateescape")
    padded = len(data).to_bytes(2, "big") + data + bytes(-(len(data) + 2) % _PAD)
    nonce = secrets.token_bytes(12)
    sealed = ChaCha20Poly1305(_seal_key(names_key)).encrypt(nonce, padded, stem.encode("ascii"))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_name(names_key: bytes, stem: str, token: str) -> str:
    """The relative path sealed by :func:`seal_name`; ``HeaderError`` for another key or a damaged token."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        padded = ChaCha20Poly1305(_seal_key(names_key)).decrypt(raw[:12], raw[12:], stem.encode("ascii"))
    except (InvalidTag, ValueError, UnicodeEncodeError) as exc:
        raise HeaderError(f"the sealed name of {stem} does not open with this key (another key, or damaged)") from exc
    size = int.from_bytes(padded[:2], "big")
    return padded[2 : 2 + size].decode("utf-8", "surrogateescape")


class Renamer:
    """Hashed output names for one batch; refuses two inputs that would get the same name."""

    def __init__(self, key: Any) -> None:
        self.key = rename_key(key)
        self.taken: dict[str, str] = {}

    def stem(self, rel: PurePath | str) -> str:
        stem, name = hashed_stem(self.key, rel), relative_name(rel)
        other = self.taken.setdefault(stem, name)
        if other != name:  # 100 bits: never seen in practice, but a collision must not lose a file
            raise UsageError(f"--rename hash gives {other} and {name} the same name {stem}; rename one of them")
        return stem

    def sealed(self, stem: str, rel: PurePath | str) -> str:
        return seal_name(self.key, stem, rel)


# ---- the manifest's names ---------------------------------------------------------------
class ManifestNames:
    """How a manifest names files: inputs relative to the folder (or file) they were found in, or their
    hashed name with the relative path sealed; outputs relative to the manifest's folder.

    A batch keeps absolute paths (or URLs) in memory; :meth:`to_file` writes them relative,
    :meth:`from_file` reads a record back in the batch's terms (an older manifest's absolute
    paths stay as they are, so its records still merge with this run's and ``--resume`` works).
    """

    def __init__(self, folder: str, inputs: dict[str, str] | None = None, sealed: dict[str, str] | None = None,
                 sealed_rel: dict[str, str] | None = None) -> None:
        self.folder = str(folder).rstrip("/\\")
        self.inputs = dict(inputs or {})  # absolute key -> the name written
        self.back = {rel: absolute for absolute, rel in self.inputs.items()}
        self.sealed = dict(sealed or {})  # absolute key -> sealed relative path (with --rename hash)
        self.sealed_rel = dict(sealed_rel or {})  # absolute key -> its relative path, scrubbed from messages

    def _inside(self, path: str) -> str | None:
        if not _absolute(path):
            path = str(Path(path).resolve())
        for sep in {"/", os.sep}:
            if path.startswith(self.folder + sep):
                return path[len(self.folder) + 1 :].replace(os.sep, "/")
        return None

    def to_file(self, entry: dict) -> dict:
        out = dict(entry)
        source = entry.get("input")
        if source in self.inputs:
            out["input"] = self.inputs[source]
            if source in self.sealed:  # renamed: no message may name the input either
                out["input_sealed"] = self.sealed[source]
                rel = self.sealed_rel.get(source, "")
                for field in ("reason",):
                    if isinstance(out.get(field), str):
                        out[field] = _scrub(out[field], source, rel, out["input"])
                if isinstance(out.get("notes"), list):
                    out["notes"] = [_scrub(n, source, rel, out["input"]) if isinstance(n, str) else n for n in out["notes"]]
                if isinstance(out.get("last_attempt"), dict) and isinstance(out["last_attempt"].get("reason"), str):
                    out["last_attempt"] = {**out["last_attempt"],
                                           "reason": _scrub(out["last_attempt"]["reason"], source, rel, out["input"])}
        out["outputs"] = [self._inside(str(p)) or str(p) for p in entry.get("outputs", [])]
        if "existing_output" in entry:
            out["existing_output"] = self._inside(str(entry["existing_output"])) or str(entry["existing_output"])
        return out

    def from_file(self, entry: dict) -> dict:
        out = dict(entry)
        source = entry.get("input")
        if isinstance(source, str) and source in self.back:
            out["input"] = self.back[source]
        outputs = entry.get("outputs")
        if isinstance(outputs, list):
            out["outputs"] = [p if not isinstance(p, str) or _absolute(p) else f"{self.folder}/{p}" for p in outputs]
        return out


def _scrub(text: str, source: str, rel: str, stem: str) -> str:
    """``text`` with the input's absolute path, relative path and file name replaced by its hashed name."""
    for name in (source, rel, rel.replace("/", os.sep), PurePath(rel).name if rel else ""):
        if name:
            text = text.replace(name, stem)
    return text


def _absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(path)


def input_names(inputs: list[str], sources: list[str]) -> dict[str, str]:
    """Each source's manifest key (absolute path, or URL) -> its path relative to the input it came from
    (a folder given: relative to it; a file given: its name)."""
    roots = []
    for item in inputs:
        if "://" in item:
            roots.append(item.rstrip("/"))
        else:
            roots.append(str(Path(item).resolve()))
    names: dict[str, str] = {}
    for source in sources:
        key = source if "://" in source else str(Path(source).resolve())
        rel = None
        for root in roots:
            if key.startswith(root.rstrip("/") + "/") or key.startswith(root.rstrip(os.sep) + os.sep):
                rel = key[len(root.rstrip("/" + os.sep)) + 1 :].replace(os.sep, "/")
                break
        names[key] = rel or key.replace(os.sep, "/").rsplit("/", 1)[-1]
    return names


# ---- faceveil names ----------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the ``names`` subcommand."""
    p = subparsers.add_parser(
        "names", help="map the hashed names of `anonymize --rename hash` back to the input names (key holder only)",
        description="Print, for outputs named by `anonymize --rename hash`, the input each came from: from the "
                    "manifest.json of an output folder (its sealed names), or with --inputs by recomputing the "
                    "names of an input folder's files.",
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER",
                   help="output folders with a manifest.json (with --inputs: input folders or files)")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="the key the outputs were made with")
    p.add_argument("--inputs", action="store_true",
                   help="FOLDER is an input folder: print each file's hashed output name (no manifest needed)")
    p.add_argument("--recursive", action="store_true", help="with --inputs: go into subfolders, as anonymize did")
    p.set_defaults(func=_cmd_names)


def _cmd_names(args: argparse.Namespace) -> int:
    from faceveil.cli import _load_key

    names_key = rename_key(_load_key(args.key))
    if args.inputs:
        from faceveil.batch import plan_tasks

        tasks = plan_tasks(args.folders, None, args.recursive, False, ".veiled")
        rels = input_names(args.folders, [str(t.source) for t in tasks])
        for task in tasks:
            rel = rels[str(task.source.resolve())]
            print(f"{hashed_stem(names_key, rel)}\t{rel}")
        return 0
    import json

    status = 0
    for folder in map(Path, args.folders):
        manifest = folder / "manifest.json" if folder.is_dir() else folder
        try:
            files = json.loads(manifest.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"cannot read {manifest}: {exc}") from None
        for entry in files:
            if not isinstance(entry, dict) or "input_sealed" not in entry:
                continue
            try:
                rel = open_name(names_key, str(entry.get("input")), str(entry["input_sealed"]))
            except HeaderError as exc:
                print(f"faceveil: {manifest}: {exc}", file=sys.stderr)
                status = status or exc.exit_code
                continue
            outputs = ", ".join(entry.get("outputs", [])) or entry.get("status", "")
            print(f"{entry.get('input')}\t{rel}\t{outputs}")
    return status

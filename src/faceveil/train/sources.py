"""External face sources: the public repositories of issue 10, their files and hashes.

Each :class:`SourceSpec` names a repository, the commit and folders used, and how its
file names identify faces (``"celeba"``: the name starts with the CelebA image number,
``"utkface"``: no identity is known). A source is extracted once with
:func:`extract_source` (``git archive`` of a bare mirror, as the ``fetch`` tool makes
them) into ``<root>/<spec.name>/<folder>``; :func:`source_digest` is the SHA-256 of
``sha256sum``-style lines over its files, so it can be checked with coreutils::

    cd <root>/<name> && find <folders> -type f -print0 | LC_ALL=C sort -z \\
        | xargs -0 sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faceveil.errors import UsageError

__all__ = [
    "KNOWN_SOURCES",
    "SourceSpec",
    "celeba_image_name",
    "extract_source",
    "known_source",
    "list_source_files",
    "mirror_dir",
    "source_digest",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CELEBA_NAME = re.compile(r"^(\d{6})\.jpg")


@dataclass(frozen=True)
class SourceSpec:
    """One external face source: where it comes from and how its files are named."""

    name: str  # folder under the sources root
    repository: str  # GitHub owner/name
    commit: str
    folders: tuple[str, ...]
    kind: str  # "celeba" (file name starts with the CelebA image number) | "utkface"
    description: str
    licence: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "repository": self.repository,
            "commit": self.commit,
            "folders": list(self.folders),
            "kind": self.kind,
            "description": self.description,
            "licence": self.licence,
        }


CELEBA_TERMS = "CelebA: non-commercial research purposes only"
UTK_TERMS = "UTKFace: non-commercial research purposes only"

#: In deduplication priority: where one photo is in two sources, the earlier one is kept.
KNOWN_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(
        name="cs389-hw4-celeba",
        repository="karthikSingireddy/cs389-hw4",
        commit="702f8f7bdf59386959872d52879faac800f20ab1",
        folders=("celebA",),
        kind="celeba",
        description="10,000 CelebA aligned images 000001-010000 at 89x109",
        licence=CELEBA_TERMS,
    ),
    SourceSpec(
        name="male-female-face-dataset",
        repository="laxmimerit/male-female-face-dataset",
        commit="ea345b15c9964cfb54c7f2b297f424383ce1e249",
        folders=("Training", "Validation"),
        kind="celeba",
        description="58,658 tight face crops (about 83x107) of CelebA aligned images; 063503.jpg.jpg is CelebA 063503.jpg",
        licence=CELEBA_TERMS,
    ),
    SourceSpec(
        name="utkface-agepred",
        repository="delonyohan/deeplearn-agepred",
        commit="b06607bf2477c8295b33facb5dea7aada27cac01",
        folders=("dataset/UTKFace",),
        kind="utkface",
        description="23,708 UTKFace aligned & cropped faces, 200x200 (no identities)",
        licence=UTK_TERMS,
    ),
)


def known_source(name: str) -> SourceSpec:
    """The :data:`KNOWN_SOURCES` entry called ``name``."""
    for spec in KNOWN_SOURCES:
        if spec.name == name:
            return spec
    raise UsageError(f"unknown source {name!r} (known: {', '.join(s.name for s in KNOWN_SOURCES)})")


def celeba_image_name(file_name: str) -> str | None:
    """The CelebA image (``"063503.jpg"``) a file is named after, or None."""
    m = _CELEBA_NAME.match(os.path.basename(file_name))
    return f"{m.group(1)}.jpg" if m else None


def list_source_files(root: str | os.PathLike[str], folders: Iterable[str]) -> list[str]:
    """Image files under ``root/<folder>`` for each folder, relative to ``root``, sorted (bytewise)."""
    root = Path(root)
    out: list[str] = []
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            raise UsageError(f"source folder not found: {base}")
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.lower().endswith(IMAGE_SUFFIXES):
                    out.append((Path(dirpath) / f).relative_to(root).as_posix())
    return sorted(out, key=lambda s: s.encode())


def source_digest(root: str | os.PathLike[str], files: Sequence[str]) -> str:
    """SHA-256 over ``"<sha256 of content>  <path>\\n"`` lines, in the order given."""
    root = Path(root)
    total = hashlib.sha256()
    for rel in files:
        with open(root / rel, "rb") as fh:
            h = hashlib.file_digest(fh, "sha256").hexdigest()
        total.update(f"{h}  {rel}\n".encode())
    return total.hexdigest()


def mirror_dir(mirrors_root: str | os.PathLike[str], spec: SourceSpec) -> Path:
    """Where the ``fetch`` tool keeps a repository's bare mirror: ``<root>/<owner>+<name>/repo``."""
    return Path(mirrors_root) / spec.repository.replace("/", "+") / "repo"


def extract_source(git_dir: str | os.PathLike[str], spec: SourceSpec, root: str | os.PathLike[str]) -> Path:
    """Extract ``spec``'s folders at its commit from a bare mirror into ``root/<spec.name>``."""
    dest = Path(root) / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", spec.commit, *spec.folders],
        stdout=subprocess.PIPE,
    )
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    if archive.stdout is not None:
        archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise UsageError(
            f"cannot extract {spec.repository}@{spec.commit[:12]} from {git_dir}: {tar.stderr.decode().strip()}"
        )
    return dest

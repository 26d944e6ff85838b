"""The README's commands run as written.

Every fenced ``bash`` or ``python`` block of README.md is preceded by a marker comment:
``<!-- readme-test: skip (REASON) -->`` for blocks this test does not run (installs, servers,
clusters, the test suite itself), or ``<!-- readme-test: needs WHAT -->`` for blocks it runs,
in order, in one working folder that holds what they need: ``photo.jpg`` (a public-domain
portrait), ``photos/`` (two photos, one in a subfolder) and ``clip.mp4`` (a 4-frame clip).
The ``faceveil`` they call is this checkout's (``python -m faceveil``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import demo_clip, free_face

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!-- readme-test: (skip|needs) (.+?) -->")
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```(bash|python)\n(.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, str, str, str]]:
    """(kind, what the marker says, language, code) for every bash and python block."""
    out = []
    for m in BLOCK.finditer(README.read_text()):
        marker = MARKER.fullmatch(m.group(1) or "")
        if marker is None:
            out.append(("unmarked", "", m.group(2), m.group(3)))
        else:
            out.append((marker.group(1), marker.group(2), m.group(2), m.group(3)))
    return out


def test_readme_is_short_and_every_block_is_marked():
    assert len(README.read_text().splitlines()) <= 250
    blocks = readme_blocks()
    assert sum(kind == "needs" for kind, *_ in blocks) >= 5
    for kind, what, _, code in blocks:
        assert kind != "unmarked", f"a README block has no readme-test marker:\n{code}"
        if kind == "skip":
            assert re.fullmatch(r"\(.{10,}\)", what), f"a skipped README block needs its reason: {what!r}"


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture()
def workdir(tmp_path):
    """A folder with what the README's commands name, and ``faceveil`` on PATH as this checkout's."""
    work = tmp_path / "work"
    (work / "photos" / "trip").mkdir(parents=True)
    Image.fromarray(free_face("astronaut")).save(work / "photo.jpg", quality=95)
    Image.fromarray(free_face("hopper")).save(work / "photos" / "a.jpg", quality=95)
    Image.fromarray(free_face("astronaut", flip=True)).save(work / "photos" / "trip" / "b.png")
    demo_clip(work / "clip.mp4", frames=4)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "faceveil").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m faceveil "$@"\n')
    (bin_dir / "faceveil").chmod(0o755)
    return work, bin_dir


def test_readme_commands_run_as_written(workdir):
    import os

    work, bin_dir = workdir
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    ran = []
    for kind, what, language, code in readme_blocks():
        if kind != "needs":
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"README block failed ({what}):\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        ran.append(code)
    assert ran
    # what the commands promise
    original = _rgb(work / "photo.jpg")
    assert np.array_equal(_rgb(work / "photo.recovered.png"), original)
    assert not np.array_equal(_rgb(work / "photo.veiled.png"), original)
    assert np.array_equal(_rgb(work / "api.recovered.png"), original)
    assert np.array_equal(_rgb(work / "back" / "a.recovered.png"), _rgb(work / "photos" / "a.jpg"))
    assert np.array_equal(_rgb(work / "back" / "trip" / "b.recovered.png"), _rgb(work / "photos" / "trip" / "b.png"))
    assert (work / "veiled" / "manifest.json").is_file()
    assert (work / "clip.veiled.mkv").is_file() and (work / "clip.recovered.mkv").is_file()

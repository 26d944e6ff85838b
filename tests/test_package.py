"""The package's identity: a semantic version that CHANGELOG.md records, and --version naming the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import faceveil
from faceveil.cli import main
from faceveil.models import default_model, load_model

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_semantic_and_in_the_changelog():
    assert re.fullmatch(r"\d+\.\d+\.\d+", faceveil.__version__)
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released and released[0] == faceveil.__version__  # the newest release is this version
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()  # one place for the version
    assert (ROOT / "src" / "faceveil" / "py.typed").is_file() and (ROOT / "LICENSE").is_file()


def test_project_urls_are_complete():
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    assert all(re.fullmatch(r"https://[\w./-]+", url) for url in urls.values())


def test_version_names_the_default_model_and_its_weights(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    name = default_model()
    assert out.startswith(f"faceveil {faceveil.__version__}\n")
    assert f"default model: {name}, weights sha256 {load_model(name).weights_hash}" in out
    assert re.search(r"weights sha256 [0-9a-f]{64}\n", out) and "torch " in out

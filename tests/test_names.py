"""Issue 21, low 14: output names and manifests that name nobody (``--rename hash``, relative manifests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.cli import main
from faceveil.errors import HeaderError, UsageError
from faceveil.keys import Key
from faceveil.names import HASH_CHARS, Renamer, hashed_stem, open_name, rename_key, seal_name

FAST = ["--steps", "2", "--refine-iters", "1", "--aligned"]
PEOPLE = ["AJ_Cook/AJ_Cook_0001.png", "AJ_Cook/AJ_Cook_0002.png", "Abel_Pacheco/Abel_Pacheco_0001.png"]


def _people(root: Path) -> list[Path]:
    """An LFW-like folder: one subfolder per person, files named after them (32 px textured stand-ins)."""
    rng = np.random.default_rng(1)
    paths = []
    for rel in PEOPLE:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _records(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["files"]


def test_rename_key_is_its_own_subkey_and_refuses_a_key_without_a_secret():
    key = Key.generate()
    names = rename_key(key)
    assert len(names) == 32 and names != key.secret
    assert rename_key(Key(key.secret)) == names  # the same at every run

    class Recipient:  # a public-key recipient: it can anonymize, it holds no secret
        public = b"x" * 32

    with pytest.raises(UsageError, match="--rename hash needs a secret key"):
        rename_key(Recipient())


def test_hashed_names_hide_the_name_and_map_back_only_with_the_key():
    key, other = rename_key(Key.generate()), rename_key(Key.generate())
    stem = hashed_stem(key, "AJ_Cook/AJ_Cook_0001.jpg")
    assert re.fullmatch(f"[a-z2-7]{{{HASH_CHARS}}}", stem)
    assert stem == hashed_stem(key, Path("AJ_Cook") / "AJ_Cook_0001.jpg")  # POSIX separators
    assert stem != hashed_stem(other, "AJ_Cook/AJ_Cook_0001.jpg") != hashed_stem(key, "AJ_Cook/AJ_Cook_0002.jpg")
    token = seal_name(key, stem, "AJ_Cook/AJ_Cook_0001.jpg")
    assert "cook" not in token.lower()
    assert open_name(key, stem, token) == "AJ_Cook/AJ_Cook_0001.jpg"
    assert len(token) == len(seal_name(key, stem, "A/B.jpg"))  # padded: the length says little
    with pytest.raises(HeaderError, match="does not open"):
        open_name(other, stem, token)
    with pytest.raises(HeaderError):
        open_name(key, hashed_stem(key, "other.jpg"), token)  # bound to its hashed name


def test_a_collision_is_refused_not_lost():
    renamer = Renamer(Key.generate())
    stem = renamer.stem("a.jpg")
    assert renamer.stem("a.jpg") == stem
    renamer.taken[renamer.stem("b.jpg")] = "c.jpg"  # as if c.jpg had hashed to b.jpg's name
    with pytest.raises(UsageError, match="same name"):
        renamer.stem("b.jpg")


def test_rename_hash_names_nobody_maps_back_resumes_and_recovers_exactly(keyfile, pixel_model_dir, tmp_path, capsys):
    source, out, back = tmp_path / "lfw", tmp_path / "out", tmp_path / "back"
    photos = _people(source)
    (source / "Abel_Pacheco" / "Abel_Pacheco_0002.png").write_bytes(b"not an image")  # a failure names nobody either
    base = ["--key", str(keyfile), "--model", str(pixel_model_dir), "-o", str(out), "--recursive", *FAST]
    assert main(["anonymize", str(source), "--rename", "hash", *base]) == 2  # the broken file: exit 2, the rest done
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 4 and "manifest.json" in written  # flat: no per-person subfolders
    text = (out / "manifest.json").read_text()
    for part in ("AJ_Cook", "Abel_Pacheco", "Cook", "Pacheco", str(tmp_path)):
        assert part not in text and not any(part in name for name in written)
    records = _records(out)
    assert all(not Path(p).is_absolute() for r in records for p in r["outputs"])
    assert {r["status"] for r in records} == {"done", "failed"}

    # the key holder maps back: from the manifest (sealed names), and by recomputation
    capsys.readouterr()
    assert main(["names", str(out), "--key", str(keyfile)]) == 0
    lines = dict(line.split("\t")[:2] for line in capsys.readouterr().out.splitlines())
    assert sorted(lines.values()) == sorted([*PEOPLE, "Abel_Pacheco/Abel_Pacheco_0002.png"])
    for stem, rel in lines.items():
        assert stem == hashed_stem(rename_key(Key.load(keyfile)), rel)
    assert main(["names", str(source), "--inputs", "--recursive", "--key", str(keyfile)]) == 0
    assert dict(line.split("\t") for line in capsys.readouterr().out.splitlines()) == lines
    other = tmp_path / "other.key"
    assert main(["keygen", str(other)]) == 0
    assert main(["names", str(out), "--key", str(other)]) == 3  # another key opens no name

    # --resume finds the hashed outputs again; the manifest keeps one record per input
    before = {p.name: p.read_bytes() for p in out.glob("*.veiled.png")}
    capsys.readouterr()
    assert main(["anonymize", str(source), "--rename", "hash", "--resume", *base]) == 2
    assert "0 done, 3 skipped, 1 failed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("*.veiled.png")} == before
    assert len(_records(out)) == 4 and "Cook" not in (out / "manifest.json").read_text()

    # recovery of the renamed outputs is exact; its names are the hashed ones
    assert main(["recover", str(out), "-o", str(back), "--key", str(keyfile), "--model", str(pixel_model_dir)]) == 0
    for rel, photo in zip(PEOPLE, photos):
        stem = lines_by_rel(lines)[rel]
        assert np.array_equal(np.asarray(Image.open(back / f"{stem}.recovered.png")), np.asarray(Image.open(photo)))
    assert "Cook" not in (back / "manifest.json").read_text()


def lines_by_rel(lines: dict[str, str]) -> dict[str, str]:
    return {rel: stem for stem, rel in lines.items()}


def test_rename_hash_beside_the_inputs_and_refused_with_ray(keyfile, pixel_model_dir, tmp_path):
    photo = _people(tmp_path / "in")[0]
    assert main(["anonymize", str(photo), "--rename", "hash", "--key", str(keyfile), "--model", str(pixel_model_dir), *FAST]) == 0
    stem = hashed_stem(rename_key(Key.load(keyfile)), photo.name)  # a file given: its name is what is hashed
    assert (photo.parent / f"{stem}.veiled.png").is_file()
    assert main(["anonymize", str(photo), "--rename", "hash", "--ray", "--key", str(keyfile)]) == 2


def test_manifest_is_relative_and_an_old_absolute_one_still_merges_and_resumes(keyfile, pixel_model_dir, tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    photos = _people(source)
    base = ["--key", str(keyfile), "--model", str(pixel_model_dir), "-o", str(out), "--recursive", *FAST]
    assert main(["anonymize", str(source), *base]) == 0
    records = {r["input"]: r for r in _records(out)}
    assert sorted(records) == sorted(PEOPLE)  # relative to the input folder
    assert records[PEOPLE[0]]["outputs"] == ["AJ_Cook/AJ_Cook_0001.veiled.png"]  # relative to the manifest's folder
    assert str(tmp_path) not in (out / "manifest.json").read_text()

    # a manifest written by an earlier faceveil, with absolute paths
    old = [{"input": str(p.resolve()), "outputs": [str((out / rel).with_suffix("").resolve()) + ".veiled.png"],
            "status": "done", "faces": 1, "notes": []} for p, rel in zip(photos, PEOPLE)]
    old.append({"input": "/elsewhere/gone.png", "outputs": ["/elsewhere/gone.veiled.png"], "status": "done"})
    (out / "manifest.json").write_text(json.dumps({"faceveil": "0.3.0", "files": old}))
    capsys.readouterr()
    assert main(["anonymize", str(source), "--resume", *base]) == 0
    assert "0 done, 3 skipped, 0 failed" in capsys.readouterr().err
    records = {r["input"]: r for r in _records(out)}
    assert sorted(records) == sorted([*PEOPLE, "/elsewhere/gone.png"])  # merged, not doubled; the unknown record kept
    assert records[PEOPLE[0]]["status"] == "done" and records[PEOPLE[0]]["outputs"] == ["AJ_Cook/AJ_Cook_0001.veiled.png"]

"""End to end through the `faceveil` command, with a tiny pixel model saved as a diffusers folder."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.cli import main
from faceveil.faces.mask import default_outline
from faceveil.pipeline import face_geometry, whole_image_transform

STEPS = ["--steps", "8", "--aligned"]
FAST = ["--steps", "2", "--refine-iters", "1", "--aligned"]  # where exactness at 8 steps is not the point


def _read(path):
    return np.asarray(Image.open(path))


def test_keygen_mode_and_refuses_overwrite(keyfile, capsys):
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    before = keyfile.read_bytes()
    assert main(["keygen", str(keyfile)]) == 2
    assert keyfile.read_bytes() == before
    assert "already exists" in capsys.readouterr().err


def test_keygen_with_passphrase_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "pw")
    path = tmp_path / "p.key"
    assert main(["keygen", str(path), "--passphrase"]) == 0
    assert json.loads(path.read_text())["protection"].startswith("argon2id")


def test_anonymize_recover_round_trip(face_png, keyfile, pixel_model_dir, pixel_model, tmp_path):
    veiled = tmp_path / "face.veiled.png"
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "--model", str(pixel_model_dir), *STEPS]) == 0
    assert veiled.is_file()
    original, anonymized = _read(face_png), _read(veiled)
    # pixels outside the pasted region are bit-identical; inside, the face changed
    geometry = face_geometry(original.shape, whole_image_transform(32, 32, 32), default_outline(32), pixel_model)
    outside = ~geometry.region.full(original.shape)
    assert np.array_equal(original[outside], anonymized[outside])
    assert np.abs(original[~outside].astype(int) - anonymized[~outside]).mean() > 20

    assert main(["recover", str(veiled), "--key", str(keyfile), "--model", str(pixel_model_dir)]) == 0
    recovered = _read(tmp_path / "face.recovered.png")
    error = np.abs(recovered.astype(int) - original)
    # measured: max error 1 grey level (rounding of the feathered paste), PSNR above 60 dB
    assert error.max() <= 2
    assert 10 * np.log10(255**2 / max((error**2).mean(), 1e-12)) > 50


def test_pair_mixing_round_trip_through_the_cli(face_png, keyfile, pixel_model_dir, tmp_path):
    veiled, back = tmp_path / "v.png", tmp_path / "r.png"
    args = ["--key", str(keyfile), "--model", str(pixel_model_dir)]
    assert main(["anonymize", str(face_png), "-o", str(veiled), "--mixing", "pairs", *args, *STEPS]) == 0
    from faceveil.container import open_header, read_record
    from faceveil.keys import Key

    public, _ = open_header(Key.load(keyfile), read_record(veiled))
    assert public["settings"]["engine"]["mixing"] == "pairs"
    assert main(["recover", str(veiled), "-o", str(back), *args]) == 0
    assert np.array_equal(_read(back), _read(face_png))


def test_same_key_same_nonce_deterministic_and_keys_differ(face_png, pixel_model_dir, tmp_path):
    outs = []
    for i in range(2):
        key = tmp_path / f"k{i}.key"
        main(["keygen", str(key)])
        out = tmp_path / f"o{i}.png"
        assert main(["anonymize", str(face_png), "--key", str(key), "-o", str(out), "--model", str(pixel_model_dir), *STEPS]) == 0
        outs.append(_read(out).astype(int))
    assert np.abs(outs[0] - outs[1]).mean() > 5


def test_wrong_key_exits_3_and_writes_nothing(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    veiled = tmp_path / "v.png"
    main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(veiled), "--model", str(pixel_model_dir), *STEPS])
    other = tmp_path / "other.key"
    main(["keygen", str(other)])
    out = tmp_path / "r.png"
    assert main(["recover", str(veiled), "--key", str(other), "-o", str(out)]) == 3
    assert not out.exists()
    assert "wrong key" in capsys.readouterr().err


def test_tampered_and_missing_header_exit_3(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    veiled = tmp_path / "v.png"
    main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(veiled), "--model", str(pixel_model_dir), *STEPS])
    from faceveil.container import encode_png, read_record

    image = Image.open(veiled)
    record = read_record(veiled)
    record["public"]["settings"]["engine"]["steps"] = 9

    tampered = tmp_path / "t.png"
    tampered.write_bytes(encode_png(np.asarray(image), record))
    assert main(["recover", str(tampered), "--key", str(keyfile), "-o", str(tmp_path / "r1.png")]) == 3
    assert "tampered" in capsys.readouterr().err
    assert main(["recover", str(face_png), "--key", str(keyfile), "-o", str(tmp_path / "r2.png")]) == 3
    assert "no faceveil header" in capsys.readouterr().err
    assert not (tmp_path / "r1.png").exists() and not (tmp_path / "r2.png").exists()


def test_outputs_never_overwrite(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    before = face_png.read_bytes()
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(face_png), "--model", str(pixel_model_dir)]) == 2
    assert face_png.read_bytes() == before
    existing = tmp_path / "exists.png"
    existing.write_bytes(b"keep")
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(existing), "--model", str(pixel_model_dir)]) == 2
    assert existing.read_bytes() == b"keep"


def test_several_inputs_go_to_a_folder_and_bad_input_exits_2(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["anonymize", str(broken), str(face_png), "--key", str(keyfile), "-o", str(out), "--model", str(pixel_model_dir), *STEPS])
    assert code == 2
    assert (out / "face.veiled.png").is_file() and not (out / "broken.veiled.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["status"] for e in manifest["files"]} == {"done", "failed"}
    assert "broken.png" in capsys.readouterr().err


def test_unavailable_model_one_clear_line(face_png, keyfile, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "--model", "CompVis/ldm-celebahq-256"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hf download" in err and "Traceback" not in err
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "--model", str(tmp_path / "nothing")]) == 2


def test_models_lists_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ldm-celebahq-256" in out and "faceveil-faces-64" in out and "not available here" in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["anonymize"])
    assert exc.value.code == 2


# ---- issue 11: a person's first hour -------------------------------------------------
def _use_tiny_default(monkeypatch, folder):
    """Make the tiny test model the 'best embedded model' (the real default is the draft)."""
    import faceveil.models

    monkeypatch.setattr(faceveil.models, "default_model", lambda weights_dir=None: str(folder))


def test_anonymize_and_recover_without_model_use_the_embedded_default(face_png, keyfile, pixel_model_dir, tmp_path, monkeypatch):
    from faceveil.container import open_header, read_record
    from faceveil.keys import Key

    _use_tiny_default(monkeypatch, pixel_model_dir)
    veiled, back = tmp_path / "v.png", tmp_path / "r.png"
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(veiled), *FAST]) == 0
    public, _ = open_header(Key.load(keyfile), read_record(veiled))
    assert public["model"]["id"] == str(pixel_model_dir)  # the resolved name, never an alias
    assert main(["recover", str(veiled), "--key", str(keyfile), "-o", str(back)]) == 0
    assert np.array_equal(_read(back), _read(face_png))


def test_api_default_model_and_progress(face_png, pixel_model_dir, tmp_path, monkeypatch):
    import faceveil

    _use_tiny_default(monkeypatch, pixel_model_dir)
    key = faceveil.generate_key()
    counts = {"anonymize": 0, "recover": 0}

    def counter(name):
        def progress(n):
            counts[name] += n
        return progress

    settings = faceveil.Settings(faceveil.EngineSettings(steps=2, refine_iters=1))
    result = faceveil.anonymize(face_png, key, tmp_path / "v.png", aligned=True, settings=settings, progress=counter("anonymize"))
    recovered = faceveil.recover(result.outputs[0], key, tmp_path / "r.png", progress=counter("recover"))
    # every UNet evaluation counts once: at least one inversion and one sampling pass of 2 steps
    assert counts["anonymize"] == sum(f.unet_evals for f in result.faces) >= 4
    # recovery needs the model only where the residual beat the stored region; each evaluation counted
    assert counts["recover"] == sum(f.unet_evals for f in recovered.faces)
    assert np.array_equal(_read(tmp_path / "r.png"), _read(face_png))
    counts["recover"] = 0
    faceveil.recover(result.outputs[0], key, tmp_path / "m.png", use_residual=False, progress=counter("recover"))
    assert counts["recover"] >= 4  # without the residual the model always runs


class _Terminal:
    """A stand-in for a terminal's stderr."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def isatty(self):
        return True

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass


def test_progress_bar_on_a_terminal_and_quiet_otherwise(face_png, keyfile, pixel_model_dir, tmp_path, monkeypatch, capsys):
    import sys

    args = ["--key", str(keyfile), "--model", str(pixel_model_dir), *FAST]
    assert main(["anonymize", str(face_png), "-o", str(tmp_path / "a.png"), *args]) == 0
    assert "face-evals" not in capsys.readouterr().err  # not a terminal: no bar
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["anonymize", str(face_png), "-o", str(tmp_path / "b.png"), *args]) == 0
    shown = terminal.buffer.getvalue()
    assert "anonymize face.png" in shown and "face-evals" in shown
    terminal.buffer.truncate(0)
    assert main(["anonymize", str(face_png), "-o", str(tmp_path / "c.png"), "--quiet", *args]) == 0
    assert "face-evals" not in terminal.buffer.getvalue()


QUIET_SCRIPT = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="user-config %(name)s %(message)s")
logging.getLogger("myapp").setLevel(logging.DEBUG)
import numpy as np
import faceveil
from faceveil.faces import detect_faces
from faceveil.models import load_model
load_model(sys.argv[1])
detect_faces(np.full((96, 96, 3), 128, np.uint8))
logging.getLogger("myapp").debug("still mine")
assert logging.getLogger().level == logging.INFO and logging.getLogger("myapp").level == logging.DEBUG
print("ok")
"""


def test_api_silences_third_party_log_lines_only(pixel_model_dir, tmp_path):
    """``import faceveil`` + first use: no accelerate hint, no mediapipe W0000 lines; the user's logging intact."""
    import subprocess
    import sys

    script = tmp_path / "use_api.py"
    script.write_text(QUIET_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "DIFFUSERS_VERBOSITY")}
    run = subprocess.run([sys.executable, str(script), str(pixel_model_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    for noise in ("accelerate", "W0000", "Feedback manager", "XNNPACK", "absl::InitializeLog"):
        assert noise not in run.stderr, run.stderr
    assert "user-config myapp still mine" in run.stderr  # the user's own logger still logs


def test_recover_of_lossy_output_says_lossy_not_modified(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    args = ["--key", str(keyfile), "--model", str(pixel_model_dir)]
    for suffix, name in ((".jpg", "JPEG"), (".webp", "WebP")):
        veiled = tmp_path / f"v{suffix}"
        assert main(["anonymize", str(face_png), "-o", str(veiled), *args, *FAST]) == 0
        capsys.readouterr()
        assert main(["recover", str(veiled), "-o", str(tmp_path / f"r{suffix}.png"), *args]) == 0
        err = capsys.readouterr().err
        assert f"{name} is a lossy format" in err and "approximate" in err and "dB" in err and ".png" in err
        assert "modified" not in err


def test_recover_of_an_edited_png_says_modified(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    from faceveil.container import encode_png, read_record

    args = ["--key", str(keyfile), "--model", str(pixel_model_dir)]
    veiled = tmp_path / "v.png"
    assert main(["anonymize", str(face_png), "-o", str(veiled), *args, *FAST]) == 0
    pixels = _read(veiled).copy()
    pixels[0, 0] ^= 1  # one pixel edited, header kept
    edited = tmp_path / "edited.png"
    edited.write_bytes(encode_png(pixels, read_record(veiled)))
    capsys.readouterr()
    assert main(["recover", str(edited), "-o", str(tmp_path / "r.png"), *args]) == 0
    err = capsys.readouterr().err
    assert "modified after anonymization" in err and "lossy" not in err


def test_lossy_format_reads_the_bytes_not_the_name(tmp_path):
    from faceveil.api import lossy_format

    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    image.save(tmp_path / "a.jpg", quality=95)
    image.save(tmp_path / "lossy.webp", quality=95)
    image.save(tmp_path / "lossless.webp", lossless=True)
    image.save(tmp_path / "a.png")
    (tmp_path / "a.png").rename(tmp_path / "png-named.jpg")
    assert lossy_format(tmp_path / "a.jpg") == "JPEG"
    assert lossy_format(tmp_path / "lossy.webp") == "WebP"
    assert lossy_format(tmp_path / "lossless.webp") is None
    assert lossy_format(tmp_path / "png-named.jpg") is None
    assert lossy_format(tmp_path / "missing.jpg") is None


def _manifest(folder):
    return {Path(e["input"]).name: e for e in json.loads((folder / "manifest.json").read_text())["files"]}


def test_manifest_is_merged_and_never_marks_a_good_output_failed(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    second = tmp_path / "second.png"
    Image.fromarray(np.flipud(_read(face_png)).copy()).save(second)
    out = tmp_path / "out"
    base = ["--key", str(keyfile), "--model", str(pixel_model_dir), "-o", str(out), *FAST]
    assert main(["anonymize", str(face_png), str(second), *base]) == 0
    first = _manifest(out)
    assert {e["status"] for e in first.values()} == {"done"}
    outputs = {name: (out / Path(e["outputs"][0]).name).read_bytes() for name, e in first.items()}

    # again without --resume: refused (exit 2, said so), the records stay "done"
    capsys.readouterr()
    assert main(["anonymize", str(face_png), str(second), *base]) == 2
    err = capsys.readouterr().err
    assert "0 done, 0 skipped, 0 failed, 2 refused" in err and "--resume" in err
    assert _manifest(out) == first
    # again with --resume: skipped, the records stay "done"
    assert main(["anonymize", str(face_png), str(second), "--resume", *base]) == 0
    assert _manifest(out) == first
    # one input alone: the other's record is kept
    assert main(["anonymize", str(second), "--resume", *base]) == 0
    assert _manifest(out) == first

    # a new input that fails is added; the good ones keep their records
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["anonymize", str(broken), str(second), "--resume", *base]) == 2
    now = _manifest(out)
    assert now["broken.png"]["status"] == "failed" and now["face.png"] == first["face.png"] and now["second.png"] == first["second.png"]

    # --overwrite of an input that now fails: its earlier output is still there and good
    face_png.write_bytes(b"garbage now")
    assert main(["anonymize", str(face_png), "--overwrite", *base]) == 2
    now = _manifest(out)
    assert now["face.png"]["status"] == "done" and now["face.png"]["last_attempt"]["status"] == "failed"
    assert (out / "face.veiled.png").read_bytes() == outputs["face.png"]
    # a fresh success replaces the record (and its last_attempt)
    broken.write_bytes(second.read_bytes())
    assert main(["anonymize", str(broken), *base]) == 0
    assert _manifest(out)["broken.png"]["status"] == "done"
    assert len(_manifest(out)) == 3


def test_unreadable_manifest_is_kept_aside(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{ not json")
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "--model", str(pixel_model_dir), "-o", str(out), *FAST]) == 0
    assert (out / "manifest.json.unreadable-1").read_text() == "{ not json"
    assert _manifest(out)["face.png"]["status"] == "done"
    assert "unreadable" in capsys.readouterr().err


def test_merge_manifest_rules(tmp_path):
    from faceveil.batch import SKIPPED, merge_manifest

    kept = tmp_path / "a.veiled.png"
    kept.write_bytes(b"x")
    done = {"input": "/in/a.png", "outputs": [str(kept)], "status": "done"}
    gone = {"input": "/in/b.png", "outputs": [str(tmp_path / "gone.png")], "status": "done"}
    merged = {e["input"]: e for e in merge_manifest([done, gone], [
        {"input": "/in/a.png", "outputs": [str(kept)], "status": SKIPPED},
        {"input": "/in/b.png", "outputs": [], "status": "failed", "reason": "bad"},
        {"input": "/in/c.png", "outputs": ["/out/c.png"], "status": SKIPPED},
    ])}
    assert merged["/in/a.png"] == done  # skipped never replaces
    assert merged["/in/b.png"]["status"] == "failed"  # its output is gone: the failure is the truth
    assert merged["/in/c.png"]["status"] == SKIPPED  # a new record
    merged = {e["input"]: e for e in merge_manifest([done], [{"input": "/in/a.png", "outputs": [], "status": "failed", "reason": "r"}])}
    assert merged["/in/a.png"]["status"] == "done" and merged["/in/a.png"]["last_attempt"] == {"status": "failed", "reason": "r"}


def _options(parser, name=""):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}".strip())
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield name, parser._get_formatter(), action


@pytest.mark.parametrize("command", ["keygen", "anonymize", "recover", "models", "evaluate"])
def test_every_option_has_help_with_its_default(command):
    from faceveil.cli import build_parser

    checked = 0
    for name, formatter, action in _options(build_parser()):
        if name != command:
            continue
        text = formatter._get_help_string(action) if action.help else ""
        assert text, f"{name} {action.option_strings} has no help"
        assert "default" in text.lower() or "(required)" in text, f"{name} {action.option_strings}: {text!r}"
        checked += 1
    assert command == "models" or checked


def test_help_shows_defaults_and_key_help(capsys):
    from faceveil.engine import EngineSettings
    from faceveil.models import default_model

    with pytest.raises(SystemExit):
        main(["anonymize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the secret key file made by `faceveil keygen`" in out
    assert f"(default: {default_model()}" in out and f"DDIM steps (default: {EngineSettings().steps})" in out
    assert "--quiet" in out


def test_models_marks_the_embedded_default(capsys):
    from faceveil.models import default_model

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"{default_model()} (default): available (embedded, offline)" in out
    assert "ldm-celebahq-256 (default)" not in out


def test_readme_setup_installs_what_the_test_command_needs():
    """The README's install beside its test command installs pytest, and pytest's addopts do not hide its summary."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    setup = next(part for part in readme.split("\n## ") if "python -m pytest -q" in part)  # the Tests section
    extras = re.search(r'pip install [^\n]*-e "\.\[([^\]]*)\]"', setup)
    assert extras, setup
    project = tomllib.loads((root / "pyproject.toml").read_text())
    needed = {name for name in extras.group(1).split(",")}
    assert any(dep.startswith("pytest") for name in needed for dep in project["project"]["optional-dependencies"][name])
    assert "python -m pytest -q" in readme
    addopts = project["tool"]["pytest"]["ini_options"].get("addopts", "")
    assert "-q" not in addopts.split()


def test_key_info_prints_fingerprint_and_which_files_a_key_made(tmp_path, face_png, keyfile, pixel_model_dir, capsys):
    from faceveil.keys import Key

    out = tmp_path / "v.veiled.png"
    assert main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(out), "--model", str(pixel_model_dir), *FAST]) == 0
    other = tmp_path / "other.key"
    assert main(["keygen", str(other)]) == 0
    capsys.readouterr()
    assert main(["key", "info", str(keyfile), str(out)]) == 0
    text = capsys.readouterr().out
    assert Key.load(keyfile).fingerprint in text and "made with this key" in text and "NOT" not in text
    assert main(["key", "info", str(other), str(out)]) == 0
    assert "NOT made with this key" in capsys.readouterr().out
    assert main(["key", "info", str(keyfile), str(face_png)]) == 3  # no header: said, exit 3
    os.chmod(keyfile, 0o644)
    assert main(["key", "info", str(keyfile)]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "chmod 600" in captured.err and "too open" in captured.out


def test_noise_gain_round_trip_through_the_cli(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    veiled, back = tmp_path / "v.png", tmp_path / "r.png"
    args = ["--key", str(keyfile), "--model", str(pixel_model_dir)]
    assert main(["anonymize", str(face_png), "-o", str(veiled), "--noise-gain", "1.25", *args, *STEPS]) == 0
    from faceveil.container import open_header, read_record
    from faceveil.keys import Key

    public, _ = open_header(Key.load(keyfile), read_record(veiled))
    assert public["settings"]["engine"]["noise_gain"] == 1.25
    assert main(["recover", str(veiled), "-o", str(back), *args]) == 0
    assert np.array_equal(_read(back), _read(face_png))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: exit 2 with a message
        main(["anonymize", str(face_png), "-o", str(tmp_path / "x.png"), "--noise-gain", "3", *args, *STEPS])
    assert stop.value.code == 2 and "noise_gain must be between" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_model_s_recommended_noise_gain_is_the_default(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    """A model folder's faceveil_train.json ``noise_gain`` is used when --noise-gain is not given;
    the header records it, so recovery needs nothing but the key. Used at another step count than
    the one it was measured at, it comes with a warning; a gain the user chose does not."""
    import json
    import shutil

    from faceveil.container import open_header, read_record
    from faceveil.keys import Key

    folder = tmp_path / "model"
    shutil.copytree(pixel_model_dir, folder)
    (folder / "faceveil_train.json").write_text(json.dumps({"noise_gain": 1.25}))
    args = ["--key", str(keyfile), "--model", str(folder)]

    def gain(path):
        return open_header(Key.load(keyfile), read_record(path))[0]["settings"]["engine"].get("noise_gain", 1.0)

    veiled, given, back = tmp_path / "v.png", tmp_path / "g.png", tmp_path / "r.png"
    assert main(["anonymize", str(face_png), "-o", str(veiled), *args, *STEPS]) == 0
    assert "noise gain 1.25 was measured at 20 steps; at 8 the inverted noise is smaller" in capsys.readouterr().err
    assert main(["anonymize", str(face_png), "-o", str(given), "--noise-gain", "1", *args, *STEPS]) == 0
    assert "was measured at" not in capsys.readouterr().err
    assert gain(veiled) == 1.25 and gain(given) == 1.0
    assert main(["recover", str(veiled), "-o", str(back), *args]) == 0
    assert np.array_equal(_read(back), _read(face_png))

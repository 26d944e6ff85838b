"""End to end through the `faceveil` command, with a tiny pixel model saved as a diffusers folder."""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from faceveil.cli import main
from faceveil.faces.mask import default_outline
from faceveil.pipeline import face_geometry, whole_image_transform

STEPS = ["--steps", "8", "--aligned"]


@pytest.fixture()
def face_png(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    base = np.stack([yy * 6, xx * 6, (yy + xx) * 3], axis=2).astype(np.float64)
    image = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "face.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture()
def keyfile(tmp_path):
    path = tmp_path / "secret.key"
    assert main(["keygen", str(path)]) == 0
    return path


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

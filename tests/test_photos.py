"""Whole photos: detection, several faces, exact recovery with the residual, formats, batches."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from faceveil.api import anonymize, recover
from faceveil.cli import main
from faceveil.engine import EngineSettings
from faceveil.evaluate.metrics import psnr
from faceveil.keys import Key
from faceveil.container import open_header, read_record
from faceveil.faces.align import AlignTransform
from faceveil.pipeline import Settings, face_geometry

from conftest import lfw_face

FAST = Settings(EngineSettings(steps=4, refine_iters=4))


def _lfw(name):
    return lfw_face(name)  # LFW's 150 px photo from ../shared, or a free stand-in framed alike


def _regions(veiled_path, key, model, shape):
    public, private = open_header(key, read_record(veiled_path))
    union = np.zeros(shape[:2], bool)
    for face, priv in zip(public["faces"], private["faces"]):
        transform = AlignTransform.from_json(face["transform"])
        outline = np.frombuffer(priv["outline"], dtype="<f4").reshape(-1, 2)
        union |= face_geometry(shape, transform, outline, model).region.full(shape)
    return len(public["faces"]), union


def test_group_photo_face_by_face_exact_recovery(group_photo, pixel_model, tmp_path):
    path, original = group_photo
    key = Key.generate()
    # signs: the model-only bar below is about the residual; the default pairs mixing moves inversion error to
    # random coordinates, which costs model-only reconstructions about 1 dB with the embedded model (README, Security)
    signs = Settings(replace(FAST.engine, mixing="signs"))
    result = anonymize(path, key, tmp_path / "v.png", model=pixel_model, settings=signs)
    veiled = np.asarray(Image.open(tmp_path / "v.png"))
    n_faces, union = _regions(tmp_path / "v.png", key, pixel_model, original.shape)
    assert n_faces == len(result.faces) >= 3
    assert np.array_equal(veiled[~union], original[~union])  # outside every face region: bit-identical
    for third in range(3):  # each of the three people was changed
        cols = slice(150 * third, 150 * (third + 1))
        assert np.abs(veiled[:, cols].astype(int) - original[:, cols]).max() > 30

    recover(tmp_path / "v.png", key, tmp_path / "r.png", model=pixel_model)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), original)  # exact, with the residual

    recover(tmp_path / "v.png", key, tmp_path / "m.png", model=pixel_model, use_residual=False)
    model_only = np.asarray(Image.open(tmp_path / "m.png"))
    # measured over 24 files (fresh file keys and nonces, which the result depends on; the user key alone does not
    # fix them): 21.5-22.0 dB against the veiled image's 17.9-18.6 (a 32 px model crop cannot hold a 60 px face),
    # a margin of 3.1 to 4.0 dB, mean 3.45; one CI run drew 2.9
    assert psnr(model_only, original) > psnr(veiled, original) + 2.5


def test_exif_rotated_jpeg_stays_upright_and_recovers(pixel_model, tmp_path):
    upright = _lfw("Angela_Bassett")
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270)  # orientation 6 shows it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    seen = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    key = Key.generate()
    result = anonymize(path, key, tmp_path / "v.png", model=pixel_model, settings=FAST)
    assert any("EXIF" in n for n in result.notes)
    assert np.asarray(Image.open(tmp_path / "v.png")).shape == seen.shape
    recover(tmp_path / "v.png", key, tmp_path / "r.png", model=pixel_model)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), seen)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_gray_and_alpha_inputs_keep_their_kind(mode, pixel_model, tmp_path):
    image = Image.fromarray(_lfw("Ann_Veneman"))
    image = image.convert("L") if mode == "L" else image.convert("RGBA")
    if mode == "RGBA":
        alpha = np.full(image.size[::-1], 255, np.uint8)
        alpha[:10] = 7
        image.putalpha(Image.fromarray(alpha))
    path = tmp_path / f"in_{mode}.png"
    image.save(path)
    key = Key.generate()
    anonymize(path, key, tmp_path / "v.png", model=pixel_model, settings=FAST)
    veiled = Image.open(tmp_path / "v.png")
    assert veiled.mode == mode
    recover(tmp_path / "v.png", key, tmp_path / "r.png", model=pixel_model)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.asarray(image))


def test_jpeg_output_gets_a_sidecar_and_recover_finds_it(pixel_model, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(_lfw("Abel_Pacheco")).save(path)
    key = Key.generate()
    result = anonymize(path, key, tmp_path / "v.jpg", model=pixel_model, settings=FAST)
    assert [p.name for p in result.outputs] == ["v.jpg", "v.jpg.veil"]
    assert any("sidecar" in n for n in result.notes)
    back = recover(tmp_path / "v.jpg", key, tmp_path / "r.png", model=pixel_model)
    assert back.outputs[0].is_file()


def test_no_face_exit_4_and_allow_no_face(pixel_model_dir, tmp_path, capsys):
    key = tmp_path / "k.key"
    main(["keygen", str(key)])
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(flat)
    assert main(["anonymize", str(flat), "--key", str(key), "--model", str(pixel_model_dir)]) == 4
    assert not (tmp_path / "flat.veiled.png").exists()
    assert "no face" in capsys.readouterr().err
    assert main(["anonymize", str(flat), "--key", str(key), "--model", str(pixel_model_dir), "--allow-no-face"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "flat.veiled.png")), np.asarray(Image.open(flat)))
    assert main(["recover", str(tmp_path / "flat.veiled.png"), "--key", str(key), "--model", str(pixel_model_dir)]) == 0


def test_pixel_limit_and_truncated_input_exit_2(pixel_model_dir, tmp_path, capsys):
    key = tmp_path / "k.key"
    main(["keygen", str(key)])
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(big)
    assert main(["anonymize", str(big), "--key", str(key), "--model", str(pixel_model_dir), "--max-pixels", "5000"]) == 2
    assert "--max-pixels" in capsys.readouterr().err
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(big.read_bytes()[:60])
    assert main(["anonymize", str(truncated), "--key", str(key), "--model", str(pixel_model_dir)]) == 2
    assert list(tmp_path.glob("*.veiled.*")) == []


def test_batch_folder_with_a_corrupt_file_resume_and_manifest(pixel_model_dir, tmp_path, capsys):
    key = tmp_path / "k.key"
    main(["keygen", str(key)])
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_lfw("Abel_Pacheco")).save(folder / "a.jpg")
    Image.fromarray(_lfw("Ann_Veneman")).save(folder / "sub" / "b.png")
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    args = ["anonymize", str(folder), "--key", str(key), "--model", str(pixel_model_dir), "-o", str(out), "--steps", "3", "--recursive"]
    assert main(args) == 2  # one bad file: reported in the exit code, the others done
    err = capsys.readouterr().err
    assert "2 done, 0 skipped, 1 failed" in err and "c.jpg" in err
    assert (out / "a.veiled.png").is_file() and (out / "sub" / "b.veiled.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(e["status"] for e in manifest["files"]) == ["done", "done", "failed"]
    before = (out / "a.veiled.png").read_bytes()
    assert main(args + ["--resume"]) == 2
    assert "0 done, 2 skipped, 1 failed" in capsys.readouterr().err
    assert (out / "a.veiled.png").read_bytes() == before
    # the batch recovers the same way
    assert main(["recover", str(out), "--key", str(key), "-o", str(tmp_path / "rec"), "--recursive"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "rec" / "sub" / "b.recovered.png")), _lfw("Ann_Veneman"))

"""Tests of faceveil.imageio.read_image / to_output_array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.errors import UsageError
from faceveil.imageio import MAX_PIXELS_OPTION, read_image, to_output_array

from conftest import SHARED, lfw_face_file  # ../shared, or $FACEVEIL_SHARED
LFW_IMAGE = SHARED / "data" / "lfw" / "images" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=2).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(im.rgb, arr)
    assert im.alpha is None and im.mode == "RGB" and im.format == "PNG"
    assert not im.exif_transposed and im.shape == (40, 60)
    out = to_output_array(im, im.rgb)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_grayscale_is_rgb_inside_and_gray_outside(tmp_path):
    gray = _gradient()[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    im = read_image(tmp_path / "g.png")
    assert im.rgb.shape == (40, 60, 3) and im.mode == "L" and im.is_gray
    np.testing.assert_array_equal(im.rgb[:, :, 1], gray)
    np.testing.assert_array_equal(to_output_array(im, im.rgb), gray)  # exact for gray
    coloured = np.zeros_like(im.rgb)
    coloured[..., 0] = 255
    out = to_output_array(im, coloured)
    assert out.shape == (40, 60) and out.dtype == np.uint8 and int(out[0, 0]) == 76


def test_rgba_keeps_alpha(tmp_path):
    arr = _gradient()
    alpha = np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))
    Image.fromarray(np.dstack([arr, alpha]), "RGBA").save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(im.rgb, arr)
    np.testing.assert_array_equal(im.alpha, alpha)
    out = to_output_array(im, im.rgb)
    assert out.shape == (40, 60, 4)
    np.testing.assert_array_equal(out[:, :, 3], alpha)


def test_gray_alpha_and_palette(tmp_path):
    la = np.dstack([_gradient()[:, :, 0], np.full((40, 60), 200, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    im = read_image(tmp_path / "la.png")
    assert im.alpha is not None and im.is_gray
    np.testing.assert_array_equal(to_output_array(im, im.rgb), la)

    pal = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    im = read_image(tmp_path / "p.png")
    assert im.mode == "P" and im.rgb.shape == (40, 60, 3) and im.alpha is None
    np.testing.assert_array_equal(im.rgb, np.asarray(pal.convert("RGB")))

    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    im = read_image(tmp_path / "pt.png")
    assert im.alpha is not None and (im.alpha == 0).any() and to_output_array(im, im.rgb).shape[2] == 4


def test_16_bit_grayscale(tmp_path):
    g16 = (np.arange(40 * 60, dtype=np.uint32).reshape(40, 60) * 27).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    im = read_image(tmp_path / "g16.png", exact_only=False)  # refused by default (test_hostile): not exact
    assert im.is_gray and im.rgb.dtype == np.uint8
    np.testing.assert_array_equal(im.rgb[:, :, 0], np.rint(g16 / 257.0).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(_gradient()).convert("CMYK").save(tmp_path / "c.jpg")
    im = read_image(tmp_path / "c.jpg", exact_only=False)  # refused by default (test_hostile): not exact
    assert im.mode == "CMYK" and im.rgb.shape == (40, 60, 3)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # stored: left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    im = read_image(tmp_path / "r.jpg")
    assert im.exif_transposed
    assert im.rgb.shape == (40, 20, 3)  # portrait as a viewer shows it
    assert im.rgb[5, 10, 0] > 200 and im.rgb[5, 10, 2] < 60  # top is red
    assert im.rgb[35, 10, 2] > 200 and im.rgb[35, 10, 0] < 60  # bottom is blue

    Image.fromarray(arr).save(tmp_path / "plain.jpg", quality=95)
    assert not read_image(tmp_path / "plain.jpg").exif_transposed


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(UsageError, match="directory"):
        read_image(tmp_path)


def test_non_image_file(tmp_path):
    (tmp_path / "x.jpg").write_text("this is not a picture\n")
    with pytest.raises(UsageError, match="not an image") as err:
        read_image(tmp_path / "x.jpg")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_image(tmp_path, fmt):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(tmp_path / f"t.{fmt}")
    data = (tmp_path / f"t.{fmt}").read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="corrupt or truncated") as err:
        read_image(tmp_path / f"cut.{fmt}")
    assert "\n" not in str(err.value)


def test_pixel_limit(tmp_path):
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(UsageError, match=MAX_PIXELS_OPTION):
        read_image(tmp_path / "big.png", max_pixels=5_000)
    assert read_image(tmp_path / "big.png", max_pixels=10_000).shape == (100, 100)
    assert read_image(tmp_path / "big.png", max_pixels=None).shape == (100, 100)


def test_unsupported_mode(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(UsageError, match="unsupported image mode"):
        read_image(tmp_path / "f.tiff")


def test_output_size_mismatch(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    with pytest.raises(UsageError):
        to_output_array(im, np.zeros((10, 10, 3), np.uint8))


def test_real_jpeg(tmp_path):
    im = read_image(LFW_IMAGE if LFW_IMAGE.is_file() else lfw_face_file("Abel_Pacheco", tmp_path))
    assert im.format == "JPEG" and im.mode == "RGB"
    assert im.rgb.dtype == np.uint8 and im.rgb.ndim == 3 and im.rgb.shape[2] == 3
    assert not im.rgb.flags.writeable  # shared, read-only result

"""The input's metadata (EXIF with GPS and thumbnail, XMP, ICC, comment) never reaches the veiled file; recovery restores it."""

import io

import numpy as np
import piexif
import pytest
from PIL import Image

from faceveil import api
from faceveil.engine import EngineSettings
from faceveil.keys import Key
from faceveil.pipeline import Settings

GPS = {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2426, 100))}
SERIAL = b"SN-0042-secret"
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/>Photographer Jane Doe</x:xmpmeta>'


def _thumbnail() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _photo(path, orientation=1):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"Camera", piexif.ImageIFD.Orientation: orientation},
        "Exif": {piexif.ExifIFD.BodySerialNumber: SERIAL},
        "GPS": GPS, "1st": {}, "thumbnail": _thumbnail(),
    })
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif, xmp=XMP, comment=b"taken at home")
    return path


def _settings():
    return Settings(EngineSettings(steps=4))


@pytest.mark.parametrize("orientation", [1, 6])
def test_metadata_is_sealed_not_published_and_restored(tmp_path, pixel_model, orientation):
    source = _photo(tmp_path / "photo.jpg", orientation)
    key = Key.generate()
    result = api.anonymize(source, key, model=pixel_model, settings=_settings(), aligned=True)
    veiled = result.outputs[0]
    assert any("metadata" in note for note in result.notes)
    raw = veiled.read_bytes()
    with Image.open(source) as original:
        thumbnail = piexif.load(original.info["exif"])["thumbnail"]
    assert len(thumbnail) > 100
    for secret in (SERIAL, b"Jane Doe", b"taken at home", thumbnail, b"Exif\x00\x00"):
        assert secret not in raw
    with Image.open(veiled) as image:
        assert not set(image.info) & {"exif", "xmp", "icc_profile", "comment", "XML:com.adobe.xmp"}
        assert len(image.getexif()) == 0

    recovered = api.recover(veiled, key, model=pixel_model).outputs[0]
    with Image.open(source) as original, Image.open(recovered) as back:
        exif = piexif.load(back.info["exif"])
        assert exif["GPS"] == piexif.load(original.info["exif"])["GPS"]
        assert exif["thumbnail"] == thumbnail
        assert exif["Exif"][piexif.ExifIFD.BodySerialNumber] == SERIAL
        assert exif["0th"][piexif.ImageIFD.Orientation] == 1  # the pixels are stored upright
        assert "Jane Doe" in back.info["XML:com.adobe.xmp"]
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(original).convert("RGB"))
        assert np.array_equal(np.asarray(back.convert("RGB")), upright)  # and shown the same way


def test_a_photo_without_metadata_gets_no_note(tmp_path, pixel_model):
    source = tmp_path / "plain.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(source)
    result = api.anonymize(source, Key.generate(), model=pixel_model, settings=_settings(), aligned=True)
    assert not any("metadata" in note for note in result.notes)

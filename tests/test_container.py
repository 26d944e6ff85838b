import json

import numpy as np
import pytest

from faceveil.container import (
    decode_array, encode_array, encode_png, open_header, read_record, seal_header, write_veiled,
)
from faceveil.errors import HeaderError, WrongKeyError
from faceveil.keys import Key

PUBLIC = {"model": {"id": "m"}, "faces": [{"nonce": "00"}]}


def test_array_codec_round_trip():
    for a in (np.arange(12, dtype=np.float16).reshape(3, 4), np.eye(5, dtype=np.uint8)):
        b = decode_array(encode_array(a))
        assert b.dtype == a.dtype and np.array_equal(a, b)


def test_seal_open_round_trip():
    key = Key.generate()
    record = seal_header(key, PUBLIC, {"secret": [1, 2, 3]})
    assert "secret" not in json.dumps(record)
    public, private = open_header(key, record)
    assert public == PUBLIC and private == {"secret": [1, 2, 3]}


def test_wrong_key_is_named_as_such():
    record = seal_header(Key.generate(), PUBLIC, {})
    with pytest.raises(WrongKeyError, match="wrong key"):
        open_header(Key.generate(), record)


@pytest.mark.parametrize("field", ["public", "sealed", "seal_nonce", "file_nonce"])
def test_tampering_is_detected(field):
    key = Key.generate()
    record = seal_header(key, PUBLIC, {"x": 1})
    if field == "public":
        record["public"]["model"]["id"] = "other"
    else:
        raw = bytearray(__import__("base64").b64decode(record[field]))
        raw[0] ^= 1
        record[field] = __import__("base64").b64encode(bytes(raw)).decode()
    with pytest.raises(HeaderError):  # WrongKeyError is a HeaderError too (file_nonce feeds the check tag)
        open_header(key, record)


def test_unknown_version_and_garbage():
    key = Key.generate()
    record = seal_header(key, PUBLIC, {})
    record["faceveil"] = 99
    with pytest.raises(HeaderError, match="version"):
        open_header(key, record)
    with pytest.raises(HeaderError):
        open_header(key, {"faceveil": 1})


def test_png_and_sidecar_carry_the_record(tmp_path):
    key = Key.generate()
    record = seal_header(key, PUBLIC, {"x": 1})
    image = np.zeros((8, 8, 3), np.uint8)
    png = write_veiled(tmp_path / "a.png", image, record)
    assert len(png) == 1 and read_record(png[0]) == record
    jpg = write_veiled(tmp_path / "a.jpg", image, record)
    assert [p.name for p in jpg] == ["a.jpg", "a.jpg.veil.json"] and read_record(jpg[0]) == record


def test_missing_header(tmp_path):
    path = tmp_path / "plain.png"
    path.write_bytes(encode_png(np.zeros((4, 4, 3), np.uint8), None))
    with pytest.raises(HeaderError, match="no faceveil header"):
        read_record(path)

import base64
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from faceveil.container import (
    MAGIC, PNG_CHUNK, decode_array, encode_array, encode_png, header_bound, open_header, pack_private, pack_record,
    read_record, seal_header, unpack_private, write_veiled,
)
from faceveil.errors import HeaderError, WrongKeyError
from faceveil.keys import Key

def public_part(height: int = 8, width: int = 8) -> dict:
    """A valid public part for a ``height`` x ``width`` image with one face."""
    return {
        "model": {"id": "m", "weights_sha256": "0" * 64, "kind": "pixel"},
        "settings": {"engine": {"steps": 2, "refine_iters": 0, "refine_tol": 1e-5, "context": "noised", "mixing": "pairs"},
                     "decoder_iters": 0, "hint": False, "colour": True, "grain": True, "residual_codec": "webp-lossless"},
        "image": {"height": height, "width": width, "pixels_sha256": "0" * 64},
        "faces": [{"nonce": "00" * 16, "transform": {"matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "size": 8}}],
    }


PUBLIC = public_part()


def test_array_codec_round_trip():
    for a in (np.arange(12, dtype=np.float16).reshape(3, 4), np.eye(5, dtype=np.uint8)):
        b = decode_array(encode_array(a))
        assert b.dtype == a.dtype and np.array_equal(a, b)
    with pytest.raises(ValueError):  # a shape that does not match the data is refused
        decode_array({**encode_array(np.eye(5, dtype=np.uint8)), "shape": [1000, 1000]})


def test_private_part_keeps_bytes_raw():
    tree = {"faces": [{"residual": b"\x00\xff" * 100, "colour": [1.5, 2.0]}, {"hint": b""}], "n": 3}
    packed = pack_private(tree)
    assert unpack_private(packed) == tree
    assert len(packed) < 200 + 120  # raw, not base64 (which alone would be 268)
    with pytest.raises(ValueError):
        unpack_private(packed[:-10])


def test_seal_open_round_trip():
    key = Key.generate()
    record = seal_header(key, PUBLIC, {"secret": [1, 2, 3], "blob": b"abc"})
    assert b"secret" not in pack_record(record)
    public, private = open_header(key, record)
    assert public == PUBLIC and private == {"secret": [1, 2, 3], "blob": b"abc"}


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
    elif field == "sealed":
        raw = bytearray(record["sealed"])
        raw[0] ^= 1
        record["sealed"] = bytes(raw)
    else:
        raw = bytearray(base64.b64decode(record[field]))
        raw[0] ^= 1
        record[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(HeaderError):  # WrongKeyError is a HeaderError too (file_nonce feeds the check tag)
        open_header(key, record)


def test_unknown_version_and_garbage():
    key = Key.generate()
    record = seal_header(key, PUBLIC, {})
    record["faceveil"] = 99
    with pytest.raises(HeaderError, match="version"):
        open_header(key, record)
    with pytest.raises(HeaderError):
        open_header(key, {"faceveil": 2})


def test_png_and_sidecar_carry_the_record(tmp_path):
    key = Key.generate()
    record = seal_header(key, PUBLIC, {"x": 1})
    image = np.zeros((8, 8, 3), np.uint8)
    png = write_veiled(tmp_path / "a.png", image, record)
    assert len(png) == 1 and read_record(png[0]) == record
    jpg = write_veiled(tmp_path / "a.jpg", image, record)
    assert [p.name for p in jpg] == ["a.jpg", "a.jpg.veil"] and read_record(jpg[0]) == record


def test_missing_header(tmp_path):
    path = tmp_path / "plain.png"
    path.write_bytes(encode_png(np.zeros((4, 4, 3), np.uint8), None))
    with pytest.raises(HeaderError, match="no faceveil header"):
        read_record(path)


def test_large_header_reads_in_any_order_without_raising_pillow_limits(tmp_path):
    """A multi-megabyte header (a big face's residual) opens with plain Pillow and with
    read_record, first or after any other file; Pillow's text limits are never touched."""
    limits = (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY)
    key = Key.generate()
    image = np.zeros((1024, 1024, 3), np.uint8)
    big = seal_header(key, public_part(1024, 1024), {"residual": np.random.default_rng(0).bytes(3_000_000)})
    small = seal_header(key, public_part(8, 8), {"x": 1})
    (tmp_path / "big.png").write_bytes(encode_png(image, big))
    (tmp_path / "small.png").write_bytes(encode_png(image[:8, :8], small))
    with Image.open(tmp_path / "big.png") as opened:
        opened.load()  # no "Decompressed data too large"
    for order in (("big", "small"), ("small", "big")):
        for name in order:
            record = read_record(tmp_path / f"{name}.png")
            open_header(key, record)
    assert (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY) == limits


def test_header_above_the_image_bound_is_refused_before_reading(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    record = seal_header(Key.generate(), public_part(4, 4), {"residual": b"\0" * (header_bound(4, 4) + 10)})
    path = tmp_path / "bomb.png"
    path.write_bytes(encode_png(image, record))
    with pytest.raises(HeaderError, match="more than this image can need"):
        read_record(path)


def test_format_1_files_get_a_clear_message(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_itxt("faceveil", '{"faceveil": 1}', zip=True)
    path = tmp_path / "old.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, pnginfo=info)
    with pytest.raises(HeaderError, match="faceveil 0.1"):
        read_record(path)


def test_corrupt_chunk_is_refused(tmp_path):
    record = seal_header(Key.generate(), public_part(4, 4), {"x": 1})
    data = bytearray(encode_png(np.zeros((4, 4, 3), np.uint8), record))
    at = data.index(PNG_CHUNK) + 4 + len(MAGIC) + 10
    data[at] ^= 0xFF  # inside the chunk: its CRC no longer matches
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match="corrupt"):
        read_record(path)


@pytest.mark.parametrize("change, match", [
    (lambda p: p["faces"].extend([p["faces"][0]] * 5000), "at most"),
    (lambda p: p["faces"][0]["transform"]["matrix"][0].__setitem__(0, float("nan")), "finite"),
    (lambda p: p["faces"][0]["transform"]["matrix"][0].__setitem__(2, 1e300), "finite"),
    (lambda p: p["faces"][0]["transform"].__setitem__("size", 10**9), "size"),
    (lambda p: p["faces"][0].__setitem__("nonce", "zz"), "nonce"),
    (lambda p: p["settings"]["engine"].__setitem__("steps", 10**12), "steps"),
    (lambda p: p["settings"]["engine"].__setitem__("steps", True), "steps"),
    (lambda p: p["settings"].__setitem__("hint", "yes"), "hint"),
    (lambda p: p["image"].__setitem__("width", 9), "9x8 image but the image is 8x8"),
    (lambda p: p.__setitem__("extra", 1), "unknown fields"),
    (lambda p: p["model"].pop("kind"), "lacks kind"),
])
def test_public_fields_are_validated_before_use(tmp_path, change, match):
    """A header whose public part is wrong in type, range or size is refused by name, before the key is tried."""
    bad = public_part()
    change(bad)
    record = seal_header(Key.generate(), bad, {"x": 1})
    path = tmp_path / "bad.png"
    path.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8), record))
    with pytest.raises(HeaderError, match=match):
        read_record(path)


def test_deeply_nested_public_json_is_refused(tmp_path):
    record = seal_header(Key.generate(), public_part(), {"x": 1})
    head = b'{"faceveil": 2, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    data = bytearray(pack_record(record))
    start = len(MAGIC) + 5
    (old_len,) = struct.unpack_from(">I", data, len(MAGIC) + 1)
    data[len(MAGIC) + 1 : start] = struct.pack(">I", len(head))
    data[start : start + old_len] = head
    path = tmp_path / "deep.png"
    info = PngImagePlugin.PngInfo()
    info.add(PNG_CHUNK, bytes(data))
    Image.fromarray(np.zeros((400, 400, 3), np.uint8)).save(path, pnginfo=info)
    with pytest.raises(HeaderError):
        read_record(path)


def test_sidecar_is_bounded_by_its_image(tmp_path):
    record = seal_header(Key.generate(), public_part(4, 4), {"residual": b"\0" * (header_bound(4, 4) + 10)})
    written = write_veiled(tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint8), record)
    assert written[1].stat().st_size > header_bound(4, 4)
    with pytest.raises(HeaderError, match="larger than any faceveil header"):
        read_record(written[0])

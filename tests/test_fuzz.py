"""Property-based fuzzing of everything faceveil reads from strangers: veiled files, sidecars, images, key files.

Every generated case must end in a result or in one of faceveil's own errors (the CLI's
documented exit codes 2, 3 or 4), never in another exception, and must write nothing when
it fails. ``FACEVEIL_FUZZ_EXAMPLES`` sets the cases per test (default 260: over 1,000 in
all); ``benchmarks/fuzz_benchmark.py`` runs a long campaign and reports peak memory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import assume as hypothesis_assume
from hypothesis import strategies as st
from PIL import Image

from faceveil import api
from faceveil.container import MAGIC, PNG_CHUNK, pack_record, seal_header, unpack_record
from faceveil.engine import EngineSettings
from faceveil.errors import FaceveilError, KeyFileError
from faceveil.keys import Key
from faceveil.pipeline import Settings
from faceveil.testing import png_chunk, png_chunks

EXAMPLES = int(os.environ.get("FACEVEIL_FUZZ_EXAMPLES", "260"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXIT_CODES = {2, 3, 4}


@pytest.fixture(scope="module")
def corpus(pixel_model, tmp_path_factory):
    """One key, veiled files made with it (PNG with its chunk, JPEG with its sidecar), a key file."""
    folder = tmp_path_factory.mktemp("fuzz")
    key = Key.generate()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "face.png")
    options = dict(model=pixel_model, settings=Settings(EngineSettings(steps=2)), aligned=True)
    png = api.anonymize(folder / "face.png", key, folder / "face.veiled.png", **options).outputs[0]
    jpg, sidecar = api.anonymize(folder / "face.png", key, folder / "face.veiled.jpg", **options).outputs
    key_path = key.save(folder / "k.key")
    return {"key": key, "model": pixel_model, "png": png.read_bytes(), "jpg": jpg.read_bytes(),
            "sidecar": sidecar.read_bytes(), "keyfile": key_path.read_bytes()}


class Scratch:
    """A fresh folder per case, removed after it; checks that a failed call wrote nothing."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="faceveil-fuzz-"))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _expect_clean(call, folder: Path, before: set[str]) -> None:
    """``call()`` returns or raises a FaceveilError with a documented exit code; on error nothing new exists."""
    try:
        call()
    except FaceveilError as exc:
        assert exc.exit_code in EXIT_CODES, (type(exc).__name__, exc)
        assert str(exc) and "\n" not in str(exc)
        assert {p.name for p in folder.iterdir()} == before, "a failed call left files behind"


# ---- PNG mutations ------------------------------------------------------------------
json_leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
               | st.sampled_from([10**300, -1, 0, 2**31, 2**63, "", "0" * 64, "webp-lossless", "pixel"]))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=16)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replace(node, path, value):
    if not path:
        return value
    node = json.loads(json.dumps(node))
    target = node
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return node


@st.composite
def bit_flips(draw, data: bytes, most: int) -> bytes:
    """``data`` with 1 to ``most`` bits flipped at drawn positions."""
    raw = bytearray(data)
    for at in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=most)):
        raw[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(raw)


@st.composite
def mutated_png(draw, png: bytes, key: Key) -> bytes:
    chunks = png_chunks(png)
    kind = draw(st.sampled_from(["flip", "truncate", "reorder", "duplicate", "drop", "length", "hostile-json", "garbage"]))
    if kind == "flip":
        return draw(bit_flips(png, 8))
    if kind == "truncate":
        return png[: draw(st.integers(0, len(png) - 1))]
    if kind in ("reorder", "duplicate", "drop"):
        i = draw(st.integers(0, len(chunks) - 1))
        j = draw(st.integers(0, len(chunks) - 1))
        if kind == "reorder":
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif kind == "duplicate":
            chunks.insert(j, chunks[i])
        else:
            del chunks[i]
        return png[:8] + b"".join(chunks)
    index = next(n for n, c in enumerate(chunks) if c[4:8] == PNG_CHUNK)
    record = unpack_record(chunks[index][8:-4])
    if kind == "length":  # a header that claims to be huge
        claimed = draw(st.sampled_from([2**31 - 1, 2**32 - 1, 300 * 2**20, len(chunks[index]) + 1]))
        chunks[index] = struct.pack(">I", claimed) + chunks[index][4:]
        return png[:8] + b"".join(chunks)
    if kind == "hostile-json":  # a public part that is wrong anywhere, sealed with the right key
        public = record["public"]
        path = draw(st.sampled_from(list(_paths(public))))
        hostile = _replace(public, path, draw(json_values))
        try:
            new = seal_header(key, hostile, {"faces": []})
            blob = pack_record(new)
        except (TypeError, ValueError):
            return png
        chunks[index] = png_chunk(PNG_CHUNK, blob)
        return png[:8] + b"".join(chunks)
    head = draw(st.binary(max_size=64))  # garbage where the record's JSON is
    blob = MAGIC + struct.pack(">BI", 2, len(head)) + head + draw(st.binary(max_size=32))
    chunks[index] = png_chunk(PNG_CHUNK, blob)
    return png[:8] + b"".join(chunks)


@FUZZ
@given(data=st.data())
def test_recover_survives_any_mutated_veiled_png(corpus, data):
    blob = data.draw(mutated_png(corpus["png"], corpus["key"]))
    with Scratch() as folder:
        (folder / "in.veiled.png").write_bytes(blob)
        before = {"in.veiled.png"}
        _expect_clean(lambda: api.recover(folder / "in.veiled.png", corpus["key"], folder / "out.png", model=corpus["model"]), folder, before)


@FUZZ
@given(data=st.data())
def test_recover_survives_any_mutated_sidecar(corpus, data):
    sidecar = corpus["sidecar"]
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "random"]))
    if kind == "flip":
        sidecar = data.draw(bit_flips(sidecar, 8))
    elif kind == "truncate":
        sidecar = sidecar[: data.draw(st.integers(0, len(sidecar) - 1))]
    elif kind == "extend":
        sidecar = sidecar + data.draw(st.binary(min_size=1, max_size=64))
    else:
        sidecar = data.draw(st.binary(max_size=256))
    with Scratch() as folder:
        (folder / "in.veiled.jpg").write_bytes(corpus["jpg"])
        (folder / "in.veiled.jpg.veil").write_bytes(sidecar)
        before = {"in.veiled.jpg", "in.veiled.jpg.veil"}
        _expect_clean(lambda: api.recover(folder / "in.veiled.jpg", corpus["key"], folder / "out.png", model=corpus["model"]), folder, before)


@st.composite
def grafted_or_reshaped(draw, png: bytes) -> bytes:
    """The veiled PNG's own header on other pixels of its size (a graft), or its JSON re-encoded (same content)."""
    chunks = png_chunks(png)
    index = next(n for n, c in enumerate(chunks) if c[4:8] == PNG_CHUNK)
    data = chunks[index][8:-4]
    if draw(st.booleans()):
        image = np.asarray(Image.open(io.BytesIO(png)))
        seed = draw(st.integers(0, 2**32 - 1))
        other = np.random.default_rng(seed).integers(0, 256, image.shape, dtype=np.uint8)
        if draw(st.booleans()):  # or the photo itself, a patch of it inverted (another face in the same scene)
            other = image.copy()
            y, x = draw(st.integers(0, image.shape[0] - 12)), draw(st.integers(0, image.shape[1] - 12))
            other[y:y + 12, x:x + 12] = 255 - other[y:y + 12, x:x + 12]
        buffer = io.BytesIO()
        info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
        info.add(PNG_CHUNK, data)
        Image.fromarray(other).save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    (head_len,) = struct.unpack_from(">I", data, len(MAGIC) + 1)
    start = len(MAGIC) + 5
    fields = json.loads(data[start:start + head_len])
    keys = draw(st.permutations(sorted(fields)))
    text = json.dumps({k: fields[k] for k in keys}, indent=draw(st.sampled_from([None, 0, 1, 4])),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")])),
                      ensure_ascii=draw(st.booleans())).encode()
    hypothesis_assume(text != data[start:start + head_len])
    blob = data[:len(MAGIC) + 1] + struct.pack(">I", len(text)) + text + data[start + head_len:]
    chunks[index] = png_chunk(PNG_CHUNK, blob)
    return png[:8] + b"".join(chunks)


def _recover_exits_3_writing_nothing(corpus, blob: bytes) -> None:
    """Recovering the veiled PNG ``blob`` with the corpus key is refused with exit code 3 and writes nothing."""
    with Scratch() as folder:
        (folder / "in.veiled.png").write_bytes(blob)
        with pytest.raises(FaceveilError) as caught:
            api.recover(folder / "in.veiled.png", corpus["key"], folder / "out.png", model=corpus["model"])
        assert caught.value.exit_code == 3, caught.value
        assert {p.name for p in folder.iterdir()} == {"in.veiled.png"}


@FUZZ
@given(data=st.data())
def test_grafted_or_reshaped_headers_always_exit_3(corpus, data):
    """Issue 21: a header on pixels it was not made for, or its JSON not byte for byte as sealed, is refused."""
    blob = data.draw(grafted_or_reshaped(corpus["png"]))
    _recover_exits_3_writing_nothing(corpus, blob)


# ---- hostile images -------------------------------------------------------------------
def _encoded(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge image (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@st.composite
def hostile_image(draw) -> tuple[str, bytes]:
    size = draw(st.tuples(st.integers(1, 40), st.integers(1, 40)))
    array = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, (*size, 3), dtype=np.uint8)
    kind = draw(st.sampled_from(["random", "truncated", "bomb", "mode", "flip"]))
    if kind == "random":
        return ".png", draw(st.binary(max_size=512))
    if kind == "bomb":
        side = draw(st.sampled_from([20_000, 65_535, 100_000, 2**31 - 1]))
        return ".png", _bomb_png(side, side)
    fmt, suffix = draw(st.sampled_from([("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp")]))
    mode = draw(st.sampled_from([None, "L", "LA", "P", "1", "I", "CMYK", "RGBA", "I;16", "F"]))
    try:
        blob = _encoded(array, fmt, mode)
    except (OSError, ValueError, KeyError):
        blob = _encoded(array, fmt)
    if kind == "truncated":
        return suffix, blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
    if kind == "flip":
        raw = bytearray(blob)
        for at in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[at] ^= 0xFF
        return suffix, bytes(raw)
    return suffix, blob


@FUZZ
@given(case=hostile_image(), aligned=st.booleans())
def test_anonymize_survives_any_hostile_image(corpus, case, aligned):
    suffix, blob = case
    with Scratch() as folder:
        (folder / f"in{suffix}").write_bytes(blob)
        before = {f"in{suffix}"}
        _expect_clean(lambda: api.anonymize(folder / f"in{suffix}", corpus["key"], folder / "out.veiled.png", model=corpus["model"],
                                            settings=Settings(EngineSettings(steps=2)), aligned=aligned, max_pixels=4_000_000),
                      folder, before)


# ---- hostile key files ----------------------------------------------------------------
@st.composite
def hostile_key_file(draw, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "json", "field", "random"]))
    if kind == "flip":
        return draw(bit_flips(valid, 4))
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "field":
        record = json.loads(valid)
        name = draw(st.sampled_from(sorted(record) + ["kdf", "nonce", "ciphertext"]))
        record[name] = draw(json_values)
        return json.dumps(record).encode()
    return draw(st.binary(max_size=256))


@FUZZ
@given(data=st.data(), protected=st.booleans())
def test_key_loading_survives_any_hostile_key_file(corpus, data, protected):
    valid = corpus["keyfile"] if not protected else Key.generate().to_file_bytes("pw", {"memory_kib": 8, "iterations": 1, "lanes": 1})
    blob = data.draw(hostile_key_file(valid))
    with Scratch() as folder:
        path = folder / "k.key"
        path.write_bytes(blob)
        os.chmod(path, 0o600)
        try:
            Key.load(path, passphrase="pw")
        except KeyFileError as exc:
            assert exc.exit_code == 2 and "\n" not in str(exc)
        assert Key.file_needs_passphrase(path) in (True, False)


# ---- decompression bombs in headers, through the command, with peak memory measured ------------
def _peak_rss_mib(command: list[str]) -> tuple[int, float, str]:
    """Exit code, peak resident memory (MiB) and stderr of one ``faceveil`` process."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "faceveil", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    stderr = process.stderr.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, stderr


def test_header_bombs_exit_3_with_bounded_memory(corpus, pixel_model_dir, tmp_path):
    """The issue's 204 KB bomb (and its kin) next to a legitimate file: exit 3, memory as for the legitimate file alone."""
    from faceveil.testing import header_bombs

    key = tmp_path / "k.key"
    key.write_bytes(corpus["keyfile"])
    os.chmod(key, 0o600)
    legit = tmp_path / "legit.veiled.png"
    legit.write_bytes(corpus["png"])
    common = ["--key", str(key), "--model", str(pixel_model_dir), "--quiet"]
    (tmp_path / "alone").mkdir()
    code, alone, stderr = _peak_rss_mib(["recover", str(legit), "-o", str(tmp_path / "alone"), *common])
    assert code == 0, stderr
    bombs = []
    for name, blob in header_bombs(corpus["png"]).items():
        bombs.append(tmp_path / f"{name}.png")
        bombs[-1].write_bytes(blob)
    out = tmp_path / "out"
    out.mkdir()
    code, peak, stderr = _peak_rss_mib(["recover", str(legit), *map(str, bombs), "-o", str(out), *common])
    assert code == 3 and "Traceback" not in stderr, stderr
    assert stderr.count("faceveil: ") >= len(bombs)  # each bomb named with its reason
    assert peak < alone + 48, f"peak {peak:.0f} MiB with {len(bombs)} bombs against {alone:.0f} MiB for the legitimate file alone"
    assert sorted(p.name for p in out.iterdir()) == ["legit.recovered.png", "manifest.json"]


# ---- what the long campaign found (benchmarks/fuzz_benchmark.py --examples 2500), kept as regressions ----
def test_detection_survives_sides_mediapipe_cannot_take():
    """MediaPipe aborts the whole process on an image side of 32767 px or more; faceveil shows it a smaller copy."""
    from faceveil.faces import detect_faces

    for shape in ((40, 32767, 3), (32768, 40, 3), (2, 40000, 3)):
        assert detect_faces(np.zeros(shape, np.uint8)) == []


def test_a_face_region_beyond_the_residual_codec_is_a_usage_error(corpus):
    """A whole-image 'face' wider than WebP's 16383 px used to escape as a ValueError after the model ran."""
    with Scratch() as folder:
        Image.fromarray(np.zeros((2, 46515, 3), np.uint8)).save(folder / "wide.png")
        with pytest.raises(FaceveilError) as caught:
            api.anonymize(folder / "wide.png", corpus["key"], folder / "out.veiled.png", model=corpus["model"],
                          settings=Settings(EngineSettings(steps=2)), aligned=True)
        assert caught.value.exit_code == 2 and "16383" in str(caught.value)
        assert sorted(p.name for p in folder.iterdir()) == ["wide.png"]


# ---- the envelope's fields (issue 23) ----------------------------------------------------
@st.composite
def mutated_envelope(draw, png: bytes) -> bytes:
    """The veiled PNG with a format-3 field changed: a stanza, the stanza list, the sealed recipient list,
    a face seal or the check tag (the rest of the record as written)."""
    from faceveil.container import b64, unb64

    chunks = png_chunks(png)
    index = next(n for n, c in enumerate(chunks) if c[4:8] == PNG_CHUNK)
    record = unpack_record(chunks[index][8:-4])
    kind = draw(st.sampled_from(["stanza-flip", "stanza-drop", "stanza-add", "stanza-dup", "envelope-flip",
                                 "face-flip", "face-drop", "face-add", "check-flip", "no-recipient"]))
    stanzas = list(record["recipients"])
    if kind == "stanza-flip":
        i = draw(st.integers(0, len(stanzas) - 1))
        stanzas[i] = b64(draw(bit_flips(unb64(stanzas[i]), 4)))
    elif kind == "stanza-drop" and len(stanzas) > 1:
        del stanzas[draw(st.integers(0, len(stanzas) - 1))]
    elif kind == "stanza-add":
        stanzas.insert(draw(st.integers(0, len(stanzas))), b64(draw(st.binary(min_size=80, max_size=80))))
    elif kind == "stanza-dup":
        stanzas.append(stanzas[draw(st.integers(0, len(stanzas) - 1))])
    elif kind == "no-recipient":
        stanzas = []
    record["recipients"] = stanzas
    if kind == "envelope-flip":
        record["envelope"] = draw(bit_flips(record["envelope"], 4))
    seals = list(record["face_seals"])
    if kind == "face-flip" and seals:
        i = draw(st.integers(0, len(seals) - 1))
        seals[i] = draw(bit_flips(seals[i], 4))
    elif kind == "face-drop" and seals:
        del seals[draw(st.integers(0, len(seals) - 1))]
    elif kind == "face-add":
        seals.append(draw(st.binary(min_size=13, max_size=64)))
    record["face_seals"] = seals
    if kind == "check-flip":
        record["check"] = b64(draw(bit_flips(unb64(record["check"]), 2)))
    chunks[index] = png_chunk(PNG_CHUNK, pack_record(record))
    return png[:8] + b"".join(chunks)


@FUZZ
@given(data=st.data())
def test_any_changed_envelope_field_is_refused(corpus, data):
    """Issue 23: a stanza, the recipient list, a face seal or the check tag changed: exit 3, nothing written."""
    blob = data.draw(mutated_envelope(corpus["png"]))
    hypothesis_assume(blob != corpus["png"])
    _recover_exits_3_writing_nothing(corpus, blob)

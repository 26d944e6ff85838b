"""Hostile files, round two (issue 21): file modes, leftovers, FIFOs, --resume, key info, lossy inputs, grafts."""

import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil import atomic
from faceveil.cli import main

FAST = ["--steps", "2", "--refine-iters", "1", "--aligned"]


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO read blocks forever)."""

    def expire(signum, frame):
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- medium 3: modes ------------------------------------------------------------------
@pytest.mark.parametrize("mask, veiled_mode", [(0o077, 0o600), (0o022, 0o644)])
def test_recovered_is_owner_only_and_veiled_follows_the_umask(face_png, keyfile, pixel_model_dir, tmp_path, mask, veiled_mode):
    veiled, recovered = tmp_path / "v.png", tmp_path / "r.png"
    model = ["--model", str(pixel_model_dir)]
    with umask(mask):
        assert main(["anonymize", str(face_png), "--key", str(keyfile), "-o", str(veiled), *model, *FAST]) == 0
        assert main(["recover", str(veiled), "--key", str(keyfile), "-o", str(recovered), *model]) == 0
    assert _mode(veiled) == veiled_mode
    assert _mode(recovered) == 0o600


def test_effective_mode_follows_the_umask():
    with umask(0o027):
        assert atomic.effective_mode(atomic.PUBLIC) == 0o640
        assert atomic.effective_mode(atomic.PRIVATE) == 0o600
    with umask(0o077):
        assert atomic.effective_mode(atomic.PUBLIC) == 0o600


# ---- low 7: temporary files ------------------------------------------------------------
def test_temporary_file_is_owner_only_while_it_holds_data(tmp_path, monkeypatch):
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with umask(0o022):
        atomic.write_new_file(tmp_path / "photo.png", b"original face")
        atomic.write_file(tmp_path / "photo.png", b"again", overwrite=True)
    assert seen == [0o600, 0o600]  # written and synced while owner-only; the final mode comes just before the link
    assert _mode(tmp_path / "photo.png") == 0o644


def test_leftovers_of_a_killed_run_are_swept_at_the_next_write(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    stale, fresh, other = folder / ".faceveil-k1ll3d.tmp", folder / ".faceveil-inflight.tmp", folder / ".notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"recovered photo")
    old = stale.stat().st_mtime - 3600
    os.utime(stale, (old, old))
    atomic.write_new_file(folder / "a.png", b"x")
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # another process's write in flight, and files not ours, stay


# ---- low 11: FIFOs ---------------------------------------------------------------------
def test_fifo_as_key_or_input_is_refused(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    model = ["--model", str(pixel_model_dir)]
    with deadline(60):
        assert main(["anonymize", str(face_png), "--key", str(fifo), "-o", str(tmp_path / "o.png"), *model, *FAST]) == 2
        assert "FIFO" in capsys.readouterr().err
        assert main(["anonymize", str(fifo), "--key", str(keyfile), *model, *FAST]) == 2
        assert "FIFO" in capsys.readouterr().err
        assert main(["recover", str(fifo), "--key", str(keyfile), *model]) == 2
        assert "FIFO" in capsys.readouterr().err
        assert main(["key", "info", str(fifo)]) == 2
        assert "FIFO" in capsys.readouterr().err


def test_fifo_refused_by_the_readers(tmp_path):
    from faceveil.container import read_record
    from faceveil.errors import KeyFileError, UsageError
    from faceveil.imageio import read_image
    from faceveil.keys import Key

    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    with deadline(30):
        with pytest.raises(UsageError, match="FIFO"):
            read_image(fifo)
        with pytest.raises(UsageError, match="FIFO"):
            read_record(fifo)
        with pytest.raises(KeyFileError, match="FIFO"):
            Key.load(fifo)


# ---- low 8: --resume checks what it skips -----------------------------------------------
def test_resume_checks_an_existing_output_with_the_key(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    import json

    model = ["--model", str(pixel_model_dir)]
    out, back = tmp_path / "out", tmp_path / "back"
    out.mkdir(), back.mkdir()
    assert main(["anonymize", str(face_png), "-o", str(out), "--key", str(keyfile), *model, *FAST]) == 0
    veiled = out / "face.veiled.png"
    assert main(["anonymize", str(face_png), "-o", str(out), "--resume", "--key", str(keyfile), *model, *FAST]) == 0
    good = veiled.read_bytes()
    veiled.write_bytes(b"")  # an empty "output": the old --resume skipped it as done
    capsys.readouterr()
    assert main(["anonymize", str(face_png), "-o", str(out), "--resume", "--key", str(keyfile), *model, *FAST]) == 3
    assert "not a complete output of this key" in capsys.readouterr().err
    assert veiled.read_bytes() == b""  # left as it is, never overwritten
    record = json.loads((out / "manifest.json").read_text())["files"][0]
    assert record["status"] == "failed"
    other = tmp_path / "other.key"
    assert main(["keygen", str(other)]) == 0
    veiled.write_bytes(good)
    assert main(["anonymize", str(face_png), "-o", str(out), "--resume", "--key", str(other), *model, *FAST]) == 3
    assert "wrong key" in capsys.readouterr().err
    # recovery: an empty recovered file is not skipped either
    assert main(["recover", str(out), "-o", str(back), "--key", str(keyfile), *model]) == 0
    (back / "face.recovered.png").write_bytes(b"")
    assert main(["recover", str(out), "-o", str(back), "--resume", "--key", str(keyfile), *model]) == 2
    assert "not a complete output" in capsys.readouterr().err


# ---- low 10: key info opens the sealed part ------------------------------------------------
def test_key_info_says_intact_or_damaged(face_png, keyfile, pixel_model_dir, tmp_path, capsys):
    veiled = tmp_path / "face.veiled.jpg"
    assert main(["anonymize", str(face_png), "-o", str(veiled), "--key", str(keyfile), "--model", str(pixel_model_dir), *FAST]) == 0
    capsys.readouterr()
    assert main(["key", "info", str(keyfile), str(veiled)]) == 0
    assert "made with this key, intact" in capsys.readouterr().out
    sidecar = tmp_path / "face.veiled.jpg.veil"
    data = bytearray(sidecar.read_bytes())
    data[-5] ^= 0x40  # one bit of the sealed part
    sidecar.write_bytes(bytes(data))
    assert main(["key", "info", str(keyfile), str(veiled)]) == 3
    out = capsys.readouterr().out
    assert "made with this key, damaged" in out and "tampered" in out


# ---- medium 2: inputs faceveil cannot give back exactly -----------------------------------
def _png16(array: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes 16-bit grey only)."""
    import struct
    import zlib

    height, width = array.shape[:2]
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _inexact_inputs(folder: Path) -> dict[str, str]:
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    (folder / "rgb16.png").write_bytes(_png16(rgb16, 2))
    (folder / "rgba16.png").write_bytes(_png16(rng.integers(0, 65536, (32, 32, 4), dtype=np.uint16), 6))
    Image.fromarray(rgb16[:, :, 0]).save(folder / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    frames = [Image.fromarray(np.full((32, 32, 3), c, np.uint8)) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(folder / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    return {"rgb16.png": "8 bits", "rgba16.png": "8 bits", "grey16.png": "8 bits", "cmyk.jpg": "CMYK",
            "anim.gif": "2 frames", "anim.png": "2 frames"}


def test_16_bit_cmyk_and_animations_are_refused_before_any_work(keyfile, tmp_path, capsys, monkeypatch):
    import faceveil.api as api

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for an input that must be refused")

    monkeypatch.setattr(api, "detect_faces", no_model)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, why in _inexact_inputs(folder).items():
        capsys.readouterr()
        assert main(["anonymize", str(folder / name), "--key", str(keyfile), "--model", "faceveil-faces-64-draft"]) == 2, name
        err = capsys.readouterr().err
        assert "refused" in err and why in err, err
        assert sorted(p.name for p in tmp_path.rglob("*.veiled*")) == []


def test_plain_8_bit_inputs_are_still_read(tmp_path):
    from faceveil.imageio import read_image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.gif")
    assert read_image(tmp_path / "a.png").shape == (8, 8)
    assert read_image(tmp_path / "a.gif").shape == (8, 8)


# ---- low 9: the exact JSON bytes are authenticated ---------------------------------------------
@pytest.mark.parametrize("reshape", ["indent", "reorder", "escape"])
def test_rewritten_header_json_is_refused(tmp_path, reshape):
    import json
    import struct

    from faceveil.container import MAGIC, FORMAT_VERSION, open_header, pack_record, read_record, seal_header, write_veiled
    from faceveil.errors import HeaderError
    from faceveil.keys import Key

    key = Key.generate()
    image = np.zeros((16, 16, 3), np.uint8)
    public = {
        "model": {"id": "m", "weights_sha256": "0" * 64, "kind": "pixel"},
        "settings": {"engine": {"steps": 2, "refine_iters": 0, "refine_tol": 1e-5, "context": "noised", "mixing": "pairs"},
                     "decoder_iters": 0, "hint": False, "colour": True, "grain": True, "residual_codec": "webp-lossless"},
        "image": {"height": 16, "width": 16, "pixels_sha256": "0" * 64},
        "faces": [{"nonce": "00" * 16, "transform": {"matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "size": 8}}],
    }
    record = seal_header(key, public, {"faces": []})
    path = tmp_path / "v.jpg"
    write_veiled(path, image, record)
    open_header(key, read_record(path))  # as written: fine
    fields = {k: record[k] for k in ("faceveil", "file_nonce", "recipients", "check", "public", "seal_nonce")}
    text = {
        "indent": json.dumps(fields, sort_keys=True, indent=2),
        "reorder": json.dumps(dict(reversed(list(fields.items()))), separators=(",", ":")),
        "escape": json.dumps(fields, sort_keys=True, separators=(",", ":")).replace('"faces"', '"\\u0066aces"'),
    }[reshape].encode()
    packed = pack_record(record)
    (head_len,) = struct.unpack_from(">I", packed, len(MAGIC) + 1)
    head, tail = packed[len(MAGIC) + 5 : len(MAGIC) + 5 + head_len], packed[len(MAGIC) + 5 + head_len :]
    assert json.loads(text) == json.loads(head)  # same content
    sidecar = tmp_path / "v.jpg.veil"
    sidecar.write_bytes(MAGIC + struct.pack(">BI", FORMAT_VERSION, len(text)) + text + tail)
    with pytest.raises(HeaderError, match="byte for byte"):
        read_record(path)


# ---- medium 1: a header binds to its image --------------------------------------------------
def _two_photos(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:32, 0:32]
    a = np.stack([yy * 6, xx * 6, (yy + xx) * 3], axis=2).astype(np.float64)
    b = np.stack([255 - xx * 7, 90 + yy * 3, 200 - yy * 5], axis=2).astype(np.float64)
    paths = []
    for name, base in (("a.png", a), ("b.png", b)):
        Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths[0], paths[1]


def test_grafted_sidecar_is_refused_unless_forced(keyfile, pixel_model_dir, tmp_path, capsys):
    a, b = _two_photos(tmp_path)
    model = ["--model", str(pixel_model_dir)]
    for photo in (a, b):
        assert main(["anonymize", str(photo), "-o", str(photo.with_suffix(".veiled.jpg")), "--key", str(keyfile), *model, *FAST]) == 0
    va, vb = tmp_path / "a.veiled.jpg", tmp_path / "b.veiled.jpg"
    # the normal JPEG sidecar path still recovers (JPEG at quality 95 moves the fingerprint by a fraction of a level)
    assert main(["recover", str(va), "-o", str(tmp_path / "a.rec.png"), "--key", str(keyfile), *model]) == 0
    (tmp_path / "a.veiled.jpg.veil").write_bytes((tmp_path / "b.veiled.jpg.veil").read_bytes())
    capsys.readouterr()
    assert main(["recover", str(va), "-o", str(tmp_path / "graft.png"), "--key", str(keyfile), *model]) == 3
    assert "belongs to another image" in capsys.readouterr().err
    assert not (tmp_path / "graft.png").exists()
    assert main(["recover", str(va), "-o", str(tmp_path / "graft.png"), "--key", str(keyfile), "--force", *model]) == 0
    assert vb.exists()


def test_grafted_png_chunk_is_refused(keyfile, pixel_model_dir, tmp_path, capsys):
    from faceveil.container import encode_png, read_record

    a, b = _two_photos(tmp_path)
    model = ["--model", str(pixel_model_dir)]
    for photo in (a, b):
        assert main(["anonymize", str(photo), "--key", str(keyfile), *model, *FAST]) == 0
    va, vb = tmp_path / "a.veiled.png", tmp_path / "b.veiled.png"
    graft = tmp_path / "graft.veiled.png"
    graft.write_bytes(encode_png(np.asarray(Image.open(va)), read_record(vb)))  # a's pixels, b's veIL chunk
    capsys.readouterr()
    assert main(["recover", str(graft), "--key", str(keyfile), *model]) == 3
    assert "belongs to another image" in capsys.readouterr().err
    assert main(["recover", str(va), "--key", str(keyfile), *model]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.recovered.png")), np.asarray(Image.open(a)))


def test_fingerprint_tolerates_reencoding_and_tells_photos_apart():
    from faceveil.binding import TOLERANCE, distances, fingerprint

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:120, 0:100]
    a = np.clip(np.stack([yy * 2, xx * 2, yy + xx], axis=2) + rng.normal(0, 12, (120, 100, 3)), 0, 255).astype(np.uint8)
    public = {"faces": [{"transform": {"matrix": [[1.0, 0.0, -30.0], [0.0, 1.0, -40.0]], "size": 48}}]}
    sealed = fingerprint(a, public)
    import io

    for fmt in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, fmt, quality=95)
        assert max(distances(np.asarray(Image.open(buffer).convert("RGB")), public, sealed)) < TOLERANCE / 3
    b = a.copy()
    b[40:88, 30:78] = 255 - b[40:88, 30:78]  # the same photo with another face: only the face box differs
    found = distances(b, public, sealed)
    assert found[0] > TOLERANCE and found[1] > 10 * TOLERANCE


# ---- low 5: a refused video recovery leaves no original frames behind -------------------------------
def test_refused_video_recovery_removes_its_work_folder(pixel_model, tmp_path):
    pytest.importorskip("av")
    from test_video import _clip_with_audio, _moving_clip, _stand_in_detector

    from faceveil.errors import HeaderError
    from faceveil.video import anonymize_video, recover_video

    frames, centres = _moving_clip(3, step=4.0)
    source = _clip_with_audio(tmp_path / "walk.mp4", frames)
    key = __import__("faceveil.keys", fromlist=["Key"]).Key.generate()
    video, sidecar = anonymize_video(source, key, tmp_path / "v.mkv", model=pixel_model, steps=1,
                                     detector=_stand_in_detector(centres)).outputs
    data = bytearray(sidecar.read_bytes())
    data[-40] ^= 1  # a byte of the last frame's sealed part: refused after the first chunks were recovered
    sidecar.write_bytes(bytes(data))
    chunks = []
    with pytest.raises(HeaderError, match="tampered"):
        recover_video(video, key, tmp_path / "r.mkv", model=pixel_model, chunk_frames=1,
                      progress=lambda phase, done, total: chunks.extend((tmp_path / ".r.mkv.faceveil-work").glob("chunk-*.mkv")))
    assert chunks  # original frames were on disk while it ran...
    assert not (tmp_path / ".r.mkv.faceveil-work").exists()  # ...and are gone after the refusal
    assert not (tmp_path / "r.mkv").exists()


# ---- low 6: a full disk fails the files it hits, not the batch -------------------------------------------
@contextmanager
def small_disk(folder: Path, size: str, monkeypatch):
    """``folder`` on a tmpfs of ``size`` when this runs as root and may mount one; else writes over 100 kB fail with ENOSPC."""
    import errno
    import subprocess

    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        real = atomic._write_temp

        def write_temp(directory, data, mode):
            if len(data) > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(directory, data, mode)

        monkeypatch.setattr(atomic, "_write_temp", write_temp)
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_fails_one_file_and_the_batch_goes_on(keyfile, pixel_model_dir, tmp_path, monkeypatch, capsys):
    import json

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for name, side in (("a.png", 32), ("b.png", 240), ("c.png", 32)):  # b's output (noise) cannot fit
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(inputs / name)
    out = tmp_path / "out"
    with small_disk(out, "160k", monkeypatch):
        code = main(["anonymize", str(inputs), "-o", str(out), "--key", str(keyfile), "--model", str(pixel_model_dir), *FAST])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        assert "No space left on device" in err and "b.png" in err
        assert sorted(p.name for p in out.iterdir()) == ["a.veiled.png", "c.veiled.png", "manifest.json"]  # no leftover
        records = {Path(r["input"]).name: r["status"] for r in json.loads((out / "manifest.json").read_text())["files"]}
        assert records == {"a.png": "done", "b.png": "failed", "c.png": "done"}


# ---- medium 4: web upload limits --------------------------------------------------------------
def test_upload_limit_follows_the_pixel_limit():
    from faceveil.imageio import DEFAULT_MAX_PIXELS
    from faceveil.web.app import session_limit, upload_limit

    limit = upload_limit(DEFAULT_MAX_PIXELS)
    assert 3 * DEFAULT_MAX_PIXELS < limit < 400 * 10**6  # an uncompressed RGB photo at the limit fits; 400 MB does not
    assert upload_limit(1_000_000) < upload_limit(2_000_000) and upload_limit(None) == upload_limit(0)
    assert session_limit(DEFAULT_MAX_PIXELS) < 2 * limit  # two uploads of the largest size are not both kept


def test_session_keeps_uploads_within_its_cap(tmp_path):
    from faceveil.web.app import keep_uploads
    from faceveil.web.service import Upload

    uploads = tmp_path / "uploads"
    paths = []
    for name, size in (("a.png", 300), ("b.png", 500), ("c.png", 100)):
        (uploads / name[0]).mkdir(parents=True)
        (uploads / name[0] / name).write_bytes(b"x" * size)
        paths.append(str(uploads / name[0] / name))
    kept, refused = keep_uploads(paths, {}, 200, uploads, limit=700)  # 200 bytes held by the session's other boxes
    assert [u.name for u in kept.values()] == ["a.png", "c.png"] and refused == ["b.png (0 MiB)"]
    assert not any(uploads.rglob("*.png"))  # the kept ones read into memory, the refused one deleted unread
    again, refused = keep_uploads(paths[:1], kept, 200, uploads, limit=700)
    assert list(again) == paths[:1] and refused == []  # kept files stay without being read again


def test_unclaimed_uploads_expire(tmp_path):
    import time

    from faceveil.web.app import UPLOAD_SECONDS, expire_uploads

    old, fresh = tmp_path / "1f2e" / "photo.jpg", tmp_path / "9a8b" / "new.jpg"
    for path in (old, fresh):
        path.parent.mkdir()
        path.write_bytes(b"face")
    stale = time.time() - UPLOAD_SECONDS - 10
    os.utime(old, (stale, stale))
    assert expire_uploads(tmp_path) == 1
    assert not old.exists() and fresh.exists()
    assert UPLOAD_SECONDS <= 600  # "within minutes"


def test_a_400_mb_upload_is_refused_with_a_message(tmp_path):
    """A real server, a 400 MB upload streamed to Gradio's upload route: refused (413) while it arrives."""
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install -e '.[web]')")
    import http.client

    from test_web import Server

    server = Server(tmp_path)
    try:
        boundary = "faceveilboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"huge.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = 400 * 10**6
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        connection.putrequest("POST", "/gradio_api/upload")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(head) + size + len(tail)))
        connection.endheaders()
        block, sent = bytes(1 << 20), 0
        try:
            connection.send(head)
            while sent < size:
                connection.send(block[: min(len(block), size - sent)])
                sent += min(len(block), size - sent)
            connection.send(tail)
        except OSError:
            pass  # the server answered and closed before the end: what it said is read below
        response = connection.getresponse()
        message = response.read().decode("utf-8", "replace")
        assert response.status == 413, (response.status, message)
        assert "maximum allowed size" in message
        assert server.process.poll() is None  # still serving
    finally:
        server.stop()


# ---- low 12: passphrases --------------------------------------------------------------------------
def test_weak_passphrase_warns_and_empty_is_refused(tmp_path, monkeypatch, capsys):
    from faceveil.keys import WEAK_PASSPHRASE_BITS, passphrase_bits

    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "x")
    assert main(["keygen", str(tmp_path / "weak.key"), "--passphrase"]) == 0
    assert "weak passphrase" in capsys.readouterr().err
    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "correct horse battery staple")
    assert main(["keygen", str(tmp_path / "ok.key"), "--passphrase"]) == 0
    assert "weak" not in capsys.readouterr().err
    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "")
    assert main(["keygen", str(tmp_path / "empty.key"), "--passphrase"]) == 2
    assert "empty" in capsys.readouterr().err and not (tmp_path / "empty.key").exists()
    assert passphrase_bits("aaaaaaaaaaaaaaaaaaaa") < WEAK_PASSPHRASE_BITS <= passphrase_bits("Tr0ub4dor&3-xyzzy")


# ---- low 15: Ray workers never see the passphrase ---------------------------------------------------
def test_local_ray_workers_do_not_inherit_the_passphrase(monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    from faceveil.cluster.driver import LOCAL, _ray_session

    monkeypatch.setenv("FACEVEIL_PASSPHRASE", "hunter2-secret")
    with _ray_session(LOCAL, 1) as ray:

        @ray.remote
        def leaked() -> bool:
            return "FACEVEIL_PASSPHRASE" in os.environ or "hunter2-secret" in os.environ.values()

        assert ray.get(leaked.remote()) is False
    assert os.environ["FACEVEIL_PASSPHRASE"] == "hunter2-secret"  # the driver's own environment is restored


# ---- low 13: a cut-out's alpha keeps the head's outline: said so ----------------------------------------
def test_transparent_cut_out_gets_a_note(keyfile, pixel_model_dir, tmp_path, capsys):
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    rgba[:, :, 3] = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < 150, 255, 0)  # a head-shaped cut-out
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    Image.fromarray(rgba[:, :, :3]).save(tmp_path / "opaque.png")
    model = ["--model", str(pixel_model_dir)]
    assert main(["anonymize", str(tmp_path / "cut.png"), "--key", str(keyfile), *model, *FAST]) == 0
    assert "alpha channel is kept" in capsys.readouterr().err
    veiled = np.asarray(Image.open(tmp_path / "cut.veiled.png"))
    assert np.array_equal(veiled[:, :, 3], rgba[:, :, 3])  # what the note says: the outline is there
    assert main(["anonymize", str(tmp_path / "opaque.png"), "--key", str(keyfile), *model, *FAST]) == 0
    assert "alpha" not in capsys.readouterr().err

"""`faceveil serve`: the web page driven in a real headless Chromium (Playwright, Debian's chromium).

One server (a subprocess, embedded default model, a free port, its own TMPDIR and cwd) and
one browser serve the module. The browser tests skip with a reason where Playwright or a
Chromium executable is missing; the round trip uses an LFW photo, or a free one without ../shared. With
FACEVEIL_SCREENSHOTS=DIR the tests write DIR/web-*.png (the README's pictures).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.keys import Key

from conftest import lfw_face_file  # ../shared, or $FACEVEIL_SHARED
SCREENSHOTS = os.environ.get("FACEVEIL_SCREENSHOTS")
SLOW_MS = 240_000  # one anonymization on a busy 2-core CPU, with margin
KEY_SECRETS: list[str] = []  # every key made in the page (base64 secret or sealed secret): never in the server's output



def _chromium() -> str | None:
    for candidate in (os.environ.get("FACEVEIL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> list[str]:
    """Every file under ``root`` (empty folders do not count: torch makes one in TMPDIR)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# ---- no browser needed ------------------------------------------------------------
def test_cli_does_not_import_gradio():
    code = ("import sys, faceveil, faceveil.cli; faceveil.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'fastapi', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serve_options_default_to_localhost():
    from faceveil.cli import build_parser
    from faceveil.imageio import DEFAULT_MAX_PIXELS

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_pixels) == ("127.0.0.1", 7860, DEFAULT_MAX_PIXELS)


def test_private_dir_is_removed_even_on_error(tmp_path):
    from faceveil.web.service import private_dir, safe_name, unique_names

    with pytest.raises(RuntimeError):
        with private_dir(tmp_path) as folder:
            (folder / "photo.png").write_bytes(b"x")
            assert oct(folder.stat().st_mode & 0o777) == "0o700"
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    assert safe_name("../../etc/pass wd.png") == "pass_wd.png" and safe_name("...") == "photo"
    assert unique_names(["a.veiled.png", "a.veiled.png"]) == ["a.veiled.png", "a-2.veiled.png"]


def test_service_messages_name_the_upload_not_the_private_folder(tmp_path):
    from faceveil.errors import KeyFileError, UsageError
    from faceveil.web.service import Upload, anonymize_upload, load_key, new_key_file

    key, data = new_key_file("pass")
    with pytest.raises(UsageError) as info:
        anonymize_upload(Upload("../notes.png", b"not a picture"), key, None, tmp_path / "work")
    assert str(info.value) == "not an image (or an unsupported format): notes.png"
    assert list((tmp_path / "work").iterdir()) == []
    assert load_key(data, "pass").fingerprint == key.fingerprint
    with pytest.raises(KeyFileError, match="protected by a passphrase"):
        load_key(data)
    with pytest.raises(KeyFileError, match="not a faceveil key file"):
        load_key(b"\x89PNG")


def test_the_page_anonymizes_for_pasted_recipients_and_recovers_with_an_identity_or_a_token(tmp_path, pixel_model):
    """Issue 23 in the page's service: recipients pasted (no key), an identity file uploaded to recover,
    a disclosure token uploaded to recover its face; a token cannot anonymize."""
    from conftest import free_face

    from faceveil import api
    from faceveil.errors import UsageError
    from faceveil.keys import Identity
    from faceveil.web.app import _targets
    from faceveil.web.service import Upload, anonymize_upload, load_key, parse_recipients, recover_upload

    identity = Identity.generate()
    loaded = load_key(identity.to_file_bytes())
    assert isinstance(loaded, Identity) and loaded.recipient == identity.recipient
    assert [str(r) for r in parse_recipients(f"# controller\n{identity.recipient}\n")] == [identity.recipient]
    with pytest.raises(UsageError, match="No key"):
        _targets(None, "  ")
    targets = _targets(None, identity.recipient)
    photo = tmp_path / "face.png"
    Image.fromarray(free_face("astronaut")).save(photo)
    veiled = anonymize_upload(Upload("face.png", photo.read_bytes()), targets, pixel_model, tmp_path / "work")
    assert veiled.faces >= 1
    (tmp_path / "v.png").write_bytes(veiled.png)
    back = recover_upload(Upload("v.png", veiled.png), loaded, tmp_path / "work", model=pixel_model)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(back.png)).convert("RGB")),
                          np.asarray(Image.open(photo).convert("RGB")))
    _, token = api.disclose(tmp_path / "v.png", identity, 1, tmp_path / "t.token", model=pixel_model)
    uploaded = load_key((tmp_path / "t.token").read_bytes())
    with pytest.raises(UsageError, match="only recovers"):
        _targets(uploaded, "")
    part = recover_upload(Upload("v.png", veiled.png), uploaded, tmp_path / "work", model=pixel_model)
    assert part.png and list((tmp_path / "work").iterdir()) == []


def test_progress_on_the_page_says_face_i_of_n_and_the_time_left(pixel_model, tmp_path):
    """Gradio's bar gets the CLI's count (faceveil.progress.FaceCount): face i of n, time left; no browser needed."""
    from faceveil.web.app import photo_progress
    from faceveil.web.service import Upload, anonymize_upload, recover_upload

    from conftest import lfw_face

    group = np.concatenate([lfw_face("Abel_Pacheco"), lfw_face("Angela_Bassett")], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(group).save(buffer, format="PNG")
    shown = []

    def bar(value, desc="", unit=""):  # what gr.Progress is called with
        shown.append((value, desc, unit))

    key = Key.generate()
    tick = photo_progress(bar, "group.png", 1, 3)
    veiled = anonymize_upload(Upload("group.png", buffer.getvalue()), key, pixel_model, tmp_path, progress=tick)
    assert veiled.faces == 2
    descs = [d for _, d, _ in shown]
    assert descs[0] == "group.png (photo 2 of 3): finding faces" and shown[0][0] == (1, 3)
    assert any(d.startswith("group.png (photo 2 of 3): face 1 of 2, about ") and d.endswith(" left") for d in descs)
    assert any("face 2 of 2, about " in d for d in descs)
    done, total = shown[-1][0]
    assert done == total == tick.evaluations > 0 and shown[-1][2] == "face-evals"

    shown.clear()
    tick = photo_progress(bar, "group.veiled.png", waiting="opening the header")
    back = recover_upload(Upload("group.veiled.png", veiled.png), key, tmp_path, model=pixel_model, progress=tick)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(back.png))), group)
    descs = [d for _, d, _ in shown]
    assert descs[0] == "group.veiled.png: opening the header" and "(photo" not in "".join(descs)
    # faces whose original region is sealed as it was (the tiny random model's residual is larger) need no
    # model run: the line then gives the face count, without a time
    assert descs[-1] in ("group.veiled.png: 2 face(s)",) or any("face 2 of 2, about " in d for d in descs)


def test_uploads_are_taken_only_from_the_upload_folder(tmp_path):
    from faceveil.web.app import take_upload, upload_paths

    uploads, elsewhere = tmp_path / "uploads", tmp_path / "secret.png"
    (uploads / "0123abcd").mkdir(parents=True)
    elsewhere.write_bytes(b"not yours")
    sent = uploads / "0123abcd" / "photo.jpg"
    sent.write_bytes(b"jpeg bytes")
    assert upload_paths([{"path": str(sent)}, {"path": str(elsewhere)}]) == [str(sent), str(elsewhere)]
    assert take_upload(elsewhere, uploads) is None and elsewhere.read_bytes() == b"not yours"
    assert take_upload(uploads / ".." / "secret.png", uploads) is None
    taken = take_upload(sent, uploads)
    assert (taken.name, taken.data) == ("photo.jpg", b"jpeg bytes")
    assert list(uploads.iterdir()) == []  # the file and its folder are gone


# ---- the page in a browser ----------------------------------------------------------
class Server:
    def __init__(self, root: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp, self.cwd = root / "tmp", root / "cwd"
        self.tmp.mkdir()
        self.cwd.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = root / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faceveil.cli", "serve", "--port", str(self.port)],
            cwd=self.cwd, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"faceveil serve exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("faceveil serve did not answer within 180 s")

    def lasting_files(self) -> list[str]:
        """What the server left in its TMPDIR and working folder. onnxruntime (the output check's
        ArcFace) keeps a `.ses` file in TMPDIR holding a timestamp and a random id, nothing of a photo."""
        return [f for f in _files(self.tmp) if f != ".ses"] + _files(self.cwd)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if _chromium() is None:
        pytest.skip("no Chromium executable (apt-get install chromium; or set FACEVEIL_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[web]')")
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install -e '.[web]')")
    running = Server(tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium())
        chromium.outside_requests = []  # every request not to the server: must stay empty (offline)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})

    def only_local(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            browser.outside_requests.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    tab = context.new_page()
    tab.goto(server.url)
    tab.wait_for_selector("#create-key")
    yield tab
    context.close()


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"web-{name}.png"), full_page=True)


def _upload(page, box: str, *paths: Path) -> None:
    """Put files in a file box and wait until the server holds them (the box's 'ready' line names them)."""
    clear = page.locator(f"#{box} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
        page.wait_for_function(f"!document.querySelector('#{box}-ready').innerText.includes('ready')")
    page.locator(f"#{box} input[type=file]").set_input_files([str(p) for p in paths])
    for path in paths:
        page.wait_for_selector(f"#{box}-ready:has-text('{path.name}')", timeout=60_000)


def _download(page, link) -> bytes:
    with page.expect_download() as info:
        link.click()
    return Path(info.value.path()).read_bytes()


def _create_key(page, passphrase: str = "") -> bytes:
    page.fill("#new-key-passphrase input", passphrase)
    before = page.inner_text("#key-status")
    page.click("#create-key")
    page.wait_for_function(f"document.querySelector('#key-status').innerText !== {json.dumps(before)}")
    data = _download(page, page.locator("#key-notice a.fv-download"))
    record = json.loads(data)
    KEY_SECRETS.append(record.get("secret") or record["ciphertext"])
    return data


def _use_key(page, path: Path, passphrase: str = "") -> str:
    """Upload a key file (and passphrase), press “Use this key”; the key status that results."""
    _upload(page, "key-file", path)
    page.wait_for_selector("#key-status .fv-pending")
    page.fill("#key-passphrase input", passphrase)
    page.click("#use-key")
    page.wait_for_selector("#key-status .fv-pending", state="detached", timeout=30_000)
    return page.inner_text("#key-status")


def _anonymize(page, *photos: Path, shot: str | None = None) -> str:
    _upload(page, "photos", *photos)  # a new choice clears the results shown
    page.click("#anonymize")
    if shot:  # the progress line, while it runs
        page.wait_for_function("/face [0-9]+ of [0-9]+, about [0-9]+ (s|min) left/"
                               ".test(document.querySelector('#results').innerText)", timeout=SLOW_MS)
        _shot(page, shot)
    page.wait_for_selector(f"#results .fv-photo >> nth={len(photos) - 1}", timeout=SLOW_MS)
    return page.inner_text("#results")


def _recover(page, veiled: Path) -> str:
    page.get_by_role("tab", name="3. Recover").click()
    _upload(page, "veiled", veiled)  # clears the recovered photo shown
    page.click("#recover")
    page.wait_for_selector("#recovered .fv-recovered, #recovered .fv-error", timeout=SLOW_MS)
    return page.inner_text("#recovered")


def _api_message(call) -> str:
    from faceveil.errors import FaceveilError

    with pytest.raises(FaceveilError) as info:
        call()
    return str(info.value)


def _tamper(png: bytes) -> bytes:
    """Flip the last byte of the faceveil chunk's data (the sealed part) and fix the chunk's CRC."""
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"veIL":
            data = bytearray(png[pos + 8 : pos + 8 + length])
            data[-1] ^= 0x01
            crc = struct.pack(">I", zlib.crc32(kind + bytes(data)))
            return png[: pos + 8] + bytes(data) + crc + png[pos + 12 + length :]
        pos += 12 + length
    raise AssertionError("no veIL chunk")


def test_anonymize_download_recover_bit_exact(server, page, tmp_path):
    """Create a key, anonymize an LFW photo, download it and the key, recover it in a fresh page: same pixels."""
    started = time.monotonic()
    photo = lfw_face_file("AJ_Cook", tmp_path)  # LFW's file from ../shared, or a free stand-in
    key_file = tmp_path / "page.key"
    key_file.write_bytes(_create_key(page))
    key = Key.from_file_bytes(key_file.read_bytes())
    status = page.inner_text("#key-status") + page.inner_text("#key-notice")
    assert key.fingerprint in status and "without it nothing can be recovered" in status
    text = _anonymize(page, photo, shot="progress" if SCREENSHOTS else None)
    assert f"{photo.name}: 1 face(s) anonymized" in text
    assert page.locator("#results img[alt=before]").count() == 1 and page.locator("#results img[alt=after]").count() == 1
    _shot(page, "anonymize")
    veiled = _download(page, page.locator("#results .fv-photo a.fv-download"))
    archive = zipfile.ZipFile(io.BytesIO(_download(page, page.locator("#results a.fv-zip"))))
    assert archive.namelist() == [f"{photo.stem}.veiled.png"] and archive.read(f"{photo.stem}.veiled.png") == veiled
    original = np.asarray(Image.open(photo).convert("RGB"))
    anonymized = np.asarray(Image.open(io.BytesIO(veiled)).convert("RGB"))
    assert anonymized.shape == original.shape and (anonymized != original).any(axis=2).mean() > 0.05
    assert server.lasting_files() == []

    page.reload()  # a new session: nothing of the first one is left in the page
    page.wait_for_selector("#create-key")
    assert "No key yet" in page.inner_text("#key-status")
    assert key.fingerprint in _use_key(page, key_file)
    veiled_file = tmp_path / "AJ_Cook_0001.veiled.png"
    veiled_file.write_bytes(veiled)
    text = _recover(page, veiled_file)
    assert "AJ_Cook_0001.recovered.png" in text and page.locator("#recovered .fv-error").count() == 0
    recovered = _download(page, page.locator("#recovered a.fv-download"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(recovered)).convert("RGB")), original)
    _shot(page, "recover")
    assert server.lasting_files() == []

    # a JPEG with its sidecar (the veiled pixels re-encoded, the header beside them): recovers, approximately, and says so
    from faceveil.container import pack_record, read_record

    jpeg = tmp_path / "AJ_Cook_0001.veiled.jpg"
    Image.open(veiled_file).convert("RGB").save(jpeg, quality=95)
    sidecar = tmp_path / "AJ_Cook_0001.veiled.jpg.veil"
    sidecar.write_bytes(pack_record(read_record(veiled_file)))
    _upload(page, "sidecar", sidecar)
    text = _recover(page, jpeg)
    assert "AJ_Cook_0001.recovered.png" in text and "JPEG is a lossy format" in text
    page.locator("#sidecar button[aria-label='Clear']").first.click()

    # a wrong key: the CLI's message, nothing else
    from faceveil import api

    _create_key(page)
    expected = _api_message(lambda: api.recover(veiled_file, Key.generate(), tmp_path / "x.png"))
    assert expected.startswith("wrong key")
    assert _recover(page, veiled_file).strip() == expected
    _shot(page, "wrong-key")

    # a tampered header with the right key: the CLI's message
    assert key.fingerprint in _use_key(page, key_file)
    tampered = tmp_path / "tampered.veiled.png"
    tampered.write_bytes(_tamper(veiled))
    expected = _api_message(lambda: api.recover(tampered, key, tmp_path / "y.png"))
    assert "tampered" in expected
    assert _recover(page, tampered).strip() == expected.replace(str(tampered), tampered.name)
    assert server.lasting_files() == []
    print(f"\nbrowser round trip: {time.monotonic() - started:.1f} s")


def test_bad_inputs_get_a_message(server, page, tmp_path):
    """Not an image, no face (and continuing without), too large, a file that is not a key, passphrases."""
    from faceveil.imageio import DEFAULT_MAX_PIXELS

    _create_key(page)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a picture\n")
    flat = tmp_path / "wall.png"
    Image.new("RGB", (96, 96), (120, 130, 140)).save(flat)
    text = _anonymize(page, not_image, flat)  # two photos at once: each gets its own message
    assert "not an image (or an unsupported format): notes.png" in text
    assert "Traceback" not in text and str(tmp_path) not in text and "/tmp" not in text
    assert "no face found in wall.png" in text and "Continue with photos that have no face" in text
    assert page.locator("#results .fv-error").count() == 2
    _shot(page, "no-face")
    _upload(page, "photos", flat)
    page.check("#allow-no-face input")
    page.click("#anonymize")
    page.wait_for_selector("#results :text('0 face(s) anonymized')", timeout=SLOW_MS)
    assert "wall.png: 0 face(s) anonymized" in page.inner_text("#results")
    page.uncheck("#allow-no-face input")

    side = int(DEFAULT_MAX_PIXELS**0.5) + 10
    huge = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(huge)  # 50 M pixels, a few kB of file
    text = _anonymize(page, huge)
    assert f"image too large: {side}x{side} = {side * side:,} pixels exceeds the limit of {DEFAULT_MAX_PIXELS:,}" in text

    assert "is not a faceveil key file" in _use_key(page, not_image)
    protected = tmp_path / "protected.key"
    protected.write_bytes(_create_key(page, passphrase="correct horse"))
    assert "protected by a passphrase" in _use_key(page, protected)
    assert "wrong passphrase for the uploaded key file" in _use_key(page, protected, "wrong horse")
    assert Key.from_file_bytes(protected.read_bytes(), "correct horse").fingerprint in _use_key(
        page, protected, "correct horse"
    )
    assert server.lasting_files() == []


def test_offline_and_shutdown_leave_nothing(server, browser):
    """No request left the machine; the server logged no secret; stopping it removes its private folder."""
    assert browser.outside_requests == []
    assert server.stop() == 0
    assert list(server.tmp.glob("faceveil-serve-*")) == []
    assert server.lasting_files() == []
    log = server.log.read_text()
    assert KEY_SECRETS and not any(secret in log for secret in KEY_SECRETS)
    assert "Traceback" not in log, log

"""Whole datasets on Ray (faceveil.cluster): key transport, the worker's exactly-once rules, and a
local 2-CPU Ray cluster over 40 LFW photos and 4 corrupt files with a worker killed, the driver
killed, a ``--resume`` and a recovery checked bit for bit.

The cluster test uses the embedded default model at ``--steps 4`` (16 UNet evaluations per face
instead of 80) so that three Ray runs over 40 photos stay near three minutes on 2 CPU cores.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.cluster import storage
from faceveil.cluster.transport import KeyReceiver, seal_key
from faceveil.cluster.worker import ADOPTED_NOTE, FileWorker, Job
from faceveil.errors import KeyFileError
from faceveil.keys import Key

from conftest import SHARED, free_face_files  # ../shared, or $FACEVEIL_SHARED
LFW = SHARED / "data" / "lfw" / "images"
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install -e '.[ray]')")


# ---- key transport ----------------------------------------------------------------------
def test_key_reaches_only_the_worker_it_was_sealed_to():
    key = Key.generate()
    worker, other = KeyReceiver(), KeyReceiver()
    sealed = seal_key(key, worker.public)
    assert key.secret not in sealed and key.secret.hex().encode() not in sealed
    with pytest.raises(KeyFileError):
        other.open(sealed)
    assert worker.open(sealed).secret == key.secret
    with pytest.raises(KeyFileError, match="already"):  # one use: the private half is gone
        worker.open(sealed)
    assert key.secret.hex() not in repr(worker)


def test_sealed_key_is_authenticated():
    key, worker = Key.generate(), KeyReceiver()
    sealed = bytearray(seal_key(key, worker.public))
    sealed[-1] ^= 1
    with pytest.raises(KeyFileError):
        worker.open(bytes(sealed))


# ---- one worker, in this process ------------------------------------------------------------
def _worker(model_dir: Path, key: Key, recovering: bool = False, **options) -> FileWorker:
    worker = FileWorker(Job(recovering=recovering, model=str(model_dir), options=options), threads=1)
    assert worker.accept_key(seal_key(key, worker.public_key())) == key.fingerprint
    assert "error" not in worker.prepare()
    return worker


def _face_crop(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_worker_adopts_an_existing_output_instead_of_redoing_it(tmp_path, pixel_model_dir):
    key = Key.generate()
    worker = _worker(pixel_model_dir, key, aligned=True, steps=3)
    source, target = _face_crop(tmp_path / "a.png"), tmp_path / "a.veiled.png"
    first = worker.process(str(source), str(target))
    assert first["record"]["status"] == "done" and first["exit_code"] == 0
    written = target.read_bytes()
    again = worker.process(str(source), str(target))  # a retry after the record was lost
    assert again["record"]["status"] == "done" and again["record"]["notes"] == [ADOPTED_NOTE]
    assert again["record"]["faces"] == first["record"]["faces"] == 1
    assert target.read_bytes() == written  # never anonymized twice

    stranger = _worker(pixel_model_dir, Key.generate(), aligned=True, steps=3)
    foreign = stranger.process(str(source), str(target))  # someone else's output is not adopted
    assert foreign["record"]["status"] == "failed" and "not a complete output of this key" in foreign["record"]["reason"]
    assert target.read_bytes() == written


def test_a_worker_anonymizing_to_recipients_holds_no_secret_and_an_identity_recovers(tmp_path, pixel_model_dir):
    """Issue 23: the worker gets recipient strings only (no key hand-over); a worker given the
    identity, sealed as a key is, recovers bit-exactly."""
    from faceveil.keys import Identity

    identity = Identity.generate()
    worker = FileWorker(Job(recovering=False, model=str(pixel_model_dir), options={"aligned": True, "steps": 3},
                            recipients=(identity.recipient,)), threads=1)
    assert "error" not in worker.prepare() and worker._key is None
    sources = [_face_crop(tmp_path / f"r{i}.png", 20 + i) for i in range(2)]
    outcomes = worker.process_many([(str(s), str(s.with_name(s.stem + ".veiled.png"))) for s in sources])
    assert [o["record"]["status"] for o in outcomes] == ["done", "done"]
    again = worker.process(str(sources[0]), str(tmp_path / "r0.veiled.png"))  # adopted: read and checked, not opened
    assert again["record"]["notes"] == [ADOPTED_NOTE]
    recoverer = FileWorker(Job(recovering=True, model=str(pixel_model_dir)), threads=1)
    assert recoverer.accept_key(seal_key(identity, recoverer.public_key())) == identity.recipient
    for source in sources:
        veiled, back = source.with_name(source.stem + ".veiled.png"), source.with_name(source.stem + ".recovered.png")
        assert recoverer.process(str(veiled), str(back))["record"]["status"] == "done"
        assert np.array_equal(np.asarray(Image.open(back)), np.asarray(Image.open(source)))


def test_worker_reports_a_corrupt_file_and_recovers_exactly(tmp_path, pixel_model_dir):
    key = Key.generate()
    worker = _worker(pixel_model_dir, key, aligned=True, steps=3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outcome = worker.process(str(broken), str(tmp_path / "broken.veiled.png"))
    assert outcome["record"]["status"] == "failed" and outcome["exit_code"] == 2
    assert not (tmp_path / "broken.veiled.png").exists()

    source, veiled, back = _face_crop(tmp_path / "b.png", 1), tmp_path / "b.veiled.png", tmp_path / "b.recovered.png"
    assert worker.process(str(source), str(veiled))["record"]["status"] == "done"
    recoverer = _worker(pixel_model_dir, key, recovering=True)
    done = recoverer.process(str(veiled), str(back))["record"]
    assert done["status"] == "done" and done["outputs"] == [str(back)]
    assert np.array_equal(np.asarray(Image.open(back)), np.asarray(Image.open(source)))


def test_worker_batch_keeps_every_file_its_own_record_and_recovers_exactly(tmp_path, pixel_model_dir):
    """``process_many``: the faces of a group share UNet evaluations; each file still gets its own
    record (a corrupt one fails, an existing output is adopted, not redone) and recovers bit for bit."""
    key = Key.generate()
    worker = _worker(pixel_model_dir, key, aligned=True, steps=3)
    sources = [_face_crop(tmp_path / f"p{i}.png", 10 + i) for i in range(4)]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    first = worker.process(str(sources[0]), str(tmp_path / "p0.veiled.png"))["record"]
    assert first["status"] == "done"
    written = (tmp_path / "p0.veiled.png").read_bytes()
    tasks = [(str(s), str(tmp_path / f"{s.stem}.veiled.png")) for s in sources]
    tasks.insert(2, (str(tmp_path / "bad.png"), str(tmp_path / "bad.veiled.png")))
    outcomes = worker.process_many(tasks)
    statuses = [o["record"]["status"] for o in outcomes]
    assert statuses == ["done", "done", "failed", "done", "done"]
    assert outcomes[0]["record"]["notes"] == [ADOPTED_NOTE] and (tmp_path / "p0.veiled.png").read_bytes() == written
    assert outcomes[2]["exit_code"] == 2 and not (tmp_path / "bad.veiled.png").exists()
    assert all(o["seconds"] > 0 for o in outcomes)

    recoverer = _worker(pixel_model_dir, key, recovering=True)
    back = recoverer.process_many([(t, str(tmp_path / f"{Path(s).stem}.recovered.png")) for s, t in tasks if "bad" not in s])
    assert [o["record"]["status"] for o in back] == ["done"] * 4
    for source in sources:
        recovered = np.asarray(Image.open(tmp_path / f"{source.stem}.recovered.png"))
        assert np.array_equal(recovered, np.asarray(Image.open(source)))


def test_fsspec_dataset_keeps_the_batch_layout(tmp_path, pixel_model_dir):
    """An fsspec URL (the in-memory filesystem here; s3:// or gs:// for users) in and out."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("x.png", "sub/y.png"):
        with fs.open(f"/ds/in/{name}", "wb") as handle:
            handle.write(_face_crop(tmp_path / "tmp.png", len(name)).read_bytes())
    tasks = storage.plan(["memory://ds/in"], "memory://ds/out", True, False, ".veiled")
    assert sorted(t for _, t in tasks) == ["memory://ds/out/sub/y.veiled.png", "memory://ds/out/x.veiled.png"]
    key = Key.generate()
    worker = _worker(pixel_model_dir, key, aligned=True, steps=3)
    records = [worker.process(s, t)["record"] for s, t in tasks]
    assert [r["status"] for r in records] == ["done", "done"]
    assert sorted(fs.find("/ds/out")) == ["/ds/out/sub/y.veiled.png", "/ds/out/x.veiled.png"]  # no upload leftovers
    storage.save_manifest("memory://ds/out/manifest.json", records)
    assert len(storage.read_manifest("memory://ds/out/manifest.json")) == 2
    again = worker.process(*tasks[0])["record"]
    assert again["notes"] == [ADOPTED_NOTE]


def test_ray_refuses_overwrite(tmp_path):
    key_file = Key.generate().save(tmp_path / "k.key")
    from faceveil.cli import main

    assert main(["anonymize", str(tmp_path), "--key", str(key_file), "--overwrite", "--ray"]) == 2


def test_a_signal_stops_the_run_between_two_ray_waits():
    """SIGTERM or Ctrl-C only set a flag while Ray waits; the loop raises the batch's Interrupted (exit 143/130)."""
    from faceveil.batch import Interrupted
    from faceveil.cluster.driver import _StopRequest

    before = signal.getsignal(signal.SIGTERM)
    with _StopRequest() as stop:
        stop.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with pytest.raises(Interrupted) as caught:
            stop.check()
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


# ---- a local Ray cluster over real photos -------------------------------------------------
def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _worker_pids(driver: int) -> list[int]:
    pids = []
    for pid in _descendants(driver):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::FileWorker"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _summary(text: str) -> tuple[int, int, int]:
    done, skipped, failed = map(int, re.findall(r"faceveil: (\d+) done, (\d+) skipped, (\d+) failed", text)[-1])
    return done, skipped, failed


@needs_ray
def test_ray_dataset_survives_killed_worker_and_driver_then_recovers_exactly(tmp_path):
    photos = sorted(LFW.glob("*/*_0001.jpg"))[:40] or free_face_files(tmp_path / "free", 40)  # LFW, or free photos
    assert len(photos) == 40
    source = tmp_path / "in"
    source.mkdir()
    for photo in photos:
        shutil.copy(photo, source / photo.name)
    corrupt = {
        "truncated.jpg": photos[0].read_bytes()[:2000],
        "noise.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.png": b"",
        "text.webp": b"this is not an image\n",
    }
    for name, data in corrupt.items():
        (source / name).write_bytes(data)
    key = Key.generate()
    key_file = key.save(tmp_path / "k.key")
    out, rec = tmp_path / "out", tmp_path / "rec"
    ray_tmp = Path(tempfile.mkdtemp(prefix="fv-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(ray_tmp)}
    cli = [sys.executable, "-m", "faceveil"]
    anonymize = [*cli, "anonymize", str(source), "-o", str(out), "--key", str(key_file), "--steps", "4",
                 "--ray", "--workers", "2"]
    try:
        # run 1: kill a worker once a few photos are done, then kill the driver itself
        log1 = tmp_path / "run1.log"
        with open(log1, "w") as log:
            proc = subprocess.Popen(anonymize, stdout=log, stderr=subprocess.STDOUT, env=env)
        outputs = lambda: sorted(out.glob("*.veiled.png"))  # noqa: E731
        _wait_for(lambda: len(outputs()) >= 3 and len(_worker_pids(proc.pid)) == 2, 300, "3 outputs", proc, log1)
        os.kill(_worker_pids(proc.pid)[0], signal.SIGKILL)
        _wait_for(lambda: len(outputs()) >= 14 and "a worker died" in log1.read_text(), 300,
                  "14 outputs after the worker's death", proc, log1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(2)  # Ray's processes follow their driver (they die with it)
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs()}
        assert 14 <= len(before) < 40

        # run 2: --resume finishes it
        run2 = subprocess.run([*anonymize, "--resume"], capture_output=True, text=True, env=env, timeout=400)
        assert run2.returncode == 2, run2.stderr[-3000:]  # the corrupt files: exit 2, as the single-machine batch
        done, skipped, failed = _summary(run2.stderr)
        assert done + skipped == 40 and failed == 4 and done == 40 - skipped
        assert re.search(r"\d+ images, [\d.]+ images/s", run2.stderr)  # progress: rate and time left

        names = sorted(p.name for p in out.iterdir())
        assert names == sorted([f"{p.stem}.veiled.png" for p in photos] + ["manifest.json"])  # no partial files
        for name, digest in before.items():  # nothing anonymized twice: every earlier output untouched
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
        records = {r["input"]: r for r in json.loads((out / "manifest.json").read_text())["files"]}
        assert len(records) == 44
        for photo in photos:
            record = records[photo.name]  # relative to the input folder; outputs relative to the manifest's
            assert record["status"] == "done" and record["faces"] >= 1, record  # a skipped input keeps its done record
            assert record["outputs"] == [f"{photo.stem}.veiled.png"]
        for name in corrupt:
            record = records[name]
            assert record["status"] == "failed" and record["reason"], record

        # recovery on Ray: every photo bit for bit
        run3 = subprocess.run([*cli, "recover", str(out), "-o", str(rec), "--key", str(key_file), "--ray", "--workers", "2"],
                              capture_output=True, text=True, env=env, timeout=400)
        assert run3.returncode == 0, run3.stderr[-3000:]
        assert _summary(run3.stderr) == (40, 0, 0)
        from faceveil.imageio import read_image

        for photo in photos:
            recovered = read_image(rec / f"{photo.stem}.recovered.png").rgb
            assert np.array_equal(recovered, read_image(photo).rgb), photo.name

        # the key never reached Ray's files (logs, spilled objects, session data) in clear
        forms = [key.secret, key.secret.hex().encode(), base64.b64encode(key.secret),
                 base64.urlsafe_b64encode(key.secret).rstrip(b"=")]
        for path in [p for p in ray_tmp.rglob("*") if p.is_file() and not p.is_symlink()]:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            assert not any(form in data for form in forms), path
        for text in (log1.read_text(), run2.stdout, run2.stderr, run3.stdout, run3.stderr):
            assert key.secret.hex() not in text
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

"""Faces batched through the UNet, and the sealed rounding ties and hashes that keep recovery
exact whatever batch, thread count or hardware computes it (tiny diffusers models, built here)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from faceveil import pipeline
from faceveil.api import anonymize, anonymize_files, recover, recover_files
from faceveil.container import open_header, unlock
from faceveil.engine import EngineSettings, Schedule, scramble, veil
from faceveil.errors import FaceveilError, HeaderError
from faceveil.faces.align import AlignTransform
from faceveil.faces.mask import default_outline
from faceveil.envelope import Envelope
from faceveil.keys import Key, new_nonce, public_gaussian
from faceveil.pipeline import (
    FaceJob,
    PhotoJob,
    VeiledPhoto,
    anonymize_array,
    anonymize_arrays,
    recover_arrays,
    recover_opened,
)
from faceveil.residual import round_prediction, tie_codes


def _latents(model, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, n = model.latent_channels, model.latent_size
    z0 = torch.randn(count, c, n, n, generator=g) * 0.5
    masks = torch.zeros(count, 1, n, n)
    for i in range(count):  # a different face region per sample
        masks[i, :, 2 + i : n - 4 + i, 4 : n - 2 - i] = 1
    nonces = [new_nonce() for _ in range(count)]
    noise = torch.cat([torch.from_numpy(public_gaussian(nonce, (1, c, n, n))) for nonce in nonces])
    return z0, masks, nonces, noise


def test_a_batched_veil_is_each_sample_veiled_alone(pixel_model):
    model, key = pixel_model, Key.generate()
    z0, masks, nonces, noise = _latents(model, 3)
    shape = (1, *z0.shape[1:])
    signs = torch.cat([torch.from_numpy(key.sign_pattern(n, shape)) for n in nonces])
    partner = torch.stack([torch.from_numpy(key.pairing(n, shape, masks[i : i + 1].expand(shape).numpy() > 0)) for i, n in enumerate(nonces)])
    settings = EngineSettings(steps=8, refine_iters=4, refine_tol=1e-6)
    schedule = Schedule.from_scheduler(model.scheduler, 8)
    context = z0 * (1 - masks)
    batched, stats = veil(model.eps, schedule, z0, masks, signs, settings, context, noise, partner)
    assert len(stats.step_residuals) == 8 and all(len(step) == 3 for step in stats.step_residuals)
    for i in range(3):
        s = slice(i, i + 1)
        alone, _ = veil(model.eps, schedule, z0[s], masks[s], signs[s], settings, context[s], noise[s], partner[i])
        # the same transform up to float round-off (the UNet's sums run in another order in a batch)
        assert (batched[s] - alone).abs().max() < 1e-3
        assert (alone - z0[s]).abs().mean() > 0.05  # and the face did change
    back, _ = veil(model.eps, schedule, batched, masks, signs, settings, context, noise, partner)
    assert (back - z0).abs().max() < 1e-2  # the key undoes a batch too


def test_scramble_of_a_batch_is_each_samples_own_involution():
    key = Key.generate()
    shape = (1, 2, 4, 4)
    inside = np.zeros(shape, bool)
    inside[..., 1:3, :] = True
    nonces = [new_nonce(), new_nonce()]
    z = torch.randn(2, *shape[1:])
    signs = torch.cat([torch.from_numpy(key.sign_pattern(n, shape)) for n in nonces])
    partner = torch.stack([torch.from_numpy(key.pairing(n, shape, inside)) for n in nonces])
    mixed = scramble(z, signs, partner)
    assert torch.equal(scramble(mixed, signs, partner), z)
    for i in range(2):
        assert torch.equal(mixed[i : i + 1], scramble(z[i : i + 1], signs[i : i + 1], partner[i]))


# ---- photos ------------------------------------------------------------------------------
def _photo(seed: int, height: int = 72, width: int = 96) -> np.ndarray:
    """A smooth synthetic photo (gradients and blobs: codecs and the model see structure, not noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([x / width * 180 + 30, y / height * 150 + 50, (x + y) / (width + height) * 120 + 60], axis=2)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(6, 20)
        image += rng.uniform(-60, 60, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def _face(x0: float, y0: float, side: float, size: int = 32) -> FaceJob:
    """A face job for the square box at (x0, y0) of ``side`` pixels (a plain scale, no rotation)."""
    s = size / side
    return FaceJob(AlignTransform(np.array([[s, 0, 0.5 * s - 0.5 - x0 * s], [0, s, 0.5 * s - 0.5 - y0 * s]]), size), default_outline(size))


def _photos() -> list[PhotoJob]:
    """Three photos with 1, 3 (two of them overlapping) and 2 faces."""
    return [
        PhotoJob(_photo(1), [_face(30, 20, 40)]),
        PhotoJob(_photo(2), [_face(4, 4, 30), _face(24, 14, 36), _face(60, 30, 34)]),
        PhotoJob(_photo(3), [_face(50, 10, 44), _face(6, 30, 32)]),
    ]


@pytest.fixture
def residual_always(monkeypatch):
    """Seal every face's residual (the tiny random model predicts faces worse than the codec
    alone, so the original region would be stored and the model never run at recovery)."""
    monkeypatch.setattr(pipeline, "encode_region", lambda original, inside: b"\0" * (1 << 30))


def _threads(n: int):
    class _Set:
        def __enter__(self):
            self.old = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.old)

    return _Set()


def test_photos_anonymized_in_a_batch_recover_exactly_alone_in_a_batch_and_on_other_thread_counts(pixel_model, residual_always):
    key, photos = Key.generate(), _photos()
    with _threads(1):
        results = anonymize_arrays(photos, key, pixel_model, batch_size=2)  # batches of 2 and of 1 faces
    for photo, (array, record, reports) in zip(photos, results):
        assert len(reports) == len(photo.faces)
        assert not np.array_equal(array, photo.rgb)
        _, private = open_header(key, record)
        assert all("residual" in face and len(face["sha256"]) == 32 for face in private["faces"])
        for threads in (1, 2):
            with _threads(threads):
                out, info = pipeline.recover_array(array, record, key, pixel_model)
            assert np.array_equal(out, photo.rgb), f"not exact with {threads} threads"
            assert info.verified and info.inexact_faces == []
    opened = [(array, unlock(key, record)) for array, record, _ in results]  # the file key draws the patterns
    veiled = [VeiledPhoto(array, o.public, o.private, None, o.key) for array, o in opened]
    for (out, info), photo in zip(recover_arrays(veiled, key, pixel_model, batch_size=3), photos):
        assert np.array_equal(out, photo.rgb) and info.verified


def test_a_batch_gives_each_photo_what_it_gets_alone(pixel_model):
    key, photos = Envelope.new([Key.generate()]), _photos()  # one file key for the batch and the photos alone
    nonces = [[new_nonce() for _ in p.faces] for p in photos]
    fixed = [PhotoJob(p.rgb, [FaceJob(f.transform, f.outline, n) for f, n in zip(p.faces, ns)]) for p, ns in zip(photos, nonces)]
    batched = anonymize_arrays(fixed, key, pixel_model, residual=False)
    for photo, (array, _, _) in zip(fixed, batched):
        alone, _, _ = anonymize_array(photo.rgb, key, pixel_model, faces=photo.faces, residual=False)
        diff = np.abs(alone.astype(int) - array.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.01  # float round-off of the batch, at most a rounding step


def test_rounding_ties_absorb_a_drift_below_the_band_and_a_larger_one_is_reported(pixel_model, residual_always, monkeypatch):
    key, photo = Key.generate(), _photos()[1]
    array, record, _ = anonymize_array(photo.rgb, key, pixel_model, faces=photo.faces)
    real = pipeline._predict

    def drifting(amount):
        def predict(run, faces, colours, hints):
            values, reports = real(run, faces, colours, hints)
            rng = np.random.default_rng(0)
            return [v + rng.uniform(-amount, amount, v.shape) for v in values], reports
        return predict

    monkeypatch.setattr(pipeline, "_predict", drifting(0.01))  # 100 times what thread counts cause, below 1/64
    out, info = pipeline.recover_array(array, record, key, pixel_model)
    assert np.array_equal(out, photo.rgb) and info.verified and not info.inexact_faces

    monkeypatch.setattr(pipeline, "_predict", drifting(0.4))  # far beyond the band: some integers change
    out, info = pipeline.recover_array(array, record, key, pixel_model)
    assert not np.array_equal(out, photo.rgb)
    assert info.inexact_faces, "an inexact recovery must never pass for exact"


def test_the_tie_codes_round_the_way_anonymization_did():
    values = np.array([[3.4999, 3.5001, 7.2], [0.5, 254.6, 255.49], [10.0, 12.53, -0.4]])
    codes = tie_codes(values)
    assert codes[0] == 1 + 2 * 3 and codes[1] == 1 + 9 and codes[2] == 0
    for drift in (-0.01, 0.01):
        assert np.array_equal(round_prediction(values + drift, codes), round_prediction(values, codes))
    assert np.array_equal(round_prediction(values, codes), np.clip(np.rint(values), 0, 255).astype(np.uint8))
    with pytest.raises(ValueError, match="rounding code"):
        round_prediction(values, np.array([27, 0, 0], np.uint8))


def test_a_header_from_before_hashes_and_ties_recovers_unverified(pixel_model, residual_always):
    key, photo = Key.generate(), _photos()[0]
    array, record, _ = anonymize_array(photo.rgb, key, pixel_model, faces=photo.faces)
    opened = unlock(key, record)
    public, private = opened.public, opened.private
    assert all("ties" in f for f in private["faces"])  # about 9 % of samples lie within 1/64 of a tie
    old = {**private, "faces": [{k: v for k, v in f.items() if k not in ("sha256", "ties")} for f in private["faces"]]}
    out, info = recover_opened(array, public, old, opened.key, pixel_model)  # same process, same floats: exact still
    assert np.array_equal(out, photo.rgb) and not info.verified and not info.inexact_faces


@pytest.mark.parametrize("field, value, message", [
    ("sha256", b"short", "incomplete"),
    ("ties", b"not zlib", "rounding ties are corrupt"),
    ("ties", zlib.compress(b"\0" * (1 << 24)), "rounding ties are corrupt"),  # a bomb: never inflated past the region
    ("ties", zlib.compress(b"\xff" * 4000), "rounding ties are corrupt"),
])
def test_corrupt_hashes_and_ties_are_header_errors(pixel_model, residual_always, field, value, message):
    key, photo = Key.generate(), _photos()[0]
    array, record, _ = anonymize_array(photo.rgb, key, pixel_model, faces=photo.faces)
    public, private = open_header(key, record)
    bad = {**private, "faces": [{**f, field: value} for f in private["faces"]]}
    with pytest.raises(HeaderError, match=message):
        recover_opened(array, public, bad, key, pixel_model)


# ---- files -------------------------------------------------------------------------------
def test_files_in_a_batch_fail_alone_and_recover_exactly(pixel_model, tmp_path):
    from PIL import Image

    key = Key.generate()
    paths = []
    for i in range(3):
        path = tmp_path / f"face{i}.png"
        Image.fromarray(_photo(10 + i, 32, 32)).save(path)
        paths.append(path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    files = [(paths[0], None), (tmp_path / "broken.png", None), (paths[1], None), (paths[2], None)]
    results = anonymize_files(files, key, model=pixel_model, aligned=True, batch_size=4)
    assert isinstance(results[1], FaceveilError) and results[1].exit_code == 2
    veiled = [r.outputs[0] for r in results if not isinstance(r, FaceveilError)]
    assert len(veiled) == 3 and all(p.exists() for p in veiled)
    back = recover_files([(v, None) for v in veiled], key, model=pixel_model)
    for path, result in zip(paths, back):
        assert not isinstance(result, FaceveilError), result
        assert np.array_equal(np.asarray(Image.open(result.outputs[0])), np.asarray(Image.open(path)))
    with pytest.raises(FaceveilError):  # the one-file API still raises
        anonymize(tmp_path / "broken.png", key, model=pixel_model, aligned=True)
    assert recover(veiled[0], key, tmp_path / "again.png", model=pixel_model).outputs[0].exists()


def test_full_precision_turns_tf32_off_on_cuda_and_restores_the_flags():
    """Only the flags can be checked here (no GPU): inside, no TF32 and deterministic cuDNN; after, as before."""
    from faceveil.models import full_precision

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32)
    with full_precision(torch.device("cuda")):
        assert not torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.deterministic
        assert not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32) == before
    with full_precision(torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 == before[0]  # nothing to do on the CPU


def test_a_file_the_model_refuses_is_its_own_failure_even_when_alone_in_its_batch(pixel_model, tmp_path):
    """A refusal inside the batch (here: the header's model is not the loaded one) comes back as
    that file's outcome; it does not escape ``recover_files`` and stop the caller's batch."""
    from PIL import Image

    from faceveil.errors import UsageError
    from faceveil.testing import tiny_pixel_model

    key = Key.generate()
    Image.fromarray(_photo(20, 32, 32)).save(tmp_path / "a.png")
    (veiled,) = anonymize_files([(tmp_path / "a.png", None)], key, model=pixel_model, aligned=True)
    (outcome,) = recover_files([(veiled.outputs[0], None)], key, model=tiny_pixel_model(32, seed=1))
    assert isinstance(outcome, UsageError) and "weights differ" in str(outcome)
    assert not (tmp_path / "a.recovered.png").exists()

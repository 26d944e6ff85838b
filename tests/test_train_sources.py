"""Tests of the chunked training set: external sources, exclusions, deduplication, fill, chunks.

A tiny shared folder and tiny external sources are built here from a few real photos of
``../shared`` or, without it, from distinct variants of the free photos
(``conftest.stand_in_shared``), in the layout of the real ones: CelebA-numbered files (full
images and tight crops), UTKFace-named files and LFW folders. Nothing here needs the
network, a GPU or the fetched mirrors (mediapipe, a requirement, detects the faces).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from faceveil.errors import UsageError
from faceveil.train import chunks as tchunks
from faceveil.train import sources as tsources
from faceveil.train.command import register
from faceveil.train.crops import align_filled, filled_fraction, hamming, perceptual_hash
from faceveil.train.data import celeba_holdout_identities, load_faces
from faceveil.train.prepare import _close_pairs, _distance, prepare_face_set

from conftest import SHARED, stand_in_shared  # ../shared, or $FACEVEIL_SHARED
RES = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _save(path: Path, image: np.ndarray, quality: int = 92) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=quality)


def _tight(image: np.ndarray) -> np.ndarray:
    """A tight face crop of a shared 256 px CelebA photo, like the male-female set's."""
    return np.ascontiguousarray(image[72:192, 80:176])


# ------------------------------------------------------------------------- pure functions


def test_close_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(b) for b in rng.integers(0, 64, 60)]
    near = np.array([base[i % 40] ^ flips[i] ^ flips[(i * 7) % 60] for i in range(60)], dtype=np.uint64)
    hashes = np.concatenate([base, near])
    for d in (0, 1, 2, 3, 5):
        brute = {
            (i, j)
            for i in range(len(hashes))
            for j in range(i + 1, len(hashes))
            if hamming(int(hashes[i]), int(hashes[j])) <= d
        }
        assert set(_close_pairs(hashes, d)) == brute
    assert _distance(hashes[:3], hashes[:3]).tolist() == [0, 0, 0]


def test_perceptual_hash_survives_reencoding_not_other_images():
    import cv2

    rng = np.random.default_rng(0)
    smooth = [cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
              for _ in range(20)]
    a = smooth[0]
    noisy = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    assert hamming(perceptual_hash(a), perceptual_hash(noisy)) <= 2
    assert hamming(perceptual_hash(a), perceptual_hash(cv2.resize(cv2.resize(a, (40, 40)), (64, 64)))) <= 3
    others = [hamming(perceptual_hash(a), perceptual_hash(b)) for b in smooth[1:]]
    assert min(others) > 10


def test_align_filled_inside_is_inference_crop_and_tight_is_filled():
    from faceveil.faces import align_face

    lm = np.array([[100.0, 110.0], [156.0, 110.0], [128.0, 140.0], [106.0, 170.0], [150.0, 170.0]])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    crop, transform, filled = align_filled(image, lm, 32)
    ref, ref_t = align_face(image, lm, 32)
    assert filled == 0.0 and transform == ref_t and np.array_equal(crop, ref)

    tight = np.ascontiguousarray(image[40:220, 50:206])
    lm_t = lm - [50, 40]
    crop_t, t_t, filled_t = align_filled(tight, lm_t, 32)
    assert 0.2 < filled_t < 0.9 and filled_t == filled_fraction(tight.shape, t_t)
    ref_t_crop, _ = align_face(tight, lm_t, 32)
    # Far from the tight image's border nothing is filled: the same pixels as inference.
    centre = (slice(12, 20), slice(12, 20))
    assert np.abs(crop_t[centre].astype(int) - ref_t_crop[centre].astype(int)).max() <= 2
    # Outside it, the fill is smoother than the reflected noise inference would show.
    corner = (slice(0, 4), slice(0, 4))
    assert crop_t[corner].astype(float).std() < ref_t_crop[corner].astype(float).std()


def test_source_digest_is_sha256sum_of_sha256sum(tmp_path):
    for rel, data in (("a/x.jpg", b"1"), ("a/b/y.jpg", b"22"), ("a/z y.jpg", b"333"), ("a/n.txt", b"no")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    files = tsources.list_source_files(tmp_path, ["a"])
    assert files == ["a/b/y.jpg", "a/x.jpg", "a/z y.jpg"]
    lines = "".join(f"{hashlib.sha256((tmp_path / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    assert tsources.source_digest(tmp_path, files) == hashlib.sha256(lines.encode()).hexdigest()
    with pytest.raises(UsageError, match="not found"):
        tsources.list_source_files(tmp_path, ["missing"])


def test_celeba_names_and_known_sources():
    assert tsources.celeba_image_name("Training/male/063503.jpg.jpg") == "063503.jpg"
    assert tsources.celeba_image_name("celebA/000001.jpg") == "000001.jpg"
    assert tsources.celeba_image_name("dataset/UTKFace/1_0_0_2017.jpg.chip.jpg") is None
    names = [s.name for s in tsources.KNOWN_SOURCES]
    assert names == ["cs389-hw4-celeba", "male-female-face-dataset", "utkface-agepred"]
    assert all(len(s.commit) == 40 and "non-commercial" in s.licence for s in tsources.KNOWN_SOURCES)
    assert tsources.mirror_dir("/m", tsources.known_source("utkface-agepred")) == Path(
        "/m/delonyohan+deeplearn-agepred/repo"
    )
    with pytest.raises(UsageError):
        tsources.known_source("nope")


def test_extract_source_from_a_bare_mirror(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    work = tmp_path / "work"
    (work / "imgs" / "sub").mkdir(parents=True)
    (work / "imgs" / "sub" / "000007.jpg").write_bytes(b"jpeg")
    (work / "other.txt").write_text("x")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "x"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "mirror")], check=True)
    spec = tsources.SourceSpec("demo", "o/demo", commit, ("imgs",), "celeba", "demo", "test")
    dest = tsources.extract_source(tmp_path / "mirror", spec, tmp_path / "sources")
    assert (dest / "imgs" / "sub" / "000007.jpg").read_bytes() == b"jpeg"
    assert not (dest / "other.txt").exists()
    bad = tsources.SourceSpec("bad", "o/bad", "0" * 40, ("imgs",), "celeba", "bad", "test")
    with pytest.raises(UsageError, match="cannot extract"):
        tsources.extract_source(tmp_path / "mirror", bad, tmp_path / "sources")


# ------------------------------------------------------------------------- the tiny world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A shared folder and external sources with planted exclusions and duplicates."""
    pytest.importorskip("mediapipe")
    root = tmp_path_factory.mktemp("world")
    photos_from = SHARED
    if not (SHARED / "data" / "celeba" / "images").is_dir() or not (SHARED / "data" / "lfw" / "images").is_dir():
        photos_from = stand_in_shared(root / "stand-in")  # the free photos, in ../shared's layout
    CELEBA, LFW = photos_from / "data" / "celeba", photos_from / "data" / "lfw"
    shared, sources = root / "shared", root / "sources"
    # Six shared CelebA identities, two photos each.
    ident: dict[str, str] = {}
    for line in (CELEBA / "identity.txt").read_text().splitlines()[1:]:
        img, pid = line.split()
        ident[img] = pid
    by_id: dict[str, list[str]] = {}
    for img, pid in sorted(ident.items()):
        by_id.setdefault(pid, []).append(img)
    pids = sorted(by_id)[:6]
    outsider = by_id[sorted(by_id)[6]][0]  # a photo not in the tiny shared folder
    photos = {pid: by_id[pid][:2] for pid in pids}
    held = celeba_holdout_identities(pids, 0.1)  # one of the six
    free = [p for p in pids if p not in held]
    banned = free[0]  # listed in exclude_identities.txt
    keep_a, keep_b = free[1], free[2]
    cel = shared / "data" / "celeba"
    (cel / "images").mkdir(parents=True)
    lines = ["image identity"]
    for pid in pids:
        for img in photos[pid]:
            shutil.copy(CELEBA / "images" / img, cel / "images" / img)
            lines.append(f"{img} {pid}")
    (cel / "identity.txt").write_text("\n".join(lines) + "\n")
    # identity_CelebA.txt: the shared photos plus the external files' numbers.
    full = {img: pid for pid in pids for img in photos[pid]}
    ext = {"900001.jpg": keep_a, "900002.jpg": banned, "900003.jpg": keep_b, "900004.jpg": keep_b,
           "900005.jpg": keep_a}
    full.update(ext)
    (cel / "identity_CelebA.txt").write_text(
        "img label\n" + "".join(f"{k} {v}\n" for k, v in sorted(full.items()))
    )
    (cel / "exclude_identities.txt").write_text(f"# reserved\n{banned}\n")
    # LFW: one evaluation person (in pairs.txt) and one free person.
    lfw = shared / "data" / "lfw"
    people = sorted(p.name for p in (LFW / "images").iterdir() if p.is_dir())
    pairs = (LFW / "pairs.txt").read_text().splitlines()[1].split()
    evaluated = pairs[0]
    from faceveil.train.data import lfw_excluded_names

    lfw_eval = set(lfw_excluded_names(LFW))
    free_person = next(p for p in people if p not in lfw_eval and len(list((LFW / "images" / p).glob("*.jpg"))) >= 3)
    for person in (evaluated, free_person):
        (lfw / "images" / person).mkdir(parents=True)
        for f in sorted((LFW / "images" / person).glob("*.jpg"))[:2]:
            shutil.copy(f, lfw / "images" / person / f.name)
    (lfw / "pairs.txt").write_text(f"1\t1\n{evaluated}\t1\t2\n")
    (lfw / "pairsDevTest.txt").write_text(f"1\n{evaluated}\t1\t2\n")
    # cs389: full images; one has a shared photo's number (a duplicate by number).
    a0, b0 = photos[keep_a][0], photos[keep_b][0]
    cs = sources / "cs389-hw4-celeba" / "celebA"
    _save(cs / a0, _read(CELEBA / "images" / a0)[::2, ::2].copy())  # same photo, half size
    _save(cs / "900001.jpg", _read(CELEBA / "images" / photos[keep_a][1]))  # same photo, other number
    # male-female: tight crops; one of an excluded identity, one a copy of it under a
    # free identity's number (a duplicate of an excluded photo), one a fresh photo.
    mf = sources / "male-female-face-dataset"
    banned_img = _read(CELEBA / "images" / photos[banned][0])
    _save(mf / "Training" / "male" / "900002.jpg.jpg", _tight(banned_img))
    _save(mf / "Training" / "female" / "900003.jpg.jpg", _tight(banned_img), quality=85)
    _save(mf / "Validation" / "male" / "900004.jpg.jpg", _tight(_read(CELEBA / "images" / outsider)))
    # ... and a tight crop of a kept shared photo under another number: the same photo,
    # found by the face region although the fill around it differs.
    _save(mf / "Validation" / "female" / "900005.jpg.jpg", _tight(_read(CELEBA / "images" / photos[keep_a][0])))
    # UTKFace: a copy of the LFW evaluation person's photo (a duplicate of an excluded one)
    # and a free person's.
    utk = sources / "utkface-agepred" / "dataset" / "UTKFace"
    eval_photo = sorted((LFW / "images" / evaluated).glob("*.jpg"))[0]
    free_photo = sorted((LFW / "images" / free_person).glob("*.jpg"))[2]  # not in the shared copy
    _save(utk / "30_0_0_20170101000000001.jpg.chip.jpg", _read(eval_photo))
    _save(utk / "40_1_2_20170101000000002.jpg.chip.jpg", _read(free_photo)[10:140, 10:140].copy())
    out = root / "set32"
    report = prepare_face_set(
        shared, out, RES, sources_root=sources, cache_dir=root / "cache",
        max_chunk_bytes=12000, progress=False,
    )
    return {
        "root": root, "shared": shared, "sources": sources, "out": out, "report": report,
        "held": held, "banned": banned, "evaluated": evaluated, "free_person": free_person,
        "a0": a0, "photos": photos, "keep_a": keep_a, "keep_b": keep_b,
    }


def test_exclusions_drop_every_reserved_identity(world):
    prov = world["report"].provenance
    fd = tchunks.load_face_set(world["out"])
    names = set(fd.identity_names)
    assert f"celeba:{world['banned']}" not in names
    assert not names & {f"celeba:{h}" for h in world["held"]}
    assert f"lfw:{world['evaluated']}" not in names
    assert f"lfw:{world['free_person']}" in names
    by = {k: v["counts"]["excluded_by_reason"] for k, v in prov["sources"].items()}
    assert by["shared-celeba"] == {"exclude_identities": 2, "celeba_holdout": 2}
    assert by["shared-lfw"] == {"lfw_evaluation": 2}
    assert by["male-female-face-dataset"] == {"exclude_identities": 1}
    assert prov["exclusions"]["exclude_identities"]["identities"] == 1
    assert prov["exclusions"]["celeba_holdout"]["identities"] == world["held"]


def test_dedup_by_number_and_by_content(world):
    prov = world["report"].provenance
    c = {k: v["counts"] for k, v in prov["sources"].items()}
    # cs389's half-size copy of a shared photo: same CelebA number.
    assert c["cs389-hw4-celeba"]["dup_celeba_number"] == 1
    # cs389's 900001 is a shared photo under another number: same content.
    assert c["cs389-hw4-celeba"]["dup_content"] == 1
    # male-female 900005: a tight crop of a kept shared photo.
    assert c["male-female-face-dataset"]["dup_content"] == 1
    # male-female 900003 and UTKFace's copy of an LFW evaluation photo: copies of excluded photos.
    assert c["male-female-face-dataset"]["dup_excluded"] == 1
    assert c["utkface-agepred"]["dup_excluded"] == 1
    fd = tchunks.load_face_set(world["out"])
    assert not any(s.endswith(("900001.jpg", "900003.jpg.jpg", "900005.jpg.jpg", "30_0_0_20170101000000001.jpg.chip.jpg"))
                   for s in fd.sources)
    assert f"shared-celeba/images/{world['a0']}" in fd.sources
    cal = prov["dedup"]["calibration"]["same_photo_two_sources"]
    assert cal["pairs"] == 1 and cal["found_by_rule"] == 1
    kept = sum(v["kept"] for v in c.values())
    assert kept == prov["images"] == len(fd) == len(set(fd.sources))


def test_chunks_fit_and_provenance_records_sources(world):
    out, prov = world["out"], world["report"].provenance
    assert len(prov["chunks"]) >= 2
    total = 0
    for entry in prov["chunks"]:
        f = out / entry["file"]
        assert f.stat().st_size == entry["bytes"] <= 12000
        assert tchunks.file_sha256(f) == entry["sha256"]
        part = load_faces(f)  # each chunk is a complete face file
        assert part.images.shape[1:] == (RES, RES, 3) and len(part) == entry["images"]
        assert entry["first"] == total
        total += entry["images"]
    assert total == prov["images"]
    mf = prov["sources"]["male-female-face-dataset"]
    assert mf["repository"] == "laxmimerit/male-female-face-dataset"
    assert mf["commit"] == "ea345b15c9964cfb54c7f2b297f424383ce1e249"
    assert mf["files"] == 4 and mf["selected"] == 4
    files = tsources.list_source_files(world["sources"] / mf["name"], mf["folders"])
    assert mf["sha256"] == tsources.source_digest(world["sources"] / mf["name"], files)
    assert mf["filled"]["mean"] > 0.2  # tight crops: the FFHQ quad reaches outside
    assert prov["sources"]["shared-lfw"]["filled"]["mean"] == 0.0
    assert "non-commercial" in prov["licence"]
    fd = tchunks.load_face_set(out / tchunks.MANIFEST_NAME)
    with np.load(out / prov["chunks"][0]["file"]) as z:
        assert {"phash", "filled", "align_matrix", "source_shape"} <= set(z.files)
    assert fd.manifest["format"] == tchunks.SET_FORMAT


def test_rerun_from_cache_is_identical(world, tmp_path):
    again = prepare_face_set(
        world["shared"], tmp_path / "set32", RES, sources_root=world["sources"],
        cache_dir=world["root"] / "cache", max_chunk_bytes=12000, progress=False,
    )
    first = world["report"].provenance
    assert [c["sha256"] for c in again.provenance["chunks"]] == [c["sha256"] for c in first["chunks"]]
    assert again.seconds < world["report"].seconds


def test_load_face_set_refuses_missing_or_corrupt_chunks(world, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(world["out"], copy)
    chunks = world["report"].provenance["chunks"]
    (copy / chunks[-1]["file"]).unlink()
    with pytest.raises(UsageError, match="carry them first"):
        tchunks.load_face_set(copy)
    shutil.copy(world["out"] / chunks[-1]["file"], copy / chunks[-1]["file"])
    data = bytearray((copy / chunks[0]["file"]).read_bytes())
    data[-100] ^= 0xFF
    (copy / chunks[0]["file"]).write_bytes(bytes(data))
    with pytest.raises(UsageError, match="SHA-256"):
        tchunks.load_face_set(copy)


def test_tiny_training_on_the_chunked_set(world, tmp_path):
    from faceveil.train.trainer import TrainConfig, load_checkpoint, train

    cfg = TrainConfig(
        data=str(world["out"]), out_dir=str(tmp_path / "run"), preset="tiny", steps=2, batch_size=2,
        checkpoint_every=2, sample_every=0, num_samples=0, log_every=1, progress=False, device="cpu",
    )
    result = train(cfg)
    assert result.step == 2 and all(np.isfinite(result.losses))
    summary = load_checkpoint(result.checkpoint)["data_summary"]
    assert summary["images"] == world["report"].images
    assert summary["provenance_sha256"] == tchunks.file_sha256(world["out"] / tchunks.MANIFEST_NAME)
    assert summary["sources"]["utkface-agepred"]["commit"] == "b06607bf2477c8295b33facb5dea7aada27cac01"
    assert len(summary["chunks"]) == len(world["report"].provenance["chunks"])
    assert summary["loss_mask"].startswith("pixels from the photo")  # the fill beyond tight photos is no target


def test_the_fill_mask_follows_each_crop_s_photo(world):
    """set_geometry gives each crop's alignment in load order; photo_mask is False exactly on the fill."""
    from faceveil.train.crops import photo_mask, set_geometry

    fd = tchunks.load_face_set(world["out"])
    matrices, shapes = set_geometry(world["out"])
    assert len(matrices) == len(shapes) == len(fd)
    mask = photo_mask(matrices, shapes, fd.images.shape[1], margin=0.0)
    folder, prov = tchunks.read_manifest(world["out"])
    filled = np.concatenate([np.load(folder / c["file"])["filled"] for c in prov["chunks"]])
    assert np.allclose(1 - mask.mean(axis=(1, 2)), filled, atol=1e-6)


def test_face_framed_set_with_masks_trains_an_inpainting_model(world, tmp_path):
    """The chunked set also carries each crop's inference mask, in the face-centred framing."""
    from faceveil.train.trainer import TrainConfig, load_checkpoint, train

    out = tmp_path / "face32"
    report = prepare_face_set(
        world["shared"], out, RES, sources_root=world["sources"], cache_dir=tmp_path / "cache",
        max_chunk_bytes=12000, progress=False, framing="face", masks=True,
    )
    fd = tchunks.load_face_set(out)
    assert report.provenance["framing"] == "face" and len(fd) == report.images
    assert fd.masks is not None and fd.masks.shape == fd.images.shape[:3]
    share = fd.masks.mean(axis=(1, 2))
    assert (share > 0.2).all() and (share < 0.8).all()  # the face, with context around it
    cfg = TrainConfig(
        data=str(out), out_dir=str(tmp_path / "run"), preset="tiny", steps=1, batch_size=2, conditional=True,
        checkpoint_every=1, sample_every=0, num_samples=0, progress=False, device="cpu",
    )
    result = train(cfg)
    assert result.step == 1 and load_checkpoint(result.checkpoint)["data_summary"]["framing"] == "face"


def test_cli_prepare_data_writes_a_chunked_set(world, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="faceveil")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli32"
    args = parser.parse_args(
        ["prepare-data", "--shared", str(world["shared"]), "--sources-root", str(world["sources"]),
         "--source", "utkface-agepred", "-o", str(out), "--size", str(RES), "--chunk-mb", "1",
         "--chunk-encoding", "webp", "--quiet"]
    )
    assert args.func(args) == 0
    assert "crops in 1 chunks" in capsys.readouterr().out
    prov = json.loads((out / tchunks.MANIFEST_NAME).read_text())
    assert set(prov["sources"]) == {"shared-celeba", "shared-lfw", "utkface-agepred"}
    assert prov["encoding"] == {"kind": "webp", "lossless": True}
    with pytest.raises(UsageError, match="--sources-root"):
        bad = parser.parse_args(["prepare-data", "--shared", str(world["shared"]), "-o", str(out),
                                 "--extract-from", "/nowhere"])
        bad.func(bad)


def test_checks_compare_crops_with_inference_crops(world, tmp_path):
    from faceveil.train.checks import check_face_set

    result = check_face_set(world["out"], tmp_path / "check", sample=4)
    assert (tmp_path / "check" / "means.png").is_file()
    assert json.loads((tmp_path / "check" / "check.json").read_text())["images"] == world["report"].images
    shared = result["sources"]["shared-celeba"]
    assert shared["redetect"]["detected"] == shared["redetect"]["sampled"] > 0
    assert shared["redetect"]["landmark_error_mean"] < 0.06  # where inference puts the face
    assert result["sources"]["male-female-face-dataset"]["filled_mean"] > 0.2

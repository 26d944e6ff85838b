"""Shared fixtures: tiny diffusers models (random weights, built here) and paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The large shared data sets (LFW, CelebA, reference models): ../shared beside the clone, or
# $FACEVEIL_SHARED (FACEVEIL_SHARED=/nonexistent shows what a clone without them runs).
SHARED = Path(os.environ.get("FACEVEIL_SHARED") or Path(__file__).resolve().parents[2] / "shared")

torch.set_num_threads(2)

# The output check (--verify) judges anonymity; the suite's random-weight models cannot give it,
# so commands run without it unless a test asks for it (--verify: tests/test_detection.py).
os.environ.setdefault("FACEVEIL_VERIFY", "0")


def pytest_collection_modifyitems(config, items):
    """The full LFW reproductions (about 20 minutes, marker ``full_lfw``) are an opt-in measurement, not
    part of the test command: deselected, not skipped, unless FACEVEIL_FULL_LFW=1."""
    if os.environ.get("FACEVEIL_FULL_LFW") == "1":
        return
    opt_in = [item for item in items if item.get_closest_marker("full_lfw")]
    if opt_in:
        config.hook.pytest_deselected(items=opt_in)
        items[:] = [item for item in items if not item.get_closest_marker("full_lfw")]


@pytest.fixture(scope="session")
def pixel_model():
    from faceveil.testing import tiny_pixel_model

    return tiny_pixel_model(32)


@pytest.fixture(scope="session")
def latent_model():
    from faceveil.testing import tiny_latent_model

    return tiny_latent_model(32)


@pytest.fixture()
def face_png(tmp_path):
    """A 32 px textured stand-in for an aligned face crop (the CLI tests' input)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    base = np.stack([yy * 6, xx * 6, (yy + xx) * 3], axis=2).astype(np.float64)
    image = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "face.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture()
def group_photo(tmp_path):
    """Three LFW people side by side (../shared's photos, or free stand-ins framed alike): (path, pixels)."""
    image = np.concatenate([lfw_face(n) for n in ("Abel_Pacheco", "Angela_Bassett", "Ann_Veneman")], axis=1)
    path = tmp_path / "group.png"
    Image.fromarray(image).save(path)
    return path, image


@pytest.fixture()
def keyfile(tmp_path):
    """A fresh key file made by ``faceveil keygen``."""
    from faceveil.cli import main

    path = tmp_path / "secret.key"
    assert main(["keygen", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def pixel_model_dir(tmp_path_factory, pixel_model):
    """The tiny pixel model saved as a diffusers folder, for the CLI."""
    folder = tmp_path_factory.mktemp("model")
    pixel_model.unet.save_pretrained(folder / "unet")
    pixel_model.scheduler.save_pretrained(folder / "scheduler")
    return folder


# ---- freely licensed photos, shipped by dependencies: real faces for a clone without ../shared ----
# astronaut: Eileen Collins, NASA, public domain (scikit-image, skimage.data.astronaut);
# hopper: Grace Hopper, U.S. Navy, public domain (matplotlib's sample data; mediapipe needs matplotlib);
# cameraman: CC0 by Lav Varshney (scikit-image, skimage.data.camera; grey).
# Face boxes (x0, y0, x1, y1) are where faceveil's detector finds each face.
FREE_FACES = {"astronaut": (178, 83, 273, 178), "hopper": (171, 147, 366, 341), "cameraman": (200, 123, 276, 199)}
# The LFW people the tests name, and the free face that stands in for each without ../shared.
STAND_INS = {"Abel_Pacheco": "astronaut", "Angela_Bassett": "hopper", "Ann_Veneman": "cameraman", "AJ_Cook": "hopper"}
LFW_IMAGES = SHARED / "data" / "lfw" / "images"
CELEBA_IMAGES = SHARED / "data" / "celeba" / "images"


def free_photo(name: str) -> np.ndarray:
    """The whole freely licensed photo ``name`` (a key of FREE_FACES), RGB uint8."""
    if name == "hopper":
        import matplotlib.cbook

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (pip install -e '.[test]')")
    if name == "astronaut":
        return skimage_data.astronaut()
    return np.repeat(skimage_data.camera()[..., None], 3, axis=-1)


def free_face(name: str, size: int = 150, scale: float = 2.3, flip: bool = False) -> np.ndarray:
    """A square ``size`` px crop of a free photo around its face, ``scale`` times the face box wide
    (2.3 frames like ../shared's 150 px LFW photos, 2.5 like its 256 px CelebA crops)."""
    photo = free_photo(name)
    x0, y0, x1, y1 = FREE_FACES[name]
    side = min(int(round(scale * (x1 - x0))), *photo.shape[:2])
    left = min(max(int(round((x0 + x1 - side) / 2)), 0), photo.shape[1] - side)
    top = min(max(int(round((y0 + y1 - side) / 2)), 0), photo.shape[0] - side)
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.LANCZOS)
    return np.asarray(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop)


def lfw_face(name: str) -> np.ndarray:
    """LFW's ``<name>_0001.jpg`` from ../shared, or, without it, its free stand-in framed the same way."""
    path = LFW_IMAGES / name / f"{name}_0001.jpg"
    if path.is_file():
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    return free_face(STAND_INS[name])


def lfw_face_file(name: str, folder: Path) -> Path:
    """A JPEG file of :func:`lfw_face`: LFW's own file, or the stand-in written into ``folder``."""
    path = LFW_IMAGES / name / f"{name}_0001.jpg"
    if path.is_file():
        return path
    out = folder / f"{STAND_INS[name]}.jpg"
    Image.fromarray(free_face(STAND_INS[name])).save(out, quality=95)
    return out


BORDER_CUT = 0.38  # the stand-in's cut: the share of the astronaut's face width left of the border


def border_photo() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """LFW's Tony_Blair_0001 (a man in profile cut by the left border beside Tony Blair; issue 20)
    and a box around the cut face; without ../shared, a stand-in: the astronaut's face cut by the
    left border (MediaPipe misses it; CenterFace and dlib find it) beside her whole face."""
    path = LFW_IMAGES / "Tony_Blair" / "Tony_Blair_0001.jpg"
    if path.is_file():
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        side = image.shape[1] / 250  # the box was measured on the 250 px original
        return image, (-12 * side, 30 * side, 52 * side, 140 * side)
    face = free_face("astronaut")
    width = face.shape[1] / 2.3  # free_face frames the face box 2.3 times
    left = (face.shape[1] - width) / 2
    cut = int(round(left + BORDER_CUT * width))
    image = np.ascontiguousarray(np.concatenate([face[:, cut:], face], axis=1))
    return image, (left - cut - 5, left - 18, left + width - cut + 5, left + width + 10)


def large_portrait() -> np.ndarray:
    """faceveil.testing's 1024 px portrait (a face of about 600 px) from ../shared's CelebA, or,
    without it, the same kind of picture from the free Grace Hopper photo."""
    from faceveil.testing import portrait_photo

    if (CELEBA_IMAGES / "000176.jpg").is_file():
        return portrait_photo(SHARED)
    big = Image.fromarray(free_face("hopper", 1024, 1.75)).resize((1024, 1024))
    noise = np.random.default_rng(176).normal(0.0, 1.5, (1024, 1024, 3))
    return np.clip(np.rint(np.asarray(big, dtype=np.float64) + noise), 0, 255).astype(np.uint8)


def large_group(width: int = 4000) -> np.ndarray:
    """faceveil.testing's group photo of six people from ../shared's CelebA, or, without it, six
    tiles of the three free faces (each also mirrored), laid out the same way."""
    from faceveil.testing import GROUP_FACES, group_photo

    if all((CELEBA_IMAGES / f"{name}.jpg").is_file() for name in GROUP_FACES):
        return group_photo(SHARED, width)
    height = int(round(width * 0.6))
    canvas = Image.new("RGB", (width, height), (118, 124, 131))
    tile = int(width * 0.24)
    for i in range(6):
        face = free_face(("astronaut", "hopper", "cameraman")[i % 3], 256, 2.5, flip=i >= 3)
        x, y = int(width * (0.04 + 0.32 * (i % 3))), int(height * (0.06 + 0.48 * (i // 3)))
        canvas.paste(Image.fromarray(face).resize((tile, tile), Image.LANCZOS), (x, y))
    noise = np.random.default_rng(6).normal(0.0, 1.5, (height, width, 3))
    return np.clip(np.rint(np.asarray(canvas, dtype=np.float64) + noise), 0, 255).astype(np.uint8)


def free_face_files(folder: Path, count: int) -> list[Path]:
    """``count`` JPEG photos of the free faces, each framed differently (scale, mirror), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        name = ("astronaut", "hopper", "cameraman")[i % 3]
        path = folder / f"{name}_{i:04d}.jpg"
        Image.fromarray(free_face(name, 150, 2.1 + 0.05 * (i // 6), flip=bool(i // 3 % 2))).save(path, quality=92)
        paths.append(path)
    return paths


def demo_clip(path: Path, frames: int) -> Path:
    """faceveil.video.demo's clip of two people from ../shared's CelebA; without it, the same clip
    drawn from a stand-in folder in ../shared's layout whose two photos are free ones."""
    from faceveil.video.demo import PERSON_A, PERSON_B, write_demo_clip

    shared = SHARED
    if not all((CELEBA_IMAGES / f"{name}.jpg").is_file() for name in (PERSON_A, PERSON_B)):
        shared = path.parent / "stand-in-shared"
        images = shared / "data" / "celeba" / "images"
        images.mkdir(parents=True, exist_ok=True)
        # demo crops (0, 20, 178, 198); B framed tight with the face right of centre, as CelebA's B is, so the
        # clip plays the same scenario: B half in the picture from frame 9, found by MediaPipe from frame 11
        for name, free, size, scale, at in ((PERSON_A, "astronaut", 178, 2.3, (0, 20)), (PERSON_B, "hopper", 236, 1.9, (23, 12))):
            canvas = Image.new("RGB", (178, 218), (118, 124, 131))
            canvas.paste(Image.fromarray(free_face(free, size, scale)), at)
            canvas.save(images / f"{name}.jpg", quality=95)
    return write_demo_clip(path, shared, frames=frames)


# ---- a stand-in for ../shared's CelebA and LFW folders, from the free faces -------------
def free_variant(name: str, variant: int, size: int = 256, scale: float = 2.5, down: int = 0) -> np.ndarray:
    """Variant ``variant`` (0 to 7) of the free face ``name``, ``size`` px, the face box ``1/scale`` of it
    and moved ``down`` px: mirrored or not, and warped by a gentle wave of its own phase (a few pixels; the
    FFHQ alignment, a similarity, cannot undo it, so the fine detail of two variants disagrees as that of
    two photos does), with its own grain. Each stays a clear, detectable face."""
    import cv2

    face = free_face(name, size, scale, flip=bool(variant % 2)).astype(np.float32)
    if down:
        face = np.pad(face[:-down], ((down, 0), (0, 0), (0, 0)), mode="edge")
    phase = 2 * np.pi * (variant // 2) / 4
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    amplitude, wave = 0.025 * size, 2 * np.pi / (0.25 * size)
    map_x = xx + amplitude * np.sin(wave * yy + phase)
    map_y = yy + amplitude * np.sin(wave * xx + 1.7 * phase)
    image = cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    noise = np.random.default_rng([variant, len(name)]).normal(0.0, 2.0, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def stand_in_shared(root: Path) -> Path:
    """A folder in ../shared's layout (``data/celeba``, ``data/lfw``) whose photos are :func:`free_variant`s.

    CelebA: seven identities (``101`` to ``107``), two 256 px photos each, in ``identity.txt``: the
    astronaut's and Grace Hopper's variants, the face about 75 px wide a little below the middle, as in
    the shared crops. LFW (250 px photos): the cameraman's variants, ``Eileen_Collins`` (two photos, the
    evaluation pair of ``pairs.txt`` and ``pairsDevTest.txt``), ``Grace_Hopper`` and ``Lav_Varshney``
    (three each, free to train on; names only: the photos are all the cameraman's). Every photo is a
    distinct variant, so deduplication finds only the copies a test plants.
    """
    celeba = root / "data" / "celeba"
    (celeba / "images").mkdir(parents=True, exist_ok=True)
    lines, index = ["image identity"], 0
    for pid in range(101, 108):
        for k in range(2):
            name = f"{100000 + index + 1:06d}.jpg"
            if index % 2 == 0:
                photo = free_variant("astronaut", index // 2, 256, 3.4, down=20)
            else:  # Grace Hopper's photo is too tight to frame wider: framed at 196 px, then widened
                photo = np.pad(free_variant("hopper", index // 2, 196, 2.5), ((40, 20), (30, 30), (0, 0)), mode="edge")
            Image.fromarray(photo).save(celeba / "images" / name, quality=95)
            lines.append(f"{name} {pid}")
            index += 1
    (celeba / "identity.txt").write_text("\n".join(lines) + "\n")
    lfw, variant = root / "data" / "lfw", 0
    for person, count in (("Eileen_Collins", 2), ("Grace_Hopper", 3), ("Lav_Varshney", 3)):
        (lfw / "images" / person).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            photo = Image.fromarray(free_variant("cameraman", variant, 250, 2.3))
            photo.save(lfw / "images" / person / f"{person}_{k + 1:04d}.jpg", quality=95)
            variant += 1
    (lfw / "pairs.txt").write_text("1\t1\nEileen_Collins\t1\t2\n")
    (lfw / "pairsDevTest.txt").write_text("1\nEileen_Collins\t1\t2\n")
    return root

"""Tests of faceveil.faces: detection, alignment, masks, paste-back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceveil.errors import UsageError
from faceveil.faces import (
    CANONICAL_LANDMARKS5,
    AlignTransform,
    align_face,
    alignment_transform,
    default_mask,
    detect_faces,
    face_mask,
    face_outline,
    mask_from_uint8,
    mask_to_uint8,
    outline_region,
    paste_crop,
    transform_points,
)
from faceveil.faces.mask import FACE_OVAL

from conftest import CELEBA_IMAGES as CELEBA, free_face, lfw_face

# A frontal face: eyes 40 px apart, mouth 40 px below the eyes.
LM = np.array([[100.0, 100.0], [140.0, 100.0], [120.0, 120.0], [105.0, 140.0], [135.0, 140.0]])


def _rotate(points: np.ndarray, deg: float, centre=(120.0, 120.0)) -> np.ndarray:
    a = np.deg2rad(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - centre) @ r.T + centre


def _lfw(name: str) -> np.ndarray:
    return lfw_face(name)  # LFW's photo from ../shared, or a free stand-in framed alike


# ------------------------------------------------------------------ transforms
def test_transform_json_round_trip_is_exact():
    t = alignment_transform(_rotate(LM, 17.3) * 1.37 + 0.123, 256)
    text = json.dumps(t.to_json())
    back = AlignTransform.from_json(json.loads(text))
    assert back == t and back.matrix.tobytes() == t.matrix.tobytes()
    assert AlignTransform.from_json(t.dumps()) == t
    assert all(isinstance(v, float) for row in t.to_json()["matrix"] for v in row)


def test_transform_from_bad_json_raises():
    with pytest.raises(UsageError):
        AlignTransform.from_json({"matrix": [[1, 0]], "size": 4})
    with pytest.raises(UsageError):
        AlignTransform.from_json({"size": 4})


def test_inverse_and_transform_points():
    t = alignment_transform(_rotate(LM, -23.0), 128)
    pts = np.random.default_rng(0).uniform(-50, 300, size=(20, 2))
    back = transform_points(transform_points(pts, t), t.inverse())
    np.testing.assert_allclose(back, pts, atol=1e-9)


@pytest.mark.parametrize("deg", [0.0, 30.0, -75.0])
@pytest.mark.parametrize("size", [256, 1024])
def test_alignment_puts_eyes_at_canonical_positions(deg, size):
    # eyes/mouth distances equal: FFHQ quad side = 4 x eye distance, centre 0.1 below the eyes
    lm = _rotate(LM, deg)
    t = alignment_transform(lm, size)
    crop_lm = transform_points(lm, t)
    c = (size - 1) / 2
    np.testing.assert_allclose(crop_lm[0], [c - size / 8, c - 0.025 * size], atol=1e-9)
    np.testing.assert_allclose(crop_lm[1], [c + size / 8, c - 0.025 * size], atol=1e-9)
    # a similarity: uniform scale, no shear
    a = t.matrix[:, :2]
    np.testing.assert_allclose(a @ a.T, np.eye(2) * t.scale**2, atol=1e-12)


def test_align_face_works_from_landmarks_alone():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, size=(240, 260, 3), dtype=np.uint8)
    img[95:106, 95:106] = 255  # a white square on the image-left eye
    crop, t = align_face(img, LM, 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    x, y = np.rint(transform_points(LM[0], t)).astype(int)
    assert crop[y, x].min() > 240
    assert t == alignment_transform(LM, 128)
    # strong downscaling takes the anti-aliased path and keeps the same transform
    crop2, t2 = align_face(img, LM * 1.0, 16)
    assert crop2.shape == (16, 16, 3) and t2 == alignment_transform(LM, 16)


def test_degenerate_landmarks_raise():
    with pytest.raises(UsageError):
        alignment_transform(np.zeros((5, 2)), 64)
    with pytest.raises(UsageError):
        alignment_transform(np.zeros((4, 2)), 64)


# ----------------------------------------------------------------------- masks
def test_landmark_mask_covers_features_not_corners():
    img_lm = _rotate(LM, 10.0)
    t = alignment_transform(img_lm, 256)
    m = face_mask(img_lm, t)
    assert m.shape == (256, 256) and m.dtype == np.float32
    for x, y in np.rint(transform_points(img_lm, t)).astype(int):
        assert m[y, x] == 1.0
    assert m[0, 0] == m[0, -1] == m[-1, 0] == m[-1, -1] == 0.0
    assert 0.0 < (m > 0).mean() < 0.6
    np.testing.assert_array_equal(m, face_mask(img_lm, t))  # deterministic
    np.testing.assert_array_equal(mask_from_uint8(mask_to_uint8(m)), m)  # lossless uint8
    assert len(np.unique(m)) > 5  # feathered edge


def test_mask_options():
    t = alignment_transform(LM, 128)
    face = face_mask(LM, t)
    more = face_mask(LM, t, include="face+hair")
    assert np.all(more >= face) and more.sum() > face.sum() * 1.2
    with pytest.raises(UsageError):
        face_mask(LM, t, include="everything")


def test_default_mask_is_centred_ellipse():
    m = default_mask(256)
    assert m.shape == (256, 256)
    for x, y in np.rint(CANONICAL_LANDMARKS5 * 256).astype(int):
        assert m[y, x] == 1.0
    assert m[0].max() == 0 and m[-1].max() == 0 and m[:, 0].max() == 0 and m[:, -1].max() == 0
    np.testing.assert_allclose(m, m[:, ::-1], atol=1.5 / 255)  # left-right symmetric
    # the same ellipse as face_mask gives for canonical landmarks of an aligned crop
    assert default_mask(64).shape == (64, 64)


def test_face_oval_matches_mediapipe():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    edges = {frozenset(e) for e in FACEMESH_FACE_OVAL}
    ring = {frozenset((a, b)) for a, b in zip(FACE_OVAL, FACE_OVAL[1:] + FACE_OVAL[:1])}
    assert ring == edges


# ------------------------------------------------------------------ paste-back
@pytest.mark.parametrize("shape", [(200, 300, 3), (180, 170)])
def test_paste_changes_only_the_region(shape):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    before = img.copy()
    lm = _rotate(LM, 20.0) + [30.0, 10.0]
    t = alignment_transform(lm, 96)
    crop = rng.integers(0, 256, size=(96, 96) + shape[2:], dtype=np.uint8)
    outline = face_outline(lm, t)
    out = paste_crop(img, crop, t, outline)
    np.testing.assert_array_equal(img, before)  # input untouched
    region = outline_region(img.shape, t, outline).full(img.shape)
    assert region.dtype == bool and region.shape == shape[:2]
    assert 0 < region.sum() < region.size
    np.testing.assert_array_equal(out[~region], img[~region])  # bit-identical outside
    assert (out[region] != img[region]).mean() > 0.5
    # the region depends on (shape, transform, outline) only and is reproducible from JSON
    t2 = AlignTransform.from_json(json.loads(json.dumps(t.to_json())))
    np.testing.assert_array_equal(region, outline_region(shape, t2, outline.copy()).full(shape))
    np.testing.assert_array_equal(out, paste_crop(img, crop, t2, outline.copy()))


def test_paste_of_own_crop_is_close_and_empty_outline_is_identity():
    y, x = np.mgrid[0:200, 0:200]
    img = np.stack([x, y, (x + y) // 2], axis=2).astype(np.uint8)  # smooth image
    crop, t = align_face(img, LM, 128)
    out = paste_crop(img, crop, t, face_outline(LM, t))
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 2
    empty = np.zeros((0, 2))
    np.testing.assert_array_equal(paste_crop(img, crop, t, empty), img)
    assert not outline_region(img.shape, t, empty).full(img.shape).any()


def test_paste_face_outside_image():
    img = np.full((50, 60, 3), 7, np.uint8)
    t = alignment_transform(LM + 1000.0, 64)  # face far away from the image
    out = paste_crop(img, np.zeros((64, 64, 3), np.uint8), t, face_outline(LM + 1000.0, t))
    np.testing.assert_array_equal(out, img)


def test_paste_rejects_mismatched_shapes():
    t = alignment_transform(LM, 64)
    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(UsageError):
        paste_crop(img, np.zeros((32, 32, 3), np.uint8), t, face_outline(LM, t))
    with pytest.raises(UsageError):
        paste_crop(img, np.zeros((64, 64), np.uint8), t, face_outline(LM, t))


# -------------------------------------------------------------- detection (real)
def test_no_face_in_flat_image():
    assert detect_faces(np.full((120, 160, 3), 128, np.uint8)) == []
    with pytest.raises(UsageError):
        detect_faces(np.zeros((10, 10), np.uint8))


def test_detect_single_face_with_mesh_and_landmarks():
    img = _lfw("Angela_Bassett")
    faces = detect_faces(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.mesh is not None and f.mesh.shape == (478, 2)
    assert not f.too_small and 0.5 <= f.score <= 1.0
    x0, y0, x1, y1 = f.box
    w, h = x1 - x0, y1 - y0
    lm = f.landmarks5
    assert np.all((lm[:, 0] > x0 - 0.1 * w) & (lm[:, 0] < x1 + 0.1 * w))
    assert np.all((lm[:, 1] > y0 - 0.1 * h) & (lm[:, 1] < y1 + 0.1 * h))
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left first
    assert lm[3:, 1].min() > lm[:2, 1].max()  # mouth below the eyes
    with pytest.raises(ValueError):
        f.landmarks5[0, 0] = 0.0  # results are read-only


def test_detect_several_faces_sorted_and_deterministic():
    imgs = [_lfw(n) for n in ("Abel_Pacheco", "Angela_Bassett", "Ann_Veneman")]
    tiled = np.concatenate(imgs, axis=1)
    w = imgs[0].shape[1]
    faces = detect_faces(tiled)
    assert len(faces) == 3
    for i, f in enumerate(faces):  # sorted left to right, each inside its own tile
        assert i * w <= f.box[0] and f.box[2] <= (i + 1) * w
        assert f.mesh is not None
        assert np.all((f.landmarks5[:, 0] > i * w) & (f.landmarks5[:, 0] < (i + 1) * w))
    again = detect_faces(tiled)
    for a, b in zip(faces, again):
        assert a.box == b.box
        np.testing.assert_array_equal(a.landmarks5, b.landmarks5)
        np.testing.assert_array_equal(a.mesh, b.mesh)


def test_small_faces_are_flagged_not_dropped():
    import cv2

    img = _lfw("Ann_Veneman")
    # the default ensemble may add a low-score CenterFace box beside the face (docs/detection.md: precision)
    faces = detect_faces(img, min_size=10_000)
    assert faces and all(f.too_small for f in faces)
    assert len([f for f in faces if f.score > 0.5]) == 1
    # a real small face in a big photo (found by tiled detection)
    canvas = np.full((1600, 1600, 3), 110, np.uint8)
    small = cv2.resize(img, (90, 90), interpolation=cv2.INTER_AREA)
    canvas[1100:1190, 300:390] = small
    faces = detect_faces(canvas, min_size=48)
    assert faces and all(f.too_small for f in faces)
    centred = [f for f in faces if 300 <= (f.box[0] + f.box[2]) / 2 <= 390 and 1100 <= (f.box[1] + f.box[3]) / 2 <= 1190]
    assert len(centred) == 1 and centred[0].score > 0.5


def test_alignment_of_real_face_matches_canonical_landmarks():
    from PIL import Image

    paths = sorted(CELEBA.glob("*.jpg"))[:1]  # a 256 px CelebA crop, or a free photo framed alike
    img = np.asarray(Image.open(paths[0]).convert("RGB")) if paths else free_face("hopper", 256, 2.5)
    faces = detect_faces(img)
    assert faces
    f = max(faces, key=lambda f: f.score)
    crop, t = align_face(img, f, 256)
    again = detect_faces(crop)
    assert len(again) >= 1
    g = max(again, key=lambda f: f.score)
    expected = CANONICAL_LANDMARKS5[:2] * 256 - 0.5
    np.testing.assert_allclose(g.landmarks5[:2], expected, atol=0.05 * 256)
    # landmarks of the original map onto the crop where the crop's own detection is
    np.testing.assert_allclose(transform_points(f.landmarks5, t)[:2], g.landmarks5[:2], atol=0.03 * 256)


def test_mesh_mask_and_paste_back_on_real_photo():
    img = np.concatenate([_lfw("Abel_Pacheco"), _lfw("Angela_Bassett")], axis=1)
    faces = detect_faces(img)
    assert len(faces) == 2
    out = img
    union = np.zeros(img.shape[:2], bool)
    for f in faces:
        crop, t = align_face(img, f, 256)
        m = face_mask(f, t)
        for x, y in np.rint(transform_points(f.landmarks5, t)).astype(int):
            assert m[y, x] == 1.0  # eyes, nose, mouth corners covered
        assert m[:8].max() == 0 and m[:, :8].max() == 0  # background corners excluded
        assert m[0, 0] == m[-1, -1] == 0
        assert face_mask(f, t, "face+hair").sum() > m.sum()
        out = paste_crop(out, 255 - crop, t, face_outline(f, t))
        union |= outline_region(img.shape, t, face_outline(f, t)).full(img.shape)
    np.testing.assert_array_equal(out[~union], img[~union])
    assert (out[union] != img[union]).mean() > 0.5
    assert union[:, :150].any() and union[:, 150:].any()


def test_colour_fit_matches_the_skin_not_teeth_or_hair():
    """A dark face with bright teeth, under dark hair at the top edge: the new face takes the skin's
    colour (before, teeth pulled it lighter and greyer, and hair on the edge tinted it all)."""
    from faceveil.faces.colour import fit_colour

    size = 96
    yy, xx = np.mgrid[0:size, 0:size]
    inside = ((xx - 48) / 30.0) ** 2 + ((yy - 50) / 38.0) ** 2
    interior, edge = inside < 0.8, (inside >= 0.8) & (inside < 1.2)
    rng = np.random.default_rng(0)
    skin = np.array([96.0, 58.0, 38.0])
    original = np.broadcast_to(skin, (size, size, 3)) + rng.normal(0, 4, (size, size, 3))
    original[(np.abs(yy - 70) < 4) & (np.abs(xx - 48) < 12)] = 235.0  # teeth
    original[(yy < 30) & edge] = 20.0  # hair across the top of the edge band
    generated = np.full((size, size, 3), 128.0) + rng.normal(0, 6, (size, size, 3))
    new = fit_colour(generated, original, interior, edge).forward(generated)
    centre = inside < 0.4  # the edge's lighting meets the hair at the edge and fades inwards
    assert np.abs(np.median(new[centre], axis=0) - skin).max() < 5.0


def _pink_face_with_dark_hair(size: int = 96):
    yy, xx = np.mgrid[0:size, 0:size]
    inside = ((xx - 48) / 30.0) ** 2 + ((yy - 50) / 38.0) ** 2
    interior, edge = inside < 0.8, (inside >= 0.8) & (inside < 1.2)
    rng = np.random.default_rng(1)
    generated = np.broadcast_to([160.0, 100.0, 115.0], (size, size, 3)) + rng.normal(0, 5, (size, size, 3))  # pink skin
    generated[edge] = 50.0  # the model's dark transition into hair at the outline
    original = np.broadcast_to([180.0, 150.0, 120.0], (size, size, 3)) + rng.normal(0, 5, (size, size, 3))  # warm skin
    original[edge] = 40.0
    return generated, original, interior, edge


def test_the_colour_fit_corrects_pink_skin_without_tinting_the_dark_rim_green():
    """The default ("ratio") mode balances each channel by a ratio, so dark pixels stay neutral;
    the older additive "shift" turned the model's dark outline ring green (the portrait's rim)."""
    from faceveil.faces.colour import fit_colour

    generated, original, interior, edge = _pink_face_with_dark_hair()
    green = {}
    for mode in ("ratio", "shift"):
        new = fit_colour(generated, original, interior, edge, mode=mode).forward(generated)
        skin = np.median(new[interior], axis=0)
        assert np.abs(skin - [180.0, 150.0, 120.0]).max() < 8.0  # the skin matched either way
        ring = new[edge].mean(axis=0)
        green[mode] = ring[1] - ring[[0, 2]].mean()
    assert green["shift"] > 30.0 and green["ratio"] < 0.6 * green["shift"], green


@pytest.mark.parametrize("mode", ["ratio", "shift"])
def test_colour_maps_invert_exactly_and_keep_their_mode_in_the_header(mode):
    from faceveil.faces.colour import Colour, fit_colour

    generated, original, interior, edge = _pink_face_with_dark_hair()
    colour = fit_colour(generated, original, interior, edge, mode=mode)
    assert colour.mode == mode and colour.shading
    assert np.allclose(colour.inverse(colour.forward(generated)), generated, atol=1e-9)
    again = Colour.from_json(colour.to_json(), colour.shading)
    assert again == colour
    assert len(colour.to_json()) == (7 if mode == "shift" else 8)  # files made before the mode existed: 7, "shift"
    with pytest.raises(ValueError, match="mode"):
        Colour.from_json([*colour.to_json()[:7], 5.0])
    with pytest.raises(ValueError, match="colour mode"):
        fit_colour(generated, original, interior, edge, mode="tint")


def test_a_black_face_s_colour_fit_still_inverts():
    """A black original (every skin channel 0) must not make the ratio fit divide by zero."""
    from faceveil.faces.colour import fit_colour

    generated, _, interior, edge = _pink_face_with_dark_hair()
    colour = fit_colour(generated, np.zeros_like(generated), interior, edge)
    out = colour.forward(generated)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(colour.inverse(out)))
    assert np.allclose(colour.inverse(out), generated, atol=1e-6)

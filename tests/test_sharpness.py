"""The band-pass detail measure (faceveil.faces.sharpness): what the redraws' floor and the benchmark read."""

import cv2
import numpy as np
from conftest import lfw_face

from faceveil.faces import sharpness


def test_a_face_against_itself_is_one_and_a_blur_near_zero():
    face = lfw_face("Abel_Pacheco")[30:120, 35:115]
    alpha = np.ones(face.shape[:2], np.float32)
    assert sharpness.detail_ratio(face, face, alpha) == 1.0
    blurred = cv2.GaussianBlur(face, (0, 0), 8)
    assert sharpness.detail_ratio(face, blurred, alpha) < 0.05
    sharper = np.clip(face.astype(np.float32) * 1.5 - cv2.GaussianBlur(face, (0, 0), 2).astype(np.float32) * 0.5, 0, 255)
    assert sharpness.detail_ratio(face, sharper.astype(np.uint8), alpha) > 1.2


def test_the_ratio_reads_only_inside_the_region_and_refuses_a_tiny_one():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = np.zeros((64, 64), np.float32)
    alpha[8:56, 8:56] = 1.0
    new = np.full_like(original, 128)
    new[8:56, 8:56] = original[8:56, 8:56]  # outside the region nothing is alike
    assert abs(sharpness.detail_ratio(original, new, alpha) - 1.0) < 0.1  # (the filters reach a little outside)
    assert sharpness.detail_ratio(original, np.full_like(original, 128), alpha) < 0.01
    tiny = np.zeros((64, 64), np.float32)
    tiny[30:32, 30:32] = 1.0
    assert np.isnan(sharpness.detail_ratio(original, new, tiny))
    assert sharpness.region_box(alpha) == (8, 56, 8, 56) and sharpness.region_box(np.zeros((4, 4))) is None

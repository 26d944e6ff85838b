"""Faces: detection and landmarks, FFHQ alignment, face masks, paste-back, colour and grain.

``detect`` needs mediapipe (imported lazily on first detection); ``align``, ``mask``, ``colour``
and ``paste`` only need NumPy and OpenCV.
"""

from __future__ import annotations

from faceveil.faces.align import AlignTransform, align_face, alignment_transform, transform_points
from faceveil.faces.detect import DEFAULT_MIN_SIZE, Face, detect_faces
from faceveil.faces.mask import (
    CANONICAL_LANDMARKS5,
    INCLUDE_OPTIONS,
    default_mask,
    default_outline,
    face_mask,
    face_outline,
    mask_from_uint8,
    mask_to_uint8,
)
from faceveil.faces.paste import FaceRegion, blend_region, outline_region, paste_crop, sample_crop

__all__ = [
    "AlignTransform",
    "CANONICAL_LANDMARKS5",
    "DEFAULT_MIN_SIZE",
    "Face",
    "INCLUDE_OPTIONS",
    "align_face",
    "alignment_transform",
    "default_mask",
    "default_outline",
    "detect_faces",
    "face_mask",
    "face_outline",
    "FaceRegion",
    "outline_region",
    "mask_from_uint8",
    "mask_to_uint8",
    "blend_region",
    "paste_crop",
    "sample_crop",
    "transform_points",
]

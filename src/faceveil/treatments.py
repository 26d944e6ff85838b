"""Which treatment each detected face gets: the model, or a visible one, and the fallback
for faces the model path cannot take ("when in doubt, veil").

A face is never left as it was once the detector found it. ``plan_face`` gives it the
model with its FFHQ alignment and mesh outline when that geometry is sound; otherwise
(alignment raised, no face mesh, a tiny box, the outline far outside the image or not
covering the detector's box, the mesh's angle disagreeing with the detector's) the face
gets a fallback geometry from its box (an upright square crop, an ellipse covering the
box) and the fallback treatment: a visible one by default (``pixelate``: the original
region sealed, recovered exactly, no model) or the model on that geometry. The reason
goes to the user as a note; the header's public face entry names the treatment.

``--style`` picks a visible treatment for every face (``face``, the default, is the model).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceveil.errors import FaceveilError, UsageError
from faceveil.faces import Face, alignment_transform, face_outline, outline_region
from faceveil.faces.align import AlignTransform
from faceveil.faces.visible import DEFAULT_FALLBACK, FALLBACKS, MODEL, STYLES
from faceveil.pipeline import FaceJob

__all__ = ["STYLES", "FALLBACKS", "DEFAULT_FALLBACK", "treatment_of", "check_fallback", "model_problem", "box_geometry", "plan_face"]

TINY = 12.0  # px: below this box side there is no face to align
MIN_COVER = 0.5  # the outline's region must cover this share of the detector's box (the part inside the image)
MAX_OUTSIDE = 0.3  # at most this share of the outline may lie outside the image
MAX_TILT = 45.0  # degrees between the mesh's eye line and the detector's
BOX_CROP = 2.0  # fallback crop side / the box's longer side (context around the face for the model)
BOX_ELLIPSE = 0.72  # fallback ellipse semi-axes / the box's sides: covers the whole box (> 1/sqrt(2)) and a margin


def treatment_of(style: str) -> str:
    """The header's treatment for a ``--style`` ("face" is the model)."""
    if style not in STYLES:
        raise UsageError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    return MODEL if style == "face" else style


def check_fallback(fallback: str) -> None:
    """``UsageError`` for an unknown ``--fallback``."""
    if fallback not in FALLBACKS:
        raise UsageError(f"unknown fallback {fallback!r}; choose one of {', '.join(FALLBACKS)}")


def _box_in_image(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    return y0, max(y0, y1), x0, max(x0, x1)


def model_problem(face: Face, transform: AlignTransform, outline: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why the model path's geometry for ``face`` is unsound (a short reason), or ``None``."""
    if face.side < TINY:
        return f"tiny ({face.side:.0f} px)"
    if face.mesh is None:
        return "no face mesh (profile, cut by the border or turned away?)"
    if face.keypoints6 is not None:
        mesh_eyes, detector_eyes = face.landmarks5[1] - face.landmarks5[0], face.keypoints6[1] - face.keypoints6[0]
        tilt = abs(math.degrees(math.atan2(mesh_eyes[1], mesh_eyes[0]) - math.atan2(detector_eyes[1], detector_eyes[0])))
        tilt = min(tilt % 360.0, 360.0 - tilt % 360.0)
        if tilt > MAX_TILT:
            return f"the mesh and the detector disagree on the face's angle by {tilt:.0f} degrees"
    region = outline_region(shape, transform, outline)
    covered = region.full(shape)
    total = abs(cv2.contourArea(_to_image(outline, transform).astype(np.float32)))
    if total > 0 and 1.0 - covered.sum() / total > MAX_OUTSIDE:
        return f"{100 * (1 - covered.sum() / total):.0f} % of the aligned face lies outside the image"
    y0, y1, x0, x1 = _box_in_image(face.box, shape)
    box_pixels = (y1 - y0) * (x1 - x0)
    if box_pixels and covered[y0:y1, x0:x1].sum() < MIN_COVER * box_pixels:
        return f"the face outline covers only {100 * covered[y0:y1, x0:x1].sum() / box_pixels:.0f} % of the detector's box"
    return None


def _to_image(points: np.ndarray, transform: AlignTransform) -> np.ndarray:
    """Crop coordinates back to image coordinates."""
    inverse = cv2.invertAffineTransform(transform.matrix)
    return np.asarray(points, np.float64) @ inverse[:, :2].T + inverse[:, 2]


def box_geometry(box: tuple[float, float, float, float], size: int, points: int = 72) -> tuple[AlignTransform, np.ndarray]:
    """The fallback geometry of a detector box: an upright square crop ``BOX_CROP`` times its
    longer side around it, and an ellipse covering the box (crop coordinates)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    s = size / (BOX_CROP * max(w, h))
    centre = (size - 1) / 2.0
    transform = AlignTransform(np.array([[s, 0.0, centre - s * cx], [0.0, s, centre - s * cy]]), size)
    angle = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    outline = np.stack([centre + BOX_ELLIPSE * w * s * np.cos(angle), centre + BOX_ELLIPSE * h * s * np.sin(angle)], axis=1)
    return transform, outline


def identity_landmarks(face: Face) -> tuple[np.ndarray, ...]:
    """The alignments the redraw's identity check embeds a face with: the mesh's landmarks and the
    detector's own (the output check's). A similarity moves by several hundredths between the two
    (0.325 and 0.366 on one LFW face), so the larger one counts."""
    sets = [np.asarray(face.landmarks5, dtype=np.float64)]
    if face.detector_landmarks5 is not None and not np.allclose(face.detector_landmarks5, sets[0]):
        sets.append(np.asarray(face.detector_landmarks5, dtype=np.float64))
    return tuple(sets)


def plan_face(face: Face, shape: tuple[int, ...], size: int, mask: str = "face", style: str = "face",
              fallback: str = DEFAULT_FALLBACK, framing: str = "ffhq") -> tuple[FaceJob, str | None]:
    """The job for one detected face (in the model's crop ``framing``) and, when its model
    geometry was unsound, the reason (a fallback)."""
    treatment = treatment_of(style)
    check_fallback(fallback)
    try:
        transform = alignment_transform(face, size, framing)
        outline = face_outline(face, transform, include=mask)
        problem = model_problem(face, transform, outline, shape)
    except (FaceveilError, ValueError, ArithmeticError, np.linalg.LinAlgError, cv2.error) as exc:
        problem = f"alignment failed ({exc})"
    if problem is None:
        return FaceJob(transform, outline, treatment=treatment, landmarks=identity_landmarks(face)), None
    transform, outline = box_geometry(face.box, size)
    return FaceJob(transform, outline, treatment=treatment if treatment != MODEL else fallback), problem


def fallback_note(index: int, face: Face, problem: str, treatment: str) -> str:
    """The user's note for a face that got the fallback geometry."""
    x0, y0, x1, y1 = face.box
    how = "the model on its box" if treatment == MODEL else f"{_past(treatment)} over its box, the original sealed"
    return f"face {index + 1} at ({x0:.0f}, {y0:.0f}), {x1 - x0:.0f}x{y1 - y0:.0f} px: {problem}; {how}; check it"


def _past(treatment: str) -> str:
    return {"pixelate": "pixelated", "blur": "blurred", "solid": "filled"}.get(treatment, treatment)

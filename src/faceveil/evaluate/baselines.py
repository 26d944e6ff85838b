"""The anonymization methods compared side by side by ``faceveil evaluate``.

Each method anonymizes the same faces (the same :class:`~faceveil.pipeline.FaceJob`
list, i.e. the same alignment and mask) and, where it can, recovers them:

``blur``       Gaussian blur inside the face region (classic, irreversible).
``pixelate``   block averaging inside the face region (classic, irreversible).
``paper``      the reference configuration of Labarbarie et al.: plain DDIM inversion
               (``refine_iters=0``), the image's own trajectory outside the mask
               (context ``"own"``), no hint, no residual, 50 + 50 steps, and at
               recovery the face mask *recomputed* from the anonymized image (the
               stored mask is used only where no face is found again; counted).
``faceveil``   faceveil's defaults (``"noised"`` context, hint, residual).
``encrypted-crop``  the header-size baseline: the face blurred, and the original pixels
               of its region losslessly compressed (WebP) and sealed in the header
               (exact recovery, zero UNet evaluations, no diffusion model at all).

Every method changes pixels only inside the region of the face masks
(``faces.outline_region``), so "outside pixels unchanged" is comparable across methods.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from faceveil.container import open_header, pixels_sha256, seal_header, unlock
from faceveil.engine import EngineSettings
from faceveil.faces import CANONICAL_LANDMARKS5, detect_faces, face_outline, outline_region, transform_points
from faceveil.faces.paste import blend_region, paste_crop, sample_crop
from faceveil.faces.align import AlignTransform
from faceveil.keys import Key
from faceveil.models import DiffusionModel
from faceveil.pipeline import DEFAULT_REDRAWS, MODEL, FaceJob, Settings, anonymize_array, recover_array, recover_opened, warp_crop
from faceveil.residual import decode_residual, encode_region

__all__ = [
    "Anonymized",
    "Method",
    "BlurBaseline",
    "PixelateBaseline",
    "DiffusionMethod",
    "paper_reference",
    "faceveil_default",
    "engine_variant",
    "EncryptedCropBaseline",
    "face_region",
    "METHOD_NAMES",
]

METHOD_NAMES = ("blur", "pixelate", "paper", "faceveil", "encrypted-crop")


@dataclass
class Anonymized:
    """One anonymized image and what it cost."""

    array: np.ndarray  # RGB uint8, same shape as the input
    record: dict | None  # faceveil header (reversible methods), else None
    seconds: float
    unet_evals: int = 0
    notes: list[str] = field(default_factory=list)


class Method(Protocol):
    """An anonymization method under evaluation."""

    name: str
    reversible: bool

    def anonymize(self, rgb: np.ndarray, jobs: list[FaceJob], key: Key) -> Anonymized:
        """Anonymize every face of ``jobs`` in ``rgb``."""
        ...

    def recover(self, array: np.ndarray, record: dict, key: Key) -> np.ndarray:
        """Recover the original (reversible methods); may raise ``FaceveilError``."""
        ...


def face_region(shape: tuple[int, ...], jobs: list[FaceJob]) -> np.ndarray:
    """Union of the image pixels the faces' masks can change (bool ``(H, W)``)."""
    union = np.zeros(shape[:2], dtype=bool)
    for job in jobs:
        union |= outline_region(shape, job.transform, job.outline).full(shape)
    return union


def _blur(crop: np.ndarray, sigma_fraction: float = 0.05) -> np.ndarray:
    """Gaussian blur of an aligned crop, sigma a fraction of its side."""
    sigma = max(1.0, sigma_fraction * crop.shape[0])
    return cv2.GaussianBlur(crop, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _paste_each(rgb: np.ndarray, jobs: list[FaceJob], filt) -> np.ndarray:
    out = np.ascontiguousarray(rgb, dtype=np.uint8)
    for job in jobs:
        crop = warp_crop(out, job.transform).astype(np.float64)
        out = paste_crop(out, filt(crop), job.transform, job.outline)
    return out


@dataclass
class BlurBaseline:
    """Gaussian blur of the aligned crop (sigma a fraction of the crop side), pasted in the mask."""

    sigma_fraction: float = 0.05
    name: str = "blur"
    reversible: bool = False

    def anonymize(self, rgb: np.ndarray, jobs: list[FaceJob], key: Key) -> Anonymized:
        t0 = time.perf_counter()

        return Anonymized(_paste_each(rgb, jobs, lambda crop: _blur(crop, self.sigma_fraction)), None, time.perf_counter() - t0)

    def recover(self, array: np.ndarray, record: dict, key: Key) -> np.ndarray:
        raise NotImplementedError("blur is not reversible")


@dataclass
class PixelateBaseline:
    """Block averaging: the aligned crop is cut into ``blocks`` x ``blocks`` cells."""

    blocks: int = 16
    name: str = "pixelate"
    reversible: bool = False

    def anonymize(self, rgb: np.ndarray, jobs: list[FaceJob], key: Key) -> Anonymized:
        t0 = time.perf_counter()

        def pixelate(crop: np.ndarray) -> np.ndarray:
            n = crop.shape[0]
            small = cv2.resize(crop, (self.blocks, self.blocks), interpolation=cv2.INTER_AREA)
            return cv2.resize(small, (n, n), interpolation=cv2.INTER_NEAREST)

        return Anonymized(_paste_each(rgb, jobs, pixelate), None, time.perf_counter() - t0)

    def recover(self, array: np.ndarray, record: dict, key: Key) -> np.ndarray:
        raise NotImplementedError("pixelation is not reversible")


def _nearest_face_outline(array: np.ndarray, transform: AlignTransform, include: str) -> np.ndarray | None:
    """Outline, in ``transform``'s crop, of the face detected in ``array`` nearest the crop's
    canonical landmarks; ``None`` when no detected face lies within 10 % of the side."""
    size = transform.size
    target = CANONICAL_LANDMARKS5 * size - 0.5
    best, best_dist = None, 0.1 * size
    for face in detect_faces(np.ascontiguousarray(array, dtype=np.uint8)):
        dist = float(np.linalg.norm(transform_points(face.landmarks5, transform.matrix) - target, axis=1).mean())
        if dist < best_dist:
            best, best_dist = face, dist
    return None if best is None else face_outline(best, transform, include)


@dataclass
class DiffusionMethod:
    """faceveil's pipeline with given settings; ``recompute_mask`` re-detects the face
    on the anonymized image at recovery (the paper's protocol) instead of using the
    sealed mask."""

    name: str
    model: DiffusionModel
    settings: Settings
    residual: bool = True
    recompute_mask: bool = False
    mask_include: str = "face"
    reversible: bool = True
    masks_recomputed: int = 0
    masks_kept: int = 0
    # faceveil's: a face still matched to the original, or smoother than the model's detail floor, is
    # drawn again (the paper: 0)
    redraws: int = DEFAULT_REDRAWS
    faces_drawn: int = 0  # over every anonymize call of the run (all protocols)
    faces_redrawn: int = 0
    faces_redrawn_smooth: int = 0  # of which at least once for detail below the floor
    faces_still_matching: int = 0
    faces_still_smooth: int = 0

    def anonymize(self, rgb: np.ndarray, jobs: list[FaceJob], key: Key) -> Anonymized:
        counter = [0]

        def count(n: int) -> None:
            counter[0] += n

        t0 = time.perf_counter()
        array, record, reports = anonymize_array(
            rgb, key, self.model, faces=jobs, settings=self.settings, residual=self.residual, progress=count,
            redraws=self.redraws,
        )
        drawn = [r for r in reports if r.treatment == MODEL]
        self.faces_drawn += len(drawn)
        self.faces_redrawn += sum(r.redraws > 0 for r in drawn)
        self.faces_redrawn_smooth += sum("smooth" in r.redrawn_for for r in drawn)
        self.faces_still_matching += sum(r.still_matches is not None for r in drawn)
        self.faces_still_smooth += sum(r.still_smooth is not None for r in drawn)
        return Anonymized(array, record, time.perf_counter() - t0, counter[0])

    def recover(self, array: np.ndarray, record: dict, key: Key) -> np.ndarray:
        if not self.recompute_mask:
            return recover_array(array, record, key, self.model, use_residual=self.residual)[0]
        opened = unlock(key, record)
        public, private = opened.public, opened.private
        faces = []
        for pub, priv in zip(public["faces"], private["faces"]):
            transform = AlignTransform.from_json(pub["transform"])
            outline = _nearest_face_outline(array, transform, self.mask_include)
            if outline is None:
                self.masks_kept += 1
                faces.append(priv)
            else:
                self.masks_recomputed += 1
                faces.append({**priv, "outline": outline.astype("<f4").tobytes()})
        return recover_opened(array, public, {**private, "faces": faces}, opened.key, self.model,
                              use_residual=self.residual)[0]


def paper_reference(model: DiffusionModel, steps: int = 50) -> DiffusionMethod:
    """The paper's configuration: plain DDIM inversion, own trajectory, no hint or
    residual, mask recomputed from the anonymized image at recovery."""
    engine = dataclasses.replace(EngineSettings(), steps=steps, refine_iters=0, context="own", mixing="signs")  # signs only
    return DiffusionMethod(
        "paper", model, Settings(engine, hint=False, colour=False, grain=False), residual=False, recompute_mask=True,
        redraws=0,
    )


def faceveil_default(model: DiffusionModel, steps: int = 50) -> DiffusionMethod:
    """faceveil's default settings for ``model`` (its recommended noise gain; ``steps`` aside)."""
    return engine_variant("faceveil", model, steps)


def engine_variant(name: str, model: DiffusionModel, steps: int = 50, **engine: object) -> DiffusionMethod:
    """faceveil's defaults for ``model`` with some engine settings changed (e.g. ``mixing="pairs"``)."""
    defaults = Settings.for_model(model).engine
    return DiffusionMethod(name, model, Settings(dataclasses.replace(defaults, steps=steps, **engine)))


@dataclass
class EncryptedCropBaseline:
    """Blur each face and seal its original region, losslessly compressed, in the header.

    The yardstick for header size: what exact recovery costs with no diffusion model.
    The region's box is coded with the same lossless codec as faceveil's residual
    (pixels outside the region zeroed), then encrypted like any faceveil header.
    """

    name: str = "encrypted-crop"
    reversible: bool = True

    def anonymize(self, rgb: np.ndarray, jobs: list[FaceJob], key: Key) -> Anonymized:
        t0 = time.perf_counter()
        current = np.ascontiguousarray(rgb, dtype=np.uint8)
        public_faces, private_faces = [], []
        for job in jobs:
            outline = np.asarray(job.outline, dtype=np.float32).astype(np.float64)  # what the header keeps
            region = outline_region(current.shape, job.transform, outline)
            y0, y1, x0, x1 = region.bounds
            crop = encode_region(current[y0:y1, x0:x1], region.inside)
            private_faces.append({"outline": outline.astype("<f4").tobytes(), "crop": crop})
            public_faces.append({"transform": job.transform.to_json()})
            blurred = _blur(warp_crop(current, job.transform).astype(np.float64))
            current = blend_region(current, sample_crop(blurred, job.transform, region), region)
        public = {"method": self.name, "image": {"pixels_sha256": pixels_sha256(current)}, "faces": public_faces}
        record = seal_header(key, public, {"faces": private_faces})
        return Anonymized(current, record, time.perf_counter() - t0)

    def recover(self, array: np.ndarray, record: dict, key: Key) -> np.ndarray:
        public, private = open_header(key, record)
        out = np.array(array, dtype=np.uint8, copy=True)
        for pub, priv in reversed(list(zip(public["faces"], private["faces"]))):
            transform = AlignTransform.from_json(pub["transform"])
            outline = np.frombuffer(priv["outline"], dtype="<f4").reshape(-1, 2).astype(np.float64)
            region = outline_region(out.shape, transform, outline)
            y0, y1, x0, x1 = region.bounds
            box = decode_residual(priv["crop"], (y1 - y0, x1 - x0))
            out[y0:y1, x0:x1][region.inside] = box[region.inside]
        return out

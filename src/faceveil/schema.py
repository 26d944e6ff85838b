"""Validation of a header's public part, before anything is computed or allocated from it.

The public part is read before the key has authenticated anything, so every field is
checked here for type, range and consistency with the image it came with: finite
transforms, a face count the image can hold, sizes that match the pixels. A field that
fails raises ``HeaderError`` (exit 3) naming it; nothing downstream sees an unchecked value.
"""

from __future__ import annotations

import math
import re
from typing import Any

from faceveil.errors import HeaderError

#: The most faces one header may carry, whatever the image (one per 16 x 16 pixels below that).
MAX_FACES = 4096
MIN_FACE_AREA = 16 * 16
MAX_SIDE = 1 << 20  # pixels per side
MAX_STEPS = 1000
MAX_ITERS = 1000
MAX_DETAIL_PASSES = 3  # the detail stage's passes a header may ask for (each doubles the model face)
MAX_CROP = 4096  # model crop side, pixels
MAX_ID_CHARS = 512
MODEL_KINDS = ("pixel", "latent")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")

PUBLIC_FIELDS = {"model", "settings", "image", "faces"}
MODEL_FIELDS = {"id", "weights_sha256", "kind"}
SETTINGS_FIELDS = {"engine", "decoder_iters", "hint", "colour", "grain", "residual_codec", "detail_passes"}
ENGINE_FIELDS = {"steps", "refine_iters", "refine_tol", "context", "mixing", "noise_gain"}
IMAGE_FIELDS = {"height", "width", "pixels_sha256"}
FACE_FIELDS = {"nonce", "transform", "treatment"}  # treatment: absent in files made before it ("model")
TREATMENTS = ("model", "pixelate", "blur", "solid")
TRANSFORM_FIELDS = {"matrix", "size"}


def _fail(where: str, what: str) -> HeaderError:
    return HeaderError(f"the faceveil header is malformed: {where} {what}")


def _dict(value: Any, where: str, fields: set[str], optional: frozenset[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, "is not an object")
    missing = fields - optional - set(value)
    extra = set(value) - fields
    if missing:
        raise _fail(where, f"lacks {', '.join(sorted(missing))}")
    if extra:
        raise _fail(where, f"has unknown fields {', '.join(sorted(map(str, extra)))[:200]}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"must be an integer in [{low}, {high}]")
    return value


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise _fail(where, f"must be a finite number in [{low:g}, {high:g}]")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "must be true or false")
    return value


def _text(value: Any, where: str, pattern: re.Pattern | None = None, choices: tuple[str, ...] = (), limit: int = MAX_ID_CHARS) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _fail(where, f"must be a non-empty string of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, "is not in the expected form")
    if choices and value not in choices:
        raise _fail(where, f"must be one of {', '.join(choices)}")
    return value


def max_faces(height: int, width: int) -> int:
    """The most faces an image of this size can carry in its header."""
    return max(1, min(MAX_FACES, (height * width) // MIN_FACE_AREA))


def check_public(public: Any, height: int | None = None, width: int | None = None) -> dict:
    """Validate a header's public part; ``height``/``width``: the image it came with, when known.

    Returns ``public`` unchanged, or raises ``HeaderError`` naming the first bad field.
    """
    from faceveil.engine import CONTEXTS, MIXINGS
    from faceveil.engine.veil import MAX_NOISE_GAIN, MIN_NOISE_GAIN
    from faceveil.residual import CODEC

    _dict(public, "public part", PUBLIC_FIELDS)
    model = _dict(public["model"], "model", MODEL_FIELDS)
    _text(model["id"], "model.id")
    _text(model["weights_sha256"], "model.weights_sha256", _HEX64)
    _text(model["kind"], "model.kind", choices=MODEL_KINDS)

    settings = _dict(public["settings"], "settings", SETTINGS_FIELDS, optional=frozenset({"detail_passes"}))
    engine = _dict(settings["engine"], "settings.engine", ENGINE_FIELDS, optional=frozenset({"mixing", "noise_gain"}))
    _int(engine["steps"], "settings.engine.steps", 1, MAX_STEPS)
    _int(engine["refine_iters"], "settings.engine.refine_iters", 0, MAX_ITERS)
    _number(engine["refine_tol"], "settings.engine.refine_tol", 0.0, 1e6)
    _text(engine["context"], "settings.engine.context", choices=tuple(CONTEXTS))
    if "mixing" in engine:
        _text(engine["mixing"], "settings.engine.mixing", choices=tuple(MIXINGS))
    if "noise_gain" in engine:
        _number(engine["noise_gain"], "settings.engine.noise_gain", MIN_NOISE_GAIN, MAX_NOISE_GAIN)
    _int(settings["decoder_iters"], "settings.decoder_iters", 0, MAX_ITERS)
    if "detail_passes" in settings:  # absent in files made before it: one pass
        _int(settings["detail_passes"], "settings.detail_passes", 1, MAX_DETAIL_PASSES)
    for name in ("hint", "colour", "grain"):
        _bool(settings[name], f"settings.{name}")
    _text(settings["residual_codec"], "settings.residual_codec", choices=(CODEC,))

    image = _dict(public["image"], "image", IMAGE_FIELDS)
    h = _int(image["height"], "image.height", 1, MAX_SIDE)
    w = _int(image["width"], "image.width", 1, MAX_SIDE)
    _text(image["pixels_sha256"], "image.pixels_sha256", _HEX64)
    if height is not None and width is not None and (h, w) != (int(height), int(width)):
        raise HeaderError(
            f"the faceveil header is for a {w}x{h} image but the image is {width}x{height}: "
            "resized images (or a header moved onto another image) cannot be recovered"
        )

    faces = public["faces"]
    limit = max_faces(h, w)
    if not isinstance(faces, list) or len(faces) > limit:
        raise _fail("faces", f"must be a list of at most {limit} faces for a {w}x{h} image")
    for i, face in enumerate(faces):
        _dict(face, f"faces[{i}]", FACE_FIELDS, optional=frozenset({"treatment"}))
        if "treatment" in face:
            _text(face["treatment"], f"faces[{i}].treatment", choices=TREATMENTS)
        _text(face["nonce"], f"faces[{i}].nonce", _HEX32)
        _check_transform(face["transform"], f"faces[{i}].transform", h, w)
    return public


def _check_transform(value: Any, where: str, height: int, width: int) -> None:
    """A 2x3 finite similarity-like matrix of bounded scale and an integer crop size."""
    transform = _dict(value, where, TRANSFORM_FIELDS)
    _int(transform["size"], f"{where}.size", 8, MAX_CROP)
    matrix = transform["matrix"]
    if not isinstance(matrix, list) or len(matrix) != 2 or any(not isinstance(row, list) or len(row) != 3 for row in matrix):
        raise _fail(f"{where}.matrix", "must be 2 rows of 3 numbers")
    reach = 64.0 * (height + width + MAX_CROP)  # translations far beyond any crop are nonsense
    for r, row in enumerate(matrix):
        for c, v in enumerate(row):
            _number(v, f"{where}.matrix[{r}][{c}]", -reach, reach)
    (a, b, _), (d, e, _) = matrix
    det = a * e - b * d
    # crop pixels per image pixel: a face crop between 1/4096 and 4096 times the image scale
    if not (1e-7 <= abs(det) <= 1.7e7):
        raise _fail(f"{where}.matrix", "has a degenerate or absurd scale")

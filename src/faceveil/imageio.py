"""Reading photos for the pipeline: EXIF orientation, modes, limits, clear errors.

``read_image`` returns the picture as a viewer shows it (EXIF orientation applied) as
an RGB uint8 array, with any transparency kept apart. ``to_output_array`` turns an
edited RGB array back into the kind of array the input was (grayscale, with alpha...).
Writing is done elsewhere (``container``/``pipeline``).
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceveil.atomic import open_regular
from faceveil.errors import UsageError

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_PIXELS_OPTION", "LoadedImage", "read_image", "to_output_array"]

DEFAULT_MAX_PIXELS = 50_000_000
#: How the user raises the pixel limit (named in the error message).
MAX_PIXELS_OPTION = "--max-pixels"

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SUPPORTED_MODES = {
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
    "I", "I;16", "I;16L", "I;16B", "I;16N",
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded photo, oriented as a viewer shows it."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray | None  # H x W uint8, or None
    mode: str  # original PIL mode ("RGB", "L", "RGBA", "P", "I;16", ...)
    format: str | None  # PIL format name ("JPEG", "PNG", ...)
    exif_transposed: bool  # an EXIF orientation other than 1 was applied
    path: Path | None = None
    n_frames: int = 1  # more than 1 only with exact_only=False (then the first frame is read)
    icc_profile: bytes | None = None
    metadata: dict = field(default_factory=dict)  # see read_metadata: sealed, never written to a veiled file

    @property
    def is_gray(self) -> bool:
        """Whether the original was grayscale (with or without alpha)."""
        return self.mode in _GRAY_MODES

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535) to 8 bits, rounding (v / 257)."""
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_arrays(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb uint8 HxWx3, alpha uint8 HxW or None) for a supported PIL image."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        gray = _u16_to_u8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    if mode == "P":
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    elif mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
        mode = img.mode
    if mode == "RGBA":
        a = np.asarray(img)
        return np.ascontiguousarray(a[:, :, :3]), np.ascontiguousarray(a[:, :, 3])
    if mode == "LA":
        a = np.asarray(img)
        return np.repeat(a[:, :, :1], 3, axis=2), np.ascontiguousarray(a[:, :, 1])
    if mode in ("1", "L"):
        gray = np.asarray(img.convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))), None


_DEEP_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def inexact_reason(img: Image.Image) -> str | None:
    """Why faceveil could not give ``img`` back value for value (8-bit RGB/grey/alpha work), or ``None``.

    Read from the file's header before any pixel is decoded: more than 8 bits per sample
    (16-bit PNG/TIFF, Pillow would hand over 8-bit RGB without a word), CMYK (converted
    to RGB), several frames (an animation or a multi-page file: only the first is worked on).
    """
    tile = getattr(img, "tile", None) or []
    rawmode = tile[0][3] if tile and len(tile[0]) > 3 else ""
    rawmode = rawmode[0] if isinstance(rawmode, tuple) and rawmode else rawmode
    if img.mode in _DEEP_MODES or (isinstance(rawmode, str) and ";16" in rawmode):
        return ("it has more than 8 bits per sample (16-bit or float); faceveil works on 8-bit pixels and would "
                "give back fewer bits. Convert it to 8 bits first if that is acceptable")
    if img.mode == "CMYK":
        return "it is CMYK; faceveil works on RGB and would give back RGB. Convert it to RGB first if that is acceptable"
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1:
        return (f"it has {frames} frames (an animation or a multi-page file); faceveil would work on the first frame "
                "only. Extract the frames as images (or convert an animation to a video) first")
    return None


def read_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS,
               exact_only: bool = True) -> LoadedImage:
    """Decode a photo fully, apply its EXIF orientation and convert it to RGB uint8.

    Raises :class:`UsageError` (one line) for a missing file, a non-image, a truncated
    or corrupt image, an image over ``max_pixels`` (``None``: no limit of our own) or an
    unsupported mode; with ``exact_only`` (the default) also for an image faceveil could not
    give back exactly (:func:`inexact_reason`), before its pixels are decoded.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"input not found: {p}")
    if p.is_dir():
        raise UsageError(f"input is a directory, not an image: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(p, "input") as handle, Image.open(handle) as img:  # a FIFO is refused, not waited on
                fmt = img.format
                mode = img.mode
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise UsageError(
                        f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit of "
                        f"{max_pixels:,} (raise it with {MAX_PIXELS_OPTION})"
                    )
                if mode not in _SUPPORTED_MODES:
                    raise UsageError(f"unsupported image mode {mode!r} in {p.name}")
                reason = inexact_reason(img) if exact_only else None
                if reason:
                    raise UsageError(f"{p.name} refused: {reason}")
                n_frames = int(getattr(img, "n_frames", 1) or 1)
                img.load()  # force a full decode: truncated data raises here
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
                oriented = ImageOps.exif_transpose(img)
                transposed = oriented is not None and orientation not in (1, None)
                if oriented is None:  # pragma: no cover - old Pillow in_place semantics
                    oriented = img
                icc = img.info.get("icc_profile")
                metadata = read_metadata(img)
                rgb, alpha = _to_arrays(oriented)
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise UsageError(
            f"image too large: {p.name} exceeds Pillow's decompression-bomb limit"
        ) from None
    except UnidentifiedImageError:
        raise UsageError(f"not an image (or an unsupported format): {p}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"corrupt or truncated image {p.name}: {reason}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise UsageError(f"unsupported image layout {rgb.shape} in {p.name}")
    rgb.setflags(write=False)
    if alpha is not None:
        alpha.setflags(write=False)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        mode=mode,
        format=fmt,
        exif_transposed=bool(transposed),
        path=p,
        n_frames=n_frames,
        icc_profile=icc if isinstance(icc, bytes) else None,
        metadata=metadata,
    )


# ---- metadata ---------------------------------------------------------------------
#: The most metadata bytes sealed with a file (EXIF, XMP, ICC, IPTC, comments, text); more is dropped.
MAX_METADATA_BYTES = 1 << 20
_EXIF_PREFIX = b"Exif\x00\x00"
_XMP_KEY = "XML:com.adobe.xmp"


def read_metadata(img: Image.Image) -> dict:
    """What a photo says about itself beyond its pixels, as the raw bytes its file holds.

    Keys: ``exif`` (with the ``Exif\\0\\0`` prefix; holds GPS, camera serials and the
    thumbnail), ``xmp``, ``icc_profile``, ``iptc`` (the JPEG APP13 segment), ``comment``,
    and ``text`` (other PNG text chunks, name -> text). Only what is present. faceveil
    never writes any of it to a veiled file: it is sealed in the header and restored on
    recovery (:func:`metadata_save_options`).
    """
    info = img.info
    found: dict = {}
    exif = info.get("exif")
    if isinstance(exif, bytes) and exif:
        found["exif"] = exif if exif.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + exif
    xmp = info.get("xmp", info.get(_XMP_KEY))
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, bytes) and xmp:
        found["xmp"] = xmp
    if isinstance(info.get("icc_profile"), bytes) and info["icc_profile"]:
        found["icc_profile"] = info["icc_profile"]
    if isinstance(info.get("comment"), bytes) and info["comment"]:
        found["comment"] = info["comment"]
    iptc = [data for marker, data in getattr(img, "applist", []) if marker == "APP13"]
    if iptc:
        found["iptc"] = b"".join(iptc)
    text = {k: v for k, v in getattr(img, "text", {}).items() if k != _XMP_KEY and isinstance(v, str)} if img.format == "PNG" else {}
    if text:
        found["text"] = text
    kept, size = {}, 0
    for name, value in found.items():
        n = len(value) if isinstance(value, bytes) else sum(len(k) + len(v) for k, v in value.items())
        if size + n <= MAX_METADATA_BYTES:
            kept[name] = value
            size += n
    return kept


def upright_exif(exif: bytes) -> bytes:
    """``exif`` with its orientation tag set to 1 (the pixels are stored upright); else unchanged.

    Patched in place in the TIFF structure, so every other byte (GPS, thumbnail) stays as it was.
    """
    tiff = exif[len(_EXIF_PREFIX):] if exif.startswith(_EXIF_PREFIX) else exif
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return exif
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return exif
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    out = bytearray(tiff)
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(tiff):
            break
        tag, kind = struct.unpack_from(order + "HH", tiff, at)
        if tag == _EXIF_ORIENTATION and kind == 3:  # SHORT, value inline
            struct.pack_into(order + "H", out, at + 8, 1)
    return (exif[: len(exif) - len(tiff)]) + bytes(out)


def metadata_save_options(metadata: dict, fmt: str) -> dict:
    """Pillow ``save`` keyword arguments that write ``metadata`` (see :func:`read_metadata`) in ``fmt``.

    PNG gets eXIf, iCCP, XMP and the text chunks (IPTC as ImageMagick's "Raw profile
    type iptc" text); JPEG gets EXIF, ICC, XMP and the comment; WebP EXIF, ICC and XMP.
    """
    from PIL import PngImagePlugin

    options: dict = {}
    for name in ("exif", "icc_profile"):
        if name in metadata:
            options[name] = metadata[name]
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.get("text", {}).items():
            info.add_itxt(key, value)
        if "xmp" in metadata:
            info.add_itxt(_XMP_KEY, metadata["xmp"].decode("utf-8", "replace"))
        if "iptc" in metadata:
            data = metadata["iptc"].hex()
            lines = "\n".join(data[i : i + 72] for i in range(0, len(data), 72))
            info.add_text("Raw profile type iptc", f"\niptc\n{len(metadata['iptc']):8d}\n{lines}\n", zip=True)
        if "comment" in metadata:
            info.add_itxt("Comment", metadata["comment"].decode("utf-8", "replace"))
        options["pnginfo"] = info
    elif fmt in ("JPEG", "WEBP"):
        if "xmp" in metadata:
            options["xmp"] = metadata["xmp"]
        if fmt == "JPEG" and "comment" in metadata:
            options["comment"] = metadata["comment"]
    return options


def to_output_array(loaded: LoadedImage, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (H x W x 3 uint8, same size as ``loaded``) in the input's kind.

    Grayscale inputs give H x W (or H x W x 2 with alpha, "LA"); colour inputs give
    H x W x 3 (or H x W x 4 with alpha, "RGBA"). The original alpha is re-attached.
    Grayscale uses Pillow's "L" conversion (ITU-R 601-2 luma).
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise UsageError(f"expected an H x W x 3 uint8 array, got {arr.dtype} {arr.shape}")
    if arr.shape[:2] != loaded.rgb.shape[:2]:
        raise UsageError(
            f"array size {arr.shape[1]}x{arr.shape[0]} differs from the input's "
            f"{loaded.rgb.shape[1]}x{loaded.rgb.shape[0]}"
        )
    if loaded.is_gray:
        out = np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").convert("L"))
        if loaded.alpha is not None:
            return np.stack([out, loaded.alpha], axis=2)
        return out.copy()
    if loaded.alpha is not None:
        return np.concatenate([arr, loaded.alpha[:, :, None]], axis=2)
    return arr.copy()

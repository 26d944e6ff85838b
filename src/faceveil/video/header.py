"""A veiled video's header: the sidecar ``NAME.veil`` with one sealed record per frame.

Layout (big-endian)::

    "faceveil-video" | version u8 = 1 | u32 frame count N
    | u32 length | video record | (u32 length | frame record) * N

Every record is a :func:`faceveil.container.pack_record` record. Frame ``i``'s record
is exactly a photo's header for that frame (faces, nonces, sealed residuals). The video
record, sealed under the same key, names the clip (size, frames, codec, tracks) and
keeps in its sealed part the SHA-256 of every frame record, in order: frames cannot be
dropped, swapped or moved to another clip without recovery saying "tampered".

Bounded reading: the count is refused above what the sidecar's size allows, the video
record above ``1 MiB + 32 N`` bytes, each frame record above
:func:`faceveil.container.header_bound` of the video's frame size; records are read one
at a time, so reading never holds more than one frame's header.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from faceveil.container import (
    FORMAT_VERSION,
    MAGIC,
    check_record,
    header_bound,
    blobs_v3,
    open_header,
    pack_record,
    seal_header,
    unb64,
    unpack_record,
)
from faceveil.envelope import DisclosureToken
from faceveil.errors import HeaderError, WrongKeyError
from faceveil.keys import Identity, Key

VIDEO_MAGIC = b"faceveil-video"
VIDEO_VERSION = 1
_PREFIX = len(VIDEO_MAGIC) + 5
MAX_FRAMES = 10_000_000
_VIDEO_FIELDS = {"video", "model"}
_CLIP_FIELDS = {"frames", "width", "height", "codec", "lossless", "tracks"}


def video_record(key: Key, public: dict, frame_digests: list[bytes]) -> dict:
    """The sealed video record: ``public`` (clip, model) and the frame records' digests."""
    return seal_header(key, public, {"frame_records_sha256": b"".join(frame_digests)})


def digest(packed: bytes) -> bytes:
    return hashlib.sha256(packed).digest()


def write_sidecar(handle: BinaryIO, video: dict, frames: Iterator[bytes], count: int) -> None:
    """Stream the sidecar to ``handle``: the video record, then ``count`` packed frame records."""
    packed = pack_record(video)
    handle.write(VIDEO_MAGIC + struct.pack(">BI", VIDEO_VERSION, count))
    handle.write(struct.pack(">I", len(packed)) + packed)
    written = 0
    for record in frames:
        handle.write(struct.pack(">I", len(record)) + record)
        written += 1
    if written != count:
        raise ValueError(f"{written} frame records written, {count} announced")


def _check_video_public(public: object, where: str) -> dict:
    if not isinstance(public, dict) or set(public) != _VIDEO_FIELDS:
        raise HeaderError(f"the video header of {where} is malformed (public part)")
    clip = public["video"]
    if not isinstance(clip, dict) or set(clip) != _CLIP_FIELDS:
        raise HeaderError(f"the video header of {where} is malformed (clip fields)")
    for name, high in (("frames", MAX_FRAMES), ("width", 1 << 20), ("height", 1 << 20)):
        value = clip[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise HeaderError(f"the video header of {where} is malformed (video.{name})")
    if clip["codec"] not in ("ffv1", "h264") or not isinstance(clip["lossless"], bool) or not isinstance(clip["tracks"], list):
        raise HeaderError(f"the video header of {where} is malformed (video.codec, lossless or tracks)")
    model = public["model"]
    if not isinstance(model, dict) or not isinstance(model.get("id"), str) or not isinstance(model.get("weights_sha256"), str):
        raise HeaderError(f"the video header of {where} is malformed (model)")
    return public


class Sidecar:
    """A veiled video's sidecar opened for reading: ``open(key)`` then iterate ``frames()``."""

    def __init__(self, path: Path, height: int, width: int) -> None:
        self.path, self.shape = Path(path), (height, width)
        try:
            self._handle = open(self.path, "rb")
        except FileNotFoundError:
            raise HeaderError(f"{self.path.name} is missing: a veiled video's header travels in it, nothing to recover") from None
        except OSError as exc:
            raise HeaderError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        size = self.path.stat().st_size
        head = self._handle.read(_PREFIX)
        if len(head) != _PREFIX or not head.startswith(VIDEO_MAGIC):
            raise HeaderError(f"{self.path.name} is not a faceveil video header")
        version, count = struct.unpack(">BI", head[len(VIDEO_MAGIC):])
        if version != VIDEO_VERSION:
            raise HeaderError(f"{self.path.name} has video header version {version}; this faceveil reads {VIDEO_VERSION}")
        if count > min(MAX_FRAMES, size // 4):
            raise HeaderError(f"{self.path.name} announces {count} frames, more than its size allows: refused")
        self.count = count
        self._digests: bytes | None = None
        self._unverified = False  # opened by a track's token: frames read without the (sealed) digest list
        self._next = 0

    def _read(self, bound: int, what: str) -> bytes:
        raw = self._handle.read(4)
        if len(raw) != 4:
            raise HeaderError(f"{self.path.name} is truncated ({what})")
        (length,) = struct.unpack(">I", raw)
        if length > bound:
            raise HeaderError(f"{self.path.name}: {what} is {length} bytes, more than it can need ({bound}): refused")
        data = self._handle.read(length)
        if len(data) != length:
            raise HeaderError(f"{self.path.name} is truncated ({what})")
        return data

    def open(self, key: Key | Identity | DisclosureToken) -> dict:
        """Read and open the video record (wrong key and tampering stop here); returns its public part.

        A disclosure token (one track) cannot open the video record's seal: it is checked to be
        this video's and one of its tracks', and the frames are then read without the digest list.
        """
        data = self._read((1 << 20) + 32 * self.count, "the video record")
        where = self.path.name
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 5:
            raise HeaderError(f"the video header of {where} is malformed")
        _, head_len = struct.unpack_from(">BI", data, len(MAGIC))
        start = len(MAGIC) + 5
        if head_len > len(data) - start:
            raise HeaderError(f"the video header of {where} is truncated")
        try:
            record = json.loads(data[start:start + head_len])
        except (ValueError, RecursionError):
            raise HeaderError(f"the video header of {where} is not valid JSON") from None
        check_record(record, where)
        _check_video_public(record["public"], where)
        if record["faceveil"] == FORMAT_VERSION:
            record["envelope"], record["sealed"], record["face_seals"] = blobs_v3(data, start + head_len, where)
        else:
            record["sealed"] = bytes(data[start + head_len:])
        self.record = record  # the video record as read (``faceveil rekey`` rewraps it)
        if isinstance(key, DisclosureToken):
            return self._open_for_track(key, record)
        public, private = open_header(key, record)
        digests = private.get("frame_records_sha256") if isinstance(private, dict) else None
        if not isinstance(digests, bytes) or len(digests) != 32 * self.count or public["video"]["frames"] != self.count:
            raise HeaderError(f"the video header of {where} has been tampered with (frame list)")
        self._digests = digests
        return public

    def _open_for_track(self, token: DisclosureToken, record: dict) -> dict:
        public = record["public"]
        if record.get("faceveil") != FORMAT_VERSION or unb64(record["file_nonce"]) != token.file_nonce:
            raise WrongKeyError("this disclosure token is for another file")
        tracks = public["video"]["tracks"]
        if token.face >= len(tracks) or str(tracks[token.face].get("nonce")) != token.face_nonce.hex():
            raise WrongKeyError(f"this disclosure token is not for track {token.face + 1} of this video")
        if public["video"]["frames"] != self.count:
            raise HeaderError(f"the video header of {self.path.name} has been tampered with (frame list)")
        self._unverified = True
        return public

    def frames(self) -> Iterator[dict]:
        """Each frame's record in order, checked against the video record's digests."""
        if self._digests is None and not self._unverified:
            raise RuntimeError("open the video record first")
        bound = header_bound(*self.shape)
        for i in range(self.count):
            data = self._read(bound, f"frame {i}'s record")
            if self._digests is not None and digest(data) != self._digests[32 * i: 32 * (i + 1)]:
                raise HeaderError(f"the video header of {self.path.name} has been tampered with (frame {i})")
            yield unpack_record(data, f"frame {i} of {self.path.name}", shape=self.shape)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Reading and writing videos with PyAV (FFmpeg ships inside its wheel).

Frames are read as RGB uint8 arrays with their presentation times; videos are written
losslessly as FFV1 (``bgr0``: the RGB values exactly) or lossily as H.264, with every
audio stream of a source copied packet for packet (re-encoded to AAC only where the
container cannot hold the codec). Writing goes to a temporary file beside the target,
renamed into place when complete: a video appears whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from faceveil.errors import UsageError

CODECS = ("ffv1", "h264")
LOSSLESS = "ffv1"
H264_CRF = 18  # visually lossless-ish; recovery from it is approximate (README: measured PSNR)
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover
        raise UsageError(f"videos need PyAV (pip install av): {exc}") from None
    av.logging.set_level(av.logging.ERROR)
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video's first video stream says about itself (frames counted on demand)."""

    width: int
    height: int
    rate: Fraction  # average frames per second (for output time stamps)
    time_base: Fraction
    codec: str
    audio_streams: int
    frames_hint: int  # the container's frame count or duration x rate; 0 when unknown (a guess, for progress)


def open_input(path: Path):
    """An opened PyAV input container, or a clear ``UsageError``."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UsageError(f"cannot read video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise UsageError(f"{path} has no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    with open_input(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        if ctx.width <= 0 or ctx.height <= 0:
            raise UsageError(f"{path}: the video stream has no frame size")
        hint = stream.frames or 0
        if not hint and container.duration:
            hint = int(round(container.duration / 1_000_000 * float(rate)))
        return VideoInfo(int(ctx.width), int(ctx.height), Fraction(rate), Fraction(stream.time_base or Fraction(1, 1000)),
                         ctx.name, len(container.streams.audio), int(hint))


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB pixels and its presentation time in seconds (None if unknown)."""

    index: int
    rgb: np.ndarray
    time: Fraction | None


def iter_frames(path: Path, max_pixels: int | None = None) -> Iterator[Frame]:
    """Decode every frame of the first video stream as RGB uint8, in presentation order."""
    av = _av()
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    raise UsageError(f"{path}: frames of {frame.width}x{frame.height} exceed --max-pixels {max_pixels}")
                time = None if frame.pts is None else Fraction(frame.pts) * Fraction(frame.time_base)
                yield Frame(index, frame.to_ndarray(format="rgb24"), time)
                index += 1
        except av.error.FFmpegError as exc:
            raise UsageError(f"cannot decode video {path} at frame {index}: {exc}") from None


def _temp_beside(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".mkv", dir=path.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


def publish(temp: Path, target: Path, overwrite: bool) -> Path:
    """Move a finished temporary file into place: never over an existing file unless ``overwrite``."""
    try:
        if overwrite:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if the target appeared meanwhile: never clobbers
            except FileExistsError:
                raise UsageError(f"{target} already exists; refusing to overwrite it") from None
    finally:
        temp.unlink(missing_ok=True)
    return target


class VideoWriter:
    """Write RGB frames to ``target`` (FFV1 or H.264), copying the audio of ``audio_from``.

    Use as a context manager; the file appears at ``target`` only when the block ends
    without an error. ``times`` of the frames (seconds) keep the source's timing, so the
    copied audio stays in sync; without them frames are spaced by ``rate``.
    """

    def __init__(self, target: Path, width: int, height: int, rate: Fraction, codec: str = LOSSLESS,
                 audio_from: Path | None = None, overwrite: bool = False, mode: int | None = None) -> None:
        if codec not in CODECS:
            raise UsageError(f"unknown video codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.target, self.codec, self.overwrite = Path(target), codec, overwrite
        self.rate = Fraction(rate)
        self.width, self.height = width, height
        self.audio_from = audio_from
        self.mode = mode  # e.g. atomic.PRIVATE for a recovered video (it holds the original faces); None: the umask's
        self._temp: Path | None = None
        self._count = 0
        self._last_pts = -1

    def __enter__(self) -> VideoWriter:
        av = _av()
        self._temp = _temp_beside(self.target)
        fmt = "matroska" if self.target.suffix.lower() in (".mkv", ".tmp", "") else None
        self._out = av.open(str(self._temp), "w", format=fmt)
        if self.codec == LOSSLESS:
            stream = self._out.add_stream("ffv1", rate=self.rate)
            stream.pix_fmt = "bgr0"  # FFV1's 8-bit RGB: exactly the RGB values written
        else:
            stream = self._out.add_stream("libx264", rate=self.rate, options={"crf": str(H264_CRF), "preset": "medium"})
            even = self.width % 2 == 0 and self.height % 2 == 0
            stream.pix_fmt = "yuv420p" if even else "yuv444p"
        stream.width, stream.height = self.width, self.height
        self._time_base = Fraction(1, 90000)
        stream.time_base = self._time_base
        self._video = stream
        self._audio_in = None
        self._audio_pairs: list = []
        self._pending = None
        if self.audio_from is not None:
            self._open_audio(av)
        return self

    def _open_audio(self, av) -> None:
        source = open_input(self.audio_from)
        if not source.streams.audio:
            source.close()
            return
        mp4 = self._out.format.name.startswith("mov") or "mp4" in self._out.format.name
        for stream in source.streams.audio:
            if mp4 and stream.codec_context.name not in _MP4_AUDIO:
                out = self._out.add_stream("aac", rate=stream.codec_context.sample_rate)
                self._audio_pairs.append((stream, out, True))
            else:
                self._audio_pairs.append((stream, self._out.add_stream_from_template(stream), False))
        self._audio_in = source
        self._packets = source.demux(*[s for s, _, _ in self._audio_pairs])

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets up to ``seconds`` (all of them for None), keeping the streams interleaved."""
        if self._audio_in is None:
            return
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                self._audio_in.close()
                self._audio_in = None
                return
            if packet.dts is None and packet.size == 0:
                continue  # a demuxer's flush packet
            time = None if packet.pts is None else float(packet.pts * packet.time_base)
            if seconds is not None and time is not None and time > seconds:
                self._pending = packet
                return
            _, out, transcode = next(p for p in self._audio_pairs if p[0] is packet.stream)
            if transcode:
                for frame in packet.decode():
                    frame.pts = None
                    for encoded in out.encode(frame):
                        self._out.mux(encoded)
            else:
                packet.stream = out
                self._out.mux(packet)

    def write(self, rgb: np.ndarray, time: Fraction | None = None) -> None:
        av = _av()
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise UsageError(f"frame of shape {rgb.shape} does not fit a {self.width}x{self.height} video")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.codec == LOSSLESS:
            frame = frame.reformat(format="bgr0")
        seconds = Fraction(time) if time is not None else Fraction(self._count) / self.rate
        pts = int(round(seconds / self._time_base))
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the source said
        frame.pts, frame.time_base = pts, self._time_base
        self._last_pts = pts
        self._mux_audio_until(float(seconds))
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for packet in self._video.encode():
                    self._out.mux(packet)
                self._mux_audio_until(None)
                for _, out, transcode in self._audio_pairs:
                    if transcode:
                        for packet in out.encode():
                            self._out.mux(packet)
            self._out.close()
        finally:
            if self._audio_in is not None:
                self._audio_in.close()
            if exc_type is not None:
                self._temp.unlink(missing_ok=True)
        if exc_type is None:
            if self.mode is not None:
                from faceveil.atomic import effective_mode

                os.chmod(self._temp, effective_mode(self.mode))
            publish(self._temp, self.target, self.overwrite)


def write_frames(target: Path, frames: list[np.ndarray], rate: Fraction, codec: str = LOSSLESS,
                 overwrite: bool = False) -> Path:
    """A small helper: write ``frames`` (no audio) to ``target``."""
    height, width = frames[0].shape[:2]
    with VideoWriter(target, width, height, rate, codec, overwrite=overwrite) as writer:
        for rgb in frames:
            writer.write(rgb)
    return Path(target)


def audio_packets(path: Path) -> list[bytes]:
    """The raw bytes of every audio packet of a video (to check that audio was copied)."""
    with open_input(path) as container:
        if not container.streams.audio:
            return []
        return [bytes(p) for p in container.demux(*container.streams.audio) if p.size]

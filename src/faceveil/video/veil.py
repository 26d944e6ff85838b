"""Anonymize and recover videos frame by frame, in resumable chunks.

Anonymization runs in three stages:

1. *plan*: every frame is decoded and its faces detected; detections are linked into
   tracks (:mod:`faceveil.video.track`), each with one public nonce;
2. *chunks*: frames are anonymized with :func:`faceveil.pipeline.anonymize_arrays`, a few
   at a time (their faces share UNet evaluations), each track's face with the track's nonce (one key sign pattern, one anonymous face for the
   whole clip) and the track's smoothed geometry; every ``chunk_frames`` frames the
   veiled frames (FFV1) and their header records are written to a work folder beside
   the output, atomically;
3. *assembly*: the sidecar header (:mod:`faceveil.video.header`) and the output video
   (FFV1 in Matroska by default, or H.264) with the source's audio copied are written
   atomically, then the work folder is removed.

A run stopped at any point (Ctrl-C, a crash) leaves only whole chunks; the next run with
the same input, key, model and settings picks up at the first missing chunk. Recovery
works the same way (its work folder holds recovered frames: mode 0700, removed at the end).
"""

from __future__ import annotations

import io
import json
import os
import contextvars
import functools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from faceveil.api import (
    RECOVERED_TAG,
    VEILED_TAG,
    Result,
    _check_output,
    _model,
    _opener,
    _recipients,
    default_output,
)
from faceveil.atomic import PRIVATE, atomic_output, write_file
from faceveil.container import Opened, pack_record, sidecar_path, unb64, unlock
from faceveil.envelope import DisclosureToken, envelope_for, job_tag
from faceveil.errors import HeaderError, NoFaceError, UsageError
from faceveil.faces import DEFAULT_MIN_SIZE, detect_faces
from faceveil.keys import Key, new_nonce
from faceveil.models import DiffusionModel
from faceveil.pipeline import (
    DEFAULT_BATCH,
    FaceJob,
    FaceReport,
    PhotoJob,
    Settings,
    VeiledPhoto,
    anonymize_arrays,
    keyed_noise,
    recover_arrays,
)
from faceveil.treatments import treatment_of
from faceveil.video.header import Sidecar, digest, video_record, write_sidecar
from faceveil.video.io import LOSSLESS, Frame, VideoWriter, iter_frames, probe
from faceveil.video.track import (
    EXTEND,
    SIGMA,
    Track,
    Tracker,
    TrackFace,
    detection_of,
    frame_faces,
)

CHUNK_FRAMES = 16
WORK_SUFFIX = ".faceveil-work"
LOSSY_SUFFIXES = {".mp4", ".mov", ".m4v"}

# (phase, frames done, frames in all or 0 when not known yet); phases: "detect", "anonymize", "recover", "write"
VideoProgress = Callable[[str, int, int], None]

# Measured by benchmarks/video_benchmark.py on the demo clip (README, "Videos"); shown for H.264.
H264_QUALITY = ("CRF 18 re-encodes every pixel: measured frame PSNR 43.7-44.0 dB after recovery; faces whose sealed "
                "header holds the original region, every face with the draft model, come back exactly")


@dataclass
class VideoResult(Result):
    """What a video call wrote: the files, per face-frame reports, notes, and the run's figures."""

    frames: int = 0
    tracks: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the frame stage (anonymize or recover), this run
    frames_run: int = 0  # frames processed in this run (fewer than ``frames`` after a resume)
    resumed_at: int = 0  # first frame this run processed
    frame_faces: list[list[TrackFace]] = field(default_factory=list, repr=False)  # anonymize: each frame's track faces


def video_output(source: Path, tag: str, codec: str | None = None) -> Path:
    """``clip.mp4`` -> ``clip.veiled.mkv`` (or ``.mp4`` for H.264) -> ``clip.recovered.mkv``."""
    out = default_output(source, tag)
    return out.with_suffix(".mp4") if codec == "h264" else out.with_suffix(".mkv")


def codec_for(target: Path, codec: str | None) -> str:
    """The output codec: asked for, else from the name (.mp4/.mov: H.264, else FFV1)."""
    suffix = target.suffix.lower()
    chosen = codec or ("h264" if suffix in LOSSY_SUFFIXES else LOSSLESS)
    if chosen == LOSSLESS and suffix != ".mkv":
        raise UsageError(f"lossless FFV1 output needs a .mkv name, not {target.name} (or choose codec h264 with .mp4)")
    return chosen


# ---- the work folder ------------------------------------------------------------------------
_IN_USE: contextvars.ContextVar[list | None] = contextvars.ContextVar("faceveil_work_folders", default=None)


def _removes_work_on_failure(run: Callable) -> Callable:
    """Remove the work folders ``run`` used when it fails or refuses (an ``Exception``).

    A recovery's chunks hold original frames: a refusal must not leave them behind. An
    interruption (Ctrl-C, SIGTERM: not an ``Exception``) keeps them, so the run resumes.
    """

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        token = _IN_USE.set([])
        try:
            return run(*args, **kwargs)
        except Exception:
            for work in _IN_USE.get() or []:
                work.remove()
            raise
        finally:
            _IN_USE.reset(token)

    return wrapper


class WorkFolder:
    """Chunks of a run beside its output: ``.NAME.faceveil-work/`` (mode 0700)."""

    def __init__(self, target: Path) -> None:
        self.path = target.parent / f".{target.name}{WORK_SUFFIX}"
        in_use = _IN_USE.get()
        if in_use is not None:
            in_use.append(self)

    def plan(self) -> dict | None:
        try:
            return json.loads((self.path / "plan.json").read_text())
        except (OSError, ValueError):
            return None

    def start(self, plan: dict) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(mode=0o700)
        self.save_plan(plan)

    def save_plan(self, plan: dict) -> None:
        write_file(self.path / "plan.json", json.dumps(plan).encode(), overwrite=True, mode=0o600)

    def video(self, chunk: int) -> Path:
        return self.path / f"chunk-{chunk:06d}.mkv"

    def meta(self, chunk: int) -> Path:
        return self.path / f"chunk-{chunk:06d}.json"

    def done(self, chunk: int) -> bool:
        return self.video(chunk).is_file() and self.meta(chunk).is_file()

    def write_chunk(self, chunk: int, frames: list[np.ndarray], rate: Fraction, meta: dict) -> None:
        """The chunk's data first, its video last: a chunk whose video exists is whole."""
        write_file(self.meta(chunk), json.dumps(meta).encode(), overwrite=True, mode=0o600)
        height, width = frames[0].shape[:2]
        with VideoWriter(self.video(chunk), width, height, rate, LOSSLESS, overwrite=True) as writer:
            for rgb in frames:
                writer.write(rgb)

    def chunk_frames(self, chunk: int) -> Iterator[np.ndarray]:
        for frame in iter_frames(self.video(chunk)):
            yield frame.rgb

    def chunk_meta(self, chunk: int) -> dict:
        return json.loads(self.meta(chunk).read_text())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _identity(direction: str, source: Path, **extra) -> dict:
    stat = source.stat()
    return {"direction": direction, "input": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **extra}


def _resumable(work: WorkFolder, identity: dict, key: Key) -> dict | None:
    """The work folder's plan if it belongs to this very job (same input, settings and key)."""
    plan = work.plan()
    if not plan or plan.get("identity") != identity:
        return None
    try:
        same_key = job_tag(key, bytes.fromhex(plan["work_nonce"])).hex() == plan["key_check"]
    except (KeyError, ValueError, TypeError):
        return None
    return plan if same_key else None


def _new_plan(identity: dict, key: Key, **fields) -> dict:
    nonce = new_nonce()
    return {"identity": identity, "work_nonce": nonce.hex(), "key_check": job_tag(key, nonce).hex(), **fields}


def _time_json(t: Fraction | None) -> str | None:
    return None if t is None else f"{t.numerator}/{t.denominator}"


def _time_of(text: str | None) -> Fraction | None:
    return None if text is None else Fraction(text)


class _Clock:
    """Frames per second of this run's frame stage."""

    def __init__(self) -> None:
        self.start, self.frames = time.perf_counter(), 0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _run_chunks(work: WorkFolder, source: Path, total: int, chunk_frames: int, rate: Fraction,
                process: Callable[[list[Frame]], list[tuple[np.ndarray, dict]]], phase: str,
                progress: VideoProgress | None, max_pixels: int | None,
                skip: Callable[[Frame], None] | None = None, batch: int = DEFAULT_BATCH) -> tuple[_Clock, int]:
    """Run ``process`` on every frame of chunks not yet done, ``batch`` frames at a time
    (their faces share UNet evaluations); write each chunk when complete.

    ``process(frames)`` returns per frame the output pixels and the frame's entry in the
    chunk's meta (its time is added); ``skip(frame)`` sees frames of chunks already done.
    Returns the clock and the first frame processed.
    """
    clock = _Clock()
    chunks = (total + chunk_frames - 1) // chunk_frames
    first_todo = next((c * chunk_frames for c in range(chunks) if not work.done(c)), total)
    if progress:
        progress(phase, first_todo, total)
    frames: list[np.ndarray] = []
    entries: list = []
    pending: list[Frame] = []

    def run_pending(chunk: int, chunk_end: bool) -> None:
        nonlocal frames, entries
        for frame, (out, entry) in zip(pending, process(pending)):
            frames.append(out)
            entries.append({**entry, "time": _time_json(frame.time)})
            clock.frames += 1
            if progress:
                progress(phase, frame.index + 1, total)
        pending.clear()
        if chunk_end:
            work.write_chunk(chunk, frames, rate, {"frames": entries})
            frames, entries = [], []

    for frame in iter_frames(source, max_pixels):
        i = frame.index
        if i >= total:
            raise UsageError(f"{source} has more frames than its plan ({total}): was it changed?")
        chunk = i // chunk_frames
        if work.done(chunk):
            if skip:
                skip(frame)
            continue
        pending.append(frame)
        chunk_end = i == min(total, (chunk + 1) * chunk_frames) - 1
        if chunk_end or len(pending) >= batch:  # a batch never spans two chunks
            run_pending(chunk, chunk_end)
    return clock, first_todo


# ---- anonymize --------------------------------------------------------------------------
Detector = Callable[[int, np.ndarray], list]


def _default_detector(min_face: int) -> Detector:
    def detect(index: int, rgb: np.ndarray) -> list:
        return detect_faces(rgb, min_size=min_face)

    return detect


def plan_tracks(source: Path, detector: Detector, mask: str, max_pixels: int | None, progress: VideoProgress | None,
                hint: int = 0, per_frame_nonce: bool = False) -> tuple[list[Track], list[str | None]]:
    """Decode and detect every frame; returns the tracks and each frame's time."""
    tracker = Tracker(new_nonce)
    times: list[str | None] = []
    for frame in iter_frames(source, max_pixels):
        faces = detector(frame.index, frame.rgb)
        tracker.add(frame.index, [detection_of(face, frame.index, mask) for face in faces], frame.rgb)
        times.append(_time_json(frame.time))
        if progress:
            progress("detect", frame.index + 1, max(hint, frame.index + 1))
    if not times:
        raise UsageError(f"{source} has no frames")
    return tracker.tracks, times


def _jobs(faces: list[TrackFace], size: int, per_frame_nonce: bool, framing: str = "ffhq") -> list[FaceJob]:
    jobs = []
    for face in faces:
        transform, outline = face.job_geometry(size, framing)
        jobs.append(FaceJob(transform, outline, new_nonce() if per_frame_nonce else face.nonce))
    return jobs


@_removes_work_on_failure
def anonymize_video(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    steps: int | None = None,
    settings: Settings | None = None,
    codec: str | None = None,
    mask: str = "face",
    min_face: int = DEFAULT_MIN_SIZE,
    allow_no_face: bool = False,
    residual: bool = True,
    max_pixels: int | None = None,
    overwrite: bool = False,
    progress: VideoProgress | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    detector: Detector | None = None,
    smoothing: float = SIGMA,
    extend: int = EXTEND,
    per_frame_nonce: bool = False,
    reuse_noise: bool = True,
    batch: int = DEFAULT_BATCH,
    style: str = "face",
) -> VideoResult:
    """Anonymize every face of every frame of a video; write the veiled video and its sidecar header.

    The output is FFV1 in Matroska (``clip.veiled.mkv``, lossless: recovery is bit-exact)
    unless ``codec="h264"`` or an ``.mp4`` name asks for H.264 (lossy: recovery is
    approximate). Audio streams are copied as they are. An interrupted run resumes from
    its last whole chunk when called again with the same arguments. ``detector(index,
    rgb)`` replaces the face detector (default MediaPipe, :func:`faceveil.faces.detect_faces`);
    ``smoothing`` (frames), ``extend``, ``per_frame_nonce`` and ``reuse_noise`` exist to
    measure the design (``per_frame_nonce=True`` is what treating frames as independent
    photos would do). ``reuse_noise`` (default) inverts each track once, at its first
    detection, and samples every frame's face from that keyed noise with the frame's own
    context: the face is the track's, not each frame's (exactness is the residual's).
    ``batch`` frames at a time send their faces through the UNet together. ``style``
    ``pixelate``, ``blur`` or ``solid`` replaces every face visibly instead, its original sealed (no model run).
    """
    source = Path(input)
    info = probe(source)
    target = Path(output) if output is not None else video_output(source, VEILED_TAG, codec)
    codec = codec_for(target, codec)
    _check_output(target, [source], overwrite)
    _check_output(sidecar_path(target), [source], overwrite)
    treatment = treatment_of(style)
    # one file key for the whole video (its frames and tracks); a resumed run draws another for the frames it adds
    key, model = envelope_for(_recipients(key)), _model(model)
    settings = settings or Settings.for_model(model)
    if steps is not None:
        settings = replace(settings, engine=replace(settings.engine, steps=steps))
    work = WorkFolder(target)
    identity = _identity("anonymize", source, settings=settings.to_json(), model=model.weights_hash, codec=codec,
                         chunk_frames=chunk_frames, mask=mask, min_face=min_face, residual=residual,
                         smoothing=smoothing, extend=extend, per_frame_nonce=per_frame_nonce,
                         reuse_noise=reuse_noise and not per_frame_nonce and treatment == "model",
                         **({"style": style} if treatment != "model" else {}))
    plan = _resumable(work, identity, key)
    notes: list[str] = []
    if plan is None:
        if work.path.exists():
            notes.append("an unfinished run of another job (input, key or settings) was discarded")
        tracks, times = plan_tracks(source, detector or _default_detector(min_face), mask, max_pixels, progress,
                                    info.frames_hint)
        plan = _new_plan(identity, key, times=times, tracks=[t.to_json() for t in tracks])
        work.start(plan)
    tracks = [Track.from_json(t) for t in plan["tracks"]]
    times = [_time_of(t) for t in plan["times"]]
    total = len(times)
    if not tracks and not allow_no_face:
        work.remove()
        raise NoFaceError(f"no face found in any frame of {source} (use --allow-no-face to pass it through)")
    per_frame = frame_faces(tracks, total, extend, smoothing)
    reports: list[FaceReport] = []

    noises = _track_noises(work, source, tracks, per_frame, key, model, settings, max_pixels) if identity["reuse_noise"] else {}

    def track_noise(face: TrackFace, job: FaceJob, rgb: np.ndarray) -> torch.Tensor:
        return noises[face.track]

    def frame_job(frame: Frame) -> PhotoJob:
        i = frame.index
        jobs = _jobs(per_frame[i], model.image_size, per_frame_nonce, model.framing)
        if treatment != "model":
            jobs = [replace(job, treatment=treatment) for job in jobs]
        elif identity["reuse_noise"]:
            jobs = [replace(job, noise=track_noise(face, job, frame.rgb)) for face, job in zip(per_frame[i], jobs)]
        return PhotoJob(frame.rgb, jobs)

    def process(frames: list[Frame]) -> list[tuple[np.ndarray, dict]]:
        done = []
        results = anonymize_arrays([frame_job(f) for f in frames], key, model, settings, residual, batch_size=batch)
        for frame, (array, record, face_reports) in zip(frames, results):
            reports.extend(face_reports)
            done.append((array, {"record": pack_record(record).hex(), "kinds": [f.kind for f in per_frame[frame.index]]}))
        return done

    clock, first = _run_chunks(work, source, total, chunk_frames, info.rate, process, "anonymize", progress, max_pixels,
                               batch=batch)
    if first:
        notes.append(f"resumed at frame {first} of {total} (earlier frames from the unfinished run)")
    _assemble_veiled(work, source, target, key, model, plan, tracks, per_frame, info, codec, chunk_frames, overwrite, progress)
    work.remove()
    kinds = [f.kind for faces in per_frame for f in faces]
    missed = kinds.count("interpolated") + kinds.count("extended")
    if missed:
        notes.append(f"{missed} face-frame(s) the detector missed were anonymized from their track "
                     f"({kinds.count('interpolated')} interpolated, {kinds.count('extended')} at track ends)")
    if codec != LOSSLESS:
        notes.append(f"lossy H.264 output: recovery will be approximate ({H264_QUALITY}); use .mkv (FFV1) for exactness")
    if not residual:
        notes.append("no residual stored: recovery will give the model's reconstruction, not the exact original")
    notes.append(f"header written to sidecar {sidecar_path(target).name}: keep it with the video")
    track_info = [{"id": t.id, "first": min(f for f, fs in enumerate(per_frame) if any(x.track == t.id for x in fs)),
                   "last": max(f for f, fs in enumerate(per_frame) if any(x.track == t.id for x in fs)),
                   "detected": len(t.detections)} for t in tracks]
    return VideoResult(source, [target, sidecar_path(target)], reports, notes, frames=total, tracks=track_info,
                       seconds=clock.seconds, frames_run=clock.frames, resumed_at=first, frame_faces=per_frame)


def disclose_track(input: str | os.PathLike, key, track: int) -> DisclosureToken:
    """The disclosure token of track ``track`` (0-based, the header's order) of a veiled video: its face key,
    which opens that track's face in every frame the run sealed with the video's file key, and nothing else."""
    source = Path(input)
    info = probe(source)
    opener = _opener(key)
    if isinstance(opener, DisclosureToken):
        raise UsageError("a disclosure token cannot disclose: give the key or identity the video is for")
    with Sidecar(sidecar_path(source), info.height, info.width) as sidecar:
        public = sidecar.open(opener)
        record = sidecar.record
    if record.get("faceveil") != 3:
        raise UsageError("this video predates per-face keys (header format 2): one track cannot be disclosed")
    tracks = public["video"]["tracks"]
    if not 0 <= track < len(tracks):
        raise UsageError(f"{source} has {len(tracks)} track(s); --face must be between 1 and {len(tracks)}")
    nonce = bytes.fromhex(tracks[track]["nonce"])
    face_key = unlock(opener, record).key.face_key(nonce)  # type: ignore[attr-defined]
    return DisclosureToken(unb64(record["file_nonce"]), track, nonce, face_key.secret)


def _unlock_frame(opener, record: dict, closed: list[int]):
    """A frame record opened by a key or identity, or for a track's disclosure token: the track's face in
    this frame (found by its nonce) opened with the token's face key, the frame's other faces left shut."""
    if not isinstance(opener, DisclosureToken):
        return unlock(opener, record)
    public = record["public"]
    faces = public.get("faces", [])
    shut = Opened(public, {"faces": [None] * len(faces)}, opener.key)
    index = next((i for i, f in enumerate(faces) if f.get("nonce") == opener.face_nonce.hex()), None)
    if index is None:
        return shut  # the track has no face in this frame
    try:
        return unlock(DisclosureToken(unb64(record["file_nonce"]), index, opener.face_nonce, opener.secret), record)
    except HeaderError:
        closed.append(index)
        return shut


def _track_noises(work: WorkFolder, source: Path, tracks: list[Track], per_frame: list[list[TrackFace]], key: Key,
                  model: DiffusionModel, settings: Settings, max_pixels: int | None) -> dict[int, torch.Tensor]:
    """Each track's keyed noise, from the frame of its first detection (a whole face, not a flow-followed
    edge); kept in the work folder (0600) so that a resumed run samples the same faces."""
    noises: dict[int, torch.Tensor] = {}
    first: dict[int, list[int]] = {}
    for track in tracks:
        path = work.path / f"noise-{track.id:04d}.npy"
        if path.is_file():
            noises[track.id] = torch.from_numpy(np.load(path))
        else:
            first.setdefault(track.first, []).append(track.id)
    if not first:
        return noises
    for frame in iter_frames(source, max_pixels):
        for track_id in first.pop(frame.index, []):
            (face,) = [f for f in per_frame[frame.index] if f.track == track_id]
            (job,) = _jobs([face], model.image_size, False, model.framing)
            noises[track_id] = keyed_noise(frame.rgb, key, model, job, settings)
            buffer = io.BytesIO()
            np.save(buffer, noises[track_id].cpu().numpy())
            write_file(work.path / f"noise-{track_id:04d}.npy", buffer.getvalue(), overwrite=True, mode=0o600)
        if not first:
            break
    return noises


def _records(work: WorkFolder, chunks: int) -> Iterator[bytes]:
    for c in range(chunks):
        for entry in work.chunk_meta(c)["frames"]:
            yield bytes.fromhex(entry["record"])


def _assemble_veiled(work, source, target, key, model, plan, tracks, per_frame, info, codec, chunk_frames, overwrite,
                     progress) -> None:
    total = len(plan["times"])
    chunks = (total + chunk_frames - 1) // chunk_frames
    digests = [digest(r) for r in _records(work, chunks)]
    if len(digests) != total:
        raise UsageError(f"the work folder {work.path} is incomplete; remove it and run again")
    covered = {t.id: [f for f, fs in enumerate(per_frame) if any(x.track == t.id for x in fs)] for t in tracks}
    public = {
        "video": {"frames": total, "width": info.width, "height": info.height, "codec": codec, "lossless": codec == LOSSLESS,
                  "tracks": [{"id": t.id, "nonce": t.nonce.hex(), "first": covered[t.id][0], "last": covered[t.id][-1]}
                             for t in tracks if covered[t.id]]},
        "model": {"id": model.model_id, "weights_sha256": model.weights_hash, "kind": model.kind},
    }
    record = video_record(key, public, digests)
    sidecar = sidecar_path(target)
    if sidecar.exists() and not overwrite:
        raise UsageError(f"{sidecar} already exists; refusing to overwrite it")
    with atomic_output(sidecar) as handle:
        write_sidecar(handle, record, _records(work, chunks), total)
    _write_from_chunks(work, source, target, [_time_of(t) for t in plan["times"]], info, codec, chunks, overwrite, progress)


def _write_from_chunks(work, source, target, times, info, codec, chunks, overwrite, progress, mode=None) -> None:
    total = len(times)
    with VideoWriter(target, info.width, info.height, info.rate, codec, audio_from=source, overwrite=overwrite,
                     mode=mode) as writer:
        i = 0
        for c in range(chunks):
            for rgb in work.chunk_frames(c):
                writer.write(rgb, times[i])
                i += 1
                if progress:
                    progress("write", i, total)
        if i != total:
            raise UsageError(f"the work folder {work.path} lost frames ({i} of {total}); remove it and run again")


# ---- recover ----------------------------------------------------------------------------
@_removes_work_on_failure
def recover_video(
    input: str | os.PathLike,
    key: Key | str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: DiffusionModel | str | None = None,
    use_residual: bool = True,
    max_pixels: int | None = None,
    overwrite: bool = False,
    progress: VideoProgress | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    batch: int = DEFAULT_BATCH,
) -> VideoResult:
    """Restore the original faces of a veiled video (its sidecar ``NAME.veil`` beside it) with the key.

    Writes FFV1 in Matroska (``clip.recovered.mkv``): the frames faceveil decoded from the
    original, bit for bit, when the veiled video is the lossless one. A wrong key or a
    tampered header is refused before any frame is decoded.
    """
    source = Path(input)
    info = probe(source)
    target = Path(output) if output is not None else video_output(source, RECOVERED_TAG)
    if target.suffix.lower() != ".mkv":
        raise UsageError(f"recovered videos are written losslessly (FFV1 in Matroska): use an .mkv name, not {target.name}")
    _check_output(target, [source], overwrite)
    key = _opener(key)
    with Sidecar(sidecar_path(source), info.height, info.width) as sidecar:
        public = sidecar.open(key)  # wrong key or tampering stops here
        clip = public["video"]
        if (clip["width"], clip["height"]) != (info.width, info.height):
            raise UsageError(f"the video is {info.width}x{info.height} but was anonymized at {clip['width']}x{clip['height']}")
        model = _model(model if model is not None else public["model"]["id"])
        work = WorkFolder(target)
        identity = _identity("recover", source, model=model.weights_hash, chunk_frames=chunk_frames,
                             use_residual=use_residual)
        plan = _resumable(work, identity, key)
        if plan is None:
            work.start(_new_plan(identity, key))
        total = sidecar.count
        records = sidecar.frames()
        reports: list[FaceReport] = []
        closed: list[int] = []  # frames whose track face a token could not open

        def next_record() -> dict:
            record = next(records, None)
            if record is None:
                raise UsageError(f"{source} has more frames than its header describes ({total})")
            return record

        def skip(frame: Frame) -> None:
            next_record()  # read and checked, not needed: the chunk is done

        def process(frames: list[Frame]) -> list[tuple[np.ndarray, dict]]:
            photos = [VeiledPhoto(frame.rgb, o.public, o.private, None, o.key)
                      for frame, o in ((f, _unlock_frame(key, next_record(), closed)) for f in frames)]
            done = []
            for array, result in recover_arrays(photos, key, model, use_residual=use_residual, batch_size=batch):
                reports.extend(result.reports)
                done.append((array, {"changed": bool(result.pixels_changed), "residual": bool(result.used_residual),
                                     "inexact": len(result.inexact_faces)}))
            return done

        clock, first = _run_chunks(work, source, total, chunk_frames, info.rate, process, "recover", progress, max_pixels,
                                   skip, batch)
    chunks = (total + chunk_frames - 1) // chunk_frames
    entries = [e for c in range(chunks) if work.done(c) for e in work.chunk_meta(c)["frames"]]
    if len(entries) != total:
        raise UsageError(f"{source} has fewer frames than its header describes ({len(entries)} of {total})")
    frame_times = [_time_of(e["time"]) for e in entries]
    _write_from_chunks(work, source, target, frame_times, info, LOSSLESS, chunks, overwrite, progress, mode=PRIVATE)
    work.remove()
    notes = []
    if first:
        notes.append(f"resumed at frame {first} of {total} (earlier frames from the unfinished run)")
    if isinstance(key, DisclosureToken):
        notes.append(f"only track {key.face + 1} was restored (a disclosure token); the other faces stay veiled")
        if closed:
            notes.append(f"the token did not open track {key.face + 1} in {len(closed)} frame(s) (made by a resumed "
                         "anonymization run with another file key, or altered): they stay veiled")
    changed = sum(e["changed"] for e in entries)
    if changed:
        why = (f"the veiled video is lossy H.264 ({H264_QUALITY})" if not clip["lossless"]
               else "the video was re-encoded or edited after anonymization")
        notes.append(f"{changed} of {total} frames differ from what faceveil wrote: {why}; recovery is approximate, not exact")
    if not all(e["residual"] for e in entries):
        notes.append("no residual used: the faces are the model's reconstruction, not the exact original pixels")
    inexact = sum(bool(e.get("inexact")) for e in entries)
    if inexact and not changed and all(e["residual"] for e in entries):
        notes.append(f"NOT EXACT: {inexact} of {total} frames have faces that differ from the original (their sealed "
                     "SHA-256 does not match): this machine's model computes differently from the one that anonymized "
                     "the video beyond what the sealed rounding covers")
    return VideoResult(source, [target], reports, notes, frames=total, tracks=clip["tracks"], seconds=clock.seconds,
                       frames_run=clock.frames, resumed_at=first)

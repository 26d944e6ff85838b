"""Face tracks across a video's frames: association, gaps, ends and smoothing.

Every frame's detections (5 landmarks and a face outline) are linked into tracks by
box overlap with each track's predicted box (constant velocity), one detection per
track, greedily by overlap. A track that finds no detection for up to ``max_gap``
frames keeps going: the missed frames are *interpolated* between the detections on
either side, and every track is *extended* by ``extend`` frames past its first and
last detection (constant velocity), so a face the detector misses for a few frames, or
at the edges of its appearance, is still anonymized. After a longer absence a face
starts a new track (a new anonymous face): no identity model is used to re-link people.

Geometry per frame is smoothed along the track to stop the alignment jittering
(landmarks: a Gaussian over ``sigma`` frames), and the outline only grows from that: it
is kept in the aligned crop as radii at fixed angles and each frame takes the largest
radius over its neighbours, enlarged for interpolated (x1.08) and extended (x1.15)
frames. All of this is plain NumPy and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceveil.faces import alignment_transform, face_outline
from faceveil.faces.align import AlignTransform
from faceveil.faces.detect import Face

ANGLES = 72  # outline radii per face
MAX_GAP = 12  # frames a track may go undetected and still continue
EXTEND = 4  # frames anonymized before a track's first and after its last detection
SIGMA = 1.0  # landmark smoothing, in frames
MIN_OVERLAP = 0.2  # intersection over union needed to join a track
GROW = {"detected": 1.0, "interpolated": 1.08, "extended": 1.15}
_REF_SIZE = 256  # crop size the outlines are described in (independent of the model)


@dataclass(frozen=True)
class Detection:
    """One detected face in one frame: 5 landmarks (image coordinates) and outline radii (aligned crop)."""

    frame: int
    landmarks5: np.ndarray  # 5 x 2
    radii: np.ndarray  # ANGLES, in _REF_SIZE crop pixels from the crop centre
    box: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {"frame": self.frame, "landmarks5": self.landmarks5.tolist(), "radii": self.radii.tolist(),
                "box": list(self.box)}

    @classmethod
    def from_json(cls, data: dict) -> Detection:
        return cls(int(data["frame"]), np.asarray(data["landmarks5"], dtype=np.float64),
                   np.asarray(data["radii"], dtype=np.float64), tuple(float(v) for v in data["box"]))


def _theta() -> np.ndarray:
    return np.arange(ANGLES) * (2 * np.pi / ANGLES)


def outline_radii(outline: np.ndarray, size: int) -> np.ndarray:
    """A closed outline (crop coordinates of a ``size`` crop) as radii at fixed angles about the crop centre.

    Each ray from the centre takes the farthest crossing with the polygon, so the radii
    describe a star-shaped region containing the outline.
    """
    scale = _REF_SIZE / size
    centre = (size - 1) / 2.0
    poly = (np.asarray(outline, dtype=np.float64) - centre) * scale
    nxt = np.roll(poly, -1, axis=0)
    radii = np.zeros(ANGLES)
    for i, th in enumerate(_theta()):
        d = np.array([np.cos(th), np.sin(th)])
        for a, b in zip(poly, nxt):
            e = b - a
            den = d[0] * (-e[1]) - d[1] * (-e[0])
            if abs(den) < 1e-12:
                continue
            # solve r d = a + s e
            r = (a[0] * (-e[1]) - a[1] * (-e[0])) / den
            s = (d[0] * a[1] - d[1] * a[0]) / den
            if r > 0 and -1e-9 <= s <= 1 + 1e-9:
                radii[i] = max(radii[i], r)
    if not radii.any():
        radii[:] = np.max(np.hypot(poly[:, 0], poly[:, 1]))
    return radii


def radii_outline(radii: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`outline_radii`: the outline's points in a ``size`` crop."""
    th = _theta()
    centre = (size - 1) / 2.0
    r = np.asarray(radii, dtype=np.float64) * size / _REF_SIZE
    return np.stack([centre + r * np.cos(th), centre + r * np.sin(th)], axis=1)


def detection_of(face: Face, frame: int, mask: str = "face") -> Detection:
    transform = alignment_transform(face, _REF_SIZE)
    radii = outline_radii(face_outline(face, transform, include=mask), _REF_SIZE)
    return Detection(frame, np.asarray(face.landmarks5, dtype=np.float64).copy(), radii, tuple(face.box))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One person's face through the clip: its detections and its public nonce."""

    id: int
    nonce: bytes
    detections: list[Detection] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.detections[0].frame

    @property
    def last(self) -> int:
        return self.detections[-1].frame

    def predicted_box(self, frame: int) -> tuple[float, float, float, float]:
        last = np.asarray(self.detections[-1].box)
        if len(self.detections) < 2:
            return tuple(last)
        prev = self.detections[-2]
        velocity = (last - np.asarray(prev.box)) / max(1, self.detections[-1].frame - prev.frame)
        return tuple(last + velocity * (frame - self.detections[-1].frame))

    def to_json(self) -> dict:
        return {"id": self.id, "nonce": self.nonce.hex(), "detections": [d.to_json() for d in self.detections]}

    @classmethod
    def from_json(cls, data: dict) -> Track:
        return cls(int(data["id"]), bytes.fromhex(data["nonce"]), [Detection.from_json(d) for d in data["detections"]])


class Tracker:
    """Link detections frame by frame (call :meth:`add` for frames 0, 1, 2, ... in order)."""

    def __init__(self, new_nonce, max_gap: int = MAX_GAP, min_overlap: float = MIN_OVERLAP) -> None:
        self.new_nonce, self.max_gap, self.min_overlap = new_nonce, max_gap, min_overlap
        self.tracks: list[Track] = []

    def add(self, frame: int, detections: list[Detection]) -> None:
        live = [t for t in self.tracks if frame - t.last <= self.max_gap + 1]
        pairs = sorted(
            ((_iou(t.predicted_box(frame), d.box), ti, di) for ti, t in enumerate(live) for di, d in enumerate(detections)),
            reverse=True,
        )
        used_t, used_d = set(), set()
        for overlap, ti, di in pairs:
            if overlap < self.min_overlap or ti in used_t or di in used_d:
                continue
            live[ti].detections.append(detections[di])
            used_t.add(ti)
            used_d.add(di)
        for di, d in enumerate(detections):
            if di not in used_d:
                self.tracks.append(Track(len(self.tracks), self.new_nonce(), [d]))


@dataclass(frozen=True)
class TrackFace:
    """Where a track's face is in one frame, and how that was known."""

    track: int
    nonce: bytes
    landmarks5: np.ndarray
    radii: np.ndarray
    kind: str  # detected | interpolated | extended

    def job_geometry(self, size: int) -> tuple[AlignTransform, np.ndarray]:
        """The alignment transform and crop outline for a model of crop ``size``."""
        transform = alignment_transform(self.landmarks5, size)
        return transform, radii_outline(self.radii, size)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0, renormalised at the ends (no lag for linear motion in the middle)."""
    if sigma <= 0 or len(values) < 3:
        return values
    reach = int(np.ceil(3 * sigma))
    offsets = np.arange(-reach, reach + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    out = np.empty_like(values)
    n = len(values)
    for i in range(n):
        idx = i + offsets
        ok = (idx >= 0) & (idx < n)
        w = weights[ok] / weights[ok].sum()
        out[i] = np.tensordot(w, values[idx[ok]], axes=1)
    return out


def track_faces(track: Track, frames: int, extend: int = EXTEND, sigma: float = SIGMA) -> dict[int, TrackFace]:
    """The track's face in every frame it covers: detected, interpolated across gaps, extended at the ends."""
    dets = track.detections
    known = np.array([d.frame for d in dets])
    start, stop = max(0, track.first - extend), min(frames - 1, track.last + extend)
    span = np.arange(start, stop + 1)
    lm = np.array([d.landmarks5.reshape(-1) for d in dets])
    radii = np.array([d.radii for d in dets])

    def at(values: np.ndarray, f: int) -> np.ndarray:
        if len(known) == 1:
            return values[0]
        if f < known[0]:  # constant velocity backwards from the first two detections
            v = (values[1] - values[0]) / (known[1] - known[0])
            return values[0] + v * (f - known[0])
        if f > known[-1]:
            v = (values[-1] - values[-2]) / (known[-1] - known[-2])
            return values[-1] + v * (f - known[-1])
        j = int(np.searchsorted(known, f))
        if known[j] == f:
            return values[j]
        a, b = known[j - 1], known[j]
        t = (f - a) / (b - a)
        return (1 - t) * values[j - 1] + t * values[j]

    lm_span = _smooth(np.array([at(lm, f) for f in span]), sigma)
    r_span = np.array([at(radii, f) for f in span])
    kinds = ["detected" if f in set(known.tolist()) else ("interpolated" if known[0] < f < known[-1] else "extended")
             for f in span]
    out: dict[int, TrackFace] = {}
    for i, f in enumerate(span):
        window = r_span[max(0, i - 2): i + 3]
        r = window.max(axis=0) * GROW[kinds[i]]
        out[int(f)] = TrackFace(track.id, track.nonce, lm_span[i].reshape(5, 2), r, kinds[i])
    return out


def frame_faces(tracks: list[Track], frames: int, extend: int = EXTEND, sigma: float = SIGMA) -> list[list[TrackFace]]:
    """Per frame, the faces of every track covering it, in track order."""
    out: list[list[TrackFace]] = [[] for _ in range(frames)]
    for track in tracks:
        for f, face in sorted(track_faces(track, frames, extend, sigma).items()):
            out[f].append(face)
    return out


__all__ = [
    "Detection",
    "Track",
    "TrackFace",
    "Tracker",
    "detection_of",
    "frame_faces",
    "outline_radii",
    "radii_outline",
    "track_faces",
]

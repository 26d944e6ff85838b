"""Face tracks across a video's frames: association, gaps, ends and smoothing.

Every frame's detections (5 landmarks and a face outline) are linked into tracks by
box overlap with each track's predicted box (constant velocity), one detection per
track, greedily by overlap. A track that finds no detection for up to ``max_gap``
frames keeps going: the missed frames are *interpolated* between the detections on
either side, and every track is *extended* by ``extend`` frames past its first and
last detection, following the face by optical flow (pyramidal Lucas-Kanade on its
landmarks and outline, a similarity fitted to the points that track; constant velocity
where flow fails), so a face the detector misses for a few frames, or while it enters
or leaves the picture, is still anonymized. After a longer absence a face
starts a new track (a new anonymous face): no identity model is used to re-link people.

Geometry per frame is smoothed along the track to stop the alignment jittering
(landmarks: a Gaussian over ``sigma`` frames, between the first and last detection), and the outline only grows from that: it
is kept in the aligned crop as radii at fixed angles and each frame takes the largest
radius over its neighbours, enlarged for interpolated (x1.08) and extended (x1.15)
frames. All of this is plain NumPy and deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from faceveil.faces import alignment_transform, face_outline
from faceveil.faces.align import AlignTransform, transform_points
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
    flow: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> landmarks5 followed by optical flow

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
        return {"id": self.id, "nonce": self.nonce.hex(), "detections": [d.to_json() for d in self.detections],
                "flow": {str(f): lm.tolist() for f, lm in self.flow.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Track:
        flow = {int(f): np.asarray(lm, dtype=np.float64) for f, lm in data.get("flow", {}).items()}
        return cls(int(data["id"]), bytes.fromhex(data["nonce"]), [Detection.from_json(d) for d in data["detections"]], flow)

    def position(self, frame: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(landmarks5, radii) where the track is known at ``frame`` (detected or followed), else None."""
        for detection in reversed(self.detections[-2:]):
            if detection.frame == frame:
                return detection.landmarks5, detection.radii
        if frame in self.flow:
            return self.flow[frame], self.detections[-1].radii
        return None


FLOW_RING = 0.6  # flow follows points on the outline shrunk to this: inside the face, clear of the background


def _points(landmarks5: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The 5 landmarks and a ring inside the face's outline, in image coordinates (what optical flow follows)."""
    transform = alignment_transform(landmarks5, _REF_SIZE)
    outline = transform_points(radii_outline(radii * FLOW_RING, _REF_SIZE), transform.inverse())
    return np.concatenate([landmarks5, outline]).astype(np.float32)


def follow(points: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """The displacement (dx, dy) of a face's points from gray frame ``src`` to ``dst``, or None.

    Pyramidal Lucas-Kanade on every point inside both pictures, checked forwards and
    backwards (a point must come back within 1 px); the median displacement of the points
    that pass, if at least 6 pass and they agree (median deviation under 2 px + 10 %).
    Between neighbouring frames a face moves far more than it turns or grows, so one
    translation is both robust and enough.
    """
    h, w = dst.shape[:2]
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    if inside.sum() < 6:
        return None
    start = np.ascontiguousarray(points[inside], dtype=np.float32).reshape(-1, 1, 2)
    lk = {"winSize": (21, 21), "maxLevel": 3}
    moved, status, _ = cv2.calcOpticalFlowPyrLK(src, dst, start, None, **lk)
    if moved is None:
        return None
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(dst, src, moved, None, **lk)
    start, moved, back = start.reshape(-1, 2), moved.reshape(-1, 2), back.reshape(-1, 2)
    ok = (status.reshape(-1) == 1) & (status_back.reshape(-1) == 1) & (np.hypot(*(back - start).T) < 1.0)
    ok &= (moved[:, 0] >= 0) & (moved[:, 0] < w) & (moved[:, 1] >= 0) & (moved[:, 1] < h)
    if ok.sum() < 6:
        return None
    shifts = (moved - start)[ok].astype(np.float64)
    shift = np.median(shifts, axis=0)
    spread = np.median(np.hypot(*(shifts - shift).T))
    if spread > 2.0 + 0.1 * float(np.hypot(*shift)):
        return None
    return shift


class Tracker:
    """Link detections frame by frame (call :meth:`add` for frames 0, 1, 2, ... in order)."""

    def __init__(self, new_nonce, max_gap: int = MAX_GAP, min_overlap: float = MIN_OVERLAP, extend: int = EXTEND) -> None:
        self.new_nonce, self.max_gap, self.min_overlap, self.extend = new_nonce, max_gap, min_overlap, extend
        self.tracks: list[Track] = []
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=extend + 1)  # gray frames for optical flow

    def add(self, frame: int, detections: list[Detection], rgb: np.ndarray | None = None) -> None:
        """Link ``frame``'s detections; with its pixels, follow new and missed faces by optical flow."""
        before = len(self.tracks)
        matched = self._associate(frame, detections)
        if rgb is None:
            return
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        previous = self._recent[-1] if self._recent and self._recent[-1][0] == frame - 1 else None
        for track in self.tracks:
            if track.id in matched or previous is None or not 0 < frame - track.last <= self.extend:
                continue
            known = track.position(frame - 1)
            if known is not None:  # a face not found here: follow it forwards from the last frame
                shift = follow(_points(*known), previous[1], gray)
                earlier = track.position(frame - 2)
                if shift is None and earlier is not None:  # flow lost (the face leaving the picture): keep its velocity
                    shift = known[0][2] - earlier[0][2]
                if shift is not None:
                    track.flow[frame] = known[0] + shift
        for track in self.tracks[before:]:  # a face found for the first time: follow it backwards
            first = track.detections[0]
            landmarks, later, velocity = first.landmarks5, gray, None
            for index, earlier in reversed(self._recent):
                if index < frame - self.extend:
                    break
                shift = follow(_points(landmarks, first.radii), later, earlier)
                shift = velocity if shift is None else shift  # flow lost (the face leaving the picture): keep going
                if shift is None:
                    break
                landmarks = landmarks + shift
                track.flow[index] = landmarks
                later, velocity = earlier, shift
        self._recent.append((frame, gray))

    def _associate(self, frame: int, detections: list[Detection]) -> set[int]:
        """Greedy one-to-one matching by overlap with each live track's predicted box; new tracks for the rest."""
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
        return {live[ti].id for ti in used_t} | {t.id for t in self.tracks if t.last == frame}


@dataclass(frozen=True)
class TrackFace:
    """Where a track's face is in one frame, and how that was known."""

    track: int
    nonce: bytes
    landmarks5: np.ndarray
    radii: np.ndarray
    kind: str  # detected | interpolated | extended

    def job_geometry(self, size: int, framing: str = "ffhq") -> tuple[AlignTransform, np.ndarray]:
        """The alignment transform and crop outline for a model of crop ``size`` and ``framing``
        (the track's radii live in the FFHQ crop; another framing gets the same outline moved)."""
        ffhq = alignment_transform(self.landmarks5, size)
        outline = radii_outline(self.radii, size)
        if framing == "ffhq":
            return ffhq, outline
        transform = alignment_transform(self.landmarks5, size, framing)
        image_points = transform_points(outline, ffhq.inverse())
        return transform, transform_points(image_points, transform)


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
        if values is lm and (f < known[0] or f > known[-1]) and f in track.flow:
            return track.flow[f].reshape(-1)
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

    lm_span = np.array([at(lm, f) for f in span])
    inner = (span >= known[0]) & (span <= known[-1])  # smoothed where detected; the ends keep their flow positions
    lm_span[inner] = _smooth(lm_span[inner], sigma)
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

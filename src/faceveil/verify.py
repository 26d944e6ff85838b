"""The check of every output (``--verify``): faces left visible, identities left recognisable.

After a photo is anonymized, :func:`verify_output` looks at the written pixels:

- an *independent* detector (YuNet where its onnx file is found, else dlib's HOG; not the
  detectors that chose the faces) runs on the output; a face it finds outside every
  replaced face's box is reported (``kind="unveiled"``), and so is one inside only a model
  crop's square (a loose bound, reaching past the mask) whose pixels were left as they were;
- each replaced face is embedded before and after (ArcFace onnx where found, else dlib's
  ResNet) at the same landmarks; a cosine similarity at or above the embedder's LFW
  threshold at FAR 1e-3 is reported (``kind="identity"``).

Where no independent detector or no embedder can run, the check says it was limited
(``Verification.limits``) instead of passing silently. Findings are turned into notes
(stderr and the manifest), audit-log records (JSON lines) and the exit code
:data:`EXIT_VERIFY`. Before writing, the pipeline already draws again a face that
:func:`identity_matcher` still matches (``redraws``); one that matches after them all is reported here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.errors import UsageError

__all__ = ["EXIT_VERIFY", "Finding", "Verification", "Verifier", "verify_output", "draw_boxes", "FAR_1E3_THRESHOLDS"]

EXIT_VERIFY = 5  # written, but verification found faces (a stable exit code, docs/detection.md)

# Cosine thresholds at FAR 1e-3 on LFW View 2 (6,000 pairs, faces aligned from 5 points),
# measured on this project's machines (../shared/README.md; `faceveil evaluate` recalibrates).
FAR_1E3_THRESHOLDS = {"arcface-onnx": 0.325, "dlib": 0.921}

_REGION_GROW = 0.15  # a replaced face's box, grown by this share of its side each way
# The score an independent detector's face must reach to be reported. dlib's HOG at its own
# default (score 0.5 = margin 0) calls patterned cloth a face: on scikit-image's astronaut,
# two boxes on her suit at 0.50 and 0.53, next to her face at 0.82 and a face cut in half by
# the border at 0.59; the check asks for a margin of 0.2 (score 0.55), where those two go.
_CHECK_THRESHOLDS = {"dlib-hog": 0.55}
# A face found inside a model crop's square (``extra_regions``) counts as veiled only where its
# pixels changed: it is reported when this share of its box or more lies within
# _UNCHANGED_LEVELS of the original in every channel. The square reaches well past the mask, so
# a neighbour's face half inside it was otherwise called veiled or not by a pixel of its box
# (LFW's Tony_Blair_0001: the profile's box x1 at 34 or 35 with the key, for a square from 18).
_UNCHANGED_LEVELS = 8
_UNCHANGED_SHARE = 0.75


@dataclass
class Finding:
    """One thing the check found: a visible face or a replaced face still recognisable."""

    kind: str  # "unveiled" or "identity"
    box: list[float]
    score: float | None = None
    detector: str | None = None
    face: int | None = None  # index of the replaced face (identity findings)
    similarity: float | None = None
    embedder: str | None = None

    def message(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.box)
        if self.kind == "unveiled":
            return f"verification: a face left visible at ({box}), found by {self.detector} (score {self.score:.2f})"
        return (f"verification: replaced face {self.face} at ({box}) still matches the original "
                f"({self.embedder} similarity {self.similarity:.3f}, threshold at FAR 1e-3)")


@dataclass
class Verification:
    """The outcome of checking one output."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what ran: "faces: yunet", "identity: dlib"
    limits: list[str] = field(default_factory=list)  # what could not run

    @property
    def ok(self) -> bool:
        return not self.findings

    def notes(self) -> list[str]:
        out = [f.message() for f in self.findings]
        out += [f"verification limited: {text}" for text in self.limits]
        return out


# ------------------------------------------------------------------------ components
def _independent_detector(exclude: list[str]) -> str | None:
    from faceveil.faces import ensemble

    for name in ("yunet", "dlib-hog"):
        if name not in exclude and ensemble.available(name):
            return name
    return None


_EMBEDDERS: dict[str, Any] = {}


def _embedder() -> tuple[str, Any] | None:
    """ArcFace onnx if its file is found, else dlib's ResNet if installed, else None."""
    from faceveil.errors import ModelUnavailableError

    for name in ("arcface-onnx", "dlib"):
        if name in _EMBEDDERS:
            if _EMBEDDERS[name] is not None:
                return name, _EMBEDDERS[name]
            continue
        try:
            from faceveil.evaluate.embedders import get_embedder

            _EMBEDDERS[name] = get_embedder(name)
            return name, _EMBEDDERS[name]
        except (ModelUnavailableError, ImportError, KeyError, ValueError, OSError):
            _EMBEDDERS[name] = None
    return None


def identity_matcher() -> Callable[[np.ndarray, np.ndarray, np.ndarray], float | None] | None:
    """The check behind the pipeline's redraws: ``(original, output, landmarks5)`` to the cosine
    similarity where the face at ``landmarks5`` in ``output`` is still matched to ``original``'s at
    FAR 1e-3 (ArcFace onnx where found, else dlib's ResNet), else None; None where no embedder runs here."""
    emb = _embedder()
    if emb is None:
        return None
    name, model = emb
    threshold = FAR_1E3_THRESHOLDS[name]

    def match(original: np.ndarray, output: np.ndarray, landmarks5: np.ndarray) -> float | None:
        try:
            similarity = _similarity(model, original, output, landmarks5)
        except Exception:  # noqa: BLE001  (a face the embedder refuses is left to the check after writing)
            return None
        return similarity if similarity >= threshold else None

    return match


def _similarity(model: Any, original: np.ndarray, output: np.ndarray, landmarks5: np.ndarray) -> float:
    """Cosine similarity of the face at ``landmarks5`` in ``original`` and in ``output`` (the embedder may raise)."""
    a = model.embed(np.ascontiguousarray(original), landmarks5)
    b = model.embed(np.ascontiguousarray(output), landmarks5)
    return float(np.dot(a, b))


def _grow(box: np.ndarray | list[float], f: float) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    s = max(x1 - x0, y1 - y0) * f
    return [x0 - s, y0 - s, x1 + s, y1 + s]


def _covered(box: list[float], regions: list[list[float]]) -> bool:
    """Whether half of ``box`` or more lies inside one region (or its centre does)."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    area = max(1e-9, (box[2] - box[0]) * (box[3] - box[1]))
    for r in regions:
        ix = max(0.0, min(box[2], r[2]) - max(box[0], r[0]))
        iy = max(0.0, min(box[3], r[3]) - max(box[1], r[1]))
        if ix * iy / area >= 0.5 or (r[0] <= cx <= r[2] and r[1] <= cy <= r[3]):
            return True
    return False


def _unchanged(original: np.ndarray, output: np.ndarray, box: list[float]) -> bool:
    """Whether :data:`_UNCHANGED_SHARE` of ``box`` (clipped to the image) or more kept its pixels
    within :data:`_UNCHANGED_LEVELS` of the original."""
    h, w = original.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return False
    diff = np.abs(original[y0:y1, x0:x1].astype(np.int16) - output[y0:y1, x0:x1].astype(np.int16)).max(axis=2)
    return float((diff <= _UNCHANGED_LEVELS).mean()) >= _UNCHANGED_SHARE


def _footprint(transform: Any) -> list[float] | None:
    """The image box of a model crop (``AlignTransform`` maps image to crop)."""
    try:
        size = int(transform.size)
        m = np.vstack([np.asarray(transform.matrix, dtype=np.float64)[:2], [0, 0, 1]])
        inv = np.linalg.inv(m)
    except (AttributeError, ValueError, np.linalg.LinAlgError):
        return None
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inv.T
    return [float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()), float(corners[:, 1].max())]


# ----------------------------------------------------------------------------- check
def verify_output(original: np.ndarray, output: np.ndarray, faces: list | None = None,
                  extra_regions: list[list[float]] | None = None, identity: bool = True) -> Verification:
    """Check an anonymized RGB image against its original.

    ``faces`` are the replaced faces (``faces.detect.Face``; detected on ``original`` with
    the default detector when ``None``); ``extra_regions`` more replaced boxes (image
    coordinates: model crop squares, which count only where the face's pixels changed). Shapes
    must match.
    """
    from faceveil.faces import detect_faces, ensemble

    original, output = np.asarray(original), np.asarray(output)
    if original.shape != output.shape or original.ndim != 3:
        raise UsageError(f"verification needs two RGB images of one size, got {original.shape} and {output.shape}")
    result = Verification()
    if faces is None:
        faces = detect_faces(original, with_mesh=False)
    regions = [_grow(f.box, _REGION_GROW) for f in faces]
    squares = list(extra_regions or [])

    used, _ = ensemble.members(ensemble.env_detector())
    name = _independent_detector(used)
    if name is None:
        result.limits.append("no independent detector here (YuNet onnx or dlib); checked with the default detector")
        found, _ = ensemble.candidates(np.ascontiguousarray(output))
        name = "default"
    else:
        threshold = _CHECK_THRESHOLDS.get(name, ensemble.THRESHOLDS[name])
        found = ensemble.member_candidates(np.ascontiguousarray(output), name, threshold, True)
    result.checked.append(f"faces: {name}")
    for c in ensemble.merge(found, [name]):
        box = [float(v) for v in c.box]
        if not _covered(box, regions) and (not _covered(box, squares) or _unchanged(original, output, box)):
            result.findings.append(Finding("unveiled", box, float(c.score), c.detector))

    if identity and faces:
        emb = _embedder()
        if emb is None:
            result.limits.append("no face embedder here (ArcFace onnx or dlib): identities not checked")
        else:
            ename, model = emb
            thr = FAR_1E3_THRESHOLDS[ename]
            result.checked.append(f"identity: {ename} (FAR 1e-3, threshold {thr})")
            for i, f in enumerate(faces):
                try:
                    sim = _similarity(model, original, output, f.landmarks5)
                except Exception as exc:  # noqa: BLE001  (an embedder refusing one face must not stop the check)
                    result.limits.append(f"face {i} not embedded ({exc})")
                    continue
                if sim >= thr:
                    result.findings.append(Finding("identity", [float(v) for v in f.box], float(f.score),
                                                   getattr(f, "detector", None), i, sim, ename))
    return result


# ----------------------------------------------------------------------- CLI support
class Verifier:
    """Checks each written output, adds its notes, writes the audit log and the preview.

    Used by the CLI around ``api.anonymize_files``: ``wrap(pairs, report)`` returns a
    ``report`` that verifies a result before passing it on; :attr:`exit_code` is
    :data:`EXIT_VERIFY` once a check found something.
    """

    def __init__(self, verify: bool = True, audit_log: str | os.PathLike | None = None,
                 draw: str | os.PathLike | None = None, several: bool = False, renamed: bool = False) -> None:
        self.verify = verify
        self.renamed = renamed  # --rename hash: a preview is named after the output, not the input
        self.audit_log = Path(audit_log) if audit_log else None
        self.draw = Path(draw) if draw else None
        self.several = several
        self.exit_code = 0

    def wrap(self, pairs: list[tuple[Path, Path]], report: Any) -> Any:
        def checked(index: int, outcome: Any) -> None:
            from faceveil.errors import FaceveilError

            if not isinstance(outcome, FaceveilError):
                try:
                    self.check(pairs[index][0], outcome)
                except FaceveilError as exc:
                    outcome.notes.append(f"verification failed to run: {exc}")
            report(index, outcome)

        return checked

    def check(self, source: Path, result: Any) -> Verification | None:
        """Verify one ``api.Result`` (notes added in place); audit log and preview."""
        from faceveil.faces import detect_faces
        from faceveil.imageio import read_image

        if not (self.verify or self.audit_log or self.draw):
            return None
        out_path = Path(result.outputs[0])
        if out_path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"):
            return None  # videos: not checked here
        original = read_image(source, max_pixels=None).rgb
        output = read_image(out_path, max_pixels=None).rgb
        faces = detect_faces(original, with_mesh=False) if original.shape == output.shape else []
        extra = [b for b in (_footprint(getattr(r, "transform", None)) for r in result.faces) if b]
        verification = None
        if self.verify and original.shape == output.shape:
            verification = verify_output(original, output, faces, extra)
            result.notes.extend(verification.notes())
            if verification.findings:
                self.exit_code = EXIT_VERIFY
        elif not self.verify:
            result.notes.append("not verified (--no-verify)")
        if self.audit_log:
            self._audit(source, result, faces, verification)
        if self.draw:
            stem = Path(result.outputs[0]).name.split(".veiled")[0] if self.renamed else source.stem
            target = self.draw / f"{stem}.boxes.png" if self.several or self.draw.is_dir() else self.draw
            draw_boxes(output, faces, verification, target, [getattr(r, "treatment", "model") for r in result.faces])
        return verification

    def _audit(self, source: Path, result: Any, faces: list, verification: Verification | None) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = "off" if verification is None else "ok"
        lines = []
        for i, f in enumerate(faces):
            ident = [x for x in (verification.findings if verification else []) if x.kind == "identity" and x.face == i]
            treatment = getattr(result.faces[i], "treatment", "model") if i < len(result.faces) else "model"
            lines.append({"time": now, "file": str(source), "output": str(result.outputs[0]), "face": i,
                          "box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4),
                          "detector": getattr(f, "detector", None), "treatment": treatment,
                          "verification": "identity-match" if ident else status,
                          **({"similarity": round(ident[0].similarity, 4)} if ident else {})})
        for x in (verification.findings if verification else []):
            if x.kind == "unveiled":
                lines.append({"time": now, "file": str(source), "output": str(result.outputs[0]), "face": None,
                              "box": [round(v, 1) for v in x.box], "score": round(float(x.score or 0), 4),
                              "detector": x.detector, "treatment": "none", "verification": "unveiled"})
        if verification is not None:
            lines.append({"time": now, "file": str(source), "output": str(result.outputs[0]), "summary": True,
                          "faces": len(faces), "findings": len(verification.findings),
                          "checked": verification.checked, "limits": verification.limits})
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.audit_log, "a", encoding="utf-8") as fh:  # append-only log: one record per line
            for line in lines:
                fh.write(json.dumps(line) + "\n")


def draw_boxes(image: np.ndarray, faces: list, verification: Verification | None, path: str | os.PathLike,
               treatments: list[str] | None = None) -> Path:
    """A preview of ``image`` (the veiled output) with the replaced faces' boxes, scores and
    treatments in green and the check's findings in red; written atomically as PNG."""
    import cv2

    from faceveil.atomic import write_file

    canvas = np.ascontiguousarray(np.asarray(image)[:, :, ::-1]).copy()
    thick = max(1, round(max(canvas.shape[:2]) / 400))
    scale = max(0.35, max(canvas.shape[:2]) / 1600)

    def put(box: list[float], colour: tuple[int, int, int], text: str) -> None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thick)
        cv2.putText(canvas, text, (max(0, x0), max(12, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)

    for i, f in enumerate(faces):
        t = (treatments or [])[i] if treatments and i < len(treatments) else "model"
        put(list(f.box), (0, 200, 0), f"{i} {f.score:.2f} {t}")
    for x in (verification.findings if verification else []):
        label = "VISIBLE" if x.kind == "unveiled" else f"MATCH {x.similarity:.2f}"
        put(x.box, (0, 0, 255), f"{label} {x.score or 0:.2f}")
    ok, data = cv2.imencode(".png", canvas)
    if not ok:
        raise UsageError(f"could not encode the preview {path}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file(target, data.tobytes(), overwrite=True)
    return target


def to_dict(v: Verification) -> dict:
    """A verification as JSON-ready data."""
    return asdict(v)

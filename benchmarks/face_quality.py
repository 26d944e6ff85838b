"""Does the new face look like a face, of somebody else, in the photo's pose? Measured
on held-out photos (LFW people named in pairs.txt, never trained on) for one or more models.

    python benchmarks/face_quality.py --models faceveil-faces-64-draft path/to/model --faces 40 \
        --out benchmarks/results/face-quality

Per face, for each model (default anonymize settings, one fresh key per face):
- **detail**: band-pass energy (difference of Gaussians, sigma 1 and 3) inside the replaced
  region, with the face scaled to 256 px, relative to the original face's. A real face
  scores near 1, a Gaussian blur of the face near 0.01.
- **detected**: whether YuNet (``../shared/models``) and dlib's HOG detector find a face
  overlapping the original box (IoU >= 0.3) in the anonymized photo.
- **pose**: yaw and pitch from the 5 YuNet landmarks (``cv2.solvePnP`` on a generic head),
  the new face's against the original's, in degrees.
- **identity**: ArcFace (onnx in ``../shared/models``) cosine similarity between the original
  and the anonymized face; a match is a similarity above the FAR 1e-3 threshold 0.325 that
  ``../shared/README.md`` measured on LFW View 2 for this embedder. The same with dlib's ResNet
  embedder (face-recognition-models) at its FAR 1e-3 threshold 0.921 (same calibration).

- **realism**: the Fréchet distance between the ArcFace embeddings of each method's new faces
  and those of as many real held-out faces of other people (LFW first photos not used above);
  the originals' own distance to that set is the floor at this number of faces (the figure is
  biased upwards for small sets: compare figures of the same size only).

With ``--noise-gain G1 G2 ...`` every model is measured at each engine noise gain (``EngineSettings.noise_gain``);
without it, at the gain each model recommends (its ``faceveil_train.json``). ``--steps N1 N2 ...``
does the same for the DDIM step count (``EngineSettings.steps``; default the engine's).
The photos are spread over the held-out list according to ``--faces``; ``--photos-for N`` picks
them as a run of N faces does, so that ``--faces 8 --photos-for 200 --seed 5`` shows the first 8
faces of a 200-face run with seed 5, with the same keys.

With ``--keys K`` (K >= 2), the first ``--diversity-faces`` faces are also anonymized with K fresh
keys per model: **diversity** is the share of the K(K-1)/2 pairs of new faces that ArcFace calls
different people (similarity at most the FAR 1e-3 threshold), in all and per face.

The pipeline's redraws run as in ``faceveil anonymize`` (``--redraws``, default the pipeline's; ``--redraws 0``:
every face drawn once, as before they existed): a face still matched to the original by the identity check, or
below its model's detail floor (``--detail-floor`` overrides every model's, an experiment), is drawn again.
The figures are then those of the faces kept, and the report counts the photos with a face drawn again.

With ``--seed S`` the keys, the file keys and the faces' public nonces (the redraws' too) are derived from S, the
photo and the key's number instead of drawn fresh: every model and gain then meets the same sign patterns, so a
comparison between them is paired (fresh keys move the diversity figure by about ten points
between runs). Never use such keys for real files.

``--contrast-max C`` sets the colour fit's largest skin contrast gain for the run
(``faceveil.faces.colour.CONTRAST_RANGE``), to measure that limit.

Blur (Gaussian, sigma a tenth of the face) and pixelation (8 blocks across) are measured the
same way as references. With ``--out``: ``figures.json``, ``report.md`` and a picture grid (grid.png)
(original, then each model) at 256 px per face.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceveil import pipeline
from faceveil.api import find_faces
from faceveil.engine import EngineSettings
from faceveil.envelope import Envelope, FileKey
from faceveil.evaluate.metrics import frechet_distance
from faceveil.faces import colour, sharpness
from faceveil.keys import NONCE_BYTES, SECRET_BYTES, Key
from faceveil.models import load_model
from faceveil.pipeline import Settings, anonymize_array, face_geometry

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCFACE_FAR_1E3 = 0.325  # ../shared/README.md, LFW View 2, faces aligned from YuNet's 5 points
DLIB_FAR_1E3 = 0.921  # the same calibration for dlib's embedder
# A generic head (mm, x right, y down, z away from the camera as in OpenCV's camera frame):
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corners.
HEAD = np.array([[-32.0, -35.0, 25.0], [32.0, -35.0, 25.0], [0.0, 0.0, 0.0], [-24.0, 32.0, 20.0], [24.0, 32.0, 20.0]])


def held_out_photos(count: int) -> list[Path]:
    from faceveil.train.data import parse_lfw_pairs

    names = sorted(parse_lfw_pairs(SHARED / "data" / "lfw" / "pairs.txt"))
    photos = []
    for name in names[:: max(1, len(names) // (3 * count))]:
        first = SHARED / "data" / "lfw" / "images" / name / f"{name}_0001.jpg"
        if first.is_file():
            photos.append(first)
    return photos


def other_real_photos(count: int, used: set[str]) -> list[Path]:
    """First photos of ``count`` held-out LFW people not in ``used`` (file names), spread over the list."""
    from faceveil.train.data import parse_lfw_pairs

    names = [n for n in sorted(parse_lfw_pairs(SHARED / "data" / "lfw" / "pairs.txt")) if f"{n}_0001.jpg" not in used]
    paths = [SHARED / "data" / "lfw" / "images" / n / f"{n}_0001.jpg" for n in names[:: max(1, len(names) // (2 * count))]]
    return [p for p in paths if p.is_file()]


def detail_ratio(original: np.ndarray, new: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Band-pass detail of ``new`` over ``original`` in ``box`` (``faceveil.faces.sharpness``, as the redraws read it)."""
    y0, y1, x0, x1 = box
    return sharpness.detail_ratio(original[y0:y1, x0:x1], new[y0:y1, x0:x1], alpha[y0:y1, x0:x1])


def pose(landmarks5: np.ndarray, shape: tuple[int, ...]) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a generic head fitted to 5 landmarks."""
    h, w = shape[:2]
    f = float(max(h, w))
    camera = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(HEAD, landmarks5.astype(np.float64), camera, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return float("nan"), float("nan")
    r, _ = cv2.Rodrigues(rvec)
    angles, *_ = cv2.RQDecomp3x3(r)
    return float(angles[1]), float(angles[0])


class Judges:
    """The independent detectors and the embedder (from ../shared and dlib)."""

    def __init__(self) -> None:
        from faceveil.evaluate.embedders import (
            ArcFaceOnnxEmbedder,
            DlibEmbedder,
            YuNetDetector,
        )

        self.yunet = YuNetDetector(SHARED / "models" / "face_detection_yunet_2026may.onnx")
        self.arcface = ArcFaceOnnxEmbedder(SHARED / "models" / "arcface_mobilefacenet_fr_feature.onnx")
        self.dlib = DlibEmbedder()
        import dlib

        self.hog = dlib.get_frontal_face_detector()

    def find(self, rgb: np.ndarray, box: np.ndarray):
        """(YuNet detection overlapping ``box`` or None, whether dlib finds one)."""
        best = None
        for d in self.yunet.detect(rgb):
            x, y, w, h = np.asarray(d.box, float)
            if best is None and iou(np.array([x, y, x + w, y + h]), box) >= 0.3:
                best = d
        up = 2 if max(rgb.shape[:2]) < 400 else 1
        dlib_hit = any(
            iou(np.array([r.left(), r.top(), r.right(), r.bottom()], float) / 1.0, box) >= 0.3
            for r in self.hog(rgb, up)
        )
        return best, dlib_hit


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def blur(rgb: np.ndarray, alpha: np.ndarray, side: float) -> np.ndarray:
    out = cv2.GaussianBlur(rgb, (0, 0), max(1.0, side / 10))
    return np.rint(alpha[..., None] * out + (1 - alpha[..., None]) * rgb).astype(np.uint8)


def pixelate(rgb: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    crop = rgb[y0:y1, x0:x1]
    small = cv2.resize(crop, (8, max(1, round(8 * (y1 - y0) / (x1 - x0)))), interpolation=cv2.INTER_AREA)
    out = rgb.copy()
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return np.rint(alpha[..., None] * out + (1 - alpha[..., None]) * rgb).astype(np.uint8)


def summarise(rows: list[dict]) -> dict:
    def arr(k: str) -> np.ndarray:
        return np.array([r[k] for r in rows if r.get(k) is not None and np.isfinite(r[k])], float)

    d, y, p, s, sd = arr("detail"), arr("yaw_diff"), arr("pitch_diff"), arr("arcface"), arr("dlib_sim")
    n = len(rows)
    return {
        "faces": n,
        "detail_median": float(np.median(d)) if len(d) else None,
        "detail_min": float(d.min()) if len(d) else None,
        "yunet_rate": sum(bool(r["yunet"]) for r in rows) / max(1, n),
        "dlib_rate": sum(bool(r["dlib"]) for r in rows) / max(1, n),
        "pose_diff_median": float(np.median(np.maximum(y, p))) if len(y) else None,
        "arcface_similarity_median": float(np.median(s)) if len(s) else None,
        "arcface_match_rate": float(np.mean(s > ARCFACE_FAR_1E3)) if len(s) else None,
        "dlib_similarity_median": float(np.median(sd)) if len(sd) else None,
        "dlib_match_rate": float(np.mean(sd > DLIB_FAR_1E3)) if len(sd) else None,
        "seconds_per_face": float(np.mean([r["seconds"] for r in rows])) if rows else None,
        "photos_redrawn": sum(bool(r.get("redrawn_for")) for r in rows),
        "photos_redrawn_smooth": sum("smooth" in r.get("redrawn_for", ()) for r in rows),
    }


class Keys:
    """Fresh keys, or with a seed the same keys and face nonces for every model (a paired comparison)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def _bytes(self, *parts: object) -> bytes:
        return hashlib.sha256("|".join(map(str, ("face_quality", self.seed) + parts)).encode()).digest()

    def draw(self, photo: str, number: int, jobs: list) -> tuple[Key | Envelope, list]:
        """The key ``number`` for ``photo`` and its face jobs; seeded: an envelope whose file key (what
        the sign patterns come from) is derived from the seed, and so are the nonces the pipeline draws
        next (each face's first, then any redraw's, in the order it asks for them)."""
        if self.seed is None:
            return Key.generate(), jobs
        key = Key(self._bytes(photo, number, "key")[:SECRET_BYTES])
        envelope = Envelope(FileKey(self._bytes(photo, number, "file key")[:SECRET_BYTES]), (key,))
        asked = itertools.count()

        def nonce() -> bytes:  # the faces' nonces as a given nonce was before redraws existed, then the redraws'
            k = next(asked)
            return self._bytes(photo, number, *(("nonce", k) if k < len(jobs) else ("redraw", k - len(jobs))))[:NONCE_BYTES]

        pipeline.new_nonce = nonce  # a benchmark's seeded draws; never for real files
        return envelope, jobs


def key_diversity(rgb: np.ndarray, jobs, model, keys: int, judges: Judges, landmarks5: np.ndarray,
                  settings: Settings, draw: Keys, photo: str, redraws: int) -> list[float]:
    """ArcFace similarities of every pair of new faces that ``keys`` keys give one photo (embedded
    at the original's landmarks: the new faces keep the pose)."""
    embs = []
    for number in range(1, keys + 1):
        key, keyed = draw.draw(photo, number, jobs)
        out, _, _ = anonymize_array(rgb, key, model, faces=keyed, settings=settings, redraws=redraws)
        embs.append(judges.arcface.embed(out, landmarks5))
    return [float(np.dot(embs[i], embs[j])) for i in range(keys) for j in range(i + 1, keys)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["default"])
    ap.add_argument("--faces", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--grid", type=int, default=8, help="faces shown in the picture grid")
    ap.add_argument("--photos-for", type=int, default=None, metavar="N",
                    help="pick the photos as a run of N faces does (default --faces): a short run then meets the first "
                         "faces of a long one, with --seed the same keys (the README's grid from a 200-face run)")
    ap.add_argument("--keys", type=int, default=0, help="keys per face for the diversity measure (0: off)")
    ap.add_argument("--diversity-faces", type=int, default=5, help="faces that get --keys keys")
    ap.add_argument("--noise-gain", type=float, nargs="+", default=None,
                    help="engine noise gains to measure each model at (each model x gain is one method; "
                         "default: each model's recommended gain)")
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="DDIM step counts to measure each model at (each model x gain x steps is one method; "
                         f"default: the engine's {EngineSettings().steps})")
    ap.add_argument("--seed", type=int, default=None,
                    help="derive keys and nonces from this seed (paired comparisons; default: fresh keys)")
    ap.add_argument("--contrast-max", type=float, default=None,
                    help=f"the colour fit's largest contrast gain for this run (an experiment; "
                         f"default {colour.CONTRAST_RANGE[1]:g})")
    ap.add_argument("--redraws", type=int, default=pipeline.DEFAULT_REDRAWS,
                    help="the pipeline's redraws (0: every face drawn once, as before redraws existed)")
    ap.add_argument("--detail-floor", type=float, default=None,
                    help="the redraws' detail floor for every model (an experiment; default: each model's own)")
    args = ap.parse_args()
    if args.contrast_max is not None:
        colour.CONTRAST_RANGE = (colour.CONTRAST_RANGE[0], args.contrast_max)
    draw = Keys(args.seed)
    if not (SHARED / "data" / "lfw").is_dir():
        raise SystemExit(f"needs the LFW photos in {SHARED}")
    judges = Judges()
    loaded = {name: load_model(name) for name in args.models}
    for model in loaded.values():
        if args.detail_floor is not None:
            model.detail_floor = args.detail_floor
    # each model at each gain and step count is one method, named "model", "model @ gain g",
    # "model @ n steps" or "model @ gain g @ n steps" (what was asked for on the command line)
    models = {name + ("" if args.noise_gain is None else f" @ gain {g:g}") + ("" if args.steps is None else f" @ {n} steps"):
              (model, EngineSettings(noise_gain=g, **({} if n is None else {"steps": n})))
              for name, model in loaded.items() for g in (args.noise_gain or [model.noise_gain])
              for n in (args.steps or [None])}
    methods = list(models) + ["blur", "pixelate"]
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    diversity: dict[str, dict[str, list[float]]] = {m: {} for m in models}  # photo -> its pairs' ArcFace similarities
    tiles: list[list[np.ndarray]] = []
    embeddings: dict[str, list[np.ndarray]] = {}  # ArcFace embeddings of the new faces, and of the originals
    photos = held_out_photos(args.photos_for or args.faces)
    used = 0
    for path in photos:
        if used >= args.faces:
            break
        rgb = np.asarray(Image.open(path).convert("RGB"))
        ref = judges.yunet.primary(rgb)
        if ref is None:
            continue
        x, y, w, h = np.asarray(ref.box, float)
        box = np.array([x, y, x + w, y + h])
        ref_yaw, ref_pitch = pose(np.asarray(ref.landmarks5), rgb.shape)
        ref_emb = judges.arcface.embed(rgb, np.asarray(ref.landmarks5))
        ref_dlib = judges.dlib.embed(rgb, np.asarray(ref.landmarks5))
        row_tiles = [rgb]
        outputs: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], float]] = {}
        redrawn: dict[str, list[str]] = {}
        for name, (model, engine) in models.items():
            settings = Settings(engine)
            jobs, _ = find_faces(rgb, model.image_size, framing=model.framing)
            if not jobs:
                break
            t0 = time.perf_counter()
            key, keyed = draw.draw(path.name, 0, jobs)
            out, _, reports = anonymize_array(rgb, key, model, faces=keyed, settings=settings, redraws=args.redraws)
            seconds = (time.perf_counter() - t0) / len(jobs)
            # the replaced region of the face the judges saw (largest overlap)
            best = None
            for job in jobs:
                g = face_geometry(rgb.shape, job.transform, np.asarray(job.outline, np.float64), model)
                alpha = np.zeros(rgb.shape[:2], np.float32)
                y0, y1, x0, x1 = g.region.bounds
                alpha[y0:y1, x0:x1] = g.region.alpha
                ys, xs = np.nonzero(alpha > 0.5)
                if len(ys) == 0:
                    continue
                rbox = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
                if best is None or iou(rbox, box) > best[0]:
                    best = (iou(rbox, box), alpha, (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
            if best is None:
                break
            outputs[name] = (out, best[1], best[2], seconds)
            redrawn[name] = [why for r in reports for why in r.redrawn_for]  # every face of the photo's
            if args.keys >= 2 and used < args.diversity_faces:
                diversity[name][path.name] = key_diversity(rgb, jobs, model, args.keys, judges, np.asarray(ref.landmarks5),
                                                           settings, draw, path.name, args.redraws)
        if len(outputs) != len(models):
            continue
        alpha, rbox = next(iter(outputs.values()))[1:3]
        side = max(rbox[1] - rbox[0], rbox[3] - rbox[2])
        outputs["blur"] = (blur(rgb, alpha, side), alpha, rbox, 0.0)
        outputs["pixelate"] = (pixelate(rgb, alpha, rbox), alpha, rbox, 0.0)
        for name, (out, alpha, rbox, seconds) in outputs.items():
            found, dlib_hit = judges.find(out, box)
            r = {"photo": path.name, "detail": detail_ratio(rgb, out, alpha, rbox), "yunet": found is not None,
                 "dlib": dlib_hit, "seconds": seconds, "yaw_diff": None, "pitch_diff": None, "arcface": None,
                 "redrawn_for": redrawn.get(name, [])}
            if found is not None:
                yaw, pitch = pose(np.asarray(found.landmarks5), out.shape)
                r["yaw_diff"], r["pitch_diff"] = abs(yaw - ref_yaw), abs(pitch - ref_pitch)
            # an undetected face is embedded at the original's landmarks
            at = np.asarray((found if found is not None else ref).landmarks5)
            emb = judges.arcface.embed(out, at)
            embeddings.setdefault(name, []).append(emb)
            r["arcface"] = float(np.dot(emb, ref_emb))
            r["dlib_sim"] = float(np.dot(judges.dlib.embed(out, at), ref_dlib))
            rows[name].append(r)
            row_tiles.append(out)
        embeddings.setdefault("originals", []).append(ref_emb)
        if len(tiles) < args.grid:
            tiles.append(row_tiles)
        used += 1
        print(f"{used:3d} {path.name}: " + ", ".join(f"{m} {rows[m][-1]['detail']:.2f}" for m in methods), flush=True)

    summary = {m: summarise(rows[m]) for m in methods}
    real = []
    for path in other_real_photos(used, {r["photo"] for r in rows[methods[0]]}):
        if len(real) >= used:
            break
        rgb = np.asarray(Image.open(path).convert("RGB"))
        ref = judges.yunet.primary(rgb)
        if ref is not None:
            real.append(judges.arcface.embed(rgb, np.asarray(ref.landmarks5)))
    frechet = {}
    if len(real) >= 2:
        frechet = {m: frechet_distance(np.asarray(e), np.asarray(real)) for m, e in embeddings.items()}
        for m in methods:
            summary[m]["frechet_arcface"] = frechet[m]
        summary["frechet_reference"] = {"real_faces": len(real), "originals": frechet["originals"]}
    different = lambda sims: float(np.mean(np.asarray(sims) <= ARCFACE_FAR_1E3))
    for m, by_face in diversity.items():
        sims = [s for face in by_face.values() for s in face]
        if sims:
            summary[m]["diversity_pairs"] = len(sims)
            summary[m]["diversity_different_rate"] = different(sims)
            summary[m]["diversity_similarity_median"] = float(np.median(sims))
            summary[m]["diversity_by_face"] = {photo: different(face) for photo, face in by_face.items()}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "figures.json").write_text(json.dumps({"summary": summary, "faces": rows}, indent=1) + "\n")
        lines = ["| method | faces | detail median (min) | YuNet | dlib | pose diff median | ArcFace sim. median | ArcFace match rate | "
                 "dlib sim. median | dlib match rate | s/face |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in methods:
            s = summary[m]
            fmt = lambda v, f="{:.2f}": "n/a" if v is None else f.format(v)
            lines.append(f"| {m} | {s['faces']} | {fmt(s['detail_median'])} ({fmt(s['detail_min'])}) | {s['yunet_rate']:.0%} | "
                         f"{s['dlib_rate']:.0%} | {fmt(s['pose_diff_median'], '{:.1f}°')} | {fmt(s['arcface_similarity_median'])} | "
                         f"{fmt(s['arcface_match_rate'], '{:.0%}')} | {fmt(s['dlib_similarity_median'])} | "
                         f"{fmt(s['dlib_match_rate'], '{:.0%}')} | {fmt(s['seconds_per_face'], '{:.1f}')} |")
        if frechet:
            lines += ["", f"Realism: ArcFace Fréchet distance to {len(real)} real held-out faces of other people "
                      f"(the originals themselves: {frechet['originals']:.3f}; lower is closer to real faces).", "",
                      "| method | Fréchet distance |", "|---|---:|"]
            lines += [f"| {m} | {frechet[m]:.3f} |" for m in methods]
        lines += ["", "Redraws: " + "; ".join(f"{m} {summary[m]['photos_redrawn']} photo(s) with a face drawn again "
                                               f"({summary[m]['photos_redrawn_smooth']} for detail below the floor)"
                                               for m in models) + f" (at most {args.redraws} per face)."]
        div = [(m, summary[m]) for m in methods if "diversity_pairs" in summary[m]]
        if div:
            lines += ["", f"Diversity: {args.keys} keys on each of the first {args.diversity_faces} faces.", "",
                      "| method | pairs | ArcFace: different people | pair similarity median |", "|---|---:|---:|---:|"]
            lines += [f"| {m} | {s['diversity_pairs']} | {s['diversity_different_rate']:.0%} | "
                      f"{s['diversity_similarity_median']:.2f} |" for m, s in div]
        (args.out / "report.md").write_text("\n".join(lines) + "\n")
        if tiles:
            cells = [[cv2.resize(t, (256, 256), interpolation=cv2.INTER_CUBIC) for t in row] for row in tiles]
            Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in cells], 0)).save(args.out / "grid.png")


if __name__ == "__main__":
    main()

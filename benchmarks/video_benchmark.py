"""Videos end to end with the embedded model: stability, speed, lossy H.264 and the README strip.

The demo clip (``faceveil.video.demo``: CelebA 000176 moving and growing, 000306 sliding in
halfway, 256 x 256, 12 fps, H.264 + AAC) is anonymized three ways, to measure what the
video design buys:

- ``independent``: a fresh nonce per face per frame and no smoothing (frames as photos);
- ``track nonce``: one nonce per track (one key sign pattern), raw per-frame alignment;
- ``track nonce + smoothing``: the track's landmarks smoothed over frames;
- ``reuse`` (the default): that, and every frame's face sampled from the track's keyed
  noise (the track's first frame inverted once) with the frame's own context.

Per variant, over the frames where a face is fully visible and detected: ArcFace cosine
of the anonymized face to the original (identity removed: below 0.324, FAR 1e-3), ArcFace
cosine of one track's anonymized face between consecutive frames and over all pairs of
its frames (one anonymous identity), and flicker: the mean absolute frame-to-frame change
inside the face (raw pixels in the face region, and motion-compensated in the 112 px
ArcFace crop), divided by the original's. Then: frames per second, seconds per face-frame
against one still frame through ``anonymize_array``, bit-exact recovery, the header size,
and the lossy H.264 output's recovery PSNR.

    python benchmarks/video_benchmark.py [--steps 20] [--frames 16] [--threads 1] [--figures docs/images]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def measure(name, result, original, veiled, embedder, model) -> dict:
    """Identity, consistency and flicker of one anonymized clip."""
    from faceveil.pipeline import face_geometry

    shape = original[0].shape
    to_orig, consecutive, all_pairs, raw, aligned, orig_consecutive = [], [], [], [], [], []
    tracks: dict[int, list] = {}
    for i, faces in enumerate(result.frame_faces):
        for face in faces:
            if face.kind == "detected":
                tracks.setdefault(face.track, []).append((i, face))
    for items in tracks.values():
        emb_a = {i: embedder.embed(veiled[i], f.landmarks5) for i, f in items}
        emb_o = {i: embedder.embed(original[i], f.landmarks5) for i, f in items}
        to_orig += [_cos(emb_a[i], emb_o[i]) for i, _ in items]
        all_pairs += [_cos(emb_a[i], emb_a[j]) for (i, _), (j, _) in combinations(items, 2)]
        for (i, fi), (j, fj) in zip(items, items[1:]):
            if j != i + 1:
                continue
            consecutive.append(_cos(emb_a[i], emb_a[j]))
            orig_consecutive.append(_cos(emb_o[i], emb_o[j]))
            mask = np.zeros(shape[:2], bool)
            for f in (fi, fj):
                transform, outline = f.job_geometry(model.image_size)
                mask |= face_geometry(shape, transform, outline, model).region.full(shape)
            d_a = np.abs(veiled[j].astype(float) - veiled[i])[mask].mean()
            d_o = np.abs(original[j].astype(float) - original[i])[mask].mean()
            raw.append((d_a, d_o))
            ca = [embedder.align(veiled[k], fi.landmarks5 if k == i else fj.landmarks5).astype(float) for k in (i, j)]
            co = [embedder.align(original[k], fi.landmarks5 if k == i else fj.landmarks5).astype(float) for k in (i, j)]
            aligned.append((np.abs(ca[1] - ca[0]).mean(), np.abs(co[1] - co[0]).mean()))
    return {
        "variant": name,
        "face_frames_measured": len(to_orig),
        "cos_to_original_mean": float(np.mean(to_orig)), "cos_to_original_max": float(np.max(to_orig)),
        "cos_consecutive_mean": float(np.mean(consecutive)), "cos_consecutive_min": float(np.min(consecutive)),
        "cos_all_pairs_mean": float(np.mean(all_pairs)),
        "original_cos_consecutive_mean": float(np.mean(orig_consecutive)),
        # flicker: the anonymized face's mean frame-to-frame change over the original's, pooled over frame pairs
        "flicker_raw_ratio": float(np.sum([a for a, _ in raw]) / np.sum([o for _, o in raw])),
        "flicker_aligned_ratio": float(np.sum([a for a, _ in aligned]) / np.sum([o for _, o in aligned])),
        "flicker_raw_level": float(np.mean([a for a, _ in raw])), "original_raw_level": float(np.mean([o for _, o in raw])),
    }


def strip(rows: list[list[np.ndarray]], labels: list[str], path: Path) -> None:
    """Rows of frames (before, anonymized, recovered) as one picture, with row labels."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    pad, label_w = 4, 96
    out = Image.new("RGB", (label_w + len(rows[0]) * (w + pad), len(rows) * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for r, (row, label) in enumerate(zip(rows, labels)):
        draw.text((4, r * (h + pad) + h // 2 - 6), label, fill=(0, 0, 0))
        for c, frame in enumerate(row):
            out.paste(Image.fromarray(frame), (label_w + c * (w + pad), r * (h + pad)))
    out.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: faceveil's default)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figures", type=Path, default=None, help="write video-strip.png here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--variants", default="independent,track,smoothed,reuse")
    parser.add_argument("--variants-only", action="store_true", help="only the variants (no recovery, still, H.264, strip)")
    parser.add_argument("--repeats", type=int, default=1, help="with --variants-only: runs per variant, each with a new key")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from faceveil.evaluate.embedders import ArcFaceOnnxEmbedder
    from faceveil.evaluate.metrics import psnr
    from faceveil.keys import Key
    from faceveil.models import load_model
    from faceveil.pipeline import FaceJob, Settings, anonymize_array
    from faceveil.video import anonymize_video, recover_video
    from faceveil.video.demo import write_demo_clip
    from faceveil.video.io import iter_frames

    embedder = ArcFaceOnnxEmbedder()
    model = load_model()
    key = Key.generate()
    settings = Settings()
    steps = args.steps or settings.engine.steps
    figures: dict = {"model": model.model_id, "steps": steps, "threads": args.threads, "frames": args.frames,
                     "size": "256x256", "variants": []}
    variants = {
        "independent": {"per_frame_nonce": True, "smoothing": 0.0},
        "track": {"smoothing": 0.0, "reuse_noise": False},
        "smoothed": {"reuse_noise": False},
        "reuse": {},  # the default: smoothed, and the track's noise reused
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = write_demo_clip(tmp / "clip.mp4", SHARED, frames=args.frames)
        original = [f.rgb for f in iter_frames(clip)]
        last = None
        runs = [(name, r) for r in range(args.repeats if args.variants_only else 1) for name in args.variants.split(",")]
        for name, repeat in runs:
            out = tmp / f"{name}-{repeat}.veiled.mkv"
            key = Key.generate() if repeat else key  # a new key (and new nonces) per repeat
            start = time.perf_counter()
            result = anonymize_video(clip, key, out, model=model, steps=steps, **variants[name])
            wall = time.perf_counter() - start
            veiled = [f.rgb for f in iter_frames(out)]
            row = measure(name, result, original, veiled, embedder, model)
            face_frames = sum(len(f) for f in result.frame_faces)
            row.update({"repeat": repeat, "anonymize_s": wall, "frames_per_s": result.frames_run / result.seconds,
                        "s_per_face_frame": result.seconds / face_frames, "face_frames": face_frames,
                        "sidecar_bytes": out.with_name(out.name + ".veil").stat().st_size})
            print(json.dumps(row), flush=True)
            figures["variants"].append(row)
            last = (name, out, result, veiled)
        if args.variants_only:
            for name in args.variants.split(","):
                rows = [r for r in figures["variants"] if r["variant"] == name]
                summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if isinstance(rows[0][k], float)}
                summary.update({"variant": name, "runs": len(rows),
                                "cos_consecutive_mean_range": [min(r["cos_consecutive_mean"] for r in rows),
                                                               max(r["cos_consecutive_mean"] for r in rows)],
                                "cos_to_original_max_all": max(r["cos_to_original_max"] for r in rows)})
                figures.setdefault("summary", []).append(summary)
                print("summary", json.dumps(summary), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(figures, indent=1) + "\n")
            return

        name, out, result, veiled = last
        start = time.perf_counter()
        recovered_path = recover_video(out, key, tmp / "clip.recovered.mkv", model=model).outputs[0]
        recover_s = time.perf_counter() - start
        recovered = [f.rgb for f in iter_frames(recovered_path)]
        exact = len(recovered) == len(original) and all(np.array_equal(a, b) for a, b in zip(original, recovered))
        figures["lossless"] = {"variant": name, "recover_s": recover_s, "bit_exact": exact,
                               "recover_frames_per_s": len(recovered) / recover_s}
        print(json.dumps(figures["lossless"]), flush=True)

        # a still frame with as many faces, through the photo pipeline: the per-face cost without the video machinery
        busiest = max(range(len(original)), key=lambda i: len(result.frame_faces[i]))
        jobs = [FaceJob(*f.job_geometry(model.image_size)) for f in result.frame_faces[busiest]]
        start = time.perf_counter()
        anonymize_array(original[busiest], key, model, faces=jobs, settings=Settings(
            settings.engine.__class__(**{**settings.engine.to_json(), "steps": steps})))
        figures["still_s_per_face"] = (time.perf_counter() - start) / len(jobs)
        print(json.dumps({"still_s_per_face": figures["still_s_per_face"]}), flush=True)

        # lossy H.264: approximate recovery, measured
        lossy = tmp / "clip.veiled.mp4"
        anonymize_video(clip, key, lossy, model=model, steps=steps)
        rec = recover_video(lossy, key, tmp / "lossy.recovered.mkv", model=model)
        approx = [f.rgb for f in iter_frames(rec.outputs[0])]
        from faceveil.pipeline import face_geometry

        face_psnr, frame_psnr, anon_psnr = [], [], []
        lossy_veiled = [f.rgb for f in iter_frames(lossy)]
        for i, faces in enumerate(result.frame_faces):
            frame_psnr.append(psnr(original[i], approx[i]))
            for f in faces:
                if f.kind != "detected":
                    continue
                transform, outline = f.job_geometry(model.image_size)
                mask = face_geometry(original[i].shape, transform, outline, model).region.full(original[i].shape)
                face_psnr.append(psnr(original[i][mask], approx[i][mask], data_range=255))
                anon_psnr.append(psnr(original[i][mask], lossy_veiled[i][mask], data_range=255))
        figures["h264"] = {"face_psnr_mean_db": float(np.mean(face_psnr)), "face_psnr_min_db": float(np.min(face_psnr)),
                           "frame_psnr_mean_db": float(np.mean(frame_psnr)),
                           "anonymized_face_psnr_mean_db": float(np.mean(anon_psnr)),
                           "mp4_bytes": lossy.stat().st_size, "mkv_bytes": out.stat().st_size, "notes": rec.notes}
        print(json.dumps(figures["h264"]), flush=True)

        if args.figures:
            args.figures.mkdir(parents=True, exist_ok=True)
            picks = np.linspace(0, len(original) - 1, 5).round().astype(int).tolist()
            strip([[original[i] for i in picks], [veiled[i] for i in picks], [recovered[i] for i in picks]],
                  ["original", "anonymized", "recovered"], args.figures / "video-strip.png")
            print(f"wrote {args.figures / 'video-strip.png'} (frames {picks})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()

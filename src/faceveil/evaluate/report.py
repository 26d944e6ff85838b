"""Writing an evaluation: ``results.json`` (every figure), ``report.md`` and PNG figures.

:func:`write_report` takes the figures of :func:`faceveil.evaluate.protocols.run_protocols`
and renders them; it computes nothing new. Figures use matplotlib's Agg backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.atomic import atomic_output, write_file

__all__ = ["to_jsonable", "fmt", "save_grid", "save_histograms", "render_markdown", "write_report"]


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy values turned into Python ones and non-finite floats into
    the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else str(x)
    return obj


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a table: ``-`` for missing, ``inf`` kept, floats rounded."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f} %"


# --------------------------------------------------------------------------- figures
def save_grid(rows: Sequence[dict[str, np.ndarray]], path: Path, columns: Sequence[str]) -> Path | None:
    """One row per sample, one column per named image (missing cells left blank)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.6 * len(columns), 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, name in enumerate(columns):
            ax = axes[r][c]
            ax.axis("off")
            if name in row:
                ax.imshow(row[name])
            if r == 0:
                ax.set_title(name, fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as fh:
        fig.savefig(fh, dpi=100, format="png")
    plt.close(fig)
    return path


def save_histograms(
    embedder: str,
    lfw_scores: np.ndarray | None,
    lfw_labels: np.ndarray | None,
    series: dict[str, list[float]],
    thresholds: dict[str, float],
    path: Path,
) -> Path:
    """Similarity histograms: LFW genuine and impostor pairs against the evaluated series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(-0.4, 1.0, 57)
    if lfw_scores is not None and lfw_labels is not None and len(lfw_scores):
        lab = np.asarray(lfw_labels, bool)
        ax.hist(lfw_scores[lab], bins=bins, density=True, alpha=0.35, label="LFW genuine pairs")
        ax.hist(lfw_scores[~lab], bins=bins, density=True, alpha=0.35, label="LFW impostor pairs")
    for name, values in series.items():
        if len(values):
            ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.6, label=name)
    for label, thr in thresholds.items():
        ax.axvline(thr, linestyle="--", color="k", linewidth=0.8)
        ax.text(thr, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=7, rotation=90, va="top")
    ax.set_xlabel(f"cosine similarity ({embedder})")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as fh:
        fig.savefig(fh, dpi=100, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _stat(d: dict[str, Any] | None, key: str = "median") -> str:
    return "-" if not d or d.get("n", 0) == 0 else fmt(d.get(key))


def _calibration_section(results: dict[str, Any]) -> list[str]:
    cal = results.get("calibration", {})
    lines = ["## Thresholds (LFW View 2 calibration)", ""]
    if not cal:
        return lines + ["No calibration: match rates are not reported.", ""]
    rows = []
    for name, c in cal.items():
        thr = c.get("thresholds", {})
        far = {t["far_target"]: t for t in c.get("far_thresholds", [])}
        cells = [name, str(c.get("source", "")), fmt(c.get("resolution")) if c.get("resolution") else "native",
                 fmt(c.get("n_pairs")), _pct(c.get("accuracy"))]
        for label in thr:
            target = float(label.split()[-1])
            tar = far.get(target, {}).get("tar")
            cells.append(f"{fmt(thr[label])}" + (f" (TAR {_pct(tar)})" if tar is not None else ""))
        rows.append(cells)
    labels = list(next(iter(cal.values())).get("thresholds", {}))
    return lines + _table(["embedder", "source", "resolution", "pairs", "accuracy", *labels], rows)


def _side_by_side(results: dict[str, Any], embedders: Sequence[str], strict: str | None) -> list[str]:
    header = ["method"]
    for e in embedders:
        header += [f"cos anon {e}"] + ([f"re-id {e} @{strict}"] if strict else [])
    header += ["PSNR face rec. (median)", "SSIM face rec.", "exact", "detected", "landmark drift",
               "outside unchanged", "linkage AUC", "s/face", "UNet evals/face", "header B/face", "header / image PNG"]
    rows = []
    for name, m in results["methods"].items():
        cells = [name]
        for e in embedders:
            ident = m.get("identity_anonymized", {}).get(e, {})
            cells.append(fmt(ident.get("mean")))
            if strict:
                cells.append(_pct(ident.get("match_rate", {}).get(strict)))
        rec = m.get("recovery")
        util = m.get("utility", {})
        cells += [
            _stat(rec.get("psnr_face")) if rec else "n/a",
            _stat(rec.get("ssim_face")) if rec else "n/a",
            _pct(rec.get("exact_rate")) if rec else "n/a",
            _pct(util.get("detected_rate")),
            fmt(util.get("landmark_drift_mean")),
            _pct(util.get("outside_unchanged_rate")),
            fmt(m.get("linkage", {}).get("auc")) if "linkage" in m else "n/a",
            fmt(m["speed"]["seconds_per_face"], 2),
            fmt(m["speed"]["unet_evals_per_face"], 0),
            fmt(m.get("header", {}).get("bytes_per_face"), 0) if m.get("header", {}).get("bytes_per_face") is not None else "n/a",
            fmt(m.get("header", {}).get("ratio_to_image_png"), 2) if m.get("header", {}).get("ratio_to_image_png") is not None else "n/a",
        ]
        rows.append(cells)
    return ["## Side by side (same faces, one run)", ""] + _table(header, rows)


def render_markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    """The report's text from the figures of ``results.json``."""
    cfg = results.get("config", {})
    embedders = list(cfg.get("embedders", []))
    labels = [lab for c in results.get("calibration", {}).values() for lab in c.get("thresholds", {})]
    strict = sorted(set(labels), key=lambda s: float(s.split()[-1]))[0] if labels else None
    lines = ["# faceveil evaluation", ""]
    lines += [f"- {k}: {fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v)}" for k, v in cfg.items()]
    lines += [""]
    lines += _calibration_section(results)
    lines += _side_by_side(results, embedders, strict)

    lines += ["## 1. Identity removed (cosine anonymized vs original; re-identification rate)", ""]
    rows = []
    for name, m in results["methods"].items():
        for e, ident in m.get("identity_anonymized", {}).items():
            rates = ", ".join(f"{lab}: {_pct(r)}" for lab, r in ident.get("match_rate", {}).items()) or "-"
            rows.append([name, e, fmt(ident["mean"]), fmt(ident["std"]), fmt(ident["max"]), rates])
    lines += _table(["method", "embedder", "mean", "std", "max", "re-identified at"], rows)

    lines += ["## 2. Recovery with the right key", ""]
    rows = []
    for name, m in results["methods"].items():
        rec = m.get("recovery")
        if not rec:
            continue
        ids = "; ".join(
            f"{e}: cos {fmt(i['mean'])}"
            + "".join(f", match {lab} {_pct(r)}" for lab, r in i.get("match_rate", {}).items())
            for e, i in m.get("identity_recovered", {}).items()
        )
        rows.append([name, f"{rec['recovered']}/{m['n_images']}", _pct(rec.get("exact_rate")),
                     _stat(rec["psnr"]), _stat(rec["ssim"]), _stat(rec["psnr_face"]), _stat(rec["ssim_face"]), ids or "-"])
    lines += _table(["method", "recovered", "exact", "PSNR (median)", "SSIM", "PSNR face", "SSIM face", "identity"], rows)
    for name, m in results["methods"].items():
        redraws = m.get("redraws") or {}
        if redraws.get("at_most"):
            smooth = redraws.get("faces_redrawn_smooth")
            why = ("because the pipeline's identity check still matched the face drawn before to the original"
                   if not redraws.get("detail_floor") else
                   f"because the pipeline's identity check still matched the face drawn before to the original, or "
                   f"its detail was below the model's floor of {redraws['detail_floor']:g} of the original's "
                   f"({smooth} face(s) at least once for detail)")
            lines += [f"{name}: {redraws['faces_redrawn']} of {redraws['faces_drawn']} face(s) drawn again (all protocols; "
                      f"at most {redraws['at_most']} times each) {why}; {redraws['still_matching']} still matching "
                      f"after them all" + (f", {redraws['still_smooth']} still below the floor" if redraws.get("detail_floor") else "")
                      + ".", ""]
        if "masks_recomputed" in m:
            lines += [f"{name}: masks recomputed from the anonymized image for {m['masks_recomputed']} face(s); "
                      f"{m['masks_kept_not_redetected']} not re-detected (stored mask used).", ""]

    keys = results.get("keys")
    if keys and keys.get("n"):
        lines += [f"## 3. Keys ({keys['method']}, {keys['n']} image(s))", "",
                  f"- right key bit-exact: {_pct(keys['right_key_exact_rate'])}",
                  "- refused: " + ", ".join(f"{case} {n}/{keys['n']}" for case, n in keys["refused"].items()),
                  "- wrong key: a random key; one bit: the right key with one bit flipped; both with the header "
                  "opened by the right key (check bypassed on purpose).", ""]
        rows = []
        for e in embedders:
            for pair, ident in keys.get(e, {}).items():
                rates = ", ".join(f"{lab}: {_pct(r)}" for lab, r in ident.get("match_rate", {}).items()) or "-"
                rows.append([e, pair.replace("_", " "), fmt(ident["mean"]), fmt(ident["max"]), rates])
        lines += _table(["embedder", "pair", "cos mean", "cos max", "match rate"], rows)

    rob = results.get("robustness")
    if rob and rob.get("n"):
        lines += [f"## 4. Robustness ({rob['method']}, {rob['n']} image(s))", ""]
        rows = []
        for case, r in rob.items():
            if case.startswith("jpeg"):
                rows.append([case, f"{r['recovered']}/{rob['n']}", _stat(r["psnr"]), _stat(r["psnr_face"]),
                             _stat(r["no_recovery_psnr_face"])])
            elif case.startswith("resize"):
                rows.append([f"{case}: direct", ", ".join(r["direct"]), "-", "-", _stat(r["no_recovery_psnr_face"])])
                rows.append([f"{case}: resized back first", f"{rob['n']}/{rob['n']}", _stat(r["resized_back_psnr"]),
                             _stat(r["resized_back_psnr_face"]), _stat(r["no_recovery_psnr_face"])])
        lines += _table(["degradation", "recovered", "PSNR (median)", "PSNR face", "PSNR face without recovery"], rows)
        lines += ["Resizing: recovery refuses a changed size (\"refused\"); the figures below it are after resizing "
                  "back to the original size.", ""]

    div = results.get("diversity")
    if div:
        lines += [f"## 5. Diversity ({div['method']}: {div['sample']}, {div['n_keys']} keys)", ""]
        rows = []
        for e in embedders:
            if e in div:
                p = div[e]["pairwise"]
                rates = ", ".join(f"{lab}: {_pct(r)}" for lab, r in p.get("match_rate", {}).items()) or "-"
                rows.append([e, fmt(p["mean"]), fmt(p["std"]), fmt(p["max"]), rates, fmt(div[e]["to_original"]["mean"])])
        lines += _table(["embedder", "pairwise cos mean", "std", "max", "pairs matching", "cos to original"], rows)

    lines += ["## 6. Utility", ""]
    rows = []
    for name, m in results["methods"].items():
        u = m.get("utility", {})
        rows.append([name, _pct(u.get("detected_rate")), fmt(u.get("landmark_drift_mean")),
                     fmt(u.get("yaw_drift_mean_deg"), 1), fmt(u.get("roll_drift_mean_deg"), 1),
                     _pct(u.get("outside_unchanged_rate")), fmt(u.get("changed_outside_pixels"))])
    judge = {"yunet": "YuNet", "dlib": "dlib"}.get(results.get("config", {}).get("detector", "yunet"), "YuNet")
    lines += _table(["method", f"still detected ({judge})", "landmark drift / IOD", "yaw drift (deg)",
                     "roll drift (deg)", "outside unchanged", "changed outside px"], rows)

    lines += ["## 7. Linkage attack (|z_T| magnitudes)", ""]
    rows = [[name, fmt(m["linkage"]["auc"]), _stat(m["linkage"]["genuine"], "mean_finite"),
             _stat(m["linkage"]["impostor"], "mean_finite"), f"{m['linkage']['n_genuine']}/{m['linkage']['n_impostor']}"]
            for name, m in results["methods"].items() if "linkage" in m]
    if rows:
        attack = next(m["linkage"]["attack"] for m in results["methods"].values() if "linkage" in m)
        lines += [f"Attack: {attack}. AUC 0.5: no linkage; 1: every pair linked.", ""]
        lines += _table(["method", "AUC", "genuine corr mean", "impostor corr mean", "pairs gen/imp"], rows)
    else:
        lines += ["Not run (needs at least two faces and a diffusion method).", ""]

    lines += ["## 8. Speed and cost", ""]
    rows = [[name, fmt(m["speed"]["seconds_per_face"], 2), fmt(m["speed"]["recover_seconds_per_face"], 2),
             fmt(m["speed"]["unet_evals_per_face"], 1), fmt(m["speed"]["peak_rss_mb"], 0)]
            for name, m in results["methods"].items()]
    lines += _table(["method", "anonymize s/face", "recover s/face", "UNet evals/face (anonymize)",
                     "peak RSS so far (MiB)"], rows)
    lines += ["Peak RSS is the process's maximum resident memory after the method's faces "
              "(monotone over the run, so it bounds each method from above).", ""]

    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({rel})" for name, rel in figures.items()] + [""]
    notes = [f"- {name}: {n}" for name, m in results["methods"].items() for n in m.get("notes", [])]
    notes += [f"- {n}" for n in results.get("notes", [])]
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    results: dict[str, Any],
    grid: Sequence[dict[str, np.ndarray]] = (),
    methods_row: dict[str, np.ndarray] | None = None,
    scores: dict[str, dict[str, list[float]]] | None = None,
    lfw_scores: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``figures/*.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    if save_grid(grid, fig_dir / "grid.png", ["original", "anonymized", "recovered", "wrong key"]):
        figures["original | anonymized | recovered | wrong key"] = "figures/grid.png"
    if methods_row:
        save_grid([{"original": grid[0]["original"], **methods_row}] if grid else [methods_row],
                  fig_dir / "methods.png", ["original", *methods_row])
        figures["methods side by side"] = "figures/methods.png"
    for emb, series in (scores or {}).items():
        lfw = (lfw_scores or {}).get(emb, (None, None))
        thr = results.get("calibration", {}).get(emb, {}).get("thresholds", {})
        save_histograms(emb, lfw[0], lfw[1], series, thr, fig_dir / f"similarity_{emb}.png")
        figures[f"similarity ({emb})"] = f"figures/similarity_{emb}.png"
    results = {**results, "figures": figures}
    text = json.dumps(to_jsonable(results), indent=1) + "\n"
    write_file(out_dir / "results.json", text.encode(), overwrite=True)
    write_file(out_dir / "report.md", render_markdown(results, figures).encode(), overwrite=True)
    return {"report": out_dir / "report.md", "json": out_dir / "results.json", "figures": fig_dir}

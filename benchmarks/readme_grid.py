"""The README's held-out picture from ``face_quality.py``'s grid: its rows (one photo each:
original, then each method) laid out in side-by-side panels under column labels.

    python benchmarks/readme_grid.py benchmarks/results/face-quality/v3-200/grid.jpg docs/images/heldout_grid.jpg \
        --labels original faceveil blur pixelate --rows 8 --panels 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 190  # pixels per photo in the picture
LABEL = 28  # pixels of label above each panel
GAP = 12  # between panels and between rows


def font(size: int) -> ImageFont.ImageFont:
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # noqa: BLE001 - any missing font falls back to Pillow's own
        return ImageFont.load_default()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path, help="face_quality.py's grid (square tiles, one photo per row)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--labels", nargs="+", required=True, help="one per column of the grid")
    ap.add_argument("--rows", type=int, default=8, help="photos to show (the grid's first rows)")
    ap.add_argument("--panels", type=int, default=2)
    args = ap.parse_args()
    grid = np.asarray(Image.open(args.grid).convert("RGB"))
    cols = len(args.labels)
    side = grid.shape[1] // cols
    if grid.shape[1] != side * cols or grid.shape[0] < side * args.rows:
        raise SystemExit(f"{args.grid} is {grid.shape[1]}x{grid.shape[0]}: not {cols} columns of {args.rows} square tiles")
    per_panel = -(-args.rows // args.panels)
    width = args.panels * cols * TILE + (args.panels - 1) * GAP
    height = LABEL + per_panel * TILE + (per_panel - 1) * GAP // 2
    canvas = Image.new("RGB", (width, height), "white")
    draw, text = ImageDraw.Draw(canvas), font(18)
    for row in range(args.rows):
        panel, place = divmod(row, per_panel)
        x0, y0 = panel * (cols * TILE + GAP), LABEL + place * (TILE + GAP // 2)
        for c in range(cols):
            tile = Image.fromarray(grid[row * side : (row + 1) * side, c * side : (c + 1) * side])
            canvas.paste(tile.resize((TILE, TILE), Image.LANCZOS), (x0 + c * TILE, y0))
            if place == 0:
                draw.text((x0 + c * TILE + 4, 4), args.labels[c], fill="black", font=text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=88)
    print(f"{args.out}: {width}x{height}")


if __name__ == "__main__":
    main()

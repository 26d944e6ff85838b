"""Experiment (not a feature): each face's noise gain set to TARGET_STD over the deviation of its
inverted noise inside the mask, instead of one gain for all; the gains are kept for the recovery
that anonymization runs itself (the residual). Wraps benchmarks/face_quality.py:

    TARGET_STD=0.88 python adaptive_gain_experiment.py --models faceveil-faces-96-v3 --faces 8 --seed 2 \
        --keys 10 --diversity-faces 8 --out adaptive-0.88
"""
import os
import runpy
import sys
from pathlib import Path

import torch

import faceveil.engine  # noqa: F401  (loads faceveil.engine.veil, whose masked_scramble is replaced)

V = sys.modules["faceveil.engine.veil"]
TARGET = float(os.environ["TARGET_STD"])
LAST = None  # the gains of the last forward call, divided out again by the inverse call that follows


def per_face_gain(zN, mask, signs, noise_gain, partner=None, inverse=False):
    global LAST
    if inverse:
        return mask * (1 / LAST) * V.scramble(zN, signs, partner) + (1 - mask) * zN
    inside = mask > 0.5
    gains = [TARGET / float(zN[b][inside[b]].std()) for b in range(zN.shape[0])]
    LAST = torch.tensor(gains, dtype=zN.dtype, device=zN.device).view(-1, *([1] * (zN.dim() - 1)))
    print("gains", [round(g, 3) for g in gains], file=sys.stderr, flush=True)
    return mask * LAST * V.scramble(zN, signs, partner) + (1 - mask) * zN


V.masked_scramble = per_face_gain
sys.argv = ["face_quality.py"] + sys.argv[1:]
runpy.run_path(str(Path(__file__).resolve().parents[3] / "face_quality.py"), run_name="__main__")

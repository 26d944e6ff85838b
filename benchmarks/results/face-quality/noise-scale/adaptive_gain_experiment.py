"""Experiment: per-face gain = TARGET / std of the inverted noise inside the mask (anonymize direction only)."""
import os, sys, runpy
import torch
import faceveil.engine, importlib
V = sys.modules["faceveil.engine.veil"]
TARGET = float(os.environ["TARGET_STD"])
orig = V.masked_scramble
def patched(zN, mask, signs, noise_gain, partner=None, inverse=False):
    global LAST
    if inverse:  # recovery inside anonymization (the residual): the forward gains, divided
        return mask * (1 / LAST) * V.scramble(zN, signs, partner) + (1 - mask) * zN
    m = mask > 0.5
    gains = []
    for b in range(zN.shape[0]):
        v = zN[b][m[b]]
        gains.append(TARGET / float(v.std()))
    g = torch.tensor(gains, dtype=zN.dtype, device=zN.device).view(-1, *([1] * (zN.dim() - 1)))
    LAST = g
    print("gains", [round(x, 3) for x in gains], file=sys.stderr, flush=True)
    return mask * g * V.scramble(zN, signs, partner) + (1 - mask) * zN
V.masked_scramble = patched
sys.argv = ["face_quality.py"] + sys.argv[1:]
runpy.run_path("/work/main/benchmarks/face_quality.py", run_name="__main__")

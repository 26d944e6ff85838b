"""The diffusion engine: stateless DDIM steps and the keyed masked transform."""

from faceveil.engine.ddim import Schedule, ddim_step, invert, sample
from faceveil.engine.veil import (
    CONTEXTS,
    MIXINGS,
    EngineSettings,
    VeilStats,
    masked_invert,
    masked_noise,
    masked_sample,
    masked_scramble,
    scramble,
    veil,
)

__all__ = [
    "CONTEXTS", "MIXINGS", "EngineSettings", "Schedule", "VeilStats",
    "ddim_step", "invert", "masked_invert", "masked_noise", "masked_sample", "masked_scramble", "sample", "scramble", "veil",
]

"""Deterministic DDIM (eta = 0) as small, stateless functions.

Levels ``k = 0..N`` of a trajectory: level 0 is the clean latent (alpha-bar 1), level
``k >= 1`` sits at timestep ``timesteps[k]`` of the scheduler's DDIM grid. One DDIM step
between two levels is an affine map for a fixed noise estimate, so the same function
moves down (sampling) and up (inversion); what differs is where ``eps`` is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
"""A noise predictor: (latent batch, integer timestep) -> predicted epsilon."""


@dataclass(frozen=True)
class Schedule:
    """The DDIM grid: ``timesteps[k]`` and ``alphas[k]`` (alpha-bar) for levels ``k = 0..N``."""

    timesteps: tuple[int, ...]  # timesteps[0] is unused (the clean level)
    alphas: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.timesteps) - 1

    @classmethod
    def from_scheduler(cls, scheduler, steps: int) -> Schedule:
        """The grid of a diffusers scheduler (its ``alphas_cumprod`` and ``set_timesteps``)."""
        if steps < 1:
            raise ValueError("steps must be at least 1")
        train_steps = scheduler.config.num_train_timesteps
        if steps > train_steps:
            raise ValueError(f"steps must be at most {train_steps} for this model")
        scheduler.set_timesteps(steps)
        descending = [int(t) for t in scheduler.timesteps]
        ascending = descending[::-1]
        cumprod = scheduler.alphas_cumprod.double()
        alphas = [1.0] + [float(cumprod[t]) for t in ascending]
        return cls(timesteps=(-1, *ascending), alphas=tuple(alphas))


def to_epsilon(output: torch.Tensor, z: torch.Tensor, alpha: float, prediction_type: str) -> torch.Tensor:
    """Convert a model's output to an epsilon estimate."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha**0.5 * output + (1 - alpha) ** 0.5 * z
    if prediction_type == "sample":
        return (z - alpha**0.5 * output) / (1 - alpha) ** 0.5
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def ddim_step(z: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move ``z`` from noise level ``alpha_from`` to ``alpha_to`` along the estimate ``eps``.

    For a fixed ``eps`` this is exactly invertible: ``ddim_step(ddim_step(z, e, a, b), e, b, a) == z``.
    """
    x0 = (z - (1 - alpha_from) ** 0.5 * eps) / alpha_from**0.5
    return alpha_to**0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


def sample_step(eps_fn: EpsFn, schedule: Schedule, z: torch.Tensor, k: int) -> torch.Tensor:
    """One deterministic DDIM sampling step from level ``k`` down to ``k - 1``."""
    eps = eps_fn(z, schedule.timesteps[k])
    return ddim_step(z, eps, schedule.alphas[k], schedule.alphas[k - 1])


def invert(eps_fn: EpsFn, schedule: Schedule, z0: torch.Tensor) -> list[torch.Tensor]:
    """Plain DDIM inversion: the trajectory ``[z_0, ..., z_N]`` with ``eps`` taken at the known point."""
    trajectory = [z0]
    for k in range(1, schedule.steps + 1):
        z = trajectory[-1]
        eps = eps_fn(z, schedule.timesteps[k])
        trajectory.append(ddim_step(z, eps, schedule.alphas[k - 1], schedule.alphas[k]))
    return trajectory


def sample(eps_fn: EpsFn, schedule: Schedule, z: torch.Tensor) -> torch.Tensor:
    """Plain deterministic DDIM sampling from level N to level 0."""
    for k in range(schedule.steps, 0, -1):
        z = sample_step(eps_fn, schedule, z, k)
    return z

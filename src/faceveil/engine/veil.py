"""The masked, keyed, deterministic diffusion transform at the heart of faceveil.

``veil`` maps a clean latent to a clean latent: invert to noise inside the face mask,
flip the noise's signs with the key's pattern, and sample back while the region outside
the mask follows a *context trajectory*. Because the flip is its own inverse, applying
``veil`` twice with the same signs returns the input; how exactly depends on how
exactly each inversion step undoes a sampling step, which ``refine_iters`` controls.

Context trajectories (what re-injection puts outside the mask at every level):

- ``"noised"`` (default): the forward-noised context ``sqrt(a) c + sqrt(1 - a) n``
  with public noise ``n``: the cheapest exact choice, and the one whose fixed-point
  refinement converged fastest in our measurements (see README).
- ``"inverted"``: DDIM inversion of the *context latent*, a latent of the
  image with the face region filled from its surroundings. Anonymization and recovery
  compute the same context from pixels they share bit for bit, so the masked
  inversion at recovery meets exactly the trajectory the sampler followed (as with
  ``"noised"``); costs N more UNet evaluations.
- ``"own"``: the paper: the input's own inversion trajectory (the anonymized image's
  at recovery). Recovery can then never be exact; kept as the reference baseline.

The engine knows nothing of photos, files or keys: it takes tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from faceveil.engine.ddim import EpsFn, Schedule, ddim_step, invert, sample_step

CONTEXTS = ("inverted", "noised", "own")
MIXINGS = ("signs", "pairs")
MIN_NOISE_GAIN, MAX_NOISE_GAIN = 0.5, 2.0


@dataclass(frozen=True)
class EngineSettings:
    """Everything that fixes the transform; stored in the header so recovery repeats it."""

    # Defaults measured on the embedded model (benchmarks/step_defaults.py): exactness comes
    # from the replayed residual, so refinement only buys a closer model reconstruction,
    # which the header's residual does not need; 20 plain steps detect and de-identify
    # as well as 50 refined ones at 80 instead of 637 UNet evaluations per face.
    steps: int = 20
    refine_iters: int = 0
    refine_tol: float = 1e-5
    context: str = "noised"
    # "pairs" also swaps keyed pairs of coordinates inside the mask, which moves every noise
    # magnitude to a secret place (the magnitude linkage of plain sign flips, METHOD.md);
    # measured no worse in identity removal, detection and exactness (README, "Security").
    # "signs" is the paper's operation. Headers without the field were made with "signs".
    mixing: str = "pairs"
    # The scrambled noise's gain inside the mask (recovery divides by it). DDIM inversion of a
    # face gives noise of standard deviation about 0.65 there with faceveil-faces-96 (1.0 is a
    # sample's): sampled back as it is, that is a low temperature, a smooth face near the mean,
    # much the same for every key; a gain above 1 draws from nearer the model's real
    # distribution (TRAINING.md, "Noise gain"). 1.0 is the paper's; headers without the field had 1.0.
    noise_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {', '.join(MIXINGS)}")
        if self.steps < 1 or self.refine_iters < 0 or self.refine_tol < 0:
            raise ValueError("steps must be >= 1, refine_iters and refine_tol >= 0")
        if not MIN_NOISE_GAIN <= self.noise_gain <= MAX_NOISE_GAIN:
            raise ValueError(f"noise_gain must be between {MIN_NOISE_GAIN} and {MAX_NOISE_GAIN}")

    def to_json(self) -> dict:
        data = asdict(self)
        if data["noise_gain"] == 1.0:  # the header of a gain of 1 is the one written before the field existed
            del data["noise_gain"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> EngineSettings:
        return cls(**{k: data[k] for k in ("steps", "refine_iters", "refine_tol", "context")},
                   mixing=data.get("mixing", "signs"), noise_gain=float(data.get("noise_gain", 1.0)))


@dataclass
class VeilStats:
    """What one ``veil`` call cost and how exact its inversion was (for a batch: per sample)."""

    unet_evals: int = 0  # evaluations each sample went through (a batch's evaluation counts once)
    step_residuals: list[list[float]] = field(default_factory=list)  # per inversion step, per sample: max |error|

    @property
    def max_residual(self) -> float:
        """The worst step residual of any sample."""
        return max((max(step) for step in self.step_residuals if step), default=0.0)

    def sample_residual(self, index: int) -> float:
        """The worst step residual of sample ``index`` of the batch."""
        return max((step[index] for step in self.step_residuals), default=0.0)


class _CountingEps:
    def __init__(self, eps_fn: EpsFn, stats: VeilStats):
        self.eps_fn, self.stats = eps_fn, stats

    def __call__(self, z: torch.Tensor, t: int) -> torch.Tensor:
        self.stats.unet_evals += 1
        return self.eps_fn(z, t)


def noised_trajectory(schedule: Schedule, context: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
    """``[sqrt(a_k) c + sqrt(1 - a_k) n for each level k]``: the forward-noised context."""
    return [a**0.5 * context + (1 - a) ** 0.5 * noise for a in schedule.alphas]


def _per_sample_max(x: torch.Tensor) -> torch.Tensor:
    return x.abs().flatten(1).amax(dim=1)


def masked_invert(
    eps_fn: EpsFn,
    schedule: Schedule,
    z0: torch.Tensor,
    mask: torch.Tensor,
    context: list[torch.Tensor] | None,
    refine_iters: int,
    refine_tol: float,
    stats: VeilStats,
) -> list[torch.Tensor]:
    """Invert the masked sampler: levels ``w_0..w_N`` such that sampling back reproduces ``z0``.

    Outside ``mask`` each level is pinned to ``context`` (None: no pinning, mask is all
    ones). Each step starts from plain DDIM inversion and is refined by the fixed-point
    iteration ``z <- invert(w_prev, eps(z))`` until a sampling step from ``z`` lands on
    ``w_prev`` within ``refine_tol`` (max abs), or ``refine_iters`` iterations are spent.
    Where the iteration overshoots (the noise predictor is steep there), it backtracks
    with halved steps from the best point so far, so the residual never grows. A batch
    (first dimension) is refined sample by sample: a converged sample stays where it is
    while the others go on.
    """

    def pin(z: torch.Tensor, k: int) -> torch.Tensor:
        return z if context is None else mask * z + (1 - mask) * context[k]

    def per_sample(flags: torch.Tensor) -> torch.Tensor:  # (B,) -> broadcastable to z
        return flags.view(-1, *([1] * (z0.dim() - 1)))

    batch = z0.shape[0]
    w = [pin(z0, 0)]
    for k in range(1, schedule.steps + 1):
        prev, a_prev, a_k, t = w[-1], schedule.alphas[k - 1], schedule.alphas[k], schedule.timesteps[k]
        z = pin(ddim_step(prev, eps_fn(prev, t), a_prev, a_k), k)
        best_z, best_move = z, torch.zeros_like(z)
        best_residual = torch.full((batch,), float("inf"), dtype=torch.float64)
        damping = torch.ones(batch, dtype=z.dtype, device=z.device)
        for _ in range(refine_iters):
            eps = eps_fn(z, t)
            residual = _per_sample_max((ddim_step(z, eps, a_k, a_prev) - prev) * mask).double().cpu()
            better = residual < best_residual  # progress: keep it, take the full fixed-point step from there
            b = per_sample(better.to(z.device))
            best_move = torch.where(b, pin(ddim_step(prev, eps, a_prev, a_k), k) - z, best_move)
            best_z = torch.where(b, z, best_z)
            best_residual = torch.where(better, residual, best_residual)
            damping = torch.where(better.to(z.device), torch.ones_like(damping), damping * 0.5)  # else backtrack
            done = best_residual <= refine_tol
            if bool(done.all()):
                break
            z = torch.where(per_sample(done.to(z.device)), best_z, best_z + per_sample(damping) * best_move)
        stats.step_residuals.append(best_residual.tolist() if refine_iters else [float("nan")] * batch)
        w.append(best_z)
    return w


def masked_sample(
    eps_fn: EpsFn, schedule: Schedule, zN: torch.Tensor, mask: torch.Tensor, context: list[torch.Tensor]
) -> torch.Tensor:
    """Sample from level N to 0, re-injecting ``context[k]`` outside ``mask`` at every level."""
    z = mask * zN + (1 - mask) * context[-1]
    for k in range(schedule.steps, 0, -1):
        z = mask * sample_step(eps_fn, schedule, z, k) + (1 - mask) * context[k - 1]
    return z


def scramble(z: torch.Tensor, signs: torch.Tensor, partner: torch.Tensor | None = None) -> torch.Tensor:
    """The key's operation on noise: ``signs * z``, or with ``partner``, ``s_i * z[partner(i)]``.

    ``partner`` indexes each sample's flattened coordinates: shape (N,) for one sample,
    (B, N) for a batch, one involution per sample. Paired coordinates share one sign, so
    applying it twice gives ``z`` back.
    """
    if partner is None:
        return signs * z
    batch = z.shape[0]
    flat, s = z.reshape(batch, -1), signs.expand_as(z).reshape(batch, -1)
    partner = partner.to(z.device).reshape(-1, flat.shape[1]).expand(batch, -1)
    index = torch.arange(flat.shape[1], device=z.device).expand(batch, -1)
    shared = torch.where(partner < index, torch.gather(s, 1, partner), s)  # each pair takes its first member's sign
    return (shared * torch.gather(flat, 1, partner)).reshape(z.shape)


def masked_scramble(zN: torch.Tensor, mask: torch.Tensor, signs: torch.Tensor, noise_gain: float,
                    partner: torch.Tensor | None = None, inverse: bool = False) -> torch.Tensor:
    """The noise the sampler starts from: inside ``mask`` the key's :func:`scramble` of ``zN`` times
    ``noise_gain`` (divided by it, ``inverse``: recovery's direction), outside it ``zN`` as it is."""
    gain = 1.0 / noise_gain if inverse else noise_gain
    return mask * gain * scramble(zN, signs, partner) + (1 - mask) * zN


def veil(
    eps_fn: EpsFn,
    schedule: Schedule,
    z0: torch.Tensor,
    mask: torch.Tensor,
    signs: torch.Tensor,
    settings: EngineSettings,
    context_latent: torch.Tensor | None = None,
    context_noise: torch.Tensor | None = None,
    partner: torch.Tensor | None = None,
    inverse: bool = False,
) -> tuple[torch.Tensor, VeilStats]:
    """Anonymize (or, with the same ``signs`` and ``inverse``, recover) clean latents ``z0`` (a batch of B, first dimension).

    ``mask`` (broadcastable to ``z0``, 1 inside the face) and ``signs`` (+1/-1, shape of
    ``z0``) select and flip the noise; every sample has its own. ``context_latent`` is required for the
    ``"inverted"`` and ``"noised"`` contexts, ``context_noise`` for ``"noised"``.
    ``partner`` (an involution of each sample's flat indices, see ``Key.pairing``; (B, N))
    also swaps paired noise coordinates; the whole key operation stays its own inverse.
    The scrambled noise is multiplied by ``settings.noise_gain`` (``inverse``: divided, as
    recovery must); with a gain of 1 ``inverse`` changes nothing.
    The samples of a batch go through the UNet together, one evaluation per step for all.
    """
    stats = VeilStats()
    counted = _CountingEps(eps_fn, stats)
    mask = mask.to(z0.dtype).expand_as(z0)
    zN, context = masked_noise(counted, schedule, z0, mask, settings, context_latent, context_noise, stats)
    flipped = masked_scramble(zN, mask, signs, settings.noise_gain, partner, inverse)
    return masked_sample(counted, schedule, flipped, mask, context), stats


def masked_noise(
    eps_fn: EpsFn,
    schedule: Schedule,
    z0: torch.Tensor,
    mask: torch.Tensor,
    settings: EngineSettings,
    context_latent: torch.Tensor | None = None,
    context_noise: torch.Tensor | None = None,
    stats: VeilStats | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The noise ``z_N`` that ``veil`` scrambles, and the context trajectory it re-injects.

    Needs no key: anyone with the public settings can compute it (the linkage attack of
    ``faceveil.evaluate`` does, to measure what the key's mixing hides).
    """
    stats = stats if stats is not None else VeilStats()
    mask = mask.to(z0.dtype).expand_as(z0)
    if settings.context == "own":
        trajectory = masked_invert(
            eps_fn, schedule, z0, torch.ones_like(z0), None, settings.refine_iters, settings.refine_tol, stats
        )
        return trajectory[-1], trajectory
    if context_latent is None:
        raise ValueError(f"context {settings.context!r} needs a context latent")
    if settings.context == "inverted":
        context = invert(eps_fn, schedule, context_latent)
    else:
        if context_noise is None:
            raise ValueError("context 'noised' needs context noise")
        context = noised_trajectory(schedule, context_latent, context_noise)
    zN = masked_invert(eps_fn, schedule, z0, mask, context, settings.refine_iters, settings.refine_tol, stats)[-1]
    return zN, context

"""The keyed masked DDIM transform on tiny diffusers models (random weights)."""

import pytest
import torch

from faceveil.engine import EngineSettings, Schedule, ddim_step, invert, sample, veil
from faceveil.keys import Key, new_nonce, public_gaussian


def _setup(model, steps=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, n = model.latent_channels, model.latent_size
    z0 = torch.randn(1, c, n, n, generator=g) * 0.5
    mask = torch.zeros(1, 1, n, n)
    mask[..., n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1
    nonce = new_nonce()
    schedule = Schedule.from_scheduler(model.scheduler, steps)
    noise = torch.from_numpy(public_gaussian(nonce, tuple(z0.shape)))
    context = z0 * (1 - mask)
    return z0, mask, nonce, schedule, noise, context


def _signs(key, nonce, z):
    return torch.from_numpy(key.sign_pattern(nonce, tuple(z.shape)))


def test_ddim_step_is_exactly_invertible_for_fixed_eps():
    z, e = torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    back = ddim_step(ddim_step(z, e, 0.9, 0.2), e, 0.2, 0.9)
    assert torch.allclose(back, z, atol=1e-12)


def test_schedule_levels():
    from faceveil.testing import tiny_pixel_model

    s = Schedule.from_scheduler(tiny_pixel_model(16).scheduler, 50)
    assert s.steps == 50 and s.alphas[0] == 1.0
    assert list(s.timesteps[1:]) == sorted(s.timesteps[1:])
    assert all(a > b for a, b in zip(s.alphas, s.alphas[1:]))


@pytest.mark.parametrize("which", ["pixel_model", "latent_model"])
def test_key_round_trip_is_exact_at_the_latent_level(which, request):
    model = request.getfixturevalue(which)
    z0, mask, nonce, schedule, noise, context = _setup(model)
    key = Key.generate()
    settings = EngineSettings(steps=10, refine_iters=10, refine_tol=1e-6)
    anon, stats = veil(model.eps, schedule, z0, mask, _signs(key, nonce, z0), settings, context, noise)
    back, _ = veil(model.eps, schedule, anon, mask, _signs(key, nonce, z0), settings, context, noise)
    inside = mask.expand_as(z0) > 0
    assert (anon - z0)[inside].abs().mean() > 0.1  # the face changed
    assert torch.equal(anon[~inside], context[~inside])  # outside: the context, exactly
    # measured: max |error| about 5e-5 (float32 round-off); plain inversion is far worse (below)
    assert (back - z0)[inside].abs().max() < 1e-3
    assert stats.max_residual < 1e-4


def test_refinement_beats_plain_inversion(pixel_model):
    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    key = Key.generate()
    errors = {}
    for iters in (0, 10):
        settings = EngineSettings(steps=10, refine_iters=iters, refine_tol=1e-6)
        signs = _signs(key, nonce, z0)
        anon, _ = veil(pixel_model.eps, schedule, z0, mask, signs, settings, context, noise)
        back, _ = veil(pixel_model.eps, schedule, anon, mask, signs, settings, context, noise)
        errors[iters] = float((back - z0).abs().max())
    assert errors[10] < errors[0] / 100


def test_same_key_and_nonce_identical_different_keys_differ(pixel_model):
    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    settings = EngineSettings(steps=5, refine_iters=3)
    k1, k2 = Key.generate(), Key.generate()
    a, _ = veil(pixel_model.eps, schedule, z0, mask, _signs(k1, nonce, z0), settings, context, noise)
    b, _ = veil(pixel_model.eps, schedule, z0, mask, _signs(k1, nonce, z0), settings, context, noise)
    c, _ = veil(pixel_model.eps, schedule, z0, mask, _signs(k2, nonce, z0), settings, context, noise)
    assert torch.equal(a, b)
    inside = mask.expand_as(z0) > 0
    assert (a - c)[inside].abs().mean() > 0.1


def test_wrong_key_does_not_recover(pixel_model):
    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    settings = EngineSettings(steps=5, refine_iters=5)
    anon, _ = veil(pixel_model.eps, schedule, z0, mask, _signs(Key.generate(), nonce, z0), settings, context, noise)
    wrong, _ = veil(pixel_model.eps, schedule, anon, mask, _signs(Key.generate(), nonce, z0), settings, context, noise)
    inside = mask.expand_as(z0) > 0
    assert (wrong - z0)[inside].abs().mean() > 0.1


def test_paper_context_is_not_exactly_reversible(pixel_model):
    """The paper's re-injection of the input's own trajectory: recovery drifts."""
    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    settings = EngineSettings(steps=10, refine_iters=10, refine_tol=1e-6, context="own")
    signs = _signs(Key.generate(), nonce, z0)
    anon, _ = veil(pixel_model.eps, schedule, z0, mask, signs, settings)
    back, _ = veil(pixel_model.eps, schedule, anon, mask, signs, settings)
    assert float((back - z0).abs().max()) > 1e-2


def test_plain_sampling_and_inversion_shapes(latent_model):
    schedule = Schedule.from_scheduler(latent_model.scheduler, 4)
    z = torch.randn(1, 3, 8, 8)
    trajectory = invert(latent_model.eps, schedule, z)
    assert len(trajectory) == 5 and sample(latent_model.eps, schedule, trajectory[-1]).shape == z.shape


def test_pair_mixing_round_trip_and_moves_magnitudes(pixel_model):
    from faceveil.engine import scramble

    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    key = Key.generate()
    inside = mask.expand_as(z0) > 0
    partner = torch.from_numpy(key.pairing(nonce, tuple(z0.shape), inside.numpy()))
    signs = _signs(key, nonce, z0)
    z = torch.randn(z0.shape)
    mixed = scramble(z, signs, partner)
    assert torch.equal(scramble(mixed, signs, partner), z)  # its own inverse
    moved = (mixed.abs() != z.abs())[inside].float().mean()
    assert moved > 0.99  # magnitudes no longer sit where they were (sign flips alone keep all of them)
    assert torch.equal(mixed.abs()[inside].sort().values, z.abs()[inside].sort().values)
    settings = EngineSettings(steps=10, refine_iters=10, refine_tol=1e-6, mixing="pairs")
    anon, _ = veil(pixel_model.eps, schedule, z0, mask, signs, settings, context, noise, partner)
    back, _ = veil(pixel_model.eps, schedule, anon, mask, signs, settings, context, noise, partner)
    assert (anon - z0)[inside].abs().mean() > 0.1 and (back - z0)[inside].abs().max() < 1e-3


def test_unconverged_inversion_is_still_exact_with_the_residual(pixel_model):
    """Plain DDIM inversion (no refinement) misses by far; the replayed residual makes it exact."""
    import numpy as np

    from faceveil.pipeline import Settings, anonymize_array, recover_array

    rng = np.random.default_rng(0)
    rgb = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    key = Key.generate()
    settings = Settings(EngineSettings(steps=4, refine_iters=0))
    veiled, record, reports = anonymize_array(rgb, key, pixel_model, settings=settings)
    assert not reports[0].max_inversion_residual <= 1e-4  # NaN: no refinement at all
    back, info = recover_array(veiled, record, key, pixel_model)
    assert info.used_residual and np.array_equal(back, rgb)
    without, _ = recover_array(veiled, record, key, pixel_model, use_residual=False)
    assert np.abs(without.astype(int) - rgb).max() > 10  # what the residual had to repair


def test_noise_gain_round_trip_and_header(pixel_model):
    """A noise gain multiplies the scrambled noise; recovery (``inverse``) divides by it, so the
    round trip holds as without it; a gain of 1 writes the header it always did."""
    z0, mask, nonce, schedule, noise, context = _setup(pixel_model)
    key = Key.generate()
    settings = EngineSettings(steps=10, refine_iters=10, refine_tol=1e-6, noise_gain=1.3)
    signs = _signs(key, nonce, z0)
    anon, _ = veil(pixel_model.eps, schedule, z0, mask, signs, settings, context, noise)
    back, _ = veil(pixel_model.eps, schedule, anon, mask, signs, settings, context, noise, inverse=True)
    wrong, _ = veil(pixel_model.eps, schedule, anon, mask, signs, settings, context, noise)  # multiplied twice
    inside = mask.expand_as(z0) > 0
    assert (back - z0)[inside].abs().max() < 1e-3 < (wrong - z0)[inside].abs().max()
    plain, _ = veil(pixel_model.eps, schedule, z0, mask, signs, EngineSettings(steps=10, refine_iters=10, refine_tol=1e-6), context, noise)
    assert not torch.allclose(plain, anon)  # the gain changes the new face
    assert EngineSettings.from_json(settings.to_json()) == settings
    assert "noise_gain" not in EngineSettings().to_json() and EngineSettings.from_json(EngineSettings().to_json()).noise_gain == 1.0
    with pytest.raises(ValueError, match="noise_gain"):
        EngineSettings(noise_gain=3.0)

"""Window arithmetic, the pure augmentation functions and their random -> deterministic classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretext.errors import ConfigError, UserError
from signalssl.sampling import seconds_to_samples, sliding_windows, window_counts
from signalssl.transforms import (
    AugmentParams,
    RandomBaselineWander,
    RandomLeadDropout,
    RandomNoise,
    RandomScale,
    RandomTimeMask,
    SignalAugment,
    apply_baseline_wander,
    apply_lead_dropout,
    apply_noise,
    apply_scale,
    apply_time_mask,
    channel_std,
    perturb_signal,
)


def test_sliding_windows_match_a_loop() -> None:
    lengths = np.array([2500, 900, 1000, 0, 3100])
    rec, start = sliding_windows(lengths, 1000, 400)
    expected = []
    for r, n in enumerate(lengths):
        if 0 < n < 1000:
            expected.append((r, 0))
        s = 0
        while s + 1000 <= n:
            expected.append((r, s))
            s += 400
    assert list(zip(rec.tolist(), start.tolist(), strict=True)) == expected
    assert window_counts(lengths, 1000, 400, pad_short=False).tolist() == [4, 0, 1, 0, 6]
    with pytest.raises(UserError, match="window"):
        window_counts(lengths, 0, 1)
    assert seconds_to_samples(2.5, 100.0) == 250
    with pytest.raises(UserError, match="stride"):
        seconds_to_samples(-1, 100.0, "stride")


def test_pure_functions() -> None:
    x = torch.ones(2, 3, 10)
    y = apply_time_mask(x, torch.tensor([2, 0]), torch.tensor([3, 0]))
    assert y[0, :, 2:5].abs().sum() == 0 and y[0, :, :2].eq(1).all() and y[1].eq(1).all()
    keep = torch.tensor([[True, False, True], [True, True, True]])
    assert apply_lead_dropout(x, keep)[0, 1].abs().sum() == 0
    assert apply_scale(x, torch.tensor([2.0, 0.5]))[1].eq(0.5).all()
    w = apply_baseline_wander(torch.zeros(1, 1, 100), torch.ones(1, 1), torch.tensor([1.0]), torch.tensor([0.0]), 100.0)
    assert torch.allclose(w[0, 0, 25], torch.tensor(1.0), atol=1e-5)  # sin(2*pi*0.25)


def test_augment_seeded_and_shape_preserving() -> None:
    x = torch.randn(4, 3, 200)
    aug = SignalAugment(("noise", "wander", "scale", "mask", "dropout"), sfreq=100.0)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(SignalAugment((), 100.0)(x), x)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        SignalAugment(("flip",))


def test_dropout_keeps_a_channel() -> None:
    aug = SignalAugment(("dropout",), params=AugmentParams(p=1.0, dropout_p=1.0))
    y = aug(torch.ones(8, 4, 10), torch.Generator().manual_seed(0))
    assert (y.abs().sum(-1) > 0).sum(1).eq(1).all()


def test_random_transforms_are_params_then_apply() -> None:
    """``T(x, g)`` equals ``T.get_params(x.shape, g)(x)``; SignalAugment draws its parts in order from one generator."""
    x = torch.randn(4, 3, 200)
    parts = [RandomBaselineWander(p=0.7), RandomNoise(p=0.7), RandomScale(p=0.7), RandomTimeMask(p=0.7),
             RandomLeadDropout(p=0.7)]
    g = torch.Generator().manual_seed(3)
    expected = x
    for t in parts:
        params = t.get_params(x.shape, g)
        assert torch.equal(params(x), params(x))  # deterministic once drawn
        expected = params(expected)
    got = SignalAugment(("noise", "wander", "scale", "mask", "dropout"), sfreq=100.0, params=AugmentParams(p=0.7))
    assert torch.equal(got(x, torch.Generator().manual_seed(3)), expected)
    with pytest.raises(ConfigError, match="p="):
        RandomNoise(p=2.0)


def test_perturbation_is_wander_then_noise() -> None:
    """The audit's perturbation is the wander and noise pure functions on the drawn parameters."""
    x = torch.randn(2, 3, 256)
    g = torch.Generator().manual_seed(0)
    freq = 0.05 + 0.45 * torch.rand(2, 3, generator=g)
    phase = 2 * torch.pi * torch.rand(2, 3, generator=g)
    white = torch.randn(2, 3, 256, generator=g)
    wandered = apply_baseline_wander(x, 0.1 * channel_std(x), freq, phase, 100.0)
    expected = apply_noise(wandered, white, 0.03 * channel_std(wandered))
    torch.testing.assert_close(perturb_signal(x, torch.Generator().manual_seed(0)), expected, rtol=0, atol=1e-6)

"""Shared losses: values against hand-written references, fp32 under autocast, masks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretext.heads import LinearHead, ProjectionHead
from pretext.losses import info_nce, masked_mse, multi_positive_nt_xent, nt_xent, positive_mask_from_groups


def _simclr_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent written out row by row (SimCLR paper, eq. 1)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        sims = torch.stack([z[i] @ z[k] / t for k in range(n) if k != i])
        total = total + (-(z[i] @ z[j] / t) + torch.logsumexp(sims, 0))
    return total / n


def test_nt_xent_matches_reference() -> None:
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(nt_xent(z1, z2, 0.1), _simclr_reference(z1, z2, 0.1), atol=1e-5)


def test_nt_xent_multi_positive_groups() -> None:
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    # distinct groups = plain NT-Xent
    assert torch.allclose(nt_xent(z1, z2, groups=torch.arange(4)), nt_xent(z1, z2), atol=1e-6)
    mask = positive_mask_from_groups(torch.tensor([0, 0, 1, 2]))
    assert mask.shape == (8, 8) and not mask.diagonal().any()
    assert mask[0, 1] and mask[0, 4] and mask[0, 5] and not mask[0, 2]
    # rows 0 and 1 now have 3 positives each: the loss differs from the pair-only one
    assert not torch.allclose(nt_xent(z1, z2, groups=torch.tensor([0, 0, 1, 2])), nt_xent(z1, z2))


def test_multi_positive_nt_xent_perfect_embedding_is_low() -> None:
    base = F.one_hot(torch.arange(4), 8).float()
    low = nt_xent(base, base.clone(), temperature=0.1)
    high = nt_xent(base, base.roll(1, 0), temperature=0.1)
    assert low < 0.01 < high
    with pytest.raises(ValueError, match="no row has a positive"):
        multi_positive_nt_xent(torch.randn(3, 4), torch.zeros(3, 3, dtype=torch.bool))


def test_info_nce_targets_and_uniform_value() -> None:
    q = torch.zeros(3, 4)
    k = torch.randn(6, 4)
    # all logits equal -> loss is log(M)
    assert math.isclose(float(info_nce(q, k, targets=torch.tensor([0, 3, 5]))), math.log(6), rel_tol=1e-6)
    q, k = torch.randn(4, 5), torch.randn(4, 5)
    ref = F.cross_entropy(q @ k.T / 0.5, torch.arange(4))
    assert torch.allclose(info_nce(q, k, temperature=0.5), ref)
    with pytest.raises(ValueError, match="as many keys"):
        info_nce(torch.randn(5, 2), torch.randn(3, 2))


def test_losses_are_fp32_under_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1 = torch.nn.Linear(4, 4)(torch.randn(3, 4))
        assert z1.dtype == torch.bfloat16
        assert nt_xent(z1, z1 + 1).dtype == torch.float32
        assert info_nce(z1, z1).dtype == torch.float32
        assert masked_mse(z1, z1 * 0, torch.ones(3, 1)).dtype == torch.float32


def test_masked_mse() -> None:
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)
    assert float(masked_mse(pred, target, torch.tensor([True, False, True]))) == pytest.approx(5.0)
    assert float(masked_mse(pred, target)) == pytest.approx(14 / 3)
    assert float(masked_mse(pred, target, torch.zeros(3, dtype=torch.bool))) == 0.0


def test_heads_shapes_and_bad_args() -> None:
    head = ProjectionHead(16, 32, 8, num_layers=3)
    assert head(torch.randn(4, 16)).shape == (4, 8)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 3
    assert LinearHead(16, 3, batch_norm=True)(torch.randn(4, 16)).shape == (4, 3)
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(4, num_layers=0)
    with pytest.raises(ValueError, match="num_classes"):
        LinearHead(4, 0)

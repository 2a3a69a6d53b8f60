"""Joint-embedding losses and heads against lightly's (the parity the issue asks for), and patient-aware negatives."""

from __future__ import annotations

import pytest
import torch

from pretext.heads import DINOHead, ProjectionHead
from pretext.losses import dino_center, dino_loss, nt_xent, vicreg_loss


def _z(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_lightly(temperature: float) -> None:
    from lightly.loss import NTXentLoss

    z1, z2 = _z(16, 32), _z(16, 32, seed=1)
    ours = nt_xent(z1, z2, temperature)
    theirs = NTXentLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # distinct patients: excluding same-patient rows changes nothing
    torch.testing.assert_close(nt_xent(z1, z2, temperature, groups=torch.arange(16), same_group="exclude"), theirs,
                               rtol=1e-5, atol=1e-6)


def test_nt_xent_gradients_match_lightly() -> None:
    from lightly.loss import NTXentLoss

    a1, a2 = _z(8, 16).requires_grad_(), _z(8, 16, seed=1).requires_grad_()
    b1, b2 = a1.detach().clone().requires_grad_(), a2.detach().clone().requires_grad_()
    nt_xent(a1, a2, 0.2).backward()
    NTXentLoss(temperature=0.2)(b1, b2).backward()
    torch.testing.assert_close(a1.grad, b1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a2.grad, b2.grad, rtol=1e-4, atol=1e-6)


def test_vicreg_matches_lightly() -> None:
    from lightly.loss import VICRegLoss

    z1, z2 = _z(32, 64), _z(32, 64, seed=1) * 0.3 + 1
    torch.testing.assert_close(vicreg_loss(z1, z2), VICRegLoss()(z1, z2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vicreg_loss(z1, z2, 10, 5, 2), VICRegLoss(10, 5, 2)(z1, z2), rtol=1e-5, atol=1e-5)


def test_dino_loss_and_centre_match_lightly() -> None:
    from lightly.loss import DINOLoss

    k = 64
    teacher = [_z(8, k, seed=s) for s in (0, 1)]
    student = [_z(8, k, seed=s) for s in (2, 3, 4, 5)]  # 2 global + 2 local
    ref = DINOLoss(output_dim=k, teacher_temp=0.04, warmup_teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    center = torch.zeros(1, k)
    for _ in range(3):  # the centre moves: the second and third calls check it too
        theirs = ref(teacher, student)
        ours = dino_loss(student, teacher, center, 0.04, 0.1)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        center = dino_center(center, teacher, 0.9)
        torch.testing.assert_close(center, ref.center.reshape(1, k), rtol=1e-6, atol=1e-7)


def test_heads_match_lightly_shapes_and_parameter_counts() -> None:
    from lightly.models.modules.heads import DINOProjectionHead, SimCLRProjectionHead

    ours, theirs = ProjectionHead(64, 128, 32, 2), SimCLRProjectionHead(64, 128, 32)
    x = _z(4, 64)
    assert ours(x).shape == theirs(x).shape == (4, 32)
    d_ours = DINOHead(64, 128, 16, 256, 3)
    d_theirs = DINOProjectionHead(64, 128, 16, 256)
    assert sum(p.numel() for p in d_ours.parameters()) == sum(p.numel() for p in d_theirs.parameters())
    out = d_ours(_z(4, 64))
    assert out.shape == (4, 256)
    # weight-normalised prototypes with unit gain over L2-normalised inputs: logits bounded by 1
    assert float(out.abs().max()) <= 1.0 + 1e-5


def test_same_patient_rows_are_never_negatives() -> None:
    """With ``same_group="exclude"`` a row's loss does not depend on how close it is to other items of its
    patient; with plain NT-Xent it does."""
    z1, z2 = _z(6, 8), _z(6, 8, seed=1)
    groups = torch.tensor([0, 0, 1, 2, 3, 3])
    moved = z1.clone()
    moved[1] = z1[0] * 3.0  # item 1 (patient 0) made identical in direction to item 0
    moved2 = z2.clone()
    moved2[1] = z1[0] * 2.0
    a = nt_xent(z1, z2, 0.1, groups=groups, same_group="exclude")
    b = nt_xent(moved, moved2, 0.1, groups=groups, same_group="exclude")
    # rows of items 0 and 1 changed only in their mutual similarity, and rows 2-5 see items 0/1 as negatives:
    # compare the per-row terms of rows 0 (view 1) directly
    from pretext.losses import multi_positive_nt_xent, positive_mask_from_groups

    def row_losses(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.normalize(torch.cat([x1, x2]), dim=-1)
        pairs = positive_mask_from_groups(torch.arange(6))
        same = positive_mask_from_groups(groups)
        drop = torch.eye(12, dtype=torch.bool) | (same & ~pairs)
        logits = (z @ z.T / 0.1).masked_fill(drop, float("-inf"))
        logp = logits - torch.logsumexp(logits, 1, keepdim=True)
        return -(logp.masked_fill(~pairs, 0).sum(1))

    torch.testing.assert_close(row_losses(z1, z2).mean(), a)
    torch.testing.assert_close(row_losses(moved, moved2).mean(), b)
    # row 0's loss: its positive is z2[0]; item 1 (same patient) is excluded, so row 0 ignores where item 1 is
    z1c, z2c = z1.clone(), z2.clone()
    z1c[1], z2c[1] = -z1[0], -z1[0]  # item 1 moved far away from item 0
    torch.testing.assert_close(row_losses(z1, z2)[0], row_losses(z1c, z2c)[0])
    plain = multi_positive_nt_xent(torch.cat([z1, z2]), positive_mask_from_groups(torch.arange(6)))
    plain_moved = multi_positive_nt_xent(torch.cat([z1c, z2c]), positive_mask_from_groups(torch.arange(6)))
    assert not torch.allclose(plain, plain_moved)

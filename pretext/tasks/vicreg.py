"""VICReg (Bardes, Ponce and LeCun, ICLR 2022) for any modality: variance-invariance-covariance regularisation
of two views' projections; no negatives, no teacher.

The loss equals lightly's ``VICRegLoss`` (tested in ``tests/pretext/test_joint_losses.py``). With no negatives,
items of one patient are never negatives here by construction; ``pairing="patient"`` makes two records of one
patient the two views.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from pretext.base import Batch
from pretext.capabilities import PooledFeatures
from pretext.config import Field
from pretext.heads import ProjectionHead
from pretext.joint import JointConfig, JointEmbedding
from pretext.losses import vicreg_loss
from pretext.registry import register_task

__all__ = ["VICReg"]


@register_task("vicreg", modality="any")
class VICReg(JointEmbedding):
    """VICReg: invariance + variance + covariance terms on a 3-layer expander of two views."""

    name = "vicreg"

    class Config(JointConfig):
        """VICReg options (and ``pairing``, ``views``: :class:`pretext.joint.JointConfig`).

        Attributes:
            sim_weight: weight of the invariance (MSE) term (lambda, 25).
            var_weight: weight of the variance hinge (mu, 25).
            cov_weight: weight of the covariance term (nu, 1).
            proj_hidden: hidden width of the expander (8192 in the paper; smaller for small encoders).
            proj_dim: output width of the expander.
            proj_layers: linear layers of the expander (3 in the paper; BatchNorm + ReLU between).
        """

        sim_weight: float = Field(25.0, ge=0)
        var_weight: float = Field(25.0, ge=0)
        cov_weight: float = Field(1.0, ge=0)
        proj_hidden: int = Field(1024, ge=1)
        proj_dim: int = Field(1024, ge=1)
        proj_layers: int = Field(3, ge=1)

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        c = self.cfg
        self.head = ProjectionHead(int(cast(PooledFeatures, encoder).num_features), c.proj_hidden, c.proj_dim, c.proj_layers)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v1, v2 = self.two_views(batch, generator)
        z1, z2 = self.embed([v1, v2], self.head)
        c = self.cfg
        loss = vicreg_loss(z1, z2, c.sim_weight, c.var_weight, c.cov_weight)
        with torch.no_grad():
            a, b = z1.float(), z2.float()
            out = {"loss": loss, "invariance": F.mse_loss(a, b),
                   "proj_std": 0.5 * (a.std(0).mean() + b.std(0).mean())}
        return out

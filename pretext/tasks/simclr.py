"""SimCLR (Chen et al., ICML 2020) for any modality: NT-Xent between two views through a projection MLP.

The views come from the modality adapter (:mod:`pretext.joint`); pairs from the split's pairing. Items of one
patient are never each other's negatives (``same_patient="exclude"``, the default): in a batch with two glands,
two scans or two records of one patient, the other items of that patient are dropped from each row's
denominator. ``same_patient="positive"`` makes them extra positives (PCLR's multi-positive form) and
``"ignore"`` is plain SimCLR.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from pretext.base import Batch
from pretext.capabilities import PooledFeatures
from pretext.config import Field
from pretext.heads import ProjectionHead
from pretext.joint import JointConfig, JointEmbedding
from pretext.losses import nt_xent
from pretext.registry import register_task

__all__ = ["SimCLR"]


@register_task("simclr", modality="any")
class SimCLR(JointEmbedding):
    """SimCLR: NT-Xent (temperature 0.1) on a 2-layer projection of two views; patient-aware negatives."""

    name = "simclr"

    class Config(JointConfig):
        """SimCLR options (and ``pairing``, ``views``: :class:`pretext.joint.JointConfig`).

        Attributes:
            temperature: NT-Xent temperature (0.1: the reference AdrenalMNIST3D run and lightly's default is 0.5;
                SimCLR used 0.1-0.5).
            proj_hidden: hidden width of the projection MLP.
            proj_dim: output width of the projection.
            proj_layers: linear layers of the projection (2 = SimCLR's; BatchNorm + ReLU between).
            same_patient: ``"exclude"`` (never negatives of each other), ``"positive"`` (positives) or
                ``"ignore"`` (plain SimCLR: negatives).
        """

        temperature: float = Field(0.1, gt=0)
        proj_hidden: int = Field(512, ge=1)
        proj_dim: int = Field(128, ge=1)
        proj_layers: int = Field(2, ge=1)
        same_patient: Literal["exclude", "positive", "ignore"] = "exclude"

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        c = self.cfg
        self.head = ProjectionHead(int(cast(PooledFeatures, encoder).num_features), c.proj_hidden, c.proj_dim, c.proj_layers)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v1, v2 = self.two_views(batch, generator)
        z1, z2 = self.embed([v1, v2], self.head)
        mode = self.cfg.same_patient
        groups = batch.get("patient") if mode != "ignore" else None
        loss = nt_xent(z1, z2, self.cfg.temperature, groups=groups, same_group="positive" if mode == "positive"
                       else "exclude")
        with torch.no_grad():
            out = {"loss": loss, "pos_sim": F.cosine_similarity(z1.float(), z2.float(), dim=-1).mean()}
            if groups is not None:
                g = groups.reshape(-1)
                same = (g[:, None] == g[None, :]).float()
                out["same_patient_frac"] = (same.sum() - g.numel()) / max(1, g.numel() * (g.numel() - 1))
        return out

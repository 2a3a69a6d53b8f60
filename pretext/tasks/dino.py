"""DINO (Caron et al., ICCV 2021) for any modality: self-distillation from an EMA teacher with centring and
sharpening, multi-crop (two global views for teacher and student, small local crops for the student only).

The teacher is a copy of the encoder and head whose weights follow the student's by an exponential moving
average: the engine's :class:`pretext.engine.hooks.EMATeacher` updates it after each optimizer step (this task
only declares :meth:`teacher_pairs` and :meth:`teacher_momentum`); it is part of the task's state, so it is in
every checkpoint and a resumed run continues it. ``task.encoder`` (the student) is what downstream uses.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from pretext.base import Batch
from pretext.capabilities import PooledFeatures
from pretext.config import Field, field_validator
from pretext.heads import DINOHead
from pretext.joint import JointConfig, JointEmbedding
from pretext.losses import dino_center, dino_loss
from pretext.registry import register_task

__all__ = ["DINO"]


@register_task("dino", modality="any")
class DINO(JointEmbedding):
    """DINO: EMA teacher, centring + sharpening, multi-crop global and local views."""

    name = "dino"
    center: torch.Tensor  # the teacher-logit centre (a buffer, checkpointed)

    class Config(JointConfig):
        """DINO options (and ``pairing``, ``views``: :class:`pretext.joint.JointConfig`).

        Attributes:
            out_dim: prototypes K of the head (65536 in DINO; 1024 suits small data and CPUs).
            proj_hidden: hidden width of the head's MLP.
            bottleneck_dim: width before the prototypes.
            head_layers: MLP layers of the head.
            teacher_temp: teacher softmax temperature (sharpening).
            student_temp: student softmax temperature.
            center_momentum: EMA momentum of the teacher-logit centre.
            momentum: the teacher's EMA momentum at the start (raised to ``momentum_end`` along a cosine).
            momentum_end: the teacher's EMA momentum at the last step.
            global_scale: crop scale range of the two global views.
            local_crops: number of local crops (0: two global views only).
            local_scale: crop scale range of the local crops.
            local_size: each axis of a local crop as a fraction of the input's (0.5: 14^3 crops of 28^3 cubes); 1.0
                for an encoder built for one input size (``vit_3d``): the small crops are resampled to full size.
        """

        out_dim: int = Field(1024, ge=1)
        proj_hidden: int = Field(512, ge=1)
        bottleneck_dim: int = Field(128, ge=1)
        head_layers: int = Field(3, ge=1)
        teacher_temp: float = Field(0.04, gt=0)
        student_temp: float = Field(0.1, gt=0)
        center_momentum: float = Field(0.9, ge=0, le=1)
        momentum: float = Field(0.996, ge=0, le=1)
        momentum_end: float = Field(1.0, ge=0, le=1)
        global_scale: tuple[float, float] = (0.4, 1.0)
        local_crops: int = Field(4, ge=0)
        local_scale: tuple[float, float] = (0.1, 0.4)
        local_size: float = Field(0.5, gt=0, le=1)

        @field_validator("global_scale", "local_scale")
        @classmethod
        def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
            lo, hi = value
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{list(value)} must be [low, high] with 0 < low <= high <= 1")
            return value

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        c = self.cfg
        self.head = DINOHead(int(cast(PooledFeatures, encoder).num_features), c.proj_hidden, c.bottleneck_dim, c.out_dim, c.head_layers)
        self.teacher_encoder = copy.deepcopy(encoder)
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher_encoder.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, c.out_dim))

    # -- what the engine's EMA hook asks (pretext.engine.hooks.HasTeacher) ---------------------------------
    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.teacher_encoder), (self.head, self.teacher_head)]

    def teacher_momentum(self) -> tuple[float, float]:
        return float(self.cfg.momentum), float(self.cfg.momentum_end)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.cfg
        g1, g2 = self.two_views(batch, generator, crop_scale=tuple(c.global_scale))
        local = self.local_views(batch["x"], c.local_crops, generator, c.local_scale, c.local_size)
        student = self.embed([g1, g2, *local], self.head)
        with torch.no_grad():
            teacher = list(self.teacher_head(cast(PooledFeatures, self.teacher_encoder).forward_features(torch.cat([g1, g2]))).chunk(2))
        loss = dino_loss(student, teacher, self.center, c.teacher_temp, c.student_temp)
        with torch.no_grad():
            if self.training:
                self.center.copy_(dino_center(self.center, teacher, c.center_momentum))
            t = torch.softmax((teacher[0].float() - self.center) / c.teacher_temp, dim=-1)
            entropy = -(t * torch.log(t.clamp(min=1e-12))).sum(-1).mean()
        return {"loss": loss, "teacher_entropy": entropy}

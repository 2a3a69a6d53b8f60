"""PCLR: patient contrastive learning of representations (Diamant et al., PLOS Comp. Biol. 2022).

Positive pairs are two different recordings of the same patient; everything else in the
batch is a negative. :meth:`PCLR.wrap_dataset` pairs items; where a patient has a single
recording it falls back to two windows of that recording (counted and reported). With
``multi_positive`` every item of a patient that appears more than once in a batch is a positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pretext.base import PretextTask, SSLSplit
from pretext.config import ConfigModel, Field, field_validator
from pretext.errors import UserError
from pretext.heads import ProjectionHead
from pretext.losses import nt_xent
from pretext.pairs import PatientPairs, pair_candidates
from pretext.registry import register_task
from signalssl.transforms import AUGMENTATIONS, AugmentParams, SignalAugment

__all__ = ["PCLR", "PatientPairs", "pair_candidates"]


@register_task("pclr", modality="signal")
class PCLR(PretextTask):
    """Patient-contrastive pretraining: NT-Xent between two recordings of the same patient.

    Batch: ``x (B, C, T)``, ``x2 (B, C, T)``, ``patient (B,)`` (from :meth:`wrap_dataset`).
    """

    class Config(ConfigModel):
        """PCLR options.

        Attributes:
            temperature: NT-Xent temperature (0.1 in PCLR).
            proj_dim: projection output width (ignored when ``proj_layers=0``).
            proj_hidden: hidden width of the projection MLP.
            proj_layers: linear layers of the projection head (0 = contrast encoder features directly, as PCLR).
            multi_positive: all same-patient items in a batch are positives of each other.
            pair: "patient" (two recordings, fallback two windows) or "record" (two windows of one recording).
            repeats: partners drawn per item and pass (dataset length = items x repeats).
            augment: augmentations applied to both views, from ("wander", "noise", "scale", "mask", "dropout").
            aug_p: probability of each augmentation per sample.
            sfreq: sampling rate used by baseline wander (set it to the data's rate).
        """

        temperature: float = Field(0.1, gt=0)
        proj_dim: int = Field(128, ge=1)
        proj_hidden: int = Field(512, ge=1)
        proj_layers: int = Field(2, ge=0)
        multi_positive: bool = True
        pair: Literal["patient", "record"] = "patient"
        repeats: int = Field(1, ge=1)
        augment: tuple[str, ...] = ()
        aug_p: float = Field(0.5, ge=0, le=1)
        sfreq: float = Field(100.0, gt=0)

        @field_validator("augment")
        @classmethod
        def _known_augmentations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
            bad = sorted(set(value) - set(AUGMENTATIONS))
            if bad:
                raise ValueError(f"augment {bad} unknown; choose from {AUGMENTATIONS}")
            return value

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        c = self.cfg
        nf = int(encoder.num_features)
        self.head: nn.Module = (ProjectionHead(nf, c.proj_hidden, c.proj_dim, c.proj_layers) if c.proj_layers > 0
                                else nn.Identity())
        self.augment = SignalAugment(c.augment, c.sfreq, AugmentParams(p=c.aug_p))

    @classmethod
    def wrap_dataset(cls, split: SSLSplit, cfg: Any, seed: int = 0) -> Dataset:
        cfg = cfg or cls.Config()
        return PatientPairs(split, seed, cfg.repeats, cfg.pair)

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        if len(input_shape) != 2:
            raise UserError(f"pclr takes signals (C, T); got an item of shape {tuple(input_shape)}")

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if "x2" not in batch:
            raise UserError("pclr needs paired items (key 'x2'): wrap the split with PCLR.wrap_dataset(split, cfg)")
        x1, x2 = batch["x"], batch["x2"]
        if x1.shape[0] < 2:
            raise UserError(f"pclr needs a batch of at least 2 for negatives, got {x1.shape[0]}")
        x1, x2 = self.augment(x1, generator), self.augment(x2, generator)
        z = self.head(self.encoder.forward_features(torch.cat([x1, x2])))
        z1, z2 = z.chunk(2)
        groups = batch["patient"] if self.cfg.multi_positive else None
        loss = nt_xent(z1, z2, self.cfg.temperature, groups=groups)
        with torch.no_grad():
            pos_sim = F.cosine_similarity(z1.float(), z2.float(), dim=-1).mean()
            out = {"loss": loss, "pos_sim": pos_sim}
            if "same_record" in batch:
                out["same_record_frac"] = batch["same_record"].float().mean()
            if groups is not None:
                out["dup_patient_frac"] = 1.0 - torch.unique(groups).numel() / groups.numel() * torch.ones((), device=z.device)
        return out

"""PCLR: patient contrastive learning of representations (Diamant et al., PLOS Comp. Biol. 2022).

Positive pairs are two different recordings of the same patient; everything else in the
batch is a negative. :meth:`PCLR.wrap_dataset` pairs items; where a patient has a single
recording it falls back to two windows of that recording (counted and reported). With
``multi_positive`` every item of a patient that appears more than once in a batch is a positive.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pretext.base import PretextTask, SSLSplit
from pretext.config import ConfigModel, Field, field_validator
from pretext.errors import UserError
from pretext.heads import ProjectionHead
from pretext.losses import nt_xent
from pretext.registry import register_task
from signalssl.transforms import AUGMENTATIONS, AugmentParams, SignalAugment

__all__ = ["PCLR", "PatientPairs", "pair_candidates"]


def pair_candidates(patients: np.ndarray, records: np.ndarray) -> dict[str, np.ndarray]:
    """Index arithmetic for partner sampling, O(N) memory.

    Items are sorted by (patient, record); each item gets the bounds of its patient block and
    of its record block in that order. The partners of item ``i`` are the patient block minus
    the record block (other recordings); if that is empty, the record block minus ``i`` itself.

    Returns:
        dict with ``order`` (sorted item ids), ``pos`` (position of each item in ``order``),
        ``p_lo``, ``p_hi``, ``r_lo``, ``r_hi`` (``(N,)`` bounds per item).
    """
    n = len(patients)
    order = np.lexsort((np.arange(n), records, patients))
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    sp, sr = patients[order], records[order]
    new_p = np.r_[True, sp[1:] != sp[:-1]]
    new_r = new_p | np.r_[True, sr[1:] != sr[:-1]]
    p_start = np.maximum.accumulate(np.where(new_p, np.arange(n), 0))
    r_start = np.maximum.accumulate(np.where(new_r, np.arange(n), 0))
    p_end = np.r_[np.flatnonzero(new_p)[1:], n][np.cumsum(new_p) - 1]
    r_end = np.r_[np.flatnonzero(new_r)[1:], n][np.cumsum(new_r) - 1]
    return {"order": order, "pos": pos, "p_lo": p_start[pos], "p_hi": p_end[pos], "r_lo": r_start[pos], "r_hi": r_end[pos]}


class PatientPairs(Dataset):
    """Items ``{"x", "x2", "patient", "label", "index", "same_record"}`` with ``x2`` from the same patient.

    The partner of virtual item ``v`` (anchor ``v % N``) is drawn from ``seed`` and ``v`` only,
    so a run is reproducible and resumable; ``repeats`` anchors per item give each anchor
    ``repeats`` different partners over one pass.

    Attributes:
        n_fallback: anchors whose patient has one recording (partner = another window of it).
        n_same_window: anchors with no other window at all (partner = the anchor itself;
            only augmentations make the views differ).
    """

    def __init__(self, split: SSLSplit, seed: int = 0, repeats: int = 1, pair: str = "patient") -> None:
        if pair not in ("patient", "record"):
            raise UserError(f"pclr {pair=} must be 'patient' (two recordings) or 'record' (two windows of one)")
        records = getattr(split, "records", None)
        if records is None:
            records = np.arange(len(split))  # each item its own recording
        self.split, self.seed, self.repeats, self.pair = split, int(seed), max(1, int(repeats)), pair
        patients = np.asarray(split.patients, dtype=np.int64)
        recs = np.asarray(records, dtype=np.int64)
        if pair == "record":
            patients = recs  # pair windows of one recording only
        self.c = pair_candidates(patients, recs)
        p_size = self.c["p_hi"] - self.c["p_lo"]
        r_size = self.c["r_hi"] - self.c["r_lo"]
        self.other_rec = p_size - r_size  # partners in other recordings
        self.n_fallback = int((self.other_rec == 0).sum()) if pair == "patient" else 0
        self.n_same_window = int(((self.other_rec == 0) & (r_size == 1)).sum())
        self.fallback_fraction = self.n_fallback / max(1, len(split))
        if self.n_fallback:
            warnings.warn(
                f"pclr: {self.n_fallback} of {len(split)} items ({100 * self.fallback_fraction:.1f}%) belong to patients "
                f"with one recording; their positive is another window of the same recording"
                + (f" ({self.n_same_window} have a single window: positive = the same window, augmented)"
                   if self.n_same_window else ""), stacklevel=2)

    def __len__(self) -> int:
        return len(self.split) * self.repeats

    def partner(self, v: int) -> int:
        """Item index of the positive paired with virtual item ``v``."""
        i = v % len(self.split)
        c = self.c
        rng = np.random.default_rng([self.seed, v])
        p_lo, r_lo, r_hi = int(c["p_lo"][i]), int(c["r_lo"][i]), int(c["r_hi"][i])
        n_other = int(self.other_rec[i])
        if n_other > 0:
            u = int(rng.integers(n_other))
            k = p_lo + u if p_lo + u < r_lo else u + (r_hi - r_lo) + p_lo
        elif r_hi - r_lo > 1:
            u = int(rng.integers(r_hi - r_lo - 1))
            k = r_lo + u
            k = k + 1 if k >= c["pos"][i] else k
        else:
            k = int(c["pos"][i])
        return int(c["order"][k])

    def __getitem__(self, v: int) -> dict[str, torch.Tensor]:
        i = v % len(self.split)
        j = self.partner(v)
        item = dict(self.split[i])
        item["x2"] = self.split.load(j)
        rec = getattr(self.split, "records", None)
        same = (rec[i] == rec[j]) if rec is not None else (i == j)
        item["same_record"] = torch.as_tensor(bool(same))
        return item


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

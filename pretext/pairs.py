"""Pairing items for pretraining: two recordings/scans of one patient (PCLR, MICLe, CLOCS), in the core so that
both modalities and every joint-embedding task share it.

:class:`PatientPairs` gives each item a partner drawn from ``(seed, item)`` only (reproducible and resumable): a
different record of the same patient, else (the single-item fallback, counted and warned) another window of the
same record, else the item itself (then only the views differ).
"""

from __future__ import annotations

import warnings
from collections.abc import Sized
from typing import cast

import numpy as np
import torch
from torch.utils.data import Dataset

from pretext.base import SSLSplit
from pretext.errors import UserError

__all__ = ["PatientPairs", "pair_candidates"]


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

    def __init__(self, split: SSLSplit, seed: int = 0, repeats: int = 1, pair: str = "patient",
                 what: str = "pclr") -> None:
        if pair not in ("patient", "record"):
            raise UserError(f"{what} {pair=} must be 'patient' (two recordings) or 'record' (two windows of one)")
        self.n_items = len(cast(Sized, split))  # an SSLSplit subclass defines __len__
        records = getattr(split, "records", None)
        if records is None:
            records = np.arange(self.n_items)  # each item its own recording
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
        self.fallback_fraction = self.n_fallback / max(1, self.n_items)
        if self.n_fallback:
            warnings.warn(
                f"{what}: {self.n_fallback} of {self.n_items} items ({100 * self.fallback_fraction:.1f}%) belong to patients "
                f"with one recording; their positive is another window of the same recording"
                + (f" ({self.n_same_window} have a single window: positive = the same window, augmented)"
                   if self.n_same_window else ""), stacklevel=2)

    def __len__(self) -> int:
        return self.n_items * self.repeats

    def partner(self, v: int) -> int:
        """Item index of the positive paired with virtual item ``v``."""
        i = v % self.n_items
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
        i = v % self.n_items
        j = self.partner(v)
        item = dict(self.split[i])
        item["x2"] = self.split.load(j)
        rec = getattr(self.split, "records", None)
        same = (rec[i] == rec[j]) if rec is not None else (i == j)
        item["same_record"] = torch.as_tensor(bool(same))
        return item



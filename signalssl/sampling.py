"""Sampling from the signal store: windows as index arithmetic, and the one split class that reads them
(the volume side's is :mod:`volssl.sampling`).

A window is a ``(record, start)`` pair over the store (:mod:`signalssl.store`); no sample is copied until
a :class:`SignalSplit` reads it. Per-window normalisation (``normalize=zscore``) happens here, at load time.

>>> rec, start = sliding_windows(np.array([2500, 900]), window=1000, stride=500)
>>> rec.tolist(), start.tolist()        # record 1 is shorter than a window: one padded window
([0, 0, 0, 0, 1], [0, 500, 1000, 1500, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pretext.base import SSLSplit
from pretext.errors import UserError
from signalssl.preprocess import zscore
from signalssl.store import SignalStore

__all__ = ["NORMALIZE", "SignalSplit", "seconds_to_samples", "sliding_windows", "window_counts"]

NORMALIZE = ("none", "zscore")


def seconds_to_samples(seconds: float, sfreq: float, what: str = "window") -> int:
    """``round(seconds * sfreq)``, at least 1.

    Raises:
        UserError: non-positive duration.
    """
    if seconds <= 0:
        raise UserError(f"{what}={seconds!r} s must be > 0")
    return max(1, int(round(seconds * sfreq)))


def window_counts(lengths: np.ndarray, window: int, stride: int, pad_short: bool = True) -> np.ndarray:
    """Windows per record: ``1 + (length - window) // stride``; a shorter record gives 1 (padded) or 0.

    Args:
        lengths: ``(R,)`` record lengths in samples.
        window: window length in samples.
        stride: hop between window starts in samples.
        pad_short: a record shorter than ``window`` yields one zero-padded window (else none).
    """
    if window < 1 or stride < 1:
        raise UserError(f"{window=} and {stride=} must be >= 1 samples")
    lengths = np.asarray(lengths, dtype=np.int64)
    full = np.where(lengths >= window, 1 + (lengths - window) // stride, 0)
    if pad_short:
        full = np.where((lengths < window) & (lengths > 0), 1, full)
    return full


def sliding_windows(lengths: np.ndarray, window: int, stride: int, pad_short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All windows of all records, vectorised.

    Args:
        lengths: ``(R,)`` record lengths in samples.
        window: window length in samples.
        stride: hop in samples.
        pad_short: see :func:`window_counts`.

    Returns:
        ``(record, start)``: two ``(W,)`` int64 arrays, record-major, starts ascending.
    """
    counts = window_counts(lengths, window, stride, pad_short)
    rec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    start = (np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)) * stride
    return rec, start


class SignalSplit(SSLSplit):
    """Windows over a :class:`SignalStore`; item ``i`` is ``store.read(records[i], starts[i], window)``.

    Attributes:
        store: the ingested store (memmap opened lazily per worker).
        records: ``(N,)`` store record index of each window.
        starts: ``(N,)`` first sample of each window.
        window: window length in samples.
        normalize: "none" or "zscore" (per window and channel).

    It declares ``sampling = "windows"`` (:mod:`pretext.sampling`): items are windows of longer recordings, and
    ``records`` says which, so that pairings keep windows of one recording together.
    """

    sampling = "windows"

    def __init__(self, store: SignalStore, records: np.ndarray, starts: np.ndarray, window: int,
                 labels: np.ndarray, patients: np.ndarray, patient_names: list[str], normalize: str = "none",
                 meta: Any = None) -> None:
        self.store, self.records, self.starts, self.window = store, records, starts, int(window)
        self.labels, self.patients, self.patient_names = labels, patients, patient_names
        self.normalize, self.meta = normalize, meta

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> torch.Tensor:
        """``(C, window)`` float32."""
        x = self.store.read(int(self.records[i]), int(self.starts[i]), self.window)
        if self.normalize == "zscore":
            x = zscore(x)
        return torch.from_numpy(x)

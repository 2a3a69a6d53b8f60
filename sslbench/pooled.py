"""Whole-volume features from patch encoders: encode a sliding grid of patches and pool them.

Data loaded with ``?patch=D,H,W`` (:class:`volssl.sampling.VolumeSplit`) hand out patches, while the harness's
records are whole volumes. :func:`pooled_features` turns each record into one feature: the encoder sees
every patch of the record's grid (``?overlap=``; or the grid over ``roi_size`` around a manifest ROI) in
batches, and the ``(K, F)`` patch features are pooled by ``?pool=mean|max``. Linear / kNN probes use these
features; fine-tuning trains on random patches (:attr:`VolumeSplit.patch_stream`) and predicts from the
classifier head on the pooled features (:meth:`sslbench.probes.Classifier.predict_proba`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslbench.splits import View


def reads_patch_grids(view: View) -> bool:
    """True when ``view``'s records are whole volumes read as patch grids."""
    return callable(getattr(view.split, "grid", None)) and callable(getattr(view.split, "patch", None))


class _GridPatches(Dataset):
    """Items are ``(record position, grid position, patch)`` over every grid patch of a view (flattened)."""

    def __init__(self, view: View) -> None:
        self.split = view.split
        self.items = [(pos, c) for pos, i in enumerate(view.indices.tolist()) for c in self.split.grid(i)]
        self.indices = view.indices

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor]:
        pos, corner = self.items[j]
        return pos, self.split.patch(int(self.indices[pos]), corner)


@torch.no_grad()
def pooled_features(encoder: nn.Module, view: View, batch_size: int = 64, device: str | torch.device = "cpu",
                    num_workers: int = 0, pool: str | None = None) -> np.ndarray:
    """``(N, F)`` float32: each record's grid-patch features pooled (``pool`` or the split's ``?pool=``).

    Patches of consecutive records share batches; the running pool keeps memory at one batch of patches.
    """
    mode = pool or getattr(view.split, "pool", "mean")
    was = encoder.training
    encoder.eval().to(device)
    width = int(getattr(encoder, "num_features", 0))
    total: np.ndarray | None = None
    count = np.zeros(len(view), dtype=np.int64)
    loader = DataLoader(_GridPatches(view), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for pos, x in loader:
        f = encoder.forward_features(x.to(device)).float().cpu().numpy().astype(np.float64)
        if total is None:
            width = f.shape[1]
            total = np.zeros((len(view), width)) if mode == "mean" else np.full((len(view), width), -np.inf)
        p = pos.numpy()
        if mode == "mean":
            np.add.at(total, p, f)
        else:
            np.maximum.at(total, p, f)
        np.add.at(count, p, 1)
    encoder.train(was)
    if total is None:
        return np.zeros((len(view), width), dtype=np.float32)
    if mode == "mean":
        total = total / np.maximum(count, 1)[:, None]
    return total.astype(np.float32)


def patch_dataset(view: View, seed: int) -> Any:
    """The fine-tuning stream of random patches over ``view``'s records (labels of their volumes)."""
    return view.split.patch_stream(seed=seed, indices=view.indices)


__all__ = ["reads_patch_grids", "patch_dataset", "pooled_features"]

"""Frozen-encoder feature extraction with an on-disk cache (one ``.npy`` per weights x data x split view).

The cache key hashes what determines the features: an identifier of the weights (checkpoint path, size and
modification time, or ``random:<encoder>:<cfg>:<seed>`` for a random init), the data spec, the split view's
name and its record indices. A changed checkpoint or data spec therefore never reads stale features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pretext.atomic import atomic_write
from sslbench.splits import View


def weights_id(checkpoint: str | Path) -> str:
    """Identifier of a weights file that changes when the file does (path, size, mtime)."""
    p = Path(checkpoint).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{int(st.st_mtime_ns)}"


def cache_key(weights: str, source: str, view: View) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([weights, source, view.name, len(view.split)]).encode())
    h.update(np.ascontiguousarray(view.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def loader(view: View, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Deterministic, unshuffled loader over a view."""
    return DataLoader(view.dataset(), batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def encode(encoder: nn.Module, view: View, batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """``(N, F)`` float32 pooled features of every record of ``view`` (encoder in eval mode).

    Records that are whole volumes read as patches (data with ``?patch=``) are encoded as a sliding grid of
    patches and pooled (:func:`sslbench.pooled.pooled_features`).
    """
    from sslbench.pooled import pooled_features, reads_patch_grids

    if reads_patch_grids(view):
        return pooled_features(encoder, view, batch_size, device)
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    for batch in loader(view, batch_size):
        out.append(encoder.forward_features(batch["x"].to(device)).float().cpu().numpy())
    encoder.train(was_training)
    if not out:
        return np.zeros((0, int(getattr(encoder, "num_features", 0))), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def cached_features(
    encoder: nn.Module,
    view: View,
    *,
    weights: str,
    source: str,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """:func:`encode`, read from / written to ``cache_dir`` (no cache when ``cache_dir`` is None)."""
    if cache_dir is None:
        return encode(encoder, view, batch_size, device)
    path = Path(cache_dir) / f"{cache_key(weights, source, view)}.npy"
    if path.is_file():
        try:
            feats = np.load(path)
            if len(feats) == len(view):
                return feats
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed
    feats = encode(encoder, view, batch_size, device)
    atomic_write(path, lambda fh: np.save(fh, feats), needed_bytes=feats.nbytes)
    return feats


def describe_cache(cache_dir: str | Path) -> dict[str, Any]:
    files = list(Path(cache_dir).glob("*.npy"))
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}

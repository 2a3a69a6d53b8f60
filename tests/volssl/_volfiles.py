"""Helpers that write tiny real-format volume files (NIfTI, MedMNIST .npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_nifti(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0), affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), aff), str(path))
    return path


def write_medmnist(path: Path, side: int = 8, n=(6, 3, 4), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=False):
        arrays[f"{split}_images"] = (rng.random((k, side, side, side)) > 0.7).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(k) % 2).reshape(k, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path

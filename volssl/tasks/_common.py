"""Checks and small helpers shared by the volume pretext tasks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from pretext.errors import UserError


def check_volume_shape(input_shape: Sequence[int], task: str, min_side: int = 1) -> tuple[int, int, int, int]:
    """Require ``(C, D, H, W)`` with every side >= ``min_side``; return it as a tuple."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        kind = "a 2D image" if len(shape) == 3 else f"an input of {len(shape) - 1} spatial axes"
        raise UserError(
            f"task {task!r} needs 3D volumes (C, D, H, W) but got {kind} of shape {shape}; use a volume data "
            "kind (medmnist3d, nifti, manifest3d) or a 3D file"
        )
    if min(shape[1:]) < min_side:
        raise UserError(
            f"task {task!r} needs every spatial side >= {min_side}, got volume shape {shape[1:]}; "
            "crop/pad or resample the data to a larger size (e.g. ?size=32 or ?pad_to=32)"
        )
    return shape  # type: ignore[return-value]


def check_batch(x: torch.Tensor, task: str, module: nn.Module | None = None) -> None:
    """Runtime checks on ``batch["x"]``: 5D always; finite on the first batch a ``module`` sees (a
    full check every step would cost a device sync; the readers reject NaN files and the engine
    guards against non-finite losses later on)."""
    if x.ndim != 5:
        raise UserError(f"task {task!r} needs batches (B, C, D, H, W); got shape {tuple(x.shape)}")
    if module is not None:
        if getattr(module, "_batch_checked", False):
            return
        module._batch_checked = True  # type: ignore[assignment]
    if not torch.isfinite(x).all():
        raise UserError(
            f"task {task!r}: the batch holds NaN/inf voxels; clean the data (the volume readers reject such "
            "files) or mask them before training"
        )


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """``Linear -> BN -> ReLU -> Linear``; ``(B, in_dim) -> (B, out_dim)``."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


_WARNED: set[str] = set()


def warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, stacklevel=3)

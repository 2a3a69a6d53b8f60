"""Rotation prediction on volumes: 10 classes (identity + 90/180/270 degrees about each axis) or the
24 rotations of the cube. Views come from :class:`volssl.transforms.RandomRotate90`.

With anisotropic voxels (e.g. 0.8 x 0.8 x 5 mm) a rotated volume shows its spacing pattern along a
new axis and the label is readable without any anatomy: the task warns (default), stops, or
resamples each volume to isotropic voxels (``anisotropy``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pretext.base import Batch, PretextTask, SSLSplit
from pretext.config import ConfigModel, Field
from pretext.errors import UserError
from pretext.registry import register_task
from volssl.tasks._common import check_batch, check_volume_shape, mlp
from volssl.transforms import RandomRotate90


def spacing_anisotropy(split: Any) -> float:
    """Largest ratio of voxel sides over the split (1.0 = isotropic), from ``meta`` spacing columns."""
    meta = getattr(split, "meta", None)
    cols = ("spacing_d", "spacing_h", "spacing_w")
    if meta is None or not all(c in getattr(meta, "columns", ()) for c in cols):
        return 1.0
    sp = meta[list(cols)].to_numpy(dtype=np.float64)
    return float((sp.max(1) / sp.min(1)).max()) if len(sp) else 1.0


class IsotropicView(Dataset):
    """Resample each item to isotropic voxels (finest side), then centre crop/pad to its shape."""

    def __init__(self, split: SSLSplit) -> None:
        self.split = split
        self.spacing = split.meta[["spacing_d", "spacing_h", "spacing_w"]].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Batch:
        from volssl.preprocess import centre_crop_pad

        item = dict(self.split[i])
        x, sp = item["x"], self.spacing[i]
        size = [max(1, round(n * s / sp.min())) for n, s in zip(x.shape[1:], sp, strict=False)]
        y = F.interpolate(x[None].float(), size=size, mode="trilinear", align_corners=False)[0]
        item["x"] = centre_crop_pad(y, tuple(x.shape[1:]))
        return item


@register_task("rotation", modality="volume")
class Rotation(PretextTask):
    """Predict which rotation was applied.

    Loss: cross-entropy over ``num_rotations`` classes on ``encoder.forward_features`` of the
    rotated volume. Input ``(B, C, S, S, S)`` (cubic spatial shape).
    """

    class Config(ConfigModel):
        """Attributes:
            num_rotations: 10 (identity + 3 angles x 3 axes) or 24 (the cube's rotation group).
            anisotropy: what to do when voxel spacing is anisotropic: "warn", "error", "resample", "ignore".
            anisotropy_tol: largest side ratio treated as isotropic.
            hidden: width of the MLP head.
        """

        num_rotations: Literal[10, 24] = 10
        anisotropy: Literal["warn", "error", "resample", "ignore"] = "warn"
        anisotropy_tol: float = Field(1.1, ge=1)
        hidden: int = Field(256, ge=1)

    name = "rotation"
    modality = "volume"

    def __init__(self, encoder: torch.nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        self.head = mlp(encoder.num_features, self.cfg.hidden, self.cfg.num_rotations)
        self.rotations = RandomRotate90(self.cfg.num_rotations)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        check_batch(x, self.name, self)
        view = self.rotations.get_params(x.shape, generator)
        labels = view.labels.to(x.device)
        logits = self.head(self.encoder.forward_features(view(x)))
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        shape = check_volume_shape(input_shape, "rotation", min_side=2)
        if len(set(shape[1:])) != 1:
            raise UserError(
                f"task 'rotation' turns volumes by 90 degrees, which needs a cubic shape; got {shape[1:]}: "
                "crop/pad to a cube (e.g. nifti ?size=64 or medmnist3d ?pad_to=32)"
            )

    @classmethod
    def wrap_dataset(cls, split: SSLSplit, cfg: Any, seed: int = 0) -> Dataset:
        cfg = cfg or cls.Config()
        ratio = spacing_anisotropy(split)
        if ratio <= cfg.anisotropy_tol or cfg.anisotropy == "ignore":
            return split
        msg = (f"voxel spacing is anisotropic (side ratio up to {ratio:.2f}): rotation labels can be read off the "
               "spacing pattern without anatomy")
        if cfg.anisotropy == "error":
            raise UserError(f"task 'rotation': {msg}; resample the data (?spacing=MM) or pass --task.anisotropy resample")
        if cfg.anisotropy == "resample":
            return IsotropicView(split)
        warnings.warn(f"task 'rotation': {msg}; consider ?spacing=MM or --task.anisotropy resample", stacklevel=2)
        return split

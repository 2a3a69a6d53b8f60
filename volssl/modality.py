"""The volume modality's adapter: what the core asks of volumes (see :mod:`pretext.modality`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pretext.errors import ConfigError
from pretext.modality import Modality


class VolumeModality(Modality):
    """CT/MRI volumes ``(C, D, H, W)``; encoders sized by ``in_channels`` and ``img_size`` (MONAI's names)."""

    name = "volume"
    packages = {"task": ("volssl.tasks",), "encoder": ("volssl.encoders",), "data": ("volssl.data", "volssl.synthetic")}
    size_keys = ("in_channels", "img_size")
    bundle_file_patterns = ("*.nii", "*.nii.gz", "*.mha", "*.nrrd")
    bundle_data_type = "nibabel"
    spatial_dims = 3
    hooks = {"bundle_transforms": "volssl.bundle:volume_transforms", "bundle_input_spec": "volssl.bundle:volume_input_spec",
             "bundle_grid": "volssl.bundle:volume_grid", "views": "volssl.views:adapter_views"}
    bundle_augment = {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0}
    audit_perturbation = "global intensity shift and gain plus white noise"

    def encoder_kwargs(self, input_shape: Sequence[int], sfreq: float | None = None) -> dict[str, Any]:
        return {"in_channels": int(input_shape[0]), "img_size": tuple(int(s) for s in input_shape[1:])}

    def input_shape(self, kwargs: dict[str, Any], where: str) -> tuple[int, ...]:
        missing = [k for k in self.size_keys if k not in kwargs]
        if missing:
            raise ConfigError(f"{where} config has no {missing} and no input_shape; the bundle needs the input "
                              "size: pass --encoder.in_channels/--encoder.img_size when exporting")
        img = kwargs["img_size"]
        kwargs["img_size"] = tuple(int(s) for s in ([img] * 3 if isinstance(img, int) else img))
        return (int(kwargs["in_channels"]), *kwargs["img_size"])

    def perturb(self, x: torch.Tensor, generator: torch.Generator, sfreq: float | None = None) -> torch.Tensor:
        from volssl.transforms import perturb_volume

        return perturb_volume(x, generator)


ADAPTER = VolumeModality()

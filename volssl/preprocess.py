"""Offline preprocessing of one volume with MONAI transforms (run once, then cached).

Order: orientation -> isotropic resampling -> CT HU window or MRI percentile / z-score
normalisation -> foreground crop -> crop/pad (or resize) to a fixed size. MONAI metadata
(``MetaTensor``) is used here only, where the affine matters; training sees plain tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Literal

import numpy as np
import torch

from pretext.errors import ConfigError
from pretext.options import rename_options
from volssl.io import Volume

Normalize = Literal["auto", "none", "minmax", "percentile", "zscore"]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How raw volumes become training inputs.

    Attributes:
        orientation: axis codes to reorient to (e.g. "RAS"); None keeps the file's order.
        spacing: isotropic voxel size in mm to resample to; None keeps the native spacing.
        window: CT HU window ``(low, high)`` mapped to [0, 1] and clipped (e.g. (-1000, 1000)).
        normalize: "auto" (window if given, else percentile), "none", "minmax" (to [0, 1]),
            "percentile" (``percentiles`` mapped to [0, 1], clipped; MRI), "zscore" (over nonzero voxels).
            (``normalise=`` is its deprecated spelling: still accepted, with a warning.)
        percentiles: lower/upper percentiles for "percentile".
        foreground_crop: crop to the bounding box of voxels above ``foreground_threshold``
            (after normalisation) plus ``foreground_margin`` voxels.
        foreground_threshold: see ``foreground_crop``.
        foreground_margin: see ``foreground_crop``.
        size: final ``(D, H, W)``: centre crop/pad (or resize, see ``resize``); None keeps the size
            (then all volumes of a dataset must share one shape).
        resize: resize (trilinear) to ``size`` instead of crop/pad.
    """

    orientation: str | None = "RAS"
    spacing: float | None = None
    window: tuple[float, float] | None = None
    normalize: Normalize = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    foreground_crop: bool = False
    foreground_threshold: float = 0.0
    foreground_margin: int = 2
    size: tuple[int, int, int] | None = None
    resize: bool = False
    normalise: dataclasses.InitVar[str | None] = None

    def __post_init__(self, normalise: str | None) -> None:
        if normalise is not None:
            opts = rename_options({"normalise": normalise, **({} if self.normalize == "auto" else {"normalize": 0})},
                                  "PreprocessConfig", stacklevel=5)
            object.__setattr__(self, "normalize", opts["normalize"])
        if self.normalize not in ("auto", "none", "minmax", "percentile", "zscore"):
            raise ConfigError(
                f"normalize={self.normalize!r} is not one of auto, none, minmax, percentile, zscore"
            )
        if self.window is not None and not (len(self.window) == 2 and self.window[0] < self.window[1]):
            raise ConfigError(f"window={self.window!r} must be (low, high) with low < high, e.g. (-1000, 1000)")
        if self.spacing is not None and self.spacing <= 0:
            raise ConfigError(f"spacing={self.spacing!r} must be a positive size in mm (or None to keep)")
        if self.size is not None and (len(self.size) != 3 or min(self.size) < 1):
            raise ConfigError(f"size={self.size!r} must be three positive integers (D, H, W)")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"percentiles={self.percentiles!r} must satisfy 0 <= low < high <= 100")

    def digest(self) -> str:
        """Short stable hash of the settings (part of the cache key)."""
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def normalise_intensity(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Apply the intensity part of ``cfg`` to ``(C, D, H, W)`` voxels (per channel)."""
    from monai.transforms import (
        NormalizeIntensity,
        ScaleIntensity,
        ScaleIntensityRange,
        ScaleIntensityRangePercentiles,
    )

    mode = cfg.normalize
    if mode == "auto":
        mode = "none" if cfg.window is not None else "percentile"
    if cfg.window is not None:
        x = ScaleIntensityRange(a_min=cfg.window[0], a_max=cfg.window[1], b_min=0.0, b_max=1.0, clip=True)(x)
    if mode == "minmax":
        x = ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True)(x)
    elif mode == "percentile":
        lo, hi = cfg.percentiles
        x = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)(x)
    elif mode == "zscore":
        x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
    return x


def preprocess_volume(vol: Volume, cfg: PreprocessConfig) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Run the MONAI preprocessing chain on one volume.

    Args:
        vol: a volume from :func:`volssl.io.read_volume`.
        cfg: the settings.

    Returns:
        ``(array (C, D, H, W) float32, spacing_mm)`` after all steps.
    """
    from monai.data import MetaTensor
    from monai.transforms import CropForeground, Orientation, Resize, ResizeWithPadOrCrop, Spacing

    x = MetaTensor(torch.as_tensor(vol.array, dtype=torch.float32), affine=torch.as_tensor(vol.affine))
    if cfg.orientation:
        x = Orientation(axcodes=cfg.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))(x)
    if cfg.spacing is not None:
        x = Spacing(pixdim=(cfg.spacing,) * 3, mode="bilinear")(x)
    x = normalise_intensity(x, cfg)
    if cfg.foreground_crop:
        thr = cfg.foreground_threshold
        cropper = CropForeground(select_fn=lambda t: t > thr, margin=cfg.foreground_margin, allow_smaller=True)
        x = cropper(x)
    if cfg.size is not None:
        x = Resize(cfg.size, mode="trilinear")(x) if cfg.resize else ResizeWithPadOrCrop(cfg.size)(x)
    affine = x.affine.numpy() if isinstance(x, MetaTensor) else vol.affine
    from volssl.io import spacing_from_affine

    out = x.as_tensor().numpy() if isinstance(x, MetaTensor) else np.asarray(x)
    return np.ascontiguousarray(out, dtype=np.float32), spacing_from_affine(affine)


def centre_crop_pad(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Centre crop / zero pad the trailing ``len(size)`` axes of ``x`` to ``size``."""
    spatial = x.shape[-len(size):]
    pads: list[int] = []
    slices = [slice(None)] * (x.ndim - len(size))
    for have, want in zip(spatial, size, strict=False):
        if have >= want:
            start = (have - want) // 2
            slices.append(slice(start, start + want))
        else:
            slices.append(slice(None))
    x = x[tuple(slices)]
    for have, want in reversed(list(zip(x.shape[-len(size):], size, strict=False))):
        extra = max(want - have, 0)
        pads += [extra // 2, extra - extra // 2]
    return torch.nn.functional.pad(x, pads) if any(pads) else x


def as_size(size: Any, what: str) -> tuple[int, int, int] | None:
    """An option ``size`` (``64``, ``"96,96,64"``, ``"96x96x64"``, a list) as ``(D, H, W)``, or None.

    Raises:
        ConfigError: not one or three positive integers (the message names ``what`` and the value).
    """
    if size is None:
        return None
    if isinstance(size, (int, float)):
        return (int(size),) * 3
    if isinstance(size, str):
        size = [s for s in re.split(r"[,x ]", size) if s]
    vals = tuple(int(s) for s in size)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or min(vals) < 1:
        raise ConfigError(f"{what}={size!r} must be one or three positive integers, e.g. 64 or 96,96,64")
    return vals  # type: ignore[return-value]

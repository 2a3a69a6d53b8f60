"""The signal modality's default view policy for joint-embedding tasks (SimCLR, VICReg, DINO).

:class:`SignalViews` draws, per sample, a random crop of the window resized back to a fixed length (so encoders
sized for ``n_times`` still fit), then the augmentations of :mod:`signalssl.transforms` (amplitude scaling,
baseline wander, Gaussian noise, lead/channel dropout, time masking), each with its own probability. All
random numbers come from the CPU generator; the tensor work runs batched on the batch's device.

Every field is an overridable parameter (``--task.views '{crop_scale: [0.7, 1.0], dropout_p: 0}'``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from pretext.config import DATACLASS_CONFIG, Field, build_config, span
from pretext.errors import ConfigError
from pretext.transforms import Chain, RandomTransform, Transform
from signalssl.transforms import (
    RandomBaselineWander,
    RandomLeadDropout,
    RandomNoise,
    RandomScale,
    RandomTimeMask,
)

__all__ = ["Crop", "SignalViews", "default_views"]

Prob = Annotated[float, Field(ge=0, le=1)]


@dataclasses.dataclass
class Crop(Transform):
    """Fixed crops: ``start, length (B,)`` as fractions of the window, resampled to ``size`` samples."""

    start: torch.Tensor
    length: torch.Tensor
    size: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        lo = self.start.to(dev, torch.float32) * 2 - 1  # normalised coordinates of the crop's first edge
        span = self.length.to(dev, torch.float32) * 2
        t = (torch.arange(self.size, device=dev, dtype=torch.float32) + 0.5) / self.size  # output centres in (0, 1)
        gx = lo[:, None] + span[:, None] * t[None]
        grid = torch.stack([gx, torch.zeros_like(gx)], -1)[:, None]  # (B, 1, T', 2)
        y = F.grid_sample(x.float()[:, :, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return y[:, :, 0].reshape(b, x.shape[1], self.size).to(x.dtype)


@pydantic_dataclass(config=DATACLASS_CONFIG)
class SignalViews(RandomTransform):
    """Random views of windows ``(B, C, T)``; every field is a documented, overridable parameter.

    Attributes:
        crop_scale: range of the crop's length as a fraction of the window (resampled to ``size``).
        size: output length in samples; ``None`` keeps the input length (DINO's local crops pass a shorter one).
        scale_p, scale: probability and range of a per-sample amplitude gain.
        wander_p, wander_amp, wander_hz: baseline wander (amplitude relative to each channel's std, Hz range).
        noise_p, noise_std: Gaussian noise (std relative to each channel's std).
        dropout_p, dropout_rate: probability of lead dropout per sample, and of zeroing each lead (one is kept).
        mask_p, mask_frac: probability of a time mask, and its maximum length as a fraction of the window.
        sfreq: sampling rate in Hz (the wander frequency); the task passes the data's rate where it knows it.
    """

    crop_scale: span(ge=1e-3, le=1) = (0.5, 1.0)
    size: PositiveInt | None = None
    scale_p: Prob = 0.8
    scale: span(ge=0) = (0.7, 1.3)
    wander_p: Prob = 0.5
    wander_amp: float = Field(0.2, ge=0)
    wander_hz: span(ge=0) = (0.05, 0.5)
    noise_p: Prob = 0.5
    noise_std: float = Field(0.05, ge=0)
    dropout_p: Prob = 0.3
    dropout_rate: Prob = 0.2
    mask_p: Prob = 0.5
    mask_frac: Prob = 0.1
    sfreq: float = Field(100.0, gt=0)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Chain:
        if len(batch_shape) != 3:
            raise ConfigError(f"signal views take (B, C, T) batches, got shape {tuple(batch_shape)}")
        b, c, t = (int(s) for s in batch_shape)
        lo, hi = self.crop_scale
        length = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)
        start = torch.rand(b, generator=generator, dtype=torch.float64) * (1 - length)
        size = int(self.size or t)
        crop = Crop(start.float(), length.float(), size)
        shape = (b, c, size)
        rest = [RandomScale(self.scale_p, self.scale), RandomBaselineWander(self.wander_p, self.wander_amp,
                self.wander_hz, float(self.sfreq)), RandomNoise(self.noise_p, self.noise_std),
                RandomLeadDropout(self.dropout_p, self.dropout_rate), RandomTimeMask(self.mask_p, self.mask_frac)]
        return Chain((crop, *(r.get_params(shape, generator) for r in rest)))

    def replace(self, **changes: Any) -> SignalViews:
        """A copy with some parameters changed (DINO's global and local crops), validated as a new one."""
        return build_config(SignalViews, {**dataclasses.asdict(self), **changes}, "signal views")


def default_views(**params: Any) -> SignalViews:
    """The signal adapter's default views with ``params`` overriding fields (unknown or bad ones refused, one line
    naming the parameter and what is allowed)."""
    return build_config(SignalViews, params, "signal views")


def adapter_views(sizing: dict[str, Any], **params: Any) -> SignalViews:
    """The ``views`` hook of :class:`signalssl.modality.SignalModality`: the data's ``sfreq`` (from the encoder's
    sizing) sets the baseline wander's frequency unless ``params`` name one."""
    if sizing.get("sfreq") and "sfreq" not in params:
        params = {**params, "sfreq": float(sizing["sfreq"])}
    return default_views(**params)

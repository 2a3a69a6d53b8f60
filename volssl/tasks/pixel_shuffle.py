"""Models Genesis restoration (Zhou et al., MedIA 2021): undo local pixel shuffling, a non-linear
intensity remap, and in-/out-painting.

Per volume, as in the reference ``generate_pair``: random flips (applied to input and target
alike), local pixel shuffling (``local_rate``; 10,000 blocks, sides up to dim/10), a Bezier
intensity remap (``nonlinear_rate``), then painting (``paint_rate``: in-painting with
``inpaint_rate``, else out-painting). An encoder-decoder (the encoder's ``forward_maps`` plus
:class:`volssl.encoders.UNetDecoder`) restores the original; MSE or L1 loss.
Intensities are expected in ``[0, 1]`` (e.g. ``medmnist3d`` default, CT windows, percentile scaling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from pretext.base import Batch, PretextTask
from pretext.capabilities import MultiScaleMaps, require
from pretext.config import ConfigModel, Field, field_validator
from pretext.errors import ConfigError
from pretext.registry import register_task
from pretext.transforms import Compose
from volssl.encoders.decoder import UNetDecoder
from volssl.tasks._common import check_batch, check_volume_shape, warn_once
from volssl.transforms import RandomBezierRemap, RandomFlip, RandomLocalPixelShuffle, RandomPainting


def genesis_corrupt(x: torch.Tensor, generator: torch.Generator | None, cfg: Any,
                    backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The Models Genesis corruption chain: ``x (B, C, D, H, W)`` -> ``(input, target)``.

    The target is ``x`` after the flips; the input adds shuffle, remap and painting. The draws
    follow a fixed order, so one generator state gives one pair on any device. ``backend``: "auto"
    (numba kernels on CPU, tensor ops elsewhere), "numba", or "torch" (the device path, on any device).
    """
    shape = tuple(x.shape)
    target = RandomFlip(cfg.flip_rate, backend=backend)(x, generator)
    max_block = tuple(cfg.max_block) if cfg.max_block else None
    corrupt = Compose([
        RandomLocalPixelShuffle(cfg.num_blocks, max_block, cfg.local_rate, backend),
        RandomBezierRemap(cfg.nonlinear_rate, cfg.bezier_points, backend=backend),
        RandomPainting(cfg.paint_rate, cfg.inpaint_rate, backend=backend),
    ]).get_params(shape, generator)
    return corrupt(target), target


@register_task("pixel_shuffle", modality="volume")
class PixelShuffle(PretextTask):
    """Restore volumes corrupted by the Models Genesis chain (see module docstring)."""

    class Config(ConfigModel):
        """Attributes (defaults as the Models Genesis code):
            local_rate: probability of local pixel shuffling.
            num_blocks: shuffled blocks per volume.
            max_block: largest block side per axis ``(d, h, w)``; empty = ``dim // 10`` (paper).
            nonlinear_rate: probability of the Bezier intensity remap.
            paint_rate: probability of painting.
            inpaint_rate: share of in-painting among painted volumes (the rest is out-painted).
            flip_rate: probability of each of up to three random flips.
            bezier_points: samples of the Bezier curve (the reference uses 100,000; 1,000 is as smooth).
            loss: "mse" or "l1".
            decoder_width: decoder channels as a fraction of the encoder's at each scale.
        """

        local_rate: float = Field(0.5, ge=0, le=1)
        num_blocks: int = Field(10000, ge=1)
        max_block: tuple[int, ...] = ()
        nonlinear_rate: float = Field(0.9, ge=0, le=1)
        paint_rate: float = Field(0.9, ge=0, le=1)
        inpaint_rate: float = Field(0.2, ge=0, le=1)
        flip_rate: float = Field(0.4, ge=0, le=1)
        bezier_points: int = Field(1000, ge=2)
        loss: Literal["mse", "l1"] = "mse"
        decoder_width: float = Field(0.5, gt=0)

        @field_validator("max_block")
        @classmethod
        def _three_sides(cls, value: tuple[int, ...]) -> tuple[int, ...]:
            if value and (len(value) != 3 or min(value) < 1):
                raise ValueError(f"max_block={value} must be three positive sides (d, h, w) or empty")
            return value

    name = "pixel_shuffle"
    modality = "volume"

    def __init__(self, encoder: torch.nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        require(encoder, MultiScaleMaps, self.name, "multi-scale feature maps for the restoration decoder")
        self.decoder = UNetDecoder(encoder.feature_channels, encoder.feature_strides,
                                   out_channels=getattr(encoder, "in_channels", 1), width=self.cfg.decoder_width)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder-decoder: ``(B, C, D, H, W) -> (B, C, D, H, W)``."""
        return self.decoder(self.encoder.forward_maps(x), x.shape[2:])

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        first = not getattr(self, "_batch_checked", False)
        check_batch(x, self.name, self)
        if first and (x.min() < -0.01 or x.max() > 1.01):
            warn_once("pixel_shuffle-range", "pixel_shuffle expects intensities in [0, 1] (the Bezier remap and the "
                      "noise of painting assume it); normalise the data to [0, 1]")
        with torch.no_grad():
            corrupted, target = genesis_corrupt(x, generator, self.cfg)
        pred = self.restore(corrupted).float()
        target = target.float()
        loss = F.mse_loss(pred, target) if self.cfg.loss == "mse" else F.l1_loss(pred, target)
        # restoring nothing (returning the input) scores this: the model has to beat it
        identity = F.mse_loss(corrupted.float(), target) if self.cfg.loss == "mse" else F.l1_loss(corrupted.float(), target)
        return {"loss": loss, "identity_loss": identity.detach()}

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        cfg = cfg or cls.Config()
        check_volume_shape(input_shape, "pixel_shuffle", min_side=8)
        if cfg.max_block and any(m > s for m, s in zip(cfg.max_block, input_shape[1:], strict=False)):
            raise ConfigError(f"max_block={cfg.max_block} exceeds the volume shape {tuple(input_shape[1:])}")

"""Shared outputs of convolutional 1D encoders defined by their ``forward_maps``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class MapEncoder1d(nn.Module):
    """Mixin: given ``forward_maps(x) -> [(B, F_i, T_i)]``, provide tokens and pooled features."""

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T) -> (B, T_last, F)``: the last stage's time steps as tokens."""
        return rearrange(self.forward_maps(x)[-1], "b f t -> b t f")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T) -> (B, F)``: global average over time of the last stage."""
        return self.forward_maps(x)[-1].mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

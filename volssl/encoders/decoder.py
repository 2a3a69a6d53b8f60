"""A UNet-style decoder over an encoder's ``forward_maps`` (for restoration tasks).

From the deepest map up: upsample to the next shallower map's size, concatenate, two conv
blocks; below the shallowest map, upsample x2 with a conv block until the input size is reached;
a 1^3 conv gives the output channels. Works for any list of maps (ResNet's five, a ViT's one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """Decode multi-scale maps to a volume.

    Args:
        channels: channels of the encoder maps, shallow to deep.
        strides: their strides relative to the input (same order), e.g. ``[1, 2, 4, 8, 16]``.
        out_channels: output channels (the input's C for restoration).
        width: decoder width per stage = ``max(min_width, width * channels[i])``.
        min_width: floor of the decoder widths.

    Shapes:
        ``forward(maps, out_size)``: maps ``[(B, C_i, ...)]`` -> ``(B, out_channels, *out_size)``.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int], out_channels: int = 1,
                 width: float = 0.5, min_width: int = 16) -> None:
        super().__init__()
        widths = [max(min_width, int(c * width)) for c in channels]
        self.lateral = nn.Conv3d(channels[-1], widths[-1], 1)
        self.fuse = nn.ModuleList(
            nn.Sequential(conv_block(widths[i + 1] + channels[i], widths[i]), conv_block(widths[i], widths[i]))
            for i in reversed(range(len(channels) - 1))
        )
        n_up = max(0, math.ceil(math.log2(max(strides[0], 1))))
        ups, w = [], widths[0]
        for _ in range(n_up):
            ups.append(conv_block(w, max(min_width, w // 2)))
            w = max(min_width, w // 2)
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv3d(w, out_channels, 1)

    def forward(self, maps: Sequence[torch.Tensor], out_size: Sequence[int]) -> torch.Tensor:
        x = self.lateral(maps[-1])
        for fuse, skip in zip(self.fuse, reversed(maps[:-1]), strict=False):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = fuse(torch.cat([x, skip], dim=1))
        for up in self.ups:
            size = [min(o, 2 * s) for o, s in zip(out_size, x.shape[2:], strict=False)]
            x = up(F.interpolate(x, size=size, mode="trilinear", align_corners=False))
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="trilinear", align_corners=False)
        return self.head(x)

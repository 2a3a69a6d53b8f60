"""Ribeiro et al. (2020) residual network for ECG, the backbone of PCLR (Diamant et al. 2022).

A 16-tap convolution then four residual blocks (128, 196, 256, 320 filters), each
downsampling by 4 with max-pool + 1x1 convolution shortcuts and pre-activation BN-ReLU-dropout.
PCLR flattens the last map into a 320-wide dense layer; here the map is average-pooled, so any
input length works (the width, 320, is the same).
"""

from __future__ import annotations

import torch
from torch import nn

from pretext.registry import register_encoder
from signalssl.encoders._pooled import MapEncoder1d

__all__ = ["RibeiroResNet", "ribeiro_resnet"]


class _Block(nn.Module):
    """``(x, y) -> (x', y')``: Ribeiro's residual unit, ``(B, C_in, T) -> (B, C_out, T/down)``."""

    def __init__(self, c_in: int, c_out: int, down: int, ks: int, dropout: float) -> None:
        super().__init__()
        self.skip = nn.Sequential(nn.MaxPool1d(down, down, ceil_mode=True) if down > 1 else nn.Identity(),
                                  nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity())
        self.conv1 = nn.Conv1d(c_in, c_out, ks, padding=ks // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, ks, stride=down, padding=ks // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.skip(y)
        x = self.conv2(self.drop(self.act(self.bn1(self.conv1(x)))))
        n = min(x.shape[-1], y.shape[-1])
        x = x[..., :n] + y[..., :n]
        return self.drop(self.act(self.bn2(x))), x


class RibeiroResNet(MapEncoder1d):
    """Ribeiro/PCLR ECG ResNet.

    Args:
        n_chans: leads.
        n_times: samples (>= 256, the total downsampling).
        sfreq: sampling rate (recorded).
        filters: widths of the stem and the four blocks.
        kernel_size: convolution taps (17 in the paper's 16-tap layers with symmetric padding).
        downsample: downsampling of each block.
        dropout: dropout rate (0.2 in Ribeiro et al.; 0 is the default for pretraining).

    Shapes:
        ``forward_features``: ``(B, C, T) -> (B, 320)``; ``forward_tokens``: ``(B, C, T) -> (B, T/256, 320)``.
    """

    def __init__(self, n_chans: int = 12, n_times: int = 4096, sfreq: float | None = None,
                 filters: tuple[int, ...] = (64, 128, 196, 256, 320), kernel_size: int = 17,
                 downsample: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        total = downsample ** (len(filters) - 1)
        if n_times < total:
            raise ValueError(f"{n_times=} is shorter than the network's downsampling ({total}); use longer windows")
        self.n_chans, self.n_times, self.sfreq = n_chans, n_times, sfreq
        self.stem = nn.Sequential(nn.Conv1d(n_chans, filters[0], kernel_size, padding=kernel_size // 2, bias=False),
                                  nn.BatchNorm1d(filters[0]), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(_Block(a, b, downsample, kernel_size, dropout) for a, b in zip(filters, filters[1:], strict=False))
        self.num_features = filters[-1]
        # MultiScaleMaps (pretext.capabilities): one map per block, each downsampling by ``downsample``
        self.feature_channels = list(filters[1:])
        self.feature_strides = [downsample ** (i + 1) for i in range(len(filters) - 1)]

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        y, out = x, []
        for blk in self.blocks:
            x, y = blk(x, y)
            out.append(x)
        return out


@register_encoder("ribeiro_resnet", modality="signal")
def ribeiro_resnet(n_chans: int = 12, n_times: int = 4096, sfreq: float | None = None, **kw: object) -> RibeiroResNet:
    """Ribeiro et al. ECG ResNet (PCLR's backbone), 320 features."""
    return RibeiroResNet(n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]

"""xresnet1d (fastai's bag-of-tricks ResNet in 1D, as used for PTB-XL by Strodthoff et al. 2021).

Stem of three convolutions (the first strided) + max-pool, then four stages of residual
blocks (basic for 18/34, bottleneck x4 for 50/101), kernel size 5, average-pool shortcuts,
zero-initialised last BatchNorm of each block.
"""

from __future__ import annotations

import torch
from torch import nn

from pretext.registry import register_encoder
from signalssl.encoders._pooled import MapEncoder1d

__all__ = ["XResNet1d", "xresnet1d18", "xresnet1d34", "xresnet1d50", "xresnet1d101"]


def _conv(c_in: int, c_out: int, ks: int, stride: int = 1, act: bool = True, zero_bn: bool = False) -> nn.Sequential:
    bn = nn.BatchNorm1d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, ks, stride=stride, padding=ks // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock1d(nn.Module):
    """Basic (expansion 1) or bottleneck (expansion 4) residual block: ``(B, C_in, T) -> (B, C_out, T/stride)``."""

    def __init__(self, expansion: int, c_in: int, width: int, stride: int, ks: int) -> None:
        super().__init__()
        c_out = width * expansion
        if expansion == 1:
            self.convs = nn.Sequential(_conv(c_in, width, ks, stride), _conv(width, c_out, ks, act=False, zero_bn=True))
        else:
            self.convs = nn.Sequential(_conv(c_in, width, 1), _conv(width, width, ks, stride),
                                       _conv(width, c_out, 1, act=False, zero_bn=True))
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.AvgPool1d(stride, stride, ceil_mode=True))
        if c_in != c_out:
            short.append(_conv(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*short)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        s = self.shortcut(x)
        if s.shape[-1] != y.shape[-1]:  # odd lengths: ceil-mode pooling may give one extra step
            s = s[..., : y.shape[-1]]
        return self.act(y + s)


class XResNet1d(MapEncoder1d):
    """1D xresnet encoder.

    Args:
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for xresnet1d18.
        expansion: 1 (basic blocks) or 4 (bottlenecks).
        n_chans: input channels (leads).
        n_times: input length (used only for checks; any length >= 32 works).
        sfreq: sampling rate (recorded, not used).
        kernel_size: kernel of the block convolutions.
        widths: stage widths before expansion.

    Shapes:
        ``forward_features``: ``(B, C, T) -> (B, F)``, ``F = widths[-1] * expansion``;
        ``forward_tokens``: ``(B, C, T) -> (B, T/32, F)``; ``forward_maps``: one map per stage.
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), expansion: int = 1, n_chans: int = 12,
                 n_times: int = 1000, sfreq: float | None = None, kernel_size: int = 5,
                 widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        if n_chans < 1:
            raise ValueError(f"{n_chans=} must be >= 1")
        if n_times < 32:
            raise ValueError(f"{n_times=} is too short for xresnet1d (it downsamples by 32); use >= 32 samples")
        self.n_chans, self.n_times, self.sfreq = n_chans, n_times, sfreq
        self.stem = nn.Sequential(_conv(n_chans, 32, kernel_size, stride=2), _conv(32, 32, kernel_size),
                                  _conv(32, 64, kernel_size), nn.MaxPool1d(3, 2, 1))
        stages, c_in = [], 64
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(ResBlock1d(expansion, c_in, w, 2 if (j == 0 and i > 0) else 1, kernel_size))
                c_in = w * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.num_features = c_in
        # MultiScaleMaps (pretext.capabilities): one map per stage, the stem downsamples by 4
        self.feature_channels = [w * expansion for w in widths]
        self.feature_strides = [4 * 2**i for i in range(len(widths))]
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs ``[(B, F_i, T_i)]`` (strides 4, 8, 16, 32)."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@register_encoder("xresnet1d18", modality="signal")
def xresnet1d18(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kw: object) -> XResNet1d:
    """xresnet1d18: basic blocks (2, 2, 2, 2), 512 features."""
    return XResNet1d((2, 2, 2, 2), 1, n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]


@register_encoder("xresnet1d34", modality="signal")
def xresnet1d34(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kw: object) -> XResNet1d:
    """xresnet1d34: basic blocks (3, 4, 6, 3), 512 features."""
    return XResNet1d((3, 4, 6, 3), 1, n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]


@register_encoder("xresnet1d50", modality="signal")
def xresnet1d50(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kw: object) -> XResNet1d:
    """xresnet1d50: bottlenecks (3, 4, 6, 3), 2048 features."""
    return XResNet1d((3, 4, 6, 3), 4, n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]


@register_encoder("xresnet1d101", modality="signal")
def xresnet1d101(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kw: object) -> XResNet1d:
    """xresnet1d101: bottlenecks (3, 4, 23, 3), 2048 features."""
    return XResNet1d((3, 4, 23, 3), 4, n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]

"""3D ResNet-18/50: MONAI's ``ResNet`` with the common encoder interface.

The class subclasses :class:`monai.networks.nets.ResNet`, so its ``state_dict`` keys are MONAI's
(weights from a MONAI bundle or MedicalNet-style checkpoint load directly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ResNet

from pretext.errors import ConfigError
from pretext.registry import register_encoder

_DEPTHS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


def as_size3(img_size: int | Sequence[int], spatial_dims: int = 3) -> tuple[int, ...]:
    """``32 -> (32, 32, 32)``; checks length and positivity."""
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims={spatial_dims!r} must be 2 or 3")
    size = (int(img_size),) * spatial_dims if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(size) != spatial_dims or min(size) < 1:
        raise ConfigError(f"img_size={img_size!r} must be {spatial_dims} positive integers (D, H, W)")
    return size


class ResNet3D(ResNet):
    """MONAI 3D ResNet as an encoder.

    Args:
        depth: 10, 18, 34 or 50.
        in_channels: input channels C.
        img_size: ``(D, H, W)`` the encoder is sized for (chooses the stem; any size runs).
        spatial_dims: 3 (2 works too for 2D use).
        widen_factor: multiplies every width (0.5 halves compute roughly 4x).
        stem: "auto" (a 3^3 stride-1 stem when the smallest side is < 48, e.g. MedMNIST 28^3;
            else the 7^3 stride-2 stem), "small" or "large".
        no_max_pool: skip the stem's max-pool.
        norm: MONAI norm name ("batch", "instance", ("group", {"num_groups": 8})).

    Shapes:
        ``forward_features``: ``(B, C, D, H, W) -> (B, num_features)``;
        ``forward_maps``: five maps (stem, layer1..4) at strides ``feature_strides``.
    """

    def __init__(self, depth: int = 18, in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32),
                 spatial_dims: int = 3, widen_factor: float = 1.0, stem: str = "auto",
                 no_max_pool: bool = False, norm: str | tuple = "batch") -> None:
        if depth not in _DEPTHS:
            raise ConfigError(f"depth={depth!r} must be one of {sorted(_DEPTHS)}")
        if stem not in ("auto", "small", "large"):
            raise ConfigError(f"stem={stem!r} must be 'auto', 'small' or 'large'")
        if in_channels < 1:
            raise ConfigError(f"in_channels={in_channels!r} must be >= 1")
        self.img_size = as_size3(img_size, spatial_dims)
        small = stem == "small" or (stem == "auto" and min(self.img_size) < 48)
        block, layers = _DEPTHS[depth]
        super().__init__(block, layers, [64, 128, 256, 512], spatial_dims=spatial_dims,
                         n_input_channels=in_channels, conv1_t_size=3 if small else 7,
                         conv1_t_stride=1 if small else 2, no_max_pool=no_max_pool, widen_factor=widen_factor,
                         feed_forward=False, norm=norm)
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        expansion = 4 if block == "bottleneck" else 1
        widths = [int(w * widen_factor) for w in (64, 128, 256, 512)]
        self.feature_channels = [widths[0]] + [w * expansion for w in widths]
        s0 = 1 if small else 2
        s1 = s0 if no_max_pool else s0 * 2
        self.feature_strides = [s0, s1, s1 * 2, s1 * 4, s1 * 8]
        self.num_features = self.feature_channels[-1]

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale maps ``[(B, C_i, D_i, H_i, W_i)]`` from shallow to deep (for decoders)."""
        x = self.act(self.bn1(self.conv1(x)))
        maps = [x]
        if not self.no_max_pool:
            x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, num_features)``: global average pool of the last stage."""
        return super().forward(x)


@register_encoder("resnet10_3d", modality="volume")
def resnet10_3d(in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32), spatial_dims: int = 3,
                widen_factor: float = 1.0, stem: str = "auto", no_max_pool: bool = False,
                norm: str = "batch") -> ResNet3D:
    """3D ResNet-10 (MONAI; one basic block per stage), 512 features at ``widen_factor=1``."""
    return ResNet3D(10, in_channels, img_size, spatial_dims, widen_factor, stem, no_max_pool, norm)


@register_encoder("resnet18_3d", modality="volume", default=True)
def resnet18_3d(in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32), spatial_dims: int = 3,
                widen_factor: float = 1.0, stem: str = "auto", no_max_pool: bool = False,
                norm: str = "batch") -> ResNet3D:
    """3D ResNet-18 (MONAI), 512 features at ``widen_factor=1``."""
    return ResNet3D(18, in_channels, img_size, spatial_dims, widen_factor, stem, no_max_pool, norm)


@register_encoder("resnet50_3d", modality="volume")
def resnet50_3d(in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32), spatial_dims: int = 3,
                widen_factor: float = 1.0, stem: str = "auto", no_max_pool: bool = False,
                norm: str = "batch") -> ResNet3D:
    """3D ResNet-50 (MONAI, bottleneck blocks), 2048 features at ``widen_factor=1``."""
    return ResNet3D(50, in_channels, img_size, spatial_dims, widen_factor, stem, no_max_pool, norm)

"""Any MONAI network as an encoder, by name: ``create_encoder("monai_net", net="DenseNet121")``.

The adapter fills MONAI's sizing arguments (``spatial_dims``, ``in_channels`` /
``n_input_channels``, ``img_size``), then finds the features:

* networks with a ``features`` trunk (DenseNet, EfficientNet-style): the trunk, globally pooled;
* MONAI ResNets: built with ``feed_forward=False``;
* otherwise the network's output: pooled when it is a map (UNet, SegResNet, ...), flattened when
  a vector (then ``out_channels`` / ``num_classes`` set the width, default 256).

``num_features`` is found with one dry run at construction.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pretext.errors import ConfigError
from pretext.registry import register_encoder
from volssl.encoders.resnet import as_size3

_CHANNEL_ARGS = ("in_channels", "n_input_channels", "in_chans")
_SIZE_ARGS = ("img_size", "spatial_size", "roi_size", "input_image_size")
_WIDTH_ARGS = ("out_channels", "num_classes", "n_classes")


class MonaiNet(nn.Module):
    """Adapter from a MONAI network to the encoder interface.

    Args:
        net: a class in :mod:`monai.networks.nets` (e.g. "DenseNet121", "SegResNet", "UNet", "ResNet").
        in_channels: input channels C.
        img_size: ``(D, H, W)`` of the inputs.
        spatial_dims: 3.
        **kwargs: the network's own arguments (checked against its signature).

    Shapes:
        ``forward_features``: ``(B, C, D, H, W) -> (B, num_features)``; ``forward_maps`` (when the
        network yields a map): ``-> [(B, F, d, h, w)]``.
    """

    def __init__(self, net: str = "DenseNet121", in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32),
                 spatial_dims: int = 3, **kwargs: Any) -> None:
        super().__init__()
        import monai.networks.nets as nets

        name = net
        cls = getattr(nets, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            valid = sorted(n for n, c in vars(nets).items() if inspect.isclass(c) and issubclass(c, nn.Module))
            raise ConfigError(f"monai_net net={name!r} is not a network in monai.networks.nets; valid: {', '.join(valid)}")
        self.name, self.in_channels, self.spatial_dims = name, in_channels, spatial_dims
        self.img_size = as_size3(img_size, spatial_dims)
        params = inspect.signature(cls.__init__).parameters
        has_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = sorted(k for k in kwargs if k not in params) if not has_var else []
        if unknown:
            valid = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
            raise ConfigError(f"monai_net {name}: unknown argument(s) {unknown}; {name} accepts: {valid}")
        kw = dict(kwargs)
        if "spatial_dims" in params:
            kw.setdefault("spatial_dims", spatial_dims)
        for arg in _CHANNEL_ARGS:
            if arg in params:
                kw.setdefault(arg, in_channels)
                break
        self.fixed_input_size = False
        for arg in _SIZE_ARGS:
            if arg in params:
                kw.setdefault(arg, self.img_size)
                self.fixed_input_size = True  # e.g. ViT, UNETR: built for one input size
                break
        if "feed_forward" in params:
            kw.setdefault("feed_forward", False)
        for arg in _WIDTH_ARGS:
            if arg in params and params[arg].default is inspect.Parameter.empty:
                kw.setdefault(arg, 256)
                break
        missing = [p for p, v in params.items() if p != "self" and v.default is inspect.Parameter.empty
                   and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL) and p not in kw]
        if missing:
            raise ConfigError(f"monai_net {name} needs argument(s) {missing}: pass them as --encoder.{missing[0]} VALUE")
        try:
            self.net = cls(**kw)
        except (TypeError, ValueError, AssertionError) as err:
            raise ConfigError(f"monai_net {name}({kw}) failed: {err}") from err
        self.net_kwargs = kw
        trunk = getattr(self.net, "features", None)
        self.trunk = trunk if isinstance(trunk, nn.Module) else self.net
        self.num_features, self._spatial, side = self._probe()
        self.feature_channels = [self.num_features]
        self.feature_strides = [max(1, self.img_size[0] // side)] if self._spatial else []

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out

    @torch.no_grad()
    def _probe(self) -> tuple[int, bool, int]:
        was = self.training
        self.eval()
        try:
            out = self._raw(torch.zeros(1, self.in_channels, *self.img_size))
        except RuntimeError as err:
            raise ConfigError(
                f"monai_net {self.name} cannot run on img_size={self.img_size} with {self.in_channels} channel(s): {err}"
            ) from err
        finally:
            self.train(was)
        spatial = out.ndim == 2 + self.spatial_dims
        return int(out.shape[1]), spatial, int(out.shape[2]) if spatial else 0

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self._spatial:
            raise ConfigError(f"monai_net {self.name} yields vectors, not feature maps; pick a network with a map output")
        return [self._raw(x)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self._raw(x)
        if out.ndim > 2:
            out = out.flatten(2).mean(-1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_encoder("monai_net", modality="volume")
def monai_net(net: str = "DenseNet121", in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32),
              spatial_dims: int = 3, **kwargs: Any) -> MonaiNet:
    """Any ``monai.networks.nets`` class by name; extra keywords go to its constructor."""
    return MonaiNet(net, in_channels, img_size, spatial_dims, **kwargs)

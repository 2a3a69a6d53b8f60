"""Adapter that makes tsai models usable as encoders by name: ``tsai_InceptionTimePlus`` etc.

tsai's "Plus" models are ``nn.Sequential(backbone, head)``; the adapter keeps the backbone,
whose output ``(B, F, L)`` is average-pooled for ``forward_features``. tsai is imported only
when such an encoder is built (its import takes seconds).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import nn

from pretext.errors import ConfigError
from pretext.registry import register_encoder

__all__ = ["TsaiEncoder", "TSAI_MODELS", "tsai_encoder"]

# model class -> tsai module; each is registered as "tsai_<class>"
TSAI_MODELS = {
    "InceptionTimePlus": "tsai.models.InceptionTimePlus",
    "XResNet1dPlus": "tsai.models.XResNet1dPlus",
    "TSTPlus": "tsai.models.TSTPlus",
    "ResNetPlus": "tsai.models.ResNetPlus",
    "XceptionTimePlus": "tsai.models.XceptionTimePlus",
}
INSTALL_HINT = "tsai is not installed: pip install tsai (or pip install 'medssl[tsai]')"


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name and err.name.split(".")[0] == "tsai":
            raise ImportError(INSTALL_HINT) from err
        raise


class TsaiEncoder(nn.Module):
    """A tsai model's backbone as an encoder.

    Args:
        model: tsai class name (a key of ``TSAI_MODELS``).
        n_chans: input channels (tsai ``c_in``).
        n_times: input length (tsai ``seq_len``, where the model takes one).
        sfreq: sampling rate (recorded).
        **kwargs: passed to the tsai model (e.g. ``nf=32`` for InceptionTimePlus, ``d_model=64``).

    Shapes:
        ``forward_features``: ``(B, C, T) -> (B, F)``; ``forward_tokens``: ``(B, C, T) -> (B, L, F)``.
    """

    def __init__(self, model: str, n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        if model not in TSAI_MODELS:
            raise ConfigError(f"tsai model {model!r} is not adapted; choose one of {sorted(TSAI_MODELS)}")
        cls = getattr(_import(TSAI_MODELS[model]), model)
        params = inspect.signature(cls.__init__).parameters
        kw: dict[str, Any] = {"c_in": n_chans, "c_out": 2}
        if "seq_len" in params:
            kw["seq_len"] = n_times
        kw.update(kwargs)
        try:
            full = cls(**kw)
        except TypeError as err:
            raise ConfigError(f"tsai {model}: {err}; check the encoder options") from err
        self.backbone = full.backbone
        self.model_name, self.n_chans, self.n_times, self.sfreq = model, n_chans, n_times, sfreq
        was = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            out = self.backbone(torch.zeros(1, n_chans, n_times))
        self.backbone.train(was)
        if out.ndim != 3:
            raise ConfigError(f"tsai {model} backbone returned shape {tuple(out.shape)}, expected (B, F, L)")
        self.num_features = int(out.shape[1])

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.backbone(x), "b f l -> b l f")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def tsai_encoder(model: str, **kwargs: Any) -> TsaiEncoder:
    """Build ``TsaiEncoder(model, **kwargs)``."""
    return TsaiEncoder(model, **kwargs)


def _factory(model: str) -> Callable[..., TsaiEncoder]:
    def make(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kwargs: Any) -> TsaiEncoder:
        return TsaiEncoder(model, n_chans, n_times, sfreq, **kwargs)

    make.__name__ = f"tsai_{model}"
    make.__doc__ = f"tsai's {model} backbone (imported lazily; needs tsai installed)."
    return make


for _name in TSAI_MODELS:
    register_encoder(f"tsai_{_name}", modality="signal", plugin="tsai")(_factory(_name))

"""What an encoder can do beyond ``forward_features``, declared as small :class:`typing.Protocol` s.

Every encoder has pooled features (:class:`PooledFeatures`). Some tasks need more: CPC needs a token sequence,
Models Genesis restoration multi-scale maps for its decoder, the masked autoencoder masked patch tokens. A task
states what it needs with :func:`require`; the error names the encoders that have it.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import torch

from pretext.errors import ConfigError


@runtime_checkable
class PooledFeatures(Protocol):
    """``forward_features(x) -> (B, num_features)``: what every encoder has (probes, heads, bundles)."""

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TokenFeatures(Protocol):
    """``forward_tokens(x) -> (B, N, F)``: a sequence of local features (signal time steps, volume patches)."""

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Latents(Protocol):
    """An encoder with its own context network: ``forward_latents`` (B, N, F) and ``forward_context``."""

    def forward_latents(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_context(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class MultiScaleMaps(Protocol):
    """``forward_maps(x) -> [maps]`` at ``feature_strides`` with ``feature_channels`` (a U-Net decoder's input)."""

    feature_channels: Any
    feature_strides: Any

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class MaskedTokens(Protocol):
    """A patch-token encoder that can encode only the visible patches (masked autoencoding)."""

    patch_size: Any
    grid_size: Any
    num_patches: int
    embed_dim: int

    def forward_masked(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor: ...


def _methods(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]


def encoders_with(proto: type, modality: str | None = None) -> list[str]:
    """Registered encoders whose class has ``proto``'s methods (read from the factory's return annotation)."""
    from pretext.registry import ENCODERS

    out = []
    for name in ENCODERS.names(**({"modality": modality} if modality else {})):
        obj = ENCODERS.get(name)
        cls = obj if inspect.isclass(obj) else None
        if cls is None:
            try:
                ret = inspect.signature(obj, eval_str=True).return_annotation
            except (NameError, TypeError, ValueError):
                ret = None
            cls = ret if inspect.isclass(ret) else None
        if cls is not None and all(callable(getattr(cls, m, None)) for m in _methods(proto)):
            out.append(name)
    return out


def require(encoder: Any, proto: type, task: str, hint: str = "") -> None:
    """Raise a :class:`ConfigError` naming the encoders that have ``proto`` when ``encoder`` lacks it."""
    if isinstance(encoder, proto):
        return
    missing = [n for n in (*_methods(proto), *getattr(proto, "__annotations__", {})) if not hasattr(encoder, n)]
    have = encoders_with(proto)
    raise ConfigError(
        f"task {task!r} needs an encoder with {proto.__name__} ({', '.join(missing)} missing on "
        f"{type(encoder).__name__}){'; ' + hint if hint else ''}; encoders that have it: "
        f"{', '.join(have) or '(none registered)'}"
    )


__all__ = ["Latents", "MaskedTokens", "MultiScaleMaps", "PooledFeatures", "TokenFeatures", "encoders_with",
           "require"]

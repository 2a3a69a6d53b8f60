"""Networks as MONAI bundle configs build them: one factory over the encoder registry.

A bundle config names the network by ``_target_`` and never by our internal classes::

    "network_def": {
        "_target_": "pretext.bundle.networks.build_network",
        "encoder": "resnet18_3d",
        "encoder_kwargs": {"in_channels": 1, "img_size": [28, 28, 28]},
        "head": "linear", "num_classes": 2
    }

so MONAI's ``ConfigParser`` instantiates any encoder registered with
:func:`pretext.registry.register_encoder` (built in, a plugin's entry point, or a module
listed in ``modules``), with or without a classification head.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pretext.errors import ConfigError
from pretext.registry import create_encoder

HEADS = ("linear", "linear_head", "mlp")


class BundleNetwork(nn.Module):
    """Encoder plus optional classification head with a plain tensor-in, tensor-out ``forward``.

    Its state dict keys are ``encoder.*`` and ``head.*``, the same whether the network was built
    for a pretrained encoder (no head) or a fine-tuned classifier.

    Args:
        encoder: a module with ``forward_features(x) -> (B, F)`` and ``num_features``.
        head: maps ``(B, F)`` features to ``(B, K)`` logits; ``None`` returns the features.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder: Any = encoder  # an Encoder (pretext.base): forward_features, num_features
        self.head = head
        self.num_features = int(encoder.num_features)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` or ``(B, C, T)`` -> ``(B, K)`` logits, or ``(B, F)`` features without head."""
        feats = self.encoder.forward_features(x)
        return feats if self.head is None else self.head(feats)


def make_head(kind: str, num_features: int, num_classes: int | None, **kwargs: Any) -> nn.Module:
    """Classification head on pooled features, ``(B, F) -> (B, K)``.

    Args:
        kind: ``"linear"`` (one ``nn.Linear``: keys ``weight``, ``bias``), ``"linear_head"``
            (:class:`pretext.heads.LinearHead`: optional BatchNorm, dropout, ``fc``) or ``"mlp"``
            (Linear-ReLU-Dropout-Linear, ``hidden`` and ``dropout`` options).
        num_features: F, width of the encoder's pooled feature.
        num_classes: K, number of logits.
        kwargs: options of the head kind.

    Raises:
        ConfigError: unknown ``kind``, unknown option or a non-positive ``num_classes``.
    """
    if num_classes is None or int(num_classes) < 1:
        raise ConfigError(f"{num_classes=} must be a positive number of classes for head {kind!r}")
    num_classes = int(num_classes)
    if kind == "linear":
        if kwargs:
            raise ConfigError(f"head 'linear' takes no options, got {sorted(kwargs)}; use 'linear_head' or 'mlp'")
        return nn.Linear(num_features, num_classes)
    if kind == "linear_head":
        from pretext.heads import LinearHead

        bad = sorted(set(kwargs) - {"batch_norm", "dropout"})
        if bad:
            raise ConfigError(f"head 'linear_head' got unknown option(s) {bad}; valid options: batch_norm, dropout")
        return LinearHead(num_features, num_classes, **kwargs)
    if kind == "mlp":
        bad = sorted(set(kwargs) - {"hidden", "dropout"})
        if bad:
            raise ConfigError(f"head 'mlp' got unknown option(s) {bad}; valid options: hidden, dropout")
        width = int(kwargs.get("hidden") or num_features)
        return nn.Sequential(nn.Linear(num_features, width), nn.ReLU(), nn.Dropout(float(kwargs.get("dropout", 0.0))),
                             nn.Linear(width, num_classes))
    raise ConfigError(f"unknown head {kind!r}; valid heads: {', '.join(HEADS)} (or null for features)")


def load_plugins(modules: Sequence[str] | str | None) -> None:
    """Import modules whose decorators register components (plugins that are not entry points).

    Raises:
        ConfigError: a module cannot be imported (the message names it).
    """
    if not modules:
        return
    for name in [modules] if isinstance(modules, str) else modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"bundle config needs module {name!r} to register its components but it cannot be imported "
                f"({err}); install the package that provides it or put it on PYTHONPATH"
            ) from err


def build_network(
    encoder: str,
    encoder_kwargs: dict[str, Any] | None = None,
    head: str | None = None,
    num_classes: int | None = None,
    head_kwargs: dict[str, Any] | None = None,
    modules: Sequence[str] | None = None,
) -> BundleNetwork:
    """Build a registered encoder (and optional head) for a MONAI bundle config.

    Args:
        encoder: registered encoder name (``pretext.registry.list_encoders()``).
        encoder_kwargs: keyword arguments of the encoder factory; lists become tuples.
        head: ``None`` (the network returns ``(B, F)`` features), or a kind of :func:`make_head`.
        num_classes: K logits of the head.
        head_kwargs: options of the head kind.
        modules: modules to import first, for encoders registered by a plugin module.

    Returns:
        A :class:`BundleNetwork` with ``forward(x) -> (B, K)`` or ``(B, F)``.

    Raises:
        ConfigError: unknown encoder/head/option, or an encoder without ``forward_features``.
    """
    load_plugins(modules)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (encoder_kwargs or {}).items()}
    enc = create_encoder(encoder, **kwargs)
    if not hasattr(enc, "forward_features") or not hasattr(enc, "num_features"):
        raise ConfigError(
            f"encoder {encoder!r} built a {type(enc).__name__} without forward_features/num_features; "
            "it does not follow the pretext.base.Encoder interface"
        )
    head_mod = None
    if head is not None:
        head_mod = make_head(head, int(enc.num_features), num_classes, **(head_kwargs or {}))
    return BundleNetwork(enc, head_mod)

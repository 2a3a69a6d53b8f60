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

An encoder trained on patches of whole scans (data spec ``?patch=``) is exported with a ``grid``
(``{"patch_size": [96, 96, 96], "overlap": 0.25, "pool": "mean", "sw_batch_size": 8}``): the network is then
a :class:`GridPooled`, which takes a whole volume of any shape, encodes the sliding grid of patches of
:mod:`pretext.grid` (the harness's grid) and pools their features, as the harness's pooled features do.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pretext.errors import ConfigError
from pretext.grid import grid_starts
from pretext.registry import create_encoder

HEADS = ("linear", "linear_head", "mlp")
GRID_OPTIONS = {"patch_size", "overlap", "pool", "sw_batch_size", "pad_value"}


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


class GridPooled(BundleNetwork):
    """A patch encoder (plus optional head) that takes whole inputs of any spatial shape.

    ``forward`` tiles each input ``(C, *spatial)`` with the sliding grid of :func:`pretext.grid.grid_starts`
    (windows of ``patch_size``, MONAI's ``overlap`` convention, the last window flush with the end; an axis
    shorter than the patch is centred in it and padded with ``pad_value``), encodes the patches
    ``sw_batch_size`` at a time and pools their ``(K, F)`` features (``"mean"`` or ``"max"``) into ``(F,)``;
    the head, if any, is applied to the pooled features. These are the harness's pooled whole-scan features
    (:mod:`sslbench.pooled`). The state dict keys are those of :class:`BundleNetwork` (``encoder.*``,
    ``head.*``), so the same ``model.pt`` loads into either.

    Args:
        encoder, head: as :class:`BundleNetwork`.
        patch_size: the patch the encoder was trained on, one size per spatial axis.
        overlap: overlap in [0, 1) of neighbouring patches.
        pool: ``"mean"`` or ``"max"``.
        sw_batch_size: patches encoded per forward pass of the encoder.
        pad_value: the value of padded voxels (0: the scan store's background).
    """

    #: why ``models/model.ts`` is not written for this network (see :func:`pretext.bundle.export.export_torchscript`)
    torchscript_note = ("not exported: the patch grid depends on the input's shape, which a trace would fix to one "
                        "shape; run models/model.pt with configs/inference.json")

    def __init__(self, encoder: nn.Module, head: nn.Module | None = None, *, patch_size: Sequence[int],
                 overlap: float = 0.25, pool: str = "mean", sw_batch_size: int = 8, pad_value: float = 0.0) -> None:
        super().__init__(encoder, head)
        self.patch_size = tuple(int(p) for p in patch_size)
        if not self.patch_size or min(self.patch_size) < 1:
            raise ConfigError(f"grid patch_size={list(patch_size)!r} must be positive integers, one per spatial axis")
        if not 0.0 <= float(overlap) < 1.0:
            raise ConfigError(f"grid overlap={overlap!r} must be in [0, 1), e.g. 0.25")
        if pool not in ("mean", "max"):
            raise ConfigError(f"grid pool={pool!r} must be 'mean' or 'max' (how patch features are pooled)")
        if int(sw_batch_size) < 1:
            raise ConfigError(f"grid sw_batch_size={sw_batch_size!r} must be a whole number >= 1")
        self.overlap, self.pool, self.sw_batch_size, self.pad_value = float(overlap), pool, int(sw_batch_size), float(pad_value)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` of any spatial shape -> ``(B, F)`` pooled patch features.

        The inputs of a batch share their shape, hence their grid: each encoder pass holds the same corners of
        every input (``max(1, sw_batch_size // B)`` corners, so a batch of patch-sized inputs is one pass).
        """
        nd = len(self.patch_size)
        if x.ndim != nd + 2:
            raise ValueError(f"GridPooled takes (B, C, {nd} spatial axes) inputs, got shape {tuple(x.shape)}")
        starts = grid_starts(x.shape[2:], self.patch_size, self.overlap)
        lo = [max(0, -s[0]) for s in starts]
        hi = [max(0, s[-1] + p - n) for s, p, n in zip(starts, self.patch_size, x.shape[2:], strict=True)]
        if any(lo) or any(hi):  # an axis shorter than the patch: centred and padded, as the harness reads it
            pads = [v for a, b in zip(reversed(lo), reversed(hi), strict=True) for v in (a, b)]
            x = nn.functional.pad(x, pads, value=self.pad_value)
        corners = list(itertools.product(*[[s + o for s in axis] for axis, o in zip(starts, lo, strict=True)]))
        b = x.shape[0]
        step = max(1, self.sw_batch_size // max(b, 1))
        pooled: torch.Tensor | None = None
        for i in range(0, len(corners), step):
            chunk = corners[i:i + step]
            boxes = [(slice(None), slice(None)) + tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True))
                     for corner in chunk]
            patches = torch.cat([x[box] for box in boxes])  # (len(chunk) * B, C, *patch), corner-major
            f = self.encoder.forward_features(patches).reshape(len(chunk), b, -1)
            part = f.sum(0) if self.pool == "mean" else f.amax(0)
            pooled = part if pooled is None else (pooled + part if self.pool == "mean" else torch.maximum(pooled, part))
        assert pooled is not None  # every grid has at least one patch
        return pooled / len(corners) if self.pool == "mean" else pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` whole inputs -> ``(B, K)`` logits, or ``(B, F)`` pooled features without head."""
        feats = self.pooled_features(x)
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
    grid: dict[str, Any] | None = None,
) -> BundleNetwork:
    """Build a registered encoder (and optional head) for a MONAI bundle config.

    Args:
        encoder: registered encoder name (``pretext.registry.list_encoders()``).
        encoder_kwargs: keyword arguments of the encoder factory; lists become tuples.
        head: ``None`` (the network returns ``(B, F)`` features), or a kind of :func:`make_head`.
        num_classes: K logits of the head.
        head_kwargs: options of the head kind.
        modules: modules to import first, for encoders registered by a plugin module.
        grid: for a patch-trained encoder, ``{"patch_size": [...], "overlap", "pool", "sw_batch_size",
            "pad_value"}`` (the options of :class:`GridPooled`): the network then takes whole inputs of any
            shape and pools the features of its sliding grid of patches.

    Returns:
        A :class:`BundleNetwork` with ``forward(x) -> (B, K)`` or ``(B, F)`` (a :class:`GridPooled` with ``grid``).

    Raises:
        ConfigError: unknown encoder/head/option/grid option, or an encoder without ``forward_features``.
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
    if grid is None:
        return BundleNetwork(enc, head_mod)
    if not isinstance(grid, dict) or "patch_size" not in grid:
        raise ConfigError(f"network_def grid={grid!r} must be a dict with patch_size (and optionally overlap, pool, "
                          "sw_batch_size, pad_value), e.g. {\"patch_size\": [96, 96, 96], \"pool\": \"mean\"}")
    bad = sorted(set(grid) - GRID_OPTIONS)
    if bad:
        raise ConfigError(f"network_def grid has unknown option(s) {bad}; valid options: {', '.join(sorted(GRID_OPTIONS))}")
    return GridPooled(enc, head_mod, **grid)

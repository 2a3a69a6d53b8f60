"""Modality adapters: what a modality package tells the core, so the core never branches on a modality name.

The core (registry, data specs, bundles, the harness) knows no modality. Each modality package (``volssl``,
``signalssl``, or a third party's) registers one :class:`Modality` through the entry-point group
``medssl.modalities``::

    [project.entry-points."medssl.modalities"]
    volume = "volssl.modality:ADAPTER"

The adapter names the packages the registries import for its built-in tasks, encoders and data kinds (a new
task is one file in one of them), the encoder keywords that size a network for data of a given shape,
the MONAI bundle parts that differ (load/normalise transforms, the input's metadata, a train-time
augmentation) and the perturbation the embedding audit applies.

Where the project is used from a source tree without being installed (no entry points), the
environment variable ``MEDSSL_MODALITIES`` may list adapter modules (``volssl.modality,signalssl.modality``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import torch

from pretext.errors import ConfigError

GROUP = "medssl.modalities"


class Modality:
    """The adapter a modality registers. Subclasses set the class attributes and override the methods.

    Attributes:
        name: the modality's name (``"volume"``), used as registry metadata ``modality=...``.
        packages: registry kind (``"task"``, ``"encoder"``, ``"data"``) -> packages whose modules are imported
            (recursively) so that their decorators register.
        size_keys: encoder keyword arguments that size a network for the data (``in_channels``, ``img_size``).
        bundle_file_patterns: glob patterns of the input files an exported bundle's inference reads.
        bundle_data_type: MONAI metadata ``data_type`` of those files.
        audit_perturbation: what :meth:`perturb` does, in words (for reports).
        spatial_dims: dimensions of one item after its channel axis (3 for ``(C, D, H, W)``, 1 for ``(C, T)``).
        hooks: method name -> ``"module:function"`` that implements it (imported on first use, so adapters stay
            cheap to import): ``bundle_transforms``, ``bundle_input_spec``, ``bundle_grid`` (optional), ``views``
            (called with the method's arguments).
        bundle_augment: the MONAI config :meth:`bundle_augmentation` returns.
    """

    name: str = ""
    packages: dict[str, tuple[str, ...]] = {}
    size_keys: tuple[str, ...] = ()
    bundle_file_patterns: tuple[str, ...] = ()
    bundle_data_type: str = "numpy"
    audit_perturbation: str = ""
    spatial_dims: int = 0
    hooks: dict[str, str] = {}
    bundle_augment: dict[str, Any] = {}

    def _hook(self, method: str) -> Any:
        target = self.hooks.get(method)
        if not target:
            raise NotImplementedError(f"modality {self.name!r} implements no {method}: override it or name a hook")
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)

    # -- sizing ----------------------------------------------------------------------------------
    def encoder_kwargs(self, input_shape: Sequence[int], sfreq: float | None = None) -> dict[str, Any]:
        """Keyword arguments that size an encoder for items of ``input_shape`` ``(C, ...)``."""
        raise NotImplementedError

    def input_shape(self, kwargs: dict[str, Any], where: str) -> tuple[int, ...]:
        """The ``(C, ...)`` input an encoder built with ``kwargs`` takes (normalising ``kwargs`` in place).

        Raises:
            ConfigError: a size key is missing (``where`` names the checkpoint/encoder in the message).
        """
        raise NotImplementedError

    # -- MONAI bundles ----------------------------------------------------------------------------
    def bundle_transforms(self, src: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """MONAI transform configs (key ``"image"``) that load and prepare one input as in training, and a
        description ``{"normalization": ..., "preprocessing": ...}`` for the metadata."""
        return self._hook("bundle_transforms")(src)

    def bundle_input_spec(self, src: Any, imaging_modality: str, description: dict[str, Any]) -> dict[str, Any]:
        """``network_data_format.inputs.image`` of the bundle's ``metadata.json``."""
        return self._hook("bundle_input_spec")(src, imaging_modality, description)

    def bundle_grid(self, src: Any) -> dict[str, Any] | None:
        """For a model trained on patches of whole inputs, the options of the bundle network's sliding grid
        (:class:`pretext.bundle.networks.GridPooled`: ``patch_size``, ``overlap``, ``pool``, ...); ``None``
        (the default, and without a ``bundle_grid`` hook) for a network that takes one fixed-size input."""
        return self._hook("bundle_grid")(src) if "bundle_grid" in self.hooks else None

    def bundle_augmentation(self) -> dict[str, Any]:
        """A light MONAI train-time augmentation for the bundle's ``train.json`` (:attr:`bundle_augment`)."""
        if not self.bundle_augment:
            raise NotImplementedError(f"modality {self.name!r} sets no bundle_augment")
        return dict(self.bundle_augment)

    # -- joint-embedding views --------------------------------------------------------------------
    def views(self, sizing: dict[str, Any] | None = None, **params: Any) -> Any:
        """The modality's default view policy for joint-embedding tasks: a :class:`pretext.transforms.RandomTransform`
        over batches, whose documented parameters ``params`` override (unknown names are refused) and that has
        ``replace(**changes)`` (DINO's global and local crops change ``crop_scale`` and ``size``). ``sizing`` is
        the encoder's sizing keywords where known (:meth:`encoder_kwargs`; a signal's ``sfreq``)."""
        return self._hook("views")(sizing or {}, **params)

    # -- harness ---------------------------------------------------------------------------------
    def perturb(self, x: torch.Tensor, generator: torch.Generator, sfreq: float | None = None) -> torch.Tensor:
        """A small, label-preserving perturbation of a batch ``x`` (the embedding audit's stability check)."""
        raise NotImplementedError


_ADAPTERS: dict[str, Modality] = {}
_LOADED = False


def _load() -> dict[str, Modality]:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        found = [ep.load() for ep in entry_points(group=GROUP)]
        extra = [m.strip() for m in os.environ.get("MEDSSL_MODALITIES", "").split(",") if m.strip()]
        found += [importlib.import_module(m).ADAPTER for m in extra]
        for adapter in found:
            if not isinstance(adapter, Modality):
                raise ConfigError(f"entry point of group {GROUP!r} gave {adapter!r}, not a pretext.modality.Modality")
            _ADAPTERS.setdefault(adapter.name, adapter)
        if not _ADAPTERS:
            raise ConfigError(
                "no modality package is registered (entry-point group 'medssl.modalities' is empty): install the "
                "project (`pip install -e .`, which `make install` does) or set "
                "MEDSSL_MODALITIES=volssl.modality,signalssl.modality"
            )
    return _ADAPTERS


def modalities() -> dict[str, Modality]:
    """Every registered modality adapter, by name."""
    return dict(_load())


def get_modality(name: str | None) -> Modality:
    """The adapter of modality ``name``.

    Raises:
        ConfigError: no such modality (the message lists the registered ones).
    """
    adapters = _load()
    if name not in adapters:
        raise ConfigError(f"unknown modality {name!r}; registered modalities: {', '.join(sorted(adapters))}")
    return adapters[str(name)]


def modality_of_kwargs(kwargs: dict[str, Any]) -> str | None:
    """The modality whose size keys appear in an encoder's keyword arguments (for unregistered encoders)."""
    for name, adapter in _load().items():
        if any(k in kwargs for k in adapter.size_keys):
            return name
    return None


def modality_of_shape(item_shape: Sequence[int]) -> str:
    """The modality whose items have the rank of ``item_shape`` ``(C, ...)``.

    Raises:
        ConfigError: no registered modality has items of that rank.
    """
    for name, adapter in _load().items():
        if adapter.spatial_dims == len(item_shape) - 1:
            return name
    raise ConfigError(f"no registered modality takes items of shape {tuple(item_shape)} (channels first); "
                      f"registered: {', '.join(f'{n} ({a.spatial_dims} dims after C)' for n, a in _load().items())}")

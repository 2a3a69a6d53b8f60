"""Random transforms in three layers, the same shape on every modality (torchio: ``RandomNoise.get_params``
-> ``Noise`` -> ``get_noise``).

1. A :class:`RandomTransform` samples parameters: ``get_params(batch_shape, generator)`` draws every random
   number it needs from a CPU ``torch.Generator``, in a fixed order, and returns a :class:`Transform`.
2. A :class:`Transform` is deterministic: it holds those parameters (CPU tensors, one row per sample) and
   ``apply(x)`` moves them to ``x``'s device and calls a pure tensor function.
3. The pure tensor function (``flip``, ``apply_noise``, ...) does the work and draws nothing.

Because no random number comes from a device generator, one generator state gives the same views on CPU
and GPU. ``generator=None`` draws from torch's default CPU generator (seeded by ``torch.manual_seed``).

With a modality's transform, e.g. ``volssl.transforms.RandomFlip``:

>>> t = RandomFlip(prob=0.5).get_params(x.shape, torch.Generator().manual_seed(0))   # a Flip: the parameters
>>> y = t(x)                      # the same as RandomFlip(prob=0.5)(x, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from pretext.errors import ConfigError

__all__ = ["Chain", "Compose", "RandomTransform", "Transform", "check_probability"]


class Transform:
    """A deterministic transform: its parameters are fixed when it is built.

    Subclasses are dataclasses whose fields are the parameters (CPU tensors with one row per sample, plus
    plain settings) and implement :meth:`apply`. They are not frozen: ``torch.compile`` cannot rebuild a
    frozen dataclass across a graph break; treat them as immutable (``dataclasses.replace`` makes variants).
    """

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform the batch ``x`` (on any device); returns a new tensor."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)


class RandomTransform:
    """Samples the parameters of a :class:`Transform`; subclasses implement :meth:`get_params`."""

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Transform:
        """Draw the parameters for a batch of ``batch_shape`` from the CPU ``generator``.

        Args:
            batch_shape: shape of the batch the transform will be applied to, e.g. ``(B, C, D, H, W)``.
            generator: CPU generator (``None``: torch's default generator).

        Returns:
            The deterministic transform holding the parameters.
        """
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample parameters for ``x``'s shape, then apply them: ``get_params(x.shape, generator)(x)``."""
        return self.get_params(tuple(x.shape), generator).apply(x)


@dataclasses.dataclass
class Chain(Transform):
    """Deterministic transforms applied in order."""

    transforms: tuple[Transform, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t.apply(x)
        return x


class Compose(RandomTransform):
    """Random transforms in order; their parameters are drawn in that order from one generator.

    Args:
        transforms: the random transforms (applied first to last).
    """

    def __init__(self, transforms: Sequence[RandomTransform]) -> None:
        self.transforms = tuple(transforms)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Chain:
        return Chain(tuple(t.get_params(batch_shape, generator) for t in self.transforms))


def check_probability(**values: float) -> None:
    """Raise :class:`ConfigError` naming the first value outside ``[0, 1]``."""
    for name, v in values.items():
        if not 0.0 <= float(v) <= 1.0:
            raise ConfigError(f"{name}={v} must be a probability in [0, 1]")

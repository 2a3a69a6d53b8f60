"""Spatial transforms: the Models Genesis flips and the rotations of the rotation task.

:class:`RandomFlip` -> :class:`Flip` -> :func:`flip`; :class:`RandomRotate90` -> :class:`Rotate90` ->
:func:`rotate` (10 rotations about the axes, or the cube's 24).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform, check_probability
from volssl.transforms.hashing import use_kernel

__all__ = ["Flip", "RandomFlip", "RandomRotate90", "Rotate90", "flip", "inverse_steps", "rotate", "rotation_group"]


# -- flips ---------------------------------------------------------------------------------------


def flip(x: torch.Tensor, axes: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Flip spatial axis ``a`` of volume ``i`` where ``axes[i, a]`` (the pure function).

    Args:
        x: ``(B, C, D, H, W)``.
        axes: ``(B, 3)`` bool (any device).
        backend: "auto" (numba on CPU, tensor ops elsewhere), "numba" or "torch".

    Returns:
        ``(B, C, D, H, W)``, a new tensor.
    """
    axes = axes.cpu()
    if use_kernel(x, backend):
        from volssl.transforms._kernels import flip_kernel  # lazy: numba import ~1 s, kernel cached on disk

        native = x.dtype in (torch.float32, torch.float64)
        src = np.ascontiguousarray((x if native else x.float()).detach().cpu().numpy())
        out_np = np.empty_like(src)
        flip_kernel(src, out_np, axes.numpy())
        return torch.from_numpy(out_np).to(device=x.device, dtype=x.dtype)
    out = x.clone()
    for a in range(3):
        idx = torch.nonzero(axes[:, a]).flatten().to(x.device)
        if len(idx):
            out[idx] = out[idx].flip(a + 2)
    return out


@dataclasses.dataclass
class Flip(Transform):
    """Fixed flips: ``axes (B, 3)`` bool, spatial axes to flip per volume; ``backend`` as :func:`flip`."""

    axes: torch.Tensor
    backend: str = "auto"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return flip(x, self.axes, self.backend)


class RandomFlip(RandomTransform):
    """Models Genesis flips: ``while random() < prob and cnt < max_flips``: flip a random axis.

    Args:
        prob: probability of each further flip (the paper's ``flip_rate``: 0.4).
        max_flips: most flips per volume.
        backend: see :func:`flip`.
    """

    def __init__(self, prob: float = 0.4, max_flips: int = 3, backend: str = "auto") -> None:
        check_probability(prob=prob)
        self.prob, self.max_flips, self.backend = float(prob), int(max_flips), backend

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Flip:
        """Draws ``(B, max_flips)`` float64 uniforms, then ``(B, max_flips)`` axes; keeps each axis' parity."""
        b = int(batch_shape[0])
        u = torch.rand(b, self.max_flips, generator=generator, dtype=torch.float64)
        axis = torch.randint(0, 3, (b, self.max_flips), generator=generator)
        active = (u < self.prob).long().cumprod(dim=1)  # flip k happens when the first k+1 draws are < prob
        parity = torch.zeros(b, 3, dtype=torch.long)
        parity.scatter_add_(1, axis, active)
        return Flip(parity % 2 == 1, self.backend)


# -- rotations -----------------------------------------------------------------------------------

# A rotation is a tuple of (k, plane) steps applied with torch.rot90 to the spatial dims (0, 1, 2).
Steps = tuple[tuple[int, tuple[int, int]], ...]
_PLANES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}  # rotation about axis a turns the plane of the other two


@cache
def rotation_group(kind: int) -> tuple[Steps, ...]:
    """The rotations of a ``kind``-class rotation task.

    * 10: identity, then 90/180/270 degrees about D, H and W (in that order);
    * 24: the cube's full rotation group (orientation-preserving), identity first.
    """
    if kind == 10:
        out: list[Steps] = [()]
        for axis in range(3):
            out += [((k, _PLANES[axis]),) for k in (1, 2, 3)]
        return tuple(out)
    if kind != 24:
        raise ConfigError(f"rotation {kind=} must be 10 or 24")
    probe = torch.arange(4 * 4 * 4).reshape(4, 4, 4)  # distinct values: every rotation gives a distinct layout
    seen: dict[bytes, Steps] = {}
    frontier: list[Steps] = [()]
    while frontier:
        nxt: list[Steps] = []
        for steps in frontier:
            key = _apply_steps(probe, steps, first=0).numpy().tobytes()
            if key in seen:
                continue
            seen[key] = steps
            nxt += [steps + ((1, _PLANES[a]),) for a in range(3)]
        frontier = nxt
    group = tuple(seen.values())
    assert len(group) == 24, len(group)
    return group


def _apply_steps(x: torch.Tensor, steps: Steps, first: int) -> torch.Tensor:
    for k, (a, b) in steps:
        x = torch.rot90(x, k, dims=(a + first, b + first))
    return x


def inverse_steps(steps: Steps) -> Steps:
    """The rotation undoing ``steps``."""
    return tuple((-k % 4, plane) for k, plane in reversed(steps))


def rotate(x: torch.Tensor, labels: torch.Tensor, kind: int = 10, inverse: bool = False) -> torch.Tensor:
    """Rotate volume ``i`` by rotation ``labels[i]`` of :func:`rotation_group` (the pure function).

    Args:
        x: ``(B, C, S, S, S)`` (cubic spatial shape).
        labels: ``(B,)`` int64 rotation indices (any device).
        kind: 10 or 24, the rotation group.
        inverse: apply the inverse rotations (undoes a previous :func:`rotate`).

    Returns:
        ``(B, C, S, S, S)``, a new tensor.
    """
    sp = x.shape[2:]
    if len(set(sp)) != 1:
        raise ConfigError(f"rotations by 90 degrees need a cubic volume; got spatial shape {tuple(sp)}: crop or pad "
                          "to a cube")
    group = rotation_group(kind)
    out = torch.empty_like(x)
    labels_cpu = labels.cpu()
    for r in torch.unique(labels_cpu).tolist():
        idx = torch.nonzero(labels_cpu == r).flatten().to(x.device)
        steps = inverse_steps(group[r]) if inverse else group[r]
        out[idx] = _apply_steps(x[idx], steps, first=2)
    return out


@dataclasses.dataclass
class Rotate90(Transform):
    """Fixed rotations: volume ``i`` turned by rotation ``labels[i]`` of ``rotation_group(kind)``."""

    labels: torch.Tensor
    kind: int = 10

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return rotate(x, self.labels, self.kind)


class RandomRotate90(RandomTransform):
    """A uniformly drawn rotation of :func:`rotation_group` per volume (the label of the rotation task).

    Args:
        kind: 10 (identity + 90/180/270 degrees about each axis) or 24 (the cube's rotation group).
    """

    def __init__(self, kind: int = 10) -> None:
        if kind not in (10, 24):
            raise ConfigError(f"rotation {kind=} must be 10 or 24")
        self.kind = kind

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Rotate90:
        """Draws ``(B,)`` labels in ``0..kind-1``."""
        return Rotate90(torch.randint(0, self.kind, (int(batch_shape[0]),), generator=generator), self.kind)

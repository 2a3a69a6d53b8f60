"""Intensity transforms: the Models Genesis Bezier remap, and the audit's scanner-calibration jitter.

:class:`RandomBezierRemap` -> :class:`BezierRemap` -> :func:`remap_intensity` (a per-volume lookup table,
numba on CPU, tensor ops elsewhere); :class:`RandomIntensityJitter` -> :class:`IntensityJitter` ->
:func:`jitter_intensity` (:func:`perturb_volume` is its one-line use by the embedding audit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from einops import rearrange

from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform, check_probability
from volssl.transforms.hashing import use_kernel

__all__ = ["BezierRemap", "IntensityJitter", "RandomBezierRemap", "RandomIntensityJitter", "bezier_curves",
           "bezier_lut", "jitter_intensity", "perturb_volume", "remap_intensity"]


@cache
def _bernstein(n: int) -> np.ndarray:
    """``(4, n)`` float64: ``C(3, i) t^(3-i) (1-t)^i`` at ``n`` points ``t`` of ``[0, 1]`` (Models Genesis' order:
    control point ``i`` weighs ``t^(3-i)``, so ``t = 0`` is the end point)."""
    t = np.linspace(0.0, 1.0, n)
    return np.stack([math.comb(3, i) * t ** (3 - i) * (1 - t) ** i for i in range(4)])


def _curves(points: np.ndarray, n: int) -> np.ndarray:
    """``(B, 2, 2)`` inner control points -> ``(B, 2, n)`` samples ``(x, y)`` of the cubic Bezier curves."""
    b = points.shape[0]
    ctrl = np.concatenate([np.zeros((b, 1, 2)), points, np.ones((b, 1, 2))], axis=1)  # (B, 4, 2)
    return np.einsum("bip,in->bpn", ctrl, _bernstein(n))


def bezier_curves(points: torch.Tensor, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubic Bezier through ``(0,0), p1, p2, (1,1)`` as Models Genesis computes it.

    Args:
        points: ``(B, 2, 2)`` the two inner control points ``(x, y)``.
        n: samples along the curve.

    Returns:
        ``xvals, yvals`` each ``(B, n)`` float64 (CPU); like the reference, ``t = 0`` is the end point ``(1, 1)``.
    """
    vals = torch.from_numpy(_curves(points.detach().cpu().double().numpy(), n))
    return vals[:, 0], vals[:, 1]


def bezier_lut(points: torch.Tensor, increasing: torch.Tensor, n_points: int = 1000,
               lut_size: int = 4097) -> torch.Tensor:
    """The remap curves tabulated on ``lut_size`` uniform points of ``[0, 1]`` (CPU, float64 maths).

    As Models Genesis: the curve's x samples are sorted, and its y samples too where ``increasing``
    (else they stay in curve order, which makes the curve decreasing); the table is ``np.interp`` of
    those samples.

    Args:
        points: ``(B, 2, 2)`` inner control points.
        increasing: ``(B,)`` bool; where false the curve is decreasing (intensity inversion).
        n_points: samples of each Bezier curve.
        lut_size: table entries.

    Returns:
        ``(B, lut_size)`` float32.
    """
    vals = _curves(points.detach().cpu().double().numpy(), n_points)
    xs = np.sort(vals[:, 0], axis=1)
    ys = np.where(increasing.cpu().numpy()[:, None], np.sort(vals[:, 1], axis=1), vals[:, 1])
    grid = np.linspace(0.0, 1.0, lut_size)
    lut = np.empty((len(vals), lut_size), np.float32)
    for i in range(len(vals)):
        lut[i] = np.interp(grid, xs[i], ys[i])
    return torch.from_numpy(lut)


def _lut_torch(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    size = lut.shape[1]
    pos = rearrange(x, "b c d h w -> b (c d h w)").float().clamp(0, 1) * (size - 1)
    i0 = pos.floor().long().clamp(0, size - 2)  # NaN: any index, weight NaN, output NaN
    w = pos - i0
    lo = lut.gather(1, i0)
    return (lo + w * (lut.gather(1, i0 + 1) - lo)).to(x.dtype).reshape(x.shape)


def _lut_numba(x: torch.Tensor, lut: torch.Tensor, enabled: torch.Tensor) -> torch.Tensor:
    from volssl.transforms._kernels import lut_kernel  # lazy: numba import ~1 s, kernel cached on disk

    src = np.ascontiguousarray(x.detach().cpu().float().numpy()).reshape(x.shape[0], -1)
    out = np.empty_like(src)
    lut_kernel(src, out, np.ascontiguousarray(lut.cpu().numpy()), enabled.cpu().numpy())
    return torch.from_numpy(out).reshape(x.shape).to(device=x.device, dtype=x.dtype)


def remap_intensity(x: torch.Tensor, lut: torch.Tensor, enabled: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Map each voxel through its volume's table, linearly interpolated (the pure function).

    Args:
        x: ``(B, C, D, H, W)``, intensities in ``[0, 1]`` (values outside are clamped, as ``np.interp`` does).
        lut: ``(B, L)`` float32 curve values at ``L`` uniform points of ``[0, 1]``.
        enabled: ``(B,)`` bool, the volumes to remap (the others are returned unchanged).
        backend: "auto" (numba on CPU, tensor ops elsewhere), "numba" or "torch".

    Returns:
        ``(B, C, D, H, W)``, a new tensor.
    """
    if use_kernel(x, backend):
        return _lut_numba(x, lut, enabled)
    out = _lut_torch(x, lut.to(x.device))
    return torch.where(enabled.to(x.device)[:, None, None, None, None], out, x)


@dataclasses.dataclass
class BezierRemap(Transform):
    """Models Genesis non-linear intensity transformation with fixed curves.

    Attributes:
        points: ``(B, 2, 2)`` float64 inner control points of each volume's cubic Bezier curve.
        increasing: ``(B,)`` bool, false for a decreasing curve (inversion).
        enabled: ``(B,)`` bool, the volumes to remap.
        n_points: samples of the curve; lut_size: entries of the table the voxels are read from.
        backend: see :func:`remap_intensity`.
    """

    points: torch.Tensor
    increasing: torch.Tensor
    enabled: torch.Tensor
    n_points: int = 1000
    lut_size: int = 4097
    backend: str = "auto"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled.any():
            return x.clone()
        lut = bezier_lut(self.points, self.increasing, self.n_points, self.lut_size)
        return remap_intensity(x, lut, self.enabled, self.backend)


class RandomBezierRemap(RandomTransform):
    """Draw the curves of :class:`BezierRemap` (inputs expected in ``[0, 1]``).

    Per volume, with probability ``prob``: a random monotone Bezier curve remaps intensities; half of
    the time the curve is decreasing, as in the reference. The curve (``np.interp`` of its ``n_points``
    samples) is tabulated on ``lut_size`` uniform points of ``[0, 1]`` and voxels are interpolated
    linearly in that table (error below 1e-5 for these curves).

    Args:
        prob: probability of remapping a volume (the paper's ``nonlinear_rate``: 0.9).
        n_points: samples of the curve (the reference uses 100,000; 1,000 is as smooth).
        lut_size: table entries.
        backend: see :func:`remap_intensity`.
    """

    def __init__(self, prob: float = 0.9, n_points: int = 1000, lut_size: int = 4097, backend: str = "auto") -> None:
        check_probability(prob=prob)
        if n_points < 2 or lut_size < 2:
            raise ConfigError(f"{n_points=} and {lut_size=} must be >= 2")
        self.prob, self.n_points, self.lut_size, self.backend = float(prob), int(n_points), int(lut_size), backend

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> BezierRemap:
        """Draws ``(B, 6)`` float64 uniforms: remap or not, the two control points, increasing or not."""
        b = int(batch_shape[0])
        u = torch.rand(b, 6, generator=generator, dtype=torch.float64)
        return BezierRemap(u[:, 1:5].reshape(b, 2, 2), u[:, 5] >= 0.5, u[:, 0] < self.prob, self.n_points,
                           self.lut_size, self.backend)


# -- audit perturbation ------------------------------------------------------------------------------


def jitter_intensity(x: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x * gain + std(x) * (offset + noise)``, computed in float32 (the pure function).

    Args:
        x: ``(B, C, D, H, W)``.
        gain: ``(B, 1, 1, 1, 1)`` gains.
        offset: ``(B, 1, 1, 1, 1)`` offsets in units of each volume's std.
        noise: ``(B, C, D, H, W)`` white noise in units of each volume's std.

    Returns:
        ``(B, C, D, H, W)`` in ``x``'s dtype.
    """
    b = x.shape[0]
    std = x.float().flatten(1).std(dim=1).clamp_min(1e-6).view(b, *([1] * (x.dim() - 1)))
    dev = x.device
    return (x.float() * gain.to(dev) + std * (offset.to(dev) + noise.to(dev))).to(x.dtype)


@dataclasses.dataclass
class IntensityJitter(Transform):
    """Fixed gain, offset and noise (see :func:`jitter_intensity`)."""

    gain: torch.Tensor
    offset: torch.Tensor
    noise: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return jitter_intensity(x, self.gain, self.offset, self.noise)


class RandomIntensityJitter(RandomTransform):
    """Global intensity shift and gain (scanner calibration) plus white noise.

    Args:
        shift: maximum absolute intensity offset, in units of the volume's std.
        scale: maximum relative gain change.
        noise: noise std in units of the volume's std.
    """

    def __init__(self, shift: float = 0.03, scale: float = 0.05, noise: float = 0.01) -> None:
        self.shift, self.scale, self.noise = float(shift), float(scale), float(noise)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> IntensityJitter:
        """Draws, in order: offsets ``(B, 1, 1, 1, 1)``, gains ``(B, 1, 1, 1, 1)``, noise ``batch_shape``."""
        shape = (int(batch_shape[0]), *([1] * (len(batch_shape) - 1)))
        offset = (2 * torch.rand(shape, generator=generator) - 1) * self.shift
        gain = 1 + (2 * torch.rand(shape, generator=generator) - 1) * self.scale
        white = torch.randn(tuple(batch_shape), generator=generator) * self.noise
        return IntensityJitter(gain, offset, white)


def perturb_volume(x: torch.Tensor, generator: torch.Generator, shift: float = 0.03, scale: float = 0.05,
                   noise: float = 0.01) -> torch.Tensor:
    """The embedding audit's perturbation: ``RandomIntensityJitter(shift, scale, noise)(x, generator)``.

    Args:
        x: ``(B, C, D, H, W)`` volumes.
        generator: CPU generator for the random parameters.
        shift, scale, noise: see :class:`RandomIntensityJitter`.

    Returns:
        ``(B, C, D, H, W)`` perturbed volumes.
    """
    return RandomIntensityJitter(shift, scale, noise)(x, generator)

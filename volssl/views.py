"""The volume modality's default view policy for joint-embedding tasks (SimCLR, VICReg, DINO).

:class:`VolumeViews` draws, per sample, a random resized 3D crop (SimCLR's ``RandomResizedCrop`` in 3D), flips
on each axis and a small rotation, all folded into one affine grid sampled trilinearly, then intensity
scale/shift, gamma, Gaussian blur and Gaussian noise. Every random number comes from the CPU generator
(``get_params``); the tensor work runs batched on the batch's device, and the noise is a hash of drawn seeds
(:mod:`volssl.transforms.hashing`), so one seed gives the same views on CPU and GPU.

Every field is an overridable parameter: a task's ``--task.views '{crop_scale: [0.3, 1.0], blur_p: 0}'``
replaces the defaults (:meth:`volssl.modality.VolumeModality.views`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from pretext.config import DATACLASS_CONFIG, AfterValidator, Field, build_config, span
from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform
from volssl.transforms.hashing import draw_seeds, hash_uniform

__all__ = ["VolumeView", "VolumeViews", "default_views", "gaussian_blur3d"]


Prob = Annotated[float, Field(ge=0, le=1)]


def _contains_one(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] <= 1 <= value[1]:
        raise ValueError(f"{list(value)} must contain 1 (a side ratio range around the cube's)")
    return value


def _three_sides(value: Any) -> Any:
    return [value] * 3 if isinstance(value, int) and not isinstance(value, bool) else value


def gaussian_blur3d(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per sample (0 = unchanged), batched by a grouped convolution.

    Args:
        x: ``(B, C, D, H, W)``.
        sigma: ``(B,)`` standard deviations in voxels (on ``x``'s device).
        radius: kernel half-width (the kernel has ``2 * radius + 1`` taps).
    """
    b, c = x.shape[:2]
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    ident = torch.zeros_like(k)
    ident[:, radius] = 1.0
    k = torch.where((sigma > 0)[:, None], k, ident).repeat_interleave(c, 0)  # (B*C, K)
    y = x.reshape(1, b * c, *x.shape[2:])
    for axis in range(3):
        shape = [b * c, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        y = F.conv3d(F.pad(y, pad, mode="replicate"), k.reshape(shape), groups=b * c)
    return y.reshape(x.shape)


@dataclasses.dataclass
class VolumeView(Transform):
    """One batch of fixed views (the parameters :meth:`VolumeViews.get_params` drew, one row per sample).

    ``theta (B, 3, 4)`` maps output to input coordinates (``F.affine_grid``); ``size`` is the output
    ``(D, H, W)``; ``gain``, ``shift``, ``gamma``, ``sigma``, ``noise_std`` are ``(B,)`` (1, 0, 1, 0, 0 where a
    step is not applied); ``seeds (B,)`` seed the noise.
    """

    theta: torch.Tensor
    size: tuple[int, int, int]
    gain: torch.Tensor
    shift: torch.Tensor
    gamma: torch.Tensor
    sigma: torch.Tensor
    noise_std: torch.Tensor
    seeds: torch.Tensor
    radius: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        b, c = x.shape[:2]
        xf = x.float()
        grid = F.affine_grid(self.theta.to(dev), [b, c, *self.size], align_corners=False)
        y = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)
        col = (b,) + (1,) * (y.ndim - 1)
        lo = y.amin(dim=(1, 2, 3, 4), keepdim=True)
        span = (y.amax(dim=(1, 2, 3, 4), keepdim=True) - lo).clamp(min=1e-6)
        y = lo + span * ((y - lo) / span).clamp(0, 1) ** self.gamma.to(dev).reshape(col)
        y = gaussian_blur3d(y, self.sigma.to(dev), self.radius)
        y = y * self.gain.to(dev).reshape(col) + self.shift.to(dev).reshape(col) * span
        if bool((self.noise_std > 0).any()):
            n = y[0].numel()
            u = hash_uniform(self.seeds.to(dev), 2 * n).reshape(b, 2, n)
            z = torch.sqrt(-2.0 * torch.log(u[:, 0].clamp(min=1e-7))) * torch.cos(2 * math.pi * u[:, 1])
            y = y + z.reshape(y.shape) * (self.noise_std.to(dev).reshape(col) * span)
        return y.to(x.dtype)


@pydantic_dataclass(config=DATACLASS_CONFIG)
class VolumeViews(RandomTransform):
    """Random views of volumes ``(B, C, D, H, W)``; every field is a documented, overridable parameter.

    Attributes:
        crop_scale: range of the crop's volume as a fraction of the input's (random resized crop; 0.5-1 as the
            reference SimCLR run on AdrenalMNIST3D; DINO's global/local crops override it).
        aspect: range of each axis' side ratio against a cube of that volume (log-uniform, product 1).
        size: output ``(D, H, W)``; ``None`` keeps the input size (DINO's local crops pass a smaller one).
        flip_p: probability of a flip on each of the three axes.
        rotate_deg: maximum rotation about each axis, in degrees (uniform in +-); 0 disables.
        intensity_p: probability of a random gain and shift.
        gain: range of the intensity gain.
        shift: range of the intensity shift, as a fraction of the sample's intensity span.
        gamma_p: probability of a gamma change (on the sample's min-max range).
        gamma: range of the gamma exponent (log-uniform).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation in voxels.
        noise_p: probability of additive Gaussian noise.
        noise_std: range of the noise std, as a fraction of the sample's intensity span.
    """

    crop_scale: span(ge=1e-3, le=1) = (0.5, 1.0)
    aspect: Annotated[span(ge=1e-3), AfterValidator(_contains_one)] = (0.8, 1.25)
    size: Annotated[tuple[PositiveInt, PositiveInt, PositiveInt] | None, BeforeValidator(_three_sides)] = None
    flip_p: Prob = 0.5
    rotate_deg: float = Field(10.0, ge=0, le=180)
    intensity_p: Prob = 0.8
    gain: span(ge=0) = (0.8, 1.2)
    shift: span(ge=-1, le=1) = (-0.1, 0.1)
    gamma_p: Prob = 0.5
    gamma: span(ge=1e-3) = (0.7, 1.5)
    blur_p: Prob = 0.5
    blur_sigma: span(ge=0, le=10) = (0.1, 1.0)
    noise_p: Prob = 0.5
    noise_std: span(ge=0) = (0.0, 0.05)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> VolumeView:
        if len(batch_shape) != 5:
            raise ConfigError(f"volume views take (B, C, D, H, W) batches, got shape {tuple(batch_shape)}")
        b = int(batch_shape[0])
        g = generator

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

        def chosen(p: float) -> torch.Tensor:
            return torch.rand(b, generator=g, dtype=torch.float64) < p

        # spatial: crop volume, per-axis aspect, centre, flips, rotation -> one affine (output -> input)
        vol = uniform(*self.crop_scale, b)
        la = uniform(math.log(self.aspect[0]), math.log(self.aspect[1]), b, 3)
        la = la - la.mean(1, keepdim=True)
        side = (vol[:, None] ** (1 / 3) * torch.exp(la)).clamp(max=1.0)  # (B, 3) in (x, y, z) = (W, H, D)
        centre = uniform(-1.0, 1.0, b, 3) * (1.0 - side)
        flip = torch.where(torch.rand(b, 3, generator=g, dtype=torch.float64) < self.flip_p, -1.0, 1.0)
        ang = uniform(-1.0, 1.0, b, 3) * math.radians(float(self.rotate_deg))
        rot = _rotation(ang)
        theta = torch.cat([rot @ torch.diag_embed(side * flip), centre[:, :, None]], 2).float()
        # intensity
        use_int, gain, shift = chosen(self.intensity_p), uniform(*self.gain, b), uniform(*self.shift, b)
        use_gam = chosen(self.gamma_p)
        gamma = torch.exp(uniform(math.log(self.gamma[0]), math.log(self.gamma[1]), b))
        use_blur, sigma = chosen(self.blur_p), uniform(*self.blur_sigma, b)
        use_noise, nstd = chosen(self.noise_p), uniform(*self.noise_std, b)
        seeds = draw_seeds((b,), g)
        size = self.size or tuple(int(s) for s in batch_shape[2:])
        return VolumeView(
            theta=theta, size=size,  # type: ignore[arg-type]
            gain=torch.where(use_int, gain, 1.0).float(), shift=torch.where(use_int, shift, 0.0).float(),
            gamma=torch.where(use_gam, gamma, 1.0).float(), sigma=torch.where(use_blur, sigma, 0.0).float(),
            noise_std=torch.where(use_noise, nstd, 0.0).float(), seeds=seeds,
            radius=int(math.ceil(3 * self.blur_sigma[1])) if self.blur_p > 0 and self.blur_sigma[1] > 0 else 0,
        )

    def replace(self, **changes: Any) -> VolumeViews:
        """A copy with some parameters changed (DINO's global and local crops), validated as a new one."""
        return build_config(VolumeViews, {**dataclasses.asdict(self), **changes}, "volume views")


def _rotation(ang: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` angles about x, y, z -> ``(B, 3, 3)`` rotation matrices ``Rz @ Ry @ Rx``."""
    c, s = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).reshape(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).reshape(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def default_views(**params: Any) -> VolumeViews:
    """The volume adapter's default views with ``params`` overriding fields (unknown or bad ones refused, one line
    naming the parameter and what is allowed)."""
    return build_config(VolumeViews, params, "volume views")


def adapter_views(sizing: dict[str, Any], **params: Any) -> VolumeViews:
    """The ``views`` hook of :class:`volssl.modality.VolumeModality` (the sizing is not needed for volumes)."""
    return default_views(**params)

"""Models Genesis in- and out-painting: boxes of a volume filled with uniform noise, or kept in noise.

:class:`RandomPainting` (the chain's choice: paint or not, in- or out-painting) and :class:`RandomInPaint`
/ :class:`RandomOutPaint` draw boxes and one noise seed per volume -> :class:`InPaint` / :class:`OutPaint`
hold them -> :func:`in_paint_boxes` / :func:`out_paint_boxes`. The noise is a hash of the seed and the
voxel's index (:func:`volssl.transforms.hashing.hash_uniform`), the same on every device; on CPU a numba
kernel computes it only where it is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from pretext.errors import ConfigError
from pretext.transforms import Chain, RandomTransform, Transform, check_probability
from volssl.transforms.hashing import draw_seeds, hash_uniform, use_kernel

__all__ = ["InPaint", "OutPaint", "RandomInPaint", "RandomOutPaint", "RandomPainting", "box_mask",
           "in_paint_boxes", "out_paint_boxes", "sample_boxes"]


def sample_boxes(batch: int, spatial: Sequence[int], n_boxes: int, low: Sequence[int], high: Sequence[int],
                 margin: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes: sides uniform in ``[low, high]`` per axis, kept ``margin`` voxels from the border
    where the volume allows. Draws ``(B, K, 6)`` float64 uniforms; returns ``starts, sizes`` each
    ``(B, K, 3)`` int64."""
    u = torch.rand(batch, n_boxes, 6, generator=generator, dtype=torch.float64)
    dims = torch.tensor(tuple(spatial), dtype=torch.float64)
    lo = torch.tensor(tuple(low), dtype=torch.float64).clamp(1, None)
    hi = torch.maximum(torch.tensor(tuple(high), dtype=torch.float64).minimum(dims), lo)
    sizes = (lo + (u[..., :3] * (hi - lo + 1)).floor()).minimum(dims)
    room = dims - sizes
    m = torch.minimum(torch.full_like(room, float(margin)), (room / 2).floor())
    starts = m + (u[..., 3:] * (room - 2 * m + 1)).floor()
    return starts.long(), sizes.long()


def box_mask(starts: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Union of active boxes: ``(B, K, 3)`` starts/sizes, ``active (B, K)`` -> ``(B, 1, D, H, W)`` bool."""
    axes = []
    for a, n in enumerate(spatial):
        r = torch.arange(n, device=starts.device)
        axes.append((r >= starts[..., a:a + 1]) & (r < starts[..., a:a + 1] + sizes[..., a:a + 1]))  # (B, K, n)
    m = axes[0][..., :, None, None] & axes[1][..., None, :, None] & axes[2][..., None, None, :]
    return (m & active[..., None, None, None]).any(dim=1, keepdim=True)


def _chain_active(u: torch.Tensor, p: float) -> torch.Tensor:
    """``while cnt > 0 and random() < p``: box k is used when the first k+1 draws are all < p."""
    return (u < p).long().cumprod(dim=1).bool()


def _paint(x: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor, seeds: torch.Tensor,
           enabled: torch.Tensor, outside: bool, backend: str) -> torch.Tensor:
    if x.ndim != 5:
        raise ConfigError(f"painting needs (B, C, D, H, W); got shape {tuple(x.shape)}")
    b, c, *sp = x.shape
    enabled, active = enabled.cpu(), active.cpu()
    if use_kernel(x, backend):
        from volssl.transforms._kernels import paint_kernel  # lazy: numba import ~1 s, kernel cached on disk

        native = x.dtype in (torch.float32, torch.float64)
        src = np.ascontiguousarray((x if native else x.float()).detach().cpu().numpy()).reshape(b, -1)
        dst = np.empty_like(src)
        paint_kernel(src, dst, starts.cpu().numpy(), sizes.cpu().numpy(), active.numpy(), seeds.cpu().numpy(),
                     enabled.numpy(), np.asarray(sp, dtype=np.int64), c, outside)
        return torch.from_numpy(dst).reshape(x.shape).to(device=x.device, dtype=x.dtype)
    out = x.clone()
    idx = torch.nonzero(enabled if outside else enabled & active.any(1)).flatten()
    if len(idx):
        dev_idx = idx.to(x.device)
        noise = hash_uniform(seeds[idx].to(x.device), c * math.prod(sp)).reshape(len(idx), *x.shape[1:]).to(x.dtype)
        mask = box_mask(starts[idx].to(x.device), sizes[idx].to(x.device), active[idx].to(x.device), sp)
        out[dev_idx] = torch.where(mask, x[dev_idx], noise) if outside else torch.where(mask, noise, x[dev_idx])
    return out


def in_paint_boxes(x: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor,
                   seeds: torch.Tensor, enabled: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Fill the active boxes of the enabled volumes with uniform noise in ``[0, 1)`` (the pure function).

    Args:
        x: ``(B, C, D, H, W)``.
        starts, sizes: ``(B, K, 3)`` int64 boxes.
        active: ``(B, K)`` bool, the boxes used.
        seeds: ``(B,)`` int64 noise seeds.
        enabled: ``(B,)`` bool, the volumes painted.
        backend: "auto" (numba on CPU, tensor ops elsewhere), "numba" or "torch".

    Returns:
        ``(B, C, D, H, W)``, a new tensor.
    """
    return _paint(x, starts, sizes, active, seeds, enabled, False, backend)


def out_paint_boxes(x: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor,
                    seeds: torch.Tensor, enabled: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Replace everything outside the active boxes of the enabled volumes by uniform noise (the pure function).

    Arguments as :func:`in_paint_boxes`; an enabled volume with no active box becomes all noise.
    """
    return _paint(x, starts, sizes, active, seeds, enabled, True, backend)


@dataclasses.dataclass
class InPaint(Transform):
    """In-painting with fixed boxes and noise seeds (fields: the arguments of :func:`in_paint_boxes`)."""

    starts: torch.Tensor
    sizes: torch.Tensor
    active: torch.Tensor
    seeds: torch.Tensor
    enabled: torch.Tensor
    backend: str = "auto"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return in_paint_boxes(x, self.starts, self.sizes, self.active, self.seeds, self.enabled, self.backend)


@dataclasses.dataclass
class OutPaint(InPaint):
    """Out-painting with fixed boxes and noise seeds (fields: the arguments of :func:`out_paint_boxes`)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return out_paint_boxes(x, self.starts, self.sizes, self.active, self.seeds, self.enabled, self.backend)


class RandomInPaint(RandomTransform):
    """Models Genesis in-painting: up to ``max_boxes`` boxes (sides ``dim//6 .. dim//3``, 3 voxels from the
    border) replaced by noise; another box follows with probability ``keep_going``. Every volume is painted.

    Args:
        max_boxes: most boxes per volume.
        keep_going: probability of one more box.
        backend: see :func:`in_paint_boxes`.
    """

    def __init__(self, max_boxes: int = 5, keep_going: float = 0.95, backend: str = "auto") -> None:
        check_probability(keep_going=keep_going)
        if max_boxes < 1:
            raise ConfigError(f"{max_boxes=} must be >= 1")
        self.max_boxes, self.keep_going, self.backend = int(max_boxes), float(keep_going), backend

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> InPaint:
        """Draws, in order: the boxes (:func:`sample_boxes`), ``(B, K)`` float64 box chain, ``(B,)`` seeds."""
        b, sp = int(batch_shape[0]), [int(s) for s in batch_shape[2:]]
        starts, sizes = sample_boxes(b, sp, self.max_boxes, [s // 6 for s in sp], [s // 3 for s in sp], 3, generator)
        active = _chain_active(torch.rand(b, self.max_boxes, generator=generator, dtype=torch.float64),
                               self.keep_going)
        return InPaint(starts, sizes, active, draw_seeds((b,), generator), torch.ones(b, dtype=torch.bool), self.backend)


class RandomOutPaint(RandomInPaint):
    """Models Genesis out-painting: the volume becomes noise except one box (sides ``dim - [3 dim/7, 4 dim/7]``)
    plus up to ``max_boxes - 1`` more, each kept with ``keep_going``. Arguments as :class:`RandomInPaint`."""

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> OutPaint:
        """Draws, in order: the boxes (:func:`sample_boxes`), ``(B, K - 1)`` float64 box chain, ``(B,)`` seeds."""
        b, sp = int(batch_shape[0]), [int(s) for s in batch_shape[2:]]
        low, high = [s - 4 * s // 7 for s in sp], [s - 3 * s // 7 for s in sp]
        starts, sizes = sample_boxes(b, sp, self.max_boxes, low, high, 3, generator)
        more = _chain_active(torch.rand(b, self.max_boxes - 1, generator=generator, dtype=torch.float64),
                             self.keep_going)
        active = torch.cat([torch.ones(b, 1, dtype=torch.bool), more], dim=1)
        return OutPaint(starts, sizes, active, draw_seeds((b,), generator), torch.ones(b, dtype=torch.bool), self.backend)


class RandomPainting(RandomTransform):
    """The Models Genesis painting step: with probability ``prob`` a volume is painted, in-painted with
    probability ``inpaint_rate``, else out-painted.

    Args:
        prob: the paper's ``paint_rate`` (0.9).
        inpaint_rate: share of in-painting among painted volumes (0.2).
        max_boxes, keep_going, backend: see :class:`RandomInPaint`.
    """

    def __init__(self, prob: float = 0.9, inpaint_rate: float = 0.2, max_boxes: int = 5, keep_going: float = 0.95,
                 backend: str = "auto") -> None:
        check_probability(prob=prob, inpaint_rate=inpaint_rate)
        self.prob, self.inpaint_rate = float(prob), float(inpaint_rate)
        self.inner = RandomInPaint(max_boxes, keep_going, backend)
        self.outer = RandomOutPaint(max_boxes, keep_going, backend)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Chain:
        """Draws ``(B, 2)`` float64 uniforms (paint or not, in or out), then the in- and out-painting params."""
        u = torch.rand(int(batch_shape[0]), 2, generator=generator, dtype=torch.float64)
        paint = u[:, 0] < self.prob
        inner = paint & (u[:, 1] < self.inpaint_rate)
        ip = self.inner.get_params(batch_shape, generator)
        op = self.outer.get_params(batch_shape, generator)
        return Chain((dataclasses.replace(ip, enabled=inner), dataclasses.replace(op, enabled=paint & ~inner)))

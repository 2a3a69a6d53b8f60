"""Slabs for the slab-order task (a 3D jigsaw along one axis).

:class:`RandomSlabOrder` draws slab positions, in-plane shifts and one permutation per volume ->
:class:`SlabOrder` holds them -> :func:`extract_slabs` cuts the slabs and :func:`permute_slabs` puts them
in the permuted order. :func:`permutation_set` picks the permutations (maximal Hamming distance).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from einops import rearrange

from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform

__all__ = ["RandomSlabOrder", "SlabOrder", "extract_slabs", "permutation_set", "permute_slabs", "slab_geometry"]


@cache
def permutation_set(k: int, n: int, seed: int = 0) -> tuple[tuple[int, ...], ...]:
    """``n`` permutations of ``k`` slabs with a large minimum Hamming distance (Noroozi & Favaro 2016).

    Greedy selection from the identity (each step adds the candidate farthest from the set),
    repeated with random tie breaks; the run with the largest minimum, then mean, pairwise
    distance wins. Deterministic in ``seed``. For k=4, n=10 it reaches distance 3 (the optimum).
    """
    total = math.factorial(k)
    if not 2 <= n <= total:
        raise ConfigError(f"num_permutations={n} must be in 2..{total} (= {k}!) for {k} slabs")
    rng = np.random.default_rng(seed)
    ident = np.arange(k)
    if k <= 8:
        cands = np.array(list(itertools.permutations(range(k))), dtype=np.int8)
    else:
        cands = np.unique(np.stack([ident] + [rng.permutation(k) for _ in range(20000)]).astype(np.int8), axis=0)
    first = int(np.flatnonzero((cands == ident).all(1))[0])
    best: tuple[tuple[int, float], list[int]] | None = None
    for _ in range(32 if k <= 6 else 4):
        chosen = [first]
        dist = (cands != cands[first]).sum(1).astype(np.float64)
        total_d = dist.copy()
        tie = rng.random(len(cands))
        while len(chosen) < n:
            score = dist * 1e6 + total_d + tie  # max-min distance, then sum of distances, then random
            score[chosen] = -1
            j = int(np.argmax(score))
            chosen.append(j)
            d_j = (cands != cands[j]).sum(1)
            dist = np.minimum(dist, d_j)
            total_d += d_j
        sel = cands[chosen]
        pair = (sel[:, None, :] != sel[None, :, :]).sum(-1)
        off = pair[~np.eye(n, dtype=bool)]
        key = (int(off.min()), float(off.mean()))
        if best is None or key > best[0]:
            best = (key, chosen)
    assert best is not None
    return tuple(tuple(int(v) for v in cands[j]) for j in best[1])


def slab_geometry(length: int, inplane: Sequence[int], num_slabs: int, thickness: float,
                  jitter: float) -> tuple[int, int]:
    """Slab thickness and in-plane jitter in voxels, from fractions.

    Args:
        length: voxels along the cutting axis.
        inplane: the two other sides.
        num_slabs: slabs k; each lies in its own segment of ``length // k`` voxels.
        thickness: slab thickness as a fraction of the segment.
        jitter: in-plane crop as a fraction of the smaller in-plane side.
    """
    seg = length // num_slabs
    return max(1, int(seg * thickness)), int(min(inplane) * jitter)


def extract_slabs(x: torch.Tensor, axis: int, starts: torch.Tensor, shifts: torch.Tensor, thickness: int,
                  jitter: int) -> torch.Tensor:
    """Cut slabs: ``x (B, C, D, H, W)`` -> ``(B, k, C, ...)`` with ``thickness`` voxels along ``axis``
    (0, 1, 2 = D, H, W) and in-plane sides reduced by ``jitter`` (cropped at ``shifts``)."""
    dev = x.device
    xm = x.movedim(axis + 2, 2)  # (B, C, L, P, Q)
    b, _, _, p, q = xm.shape
    starts, shifts = starts.to(dev), shifts.to(dev)
    t = torch.arange(thickness, device=dev)
    rows = shifts[..., 0:1] + torch.arange(p - jitter, device=dev)  # (B, k, P')
    cols = shifts[..., 1:2] + torch.arange(q - jitter, device=dev)
    pos = starts[..., None] + t  # (B, k, t)
    vol = rearrange(xm, "b c l p q -> b l p q c")
    bi = torch.arange(b, device=dev)[:, None, None, None, None]
    out = vol[bi, pos[..., :, None, None], rows[..., None, :, None], cols[..., None, None, :]]  # (B,k,t,P',Q',C)
    out = rearrange(out, "b k t p q c -> b k c t p q")
    return out.movedim(3, axis + 3)


def permute_slabs(slabs: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``slabs (B, k, ...)`` -> position ``i`` of volume ``b`` shows slab ``order[b, i]``; ``order (B, k)``."""
    idx = order.to(slabs.device).view(*order.shape, *([1] * (slabs.ndim - 2))).expand_as(slabs)
    return slabs.gather(1, idx)


@dataclasses.dataclass
class SlabOrder(Transform):
    """Fixed slabs in a fixed order: ``apply(x (B, C, D, H, W)) -> (B, k, C, ...)``.

    Attributes:
        starts: ``(B, k)`` slab starts along ``axis``; shifts: ``(B, k, 2)`` in-plane offsets.
        labels: ``(B,)`` index of each volume's permutation in ``permutations``.
        permutations: ``(P, k)`` int64, the permutation set.
        axis: 0, 1 or 2 (D, H, W); thickness, jitter: in voxels.
    """

    starts: torch.Tensor
    shifts: torch.Tensor
    labels: torch.Tensor
    permutations: torch.Tensor
    axis: int
    thickness: int
    jitter: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        slabs = extract_slabs(x, self.axis, self.starts, self.shifts, self.thickness, self.jitter)
        return permute_slabs(slabs, self.permutations[self.labels])


class RandomSlabOrder(RandomTransform):
    """Cut ``num_slabs`` slabs along ``axis`` and shuffle them by a permutation drawn from a set.

    Slab ``j`` starts at a random offset inside segment ``j`` (``length // k`` voxels), so the gap
    between neighbours is random, and each slab is cropped in-plane at a random shift.

    Args:
        num_slabs: slabs k.
        permutations: the permutation set (e.g. :func:`permutation_set`); the label is an index into it.
        axis: 0, 1 or 2 (D, H, W).
        thickness: slab thickness as a fraction of the segment (the rest is gap).
        jitter: in-plane crop as a fraction of the smaller in-plane side.
    """

    def __init__(self, num_slabs: int, permutations: Sequence[Sequence[int]], axis: int = 0, thickness: float = 0.75,
                 jitter: float = 0.1) -> None:
        if axis not in (0, 1, 2):
            raise ConfigError(f"{axis=} must be 0, 1 or 2 (D, H, W)")
        self.k, self.axis, self.thickness, self.jitter = int(num_slabs), axis, float(thickness), float(jitter)
        self.permutations = torch.tensor([list(p) for p in permutations], dtype=torch.int64)
        if self.permutations.ndim != 2 or self.permutations.shape[1] != self.k:
            raise ConfigError(f"permutations of shape {tuple(self.permutations.shape)} must be (P, {self.k})")

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> SlabOrder:
        """Draws ``(B, k, 3)`` float64 uniforms (start offset, two in-plane shifts), then ``(B,)`` labels."""
        b, length = int(batch_shape[0]), int(batch_shape[2 + self.axis])
        inplane = [int(s) for a, s in enumerate(batch_shape[2:]) if a != self.axis]
        t, jit = slab_geometry(length, inplane, self.k, self.thickness, self.jitter)
        seg = length // self.k
        room = seg - t
        if room < 0:
            raise ConfigError(f"slab thickness {t} does not fit {self.k} slabs in {length} voxels")
        u = torch.rand(b, self.k, 3, generator=generator, dtype=torch.float64)
        starts = torch.arange(self.k) * seg + (u[..., 0] * (room + 1)).floor().long()
        shifts = (u[..., 1:] * (jit + 1)).floor().long()
        labels = torch.randint(0, len(self.permutations), (b,), generator=generator)
        return SlabOrder(starts, shifts, labels, self.permutations, self.axis, t, jit)

"""Batched volume corruptions and views as pure tensor functions taking a CPU generator.

Every function takes ``x`` of shape ``(B, C, D, H, W)`` on any device, draws its random
parameters from ``generator`` on the CPU (then moves them to ``x.device``) and returns new
tensors; voxel noise comes from a counter-based hash (:func:`volssl.shuffle.hash_uniform`), so
the same generator state gives the same views on CPU and GPU.

Models Genesis family (Zhou et al., MedIA 2021; defaults as their code): :func:`local_pixel_shuffle`,
:func:`bezier_remap`, :func:`in_paint`, :func:`out_paint`, :func:`random_flips`.
Rotations: :func:`rotation_group`, :func:`rotate`. Slabs: :func:`permutation_set`,
:func:`sample_slabs`, :func:`extract_slabs`. MAE: :func:`random_masking`, :func:`patchify`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from einops import rearrange

from volssl.shuffle import hash_uniform, local_pixel_shuffle, sample_shuffle_params

__all__ = [
    "bezier_remap", "extract_slabs", "in_paint", "local_pixel_shuffle", "out_paint", "patchify",
    "permutation_set", "random_flips", "random_masking", "rotate", "rotation_group", "sample_boxes",
    "sample_shuffle_params", "sample_slabs", "unpatchify",
]


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64).to(device)


def _seeds(batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2**31, (batch,), generator=generator, dtype=torch.int64).to(device)


# -- intensity -----------------------------------------------------------------------------------


def bezier_curves(points: torch.Tensor, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubic Bezier through ``(0,0), p1, p2, (1,1)`` as Models Genesis computes it.

    Args:
        points: ``(B, 2, 2)`` the two inner control points ``(x, y)``.
        n: samples along the curve.

    Returns:
        ``xvals, yvals`` each ``(B, n)``; like the reference, ``t = 0`` is the end point ``(1, 1)``.
    """
    b = points.shape[0]
    dev, dt = points.device, torch.float64
    ctrl = torch.cat([torch.zeros(b, 1, 2, device=dev, dtype=dt), points.to(dt),
                      torch.ones(b, 1, 2, device=dev, dtype=dt)], dim=1)  # (B, 4, 2)
    t = torch.linspace(0.0, 1.0, n, device=dev, dtype=dt)
    # bernstein_poly(i, 3, t) = C(3, i) t^(3-i) (1-t)^i, as in the reference code
    basis = torch.stack([math.comb(3, i) * t ** (3 - i) * (1 - t) ** i for i in range(4)])  # (4, n)
    vals = torch.einsum("bip,in->bpn", ctrl, basis)
    return vals[:, 0], vals[:, 1]


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Batched ``np.interp``: ``x (B, V)``, increasing ``xp (B, n)``, ``fp (B, n)`` -> ``(B, V)``."""
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.shape[1] - 1)
    x0, x1 = xp.gather(1, idx - 1), xp.gather(1, idx)
    f0, f1 = fp.gather(1, idx - 1), fp.gather(1, idx)
    w = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    out = f0 + w * (f1 - f0)
    out = torch.where(x <= xp[:, :1], fp[:, :1], out)
    return torch.where(x >= xp[:, -1:], fp[:, -1:], out)


def bezier_remap(x: torch.Tensor, generator: torch.Generator | None = None, prob: float = 0.9,
                 n_points: int = 1000, lut_size: int = 4097) -> torch.Tensor:
    """Models Genesis non-linear intensity transformation (inputs expected in ``[0, 1]``).

    Per volume, with probability ``prob``: a random monotone Bezier curve remaps intensities;
    half of the time the curve is decreasing (intensity inversion), as in the reference. The curve
    (``np.interp`` of its ``n_points`` samples) is tabulated on ``lut_size`` uniform points of
    ``[0, 1]`` and voxels are interpolated linearly in that table (error below 1e-5 for these curves;
    values outside ``[0, 1]`` are clamped, as ``np.interp`` does).
    """
    b = x.shape[0]
    draws = torch.rand(b, 6, generator=generator, dtype=torch.float64)
    apply = draws[:, 0] < prob
    if not apply.any():
        return x.clone()
    xv, yv = bezier_curves(draws[:, 1:5].reshape(b, 2, 2).to(x.device), n_points)
    xs = xv.sort(dim=1).values
    increasing = (draws[:, 5] >= 0.5).to(x.device)[:, None]
    ys = torch.where(increasing, yv.sort(dim=1).values, yv)
    grid = torch.linspace(0, 1, lut_size, device=x.device, dtype=torch.float64).expand(b, -1)
    lut = _interp(grid, xs, ys).float()  # (B, L)
    pos = rearrange(x, "b c d h w -> b (c d h w)").float().clamp(0, 1) * (lut_size - 1)
    i0 = pos.floor().long().clamp(max=lut_size - 2)
    w = pos - i0
    lo = lut.gather(1, i0)
    out = (lo + w * (lut.gather(1, i0 + 1) - lo)).to(x.dtype).reshape(x.shape)
    return torch.where(apply.to(x.device)[:, None, None, None, None], out, x)


# -- painting ------------------------------------------------------------------------------------


def sample_boxes(batch: int, spatial: Sequence[int], n_boxes: int, low: Sequence[int], high: Sequence[int],
                 margin: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes: sides uniform in ``[low, high]`` per axis, kept ``margin`` voxels from the border
    where the volume allows. Returns ``starts, sizes`` each ``(B, K, 3)`` int64."""
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


def in_paint(x: torch.Tensor, generator: torch.Generator | None = None, max_boxes: int = 5,
             keep_going: float = 0.95, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Models Genesis in-painting: up to ``max_boxes`` boxes (sides ``dim//6 .. dim//3``, 3 voxels
    from the border) replaced by uniform noise; another box follows with probability ``keep_going``.

    ``apply (B,)`` bool selects the volumes to paint (default all).
    """
    b, c, *sp = x.shape
    starts, sizes = sample_boxes(b, sp, max_boxes, [s // 6 for s in sp], [s // 3 for s in sp], 3, generator)
    active = _chain_active(torch.rand(b, max_boxes, generator=generator, dtype=torch.float64), keep_going)
    if apply is not None:
        active &= apply.cpu()[:, None]
    seeds = _seeds(b, generator, x.device)
    out = x.clone()
    idx = torch.nonzero(active.any(1)).flatten()
    if len(idx):
        dev_idx = idx.to(x.device)
        noise = hash_uniform(seeds[dev_idx], c * math.prod(sp)).reshape(len(idx), *x.shape[1:]).to(x.dtype)
        mask = box_mask(starts[idx].to(x.device), sizes[idx].to(x.device), active[idx].to(x.device), sp)
        out[dev_idx] = torch.where(mask, noise, x[dev_idx])
    return out


def out_paint(x: torch.Tensor, generator: torch.Generator | None = None, max_boxes: int = 5,
              keep_going: float = 0.95, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Models Genesis out-painting: the volume becomes uniform noise except one box (sides
    ``dim - [3 dim/7, 4 dim/7]``) plus up to ``max_boxes - 1`` more, each kept with ``keep_going``."""
    b, c, *sp = x.shape
    low = [s - 4 * s // 7 for s in sp]
    high = [s - 3 * s // 7 for s in sp]
    starts, sizes = sample_boxes(b, sp, max_boxes, low, high, 3, generator)
    more = _chain_active(torch.rand(b, max_boxes - 1, generator=generator, dtype=torch.float64), keep_going)
    active = torch.cat([torch.ones(b, 1, dtype=torch.bool), more], dim=1)
    seeds = _seeds(b, generator, x.device)
    out = x.clone()
    idx = torch.arange(b) if apply is None else torch.nonzero(apply.cpu()).flatten()
    if len(idx):
        dev_idx = idx.to(x.device)
        noise = hash_uniform(seeds[dev_idx], c * math.prod(sp)).reshape(len(idx), *x.shape[1:]).to(x.dtype)
        keep = box_mask(starts[idx].to(x.device), sizes[idx].to(x.device), active[idx].to(x.device), sp)
        out[dev_idx] = torch.where(keep, x[dev_idx], noise)
    return out


def random_flips(generator: torch.Generator | None, batch: int, prob: float = 0.4, max_flips: int = 3) -> torch.Tensor:
    """Models Genesis flips: ``while random() < prob and cnt < max_flips``: flip a random axis.

    Returns:
        ``(B, 3)`` bool: flip parity per spatial axis (apply with :func:`apply_flips`).
    """
    u = torch.rand(batch, max_flips, generator=generator, dtype=torch.float64)
    axis = torch.randint(0, 3, (batch, max_flips), generator=generator)
    active = _chain_active(u, prob)
    parity = torch.zeros(batch, 3, dtype=torch.long)
    parity.scatter_add_(1, axis, active.long())
    return parity % 2 == 1


def apply_flips(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip spatial axis ``a`` of volume ``i`` where ``flips[i, a]``; ``x (B, C, D, H, W)``."""
    out = x.clone()
    for a in range(3):
        idx = torch.nonzero(flips[:, a]).flatten().to(x.device)
        if len(idx):
            out[idx] = out[idx].flip(a + 2)
    return out


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
        raise ValueError(f"rotation kind {kind} must be 10 or 24")
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
    """Rotate volume ``i`` by rotation ``labels[i]`` of :func:`rotation_group` (``x (B, C, S, S, S)``).

    ``inverse=True`` applies the inverse rotations (undoes a previous :func:`rotate`).
    """
    sp = x.shape[2:]
    if len(set(sp)) != 1:
        raise ValueError(f"rotations by 90 degrees need a cubic volume; got spatial shape {tuple(sp)}")
    group = rotation_group(kind)
    out = torch.empty_like(x)
    labels_cpu = labels.cpu()
    for r in torch.unique(labels_cpu).tolist():
        idx = torch.nonzero(labels_cpu == r).flatten().to(x.device)
        steps = inverse_steps(group[r]) if inverse else group[r]
        out[idx] = _apply_steps(x[idx], steps, first=2)
    return out


# -- slabs ---------------------------------------------------------------------------------------


@cache
def permutation_set(k: int, n: int, seed: int = 0) -> tuple[tuple[int, ...], ...]:
    """``n`` permutations of ``k`` slabs with a large minimum Hamming distance (Noroozi & Favaro 2016).

    Greedy selection from the identity (each step adds the candidate farthest from the set),
    repeated with random tie breaks; the run with the largest minimum, then mean, pairwise
    distance wins. Deterministic in ``seed``. For k=4, n=10 it reaches distance 3 (the optimum).
    """
    total = math.factorial(k)
    if not 2 <= n <= total:
        raise ValueError(f"num_permutations={n} must be in 2..{total} (= {k}!) for {k} slabs")
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


def sample_slabs(batch: int, length: int, inplane: Sequence[int], k: int, thickness: int, jitter: int,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random slab positions: slab ``j`` starts in segment ``j`` (``length // k`` voxels) at a random
    offset, so the gap between neighbours is random; each slab also gets a random in-plane shift.

    Returns:
        ``starts (B, k)`` along the axis and ``shifts (B, k, 2)`` in-plane offsets in ``0..jitter``.
    """
    seg = length // k
    room = seg - thickness
    if room < 0:
        raise ValueError(f"{thickness=} does not fit {k} slabs in {length} voxels")
    u = torch.rand(batch, k, 3, generator=generator, dtype=torch.float64)
    starts = torch.arange(k) * seg + (u[..., 0] * (room + 1)).floor().long()
    shifts = (u[..., 1:] * (jitter + 1)).floor().long()
    return starts, shifts


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


# -- MAE -----------------------------------------------------------------------------------------


def random_masking(batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """MAE masking: exactly ``n_tokens - int(n_tokens * (1 - ratio))`` tokens masked per volume.

    Returns:
        ``ids_keep (B, K)`` (kept token indices, in random order) and ``mask (B, N)`` float, 1 = masked.
    """
    keep = int(n_tokens * (1 - ratio))
    if not 1 <= keep < n_tokens:
        raise ValueError(f"mask_ratio={ratio} leaves {keep} of {n_tokens} tokens visible; need 1..{n_tokens - 1}")
    noise = torch.rand(batch, n_tokens, generator=generator)
    ids_keep = noise.argsort(dim=1)[:, :keep]
    mask = torch.ones(batch, n_tokens)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep.to(device), mask.to(device)


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``(B, C, D, H, W) -> (B, N, pd*ph*pw*C)``, tokens in ``(d h w)`` order as the ViT's."""
    pd, ph, pw = patch
    return rearrange(x, "b c (d pd) (h ph) (w pw) -> b (d h w) (pd ph pw c)", pd=pd, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, P) -> (B, C, D, H, W)``."""
    (pd, ph, pw), (d, h, w) = patch, grid
    return rearrange(tokens, "b (d h w) (pd ph pw c) -> b c (d pd) (h ph) (w pw)",
                     d=d, h=h, w=w, pd=pd, ph=ph, pw=pw, c=channels)


def perturb_volume(x: torch.Tensor, generator: torch.Generator, shift: float = 0.03, scale: float = 0.05,
                   noise: float = 0.01) -> torch.Tensor:
    """Global intensity shift and scale (scanner calibration) plus white noise.

    Args:
        x: ``(B, C, D, H, W)`` volumes.
        generator: CPU generator for the random parameters.
        shift: maximum absolute intensity offset, in units of the volume's std.
        scale: maximum relative gain change.
        noise: noise std in units of the volume's std.

    Returns:
        ``(B, C, D, H, W)`` perturbed volumes.
    """
    b = x.shape[0]
    std = x.float().flatten(1).std(dim=1).clamp_min(1e-6).view(b, *([1] * (x.dim() - 1)))
    shape = (b, *([1] * (x.dim() - 1)))
    offset = (2 * torch.rand(shape, generator=generator) - 1) * shift
    gain = 1 + (2 * torch.rand(shape, generator=generator) - 1) * scale
    white = torch.randn(x.shape, generator=generator) * noise
    xf = x.float()
    return (xf * gain.to(x.device) + std * (offset.to(x.device) + white.to(x.device))).to(x.dtype)

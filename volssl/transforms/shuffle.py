"""Local pixel shuffling (Models Genesis, Zhou et al. 2021) with the paper's exact semantics, fast.

Semantics (the paper's local pixel shuffling): ``num_blocks`` (10,000) blocks, each of random side
``1..dim//10`` per axis at a random position; each block's voxels are taken from the *uncorrupted*
input, permuted, and written to the output; later blocks overwrite earlier ones where they overlap.

:class:`RandomLocalPixelShuffle` draws one 31-bit seed per block (and whether each volume is shuffled)
from the CPU generator -> :class:`LocalPixelShuffle` holds them -> :func:`local_pixel_shuffle` derives
each block's size, position and permutation from its seed. The permutation is a Fisher-Yates shuffle
whose step ``j`` draws ``(hash32(seed + j * 0x9E3779B1) * (j + 1)) >> 32`` (a counter-based hash,
multiply-shift range map), so the CPU kernel (numba) and the device path (batched tensor ops) compute
the same permutation: one seed gives bit-identical views on CPU and GPU.

:func:`shuffle_blocks_loop` is the plain NumPy loop with the same semantics, one block at a time (the
reference of the tests and of ``benchmarks/bench_volume.py``). At 64x64x32 on one thread the numba kernel
is about 10^2 times faster than that loop (see ``benchmarks/results/volume``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange

from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform, check_probability
from volssl.transforms.hashing import GOLDEN, MASK32, draw_seeds, hash32, use_kernel

__all__ = ["LocalPixelShuffle", "RandomLocalPixelShuffle", "block_geometry", "block_permutation",
           "default_max_block", "local_pixel_shuffle", "random_blocks", "seeded_blocks", "shuffle_blocks_loop",
           "shuffle_torch"]


def default_max_block(spatial: Sequence[int]) -> tuple[int, int, int]:
    """The paper's block side bound per axis: ``dim // 10`` (at least 1)."""
    return tuple(max(1, s // 10) for s in spatial)  # type: ignore[return-value]


def block_geometry(seeds: torch.Tensor, spatial: Sequence[int], max_block: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Block sizes and starts from block seeds: ``seeds (...)`` -> ``sizes (..., 3)``, ``starts (..., 3)``.

    Size along axis ``a`` is uniform in ``1..max_block[a]`` and the start uniform in ``0..dim_a - size``
    (the paper: a random side up to ``dim // 10``, then a random position where the block fits).
    """
    base = hash32(seeds & MASK32)
    sizes, starts = [], []
    for a in range(3):
        hs = hash32((base + (a + 1) * GOLDEN) & MASK32)
        size = 1 + ((hs * int(max_block[a])) >> 32)
        hp = hash32((base + (a + 4) * GOLDEN) & MASK32)
        starts.append((hp * (int(spatial[a]) - size + 1)) >> 32)
        sizes.append(size)
    return torch.stack(sizes, -1), torch.stack(starts, -1)


def block_permutation(seed: int, n: int) -> list[int]:
    """The permutation of one block of ``n`` voxels (reference, plain Python)."""
    perm = list(range(n))
    for j in range(n - 1, 0, -1):
        r = (int(hash32(torch.tensor((seed + j * GOLDEN) & MASK32))) * (j + 1)) >> 32
        perm[j], perm[r] = perm[r], perm[j]
    return perm


# -- reference: a plain NumPy loop with the paper's semantics (tests and benchmarks/bench_volume.py) ----

Block = tuple[tuple[int, ...], tuple[int, ...], Sequence[int] | np.ndarray]  # corner, sides, voxel permutation


def random_blocks(rng: np.random.Generator, spatial: Sequence[int], num_blocks: int = 10000,
                  max_block: Sequence[int] | None = None) -> Iterator[Block]:
    """Blocks drawn as the paper describes: sides uniform in ``1..max_block`` (default ``dim // 10``), the
    corner uniform where the block fits, and a uniform permutation of the block's voxels."""
    sides = np.asarray(max_block if max_block is not None else default_max_block(spatial))
    sizes = rng.integers(1, sides + 1, size=(num_blocks, 3))
    corners = rng.integers(0, np.asarray(spatial) - sizes + 1)
    for corner, size in zip(corners.tolist(), sizes.tolist(), strict=True):
        yield tuple(corner), tuple(size), rng.permutation(math.prod(size))


def seeded_blocks(seeds: torch.Tensor, spatial: Sequence[int], max_block: Sequence[int]) -> Iterator[Block]:
    """The blocks :func:`local_pixel_shuffle` derives from one volume's block seeds ``(N,)``, in order."""
    sizes, starts = block_geometry(seeds, spatial, max_block)
    for seed, size, corner in zip(seeds.tolist(), sizes.tolist(), starts.tolist(), strict=True):
        yield tuple(corner), tuple(size), block_permutation(seed, math.prod(size))


def shuffle_blocks_loop(volume: np.ndarray, blocks: Iterable[Block]) -> np.ndarray:
    """Local pixel shuffling, one block at a time: each block's voxels are read from the untouched
    ``volume (C, D, H, W)``, put in the block's order and written to the output; later blocks overwrite
    earlier ones. Every channel gets the same permutation. Returns a new array."""
    out = volume.copy()
    channels = volume.shape[0]
    for (d0, h0, w0), (sd, sh, sw), order in blocks:
        voxels = volume[:, d0:d0 + sd, h0:h0 + sh, w0:w0 + sw]
        out[:, d0:d0 + sd, h0:h0 + sh, w0:w0 + sw] = voxels.reshape(channels, -1)[:, order].reshape(voxels.shape)
    return out


# -- CPU: numba kernel -----------------------------------------------------------------------------

def _shuffle_numba(x: torch.Tensor, seeds: torch.Tensor, apply: torch.Tensor, max_block: Sequence[int]) -> torch.Tensor:
    from volssl.transforms._kernels import shuffle_kernel  # lazy: numba import ~1 s, kernel cached on disk

    native = x.dtype in (torch.float32, torch.float64)
    src = np.ascontiguousarray((x if native else x.float()).detach().cpu().numpy())
    b, c, *spatial = src.shape
    out = src.copy()
    shuffle_kernel(src.reshape(b * c, -1), out.reshape(b * c, -1), seeds.cpu().numpy(), apply.cpu().numpy(),
                   np.asarray(spatial, dtype=np.int64), np.asarray(max_block, dtype=np.int64), c)
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


# -- any device: batched tensor ops ----------------------------------------------------------------


# The tensor path holds a few (volumes x blocks, largest block) int64 tables at once: on a GPU as many volumes
# are done together as keep one table under this size (fewer, larger kernel launches); on CPU 4 (cache-sized).
CHUNK_TABLE_BYTES = 128 * 2**20


def _voxel_index(local: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor, corner: torch.Tensor, h: int,
                 w: int) -> torch.Tensor:
    """Flat ``(d h w)`` index of voxel ``local`` (C order) of a block of sides ``(., bh, bw)`` at ``corner (V, 3)``."""
    dd = local // (bh * bw) + corner[:, 0]
    hh = (local // bw) % bh + corner[:, 1]
    return (dd * h + hh) * w + local % bw + corner[:, 2]


def shuffle_torch(x: torch.Tensor, seeds_all: torch.Tensor, apply_all: torch.Tensor, max_block: Sequence[int],
                  chunk: int | None = None) -> torch.Tensor:
    """Same result as the numba kernel, as batched tensor ops (the GPU path); ``chunk`` volumes at a time."""
    dev = x.device
    b_all, _, d, h, w = x.shape
    if chunk is None:
        table = seeds_all.shape[1] * math.prod(max_block) * 8
        chunk = 4 if dev.type == "cpu" else max(1, CHUNK_TABLE_BYTES // table)
    out = x.clone()
    apply_all = apply_all.cpu()
    for lo in range(0, b_all, chunk):
        sel = torch.arange(lo, min(lo + chunk, b_all))
        apply = apply_all[sel]
        if not apply.any():
            continue
        sel = sel[apply]
        seeds = seeds_all[sel].to(dev)
        sizes, starts = block_geometry(seeds, (d, h, w), max_block)
        nb, nk = seeds.shape
        sd, sh, sw = sizes.unbind(-1)  # (nb, nk)
        n = (sd * sh * sw).reshape(-1)
        lmax = int(n.max())
        # only the voxels of the blocks matter (about a quarter of the (rows, lmax) table)
        steps = torch.arange(lmax, device=dev)
        row, local = torch.nonzero(steps < n[:, None], as_tuple=True)  # (V,) block row, voxel index in the block
        # tables are (step, block row): the slice of one step is contiguous
        perm = steps[:, None].expand(lmax, nb * nk).clone()  # column q: the permutation of block row q
        # every Fisher-Yates draw at once: swap partner of step j (j itself past the block's end: no swap)
        partner = perm.clone()
        partner[local, row] = (hash32((seeds.reshape(-1)[row] + local * GOLDEN) & MASK32) * (local + 1)) >> 32
        for j in range(lmax - 1, 0, -1):  # the swaps are sequential: 4 tensor ops each
            r = partner[j:j + 1]
            a = perm[j:j + 1].clone()
            perm[j:j + 1] = perm.gather(0, r)
            perm.scatter_(0, r, a)
        src_local = perm[local, row]
        bh, bw = sh.reshape(-1)[row], sw.reshape(-1)[row]
        corner = starts.reshape(-1, 3)[row]  # (V, 3)
        base = (row // nk) * (d * h * w)  # the volume's offset in the chunk
        dest = base + _voxel_index(local, bh, bw, corner, h, w)
        src = base + _voxel_index(src_local, bh, bw, corner, h, w)
        block = row % nk
        winner = torch.full((nb * d * h * w,), -1, dtype=torch.int64, device=dev)
        winner.scatter_reduce_(0, dest, block, reduce="amax")
        keep = winner[dest] == block
        xs = rearrange(x[sel.to(dev)], "b c d h w -> (b d h w) c")
        os_ = xs.clone()
        os_[dest[keep]] = xs[src[keep]]
        out[sel.to(dev)] = rearrange(os_, "(b d h w) c -> b c d h w", b=nb, d=d, h=h, w=w)
    return out


def local_pixel_shuffle(x: torch.Tensor, seeds: torch.Tensor, apply: torch.Tensor, max_block: Sequence[int],
                        backend: str = "auto") -> torch.Tensor:
    """Models Genesis local pixel shuffling of a batch, given the block seeds (the pure function).

    Args:
        x: ``(B, C, D, H, W)`` volumes (all channels get the same permutation).
        seeds: ``(B, N)`` int64 block seeds in ``[0, 2^31)`` (any device).
        apply: ``(B,)`` bool, the volumes to shuffle.
        max_block: largest block side per axis ``(d, h, w)``.
        backend: "auto" (numba on CPU, tensor ops elsewhere), "numba" or "torch".

    Returns:
        ``(B, C, D, H, W)``, a new tensor; ``x`` is unchanged.
    """
    if x.ndim != 5:
        raise ConfigError(f"local pixel shuffling needs (B, C, D, H, W); got shape {tuple(x.shape)}")
    mx = [int(m) for m in max_block]
    if use_kernel(x, backend):
        return _shuffle_numba(x, seeds, apply, mx)
    return shuffle_torch(x, seeds, apply, mx)


@dataclasses.dataclass
class LocalPixelShuffle(Transform):
    """Local pixel shuffling with fixed block seeds.

    Attributes:
        seeds: ``(B, N)`` int64 block seeds.
        enabled: ``(B,)`` bool, the volumes to shuffle.
        max_block: largest block side per axis.
        backend: see :func:`local_pixel_shuffle`.
    """

    seeds: torch.Tensor
    enabled: torch.Tensor
    max_block: tuple[int, ...]
    backend: str = "auto"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return local_pixel_shuffle(x, self.seeds, self.enabled, self.max_block, self.backend)


class RandomLocalPixelShuffle(RandomTransform):
    """Draw the block seeds of :class:`LocalPixelShuffle` (paper defaults).

    Args:
        num_blocks: blocks per volume (paper: 10,000).
        max_block: largest block side per axis; default ``dim // 10`` (paper).
        prob: probability that a volume is shuffled at all (the paper's ``local_rate``: 0.5).
        backend: see :func:`local_pixel_shuffle`.
    """

    def __init__(self, num_blocks: int = 10000, max_block: Sequence[int] | None = None, prob: float = 1.0,
                 backend: str = "auto") -> None:
        check_probability(prob=prob)
        if num_blocks < 1:
            raise ConfigError(f"{num_blocks=} must be >= 1")
        self.num_blocks, self.prob, self.backend = int(num_blocks), float(prob), backend
        self.max_block = tuple(int(m) for m in max_block) if max_block is not None else None

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> LocalPixelShuffle:
        """Draws, in order: ``(B,)`` float64 uniforms (shuffle or not), then ``(B, num_blocks)`` seeds."""
        b, spatial = int(batch_shape[0]), tuple(int(s) for s in batch_shape[2:])
        mx: tuple[int, ...] = self.max_block if self.max_block is not None else default_max_block(spatial)
        if len(mx) != 3 or any(not 1 <= m <= s for m, s in zip(mx, spatial, strict=False)):
            raise ConfigError(f"max_block={tuple(mx)} must be three sides within 1..{spatial} (the volume's shape)")
        enabled = torch.rand(b, generator=generator, dtype=torch.float64) < self.prob
        seeds = draw_seeds((b, self.num_blocks), generator)
        return LocalPixelShuffle(seeds, enabled, mx, self.backend)

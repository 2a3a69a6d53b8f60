"""Local pixel shuffling (Models Genesis, Zhou et al. 2021) with the paper's exact semantics, fast.

Semantics (``local_pixel_shuffling`` in the Models Genesis code): ``num_blocks`` (10,000) blocks,
each of random side ``1..dim//10`` per axis at a random position; each block's voxels are taken
from the *uncorrupted* input, permuted, and written to the output; later blocks overwrite
earlier ones where they overlap.

Randomness: one 31-bit seed per block is drawn from the caller's CPU
``torch.Generator``. A block's permutation is a Fisher-Yates shuffle whose step ``j`` draws
``(hash32(seed + j * 0x9E3779B1) * (j + 1)) >> 32`` (a counter-based hash, multiply-shift range map), so the CPU kernel (numba) and
the device path (batched tensor ops) compute the same permutation from the same seed: one seed
gives bit-identical views on CPU and GPU.

Speed at 64x64x32, one thread: the numba kernel does ~10^3 cubes/s; the Models Genesis NumPy loop
does ~20 (see ``benchmarks/bench_volume.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_MUL = 0x45D9F3B


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash of int64 values in ``[0, 2^32)`` -> ``[0, 2^32)`` (products stay below 2^59)."""
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    return (x >> 16) ^ x


def hash_uniform(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """Device-independent uniform noise: ``seeds (B,)`` int64 -> ``(B, n)`` float32 in ``[0, 1)``."""
    idx = torch.arange(n, device=seeds.device, dtype=torch.int64)
    h = hash32((hash32(seeds[:, None] & _MASK32) + idx[None] * _GOLDEN) & _MASK32)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def default_max_block(spatial: Sequence[int]) -> tuple[int, int, int]:
    """The paper's block side bound per axis: ``dim // 10`` (at least 1)."""
    return tuple(max(1, s // 10) for s in spatial)  # type: ignore[return-value]


def sample_shuffle_params(batch: int, spatial: Sequence[int], generator: torch.Generator | None,
                          num_blocks: int = 10000, max_block: Sequence[int] | None = None,
                          prob: float = 1.0) -> dict[str, torch.Tensor]:
    """Draw the random parameters of :func:`local_pixel_shuffle` on the CPU.

    Only one 31-bit seed per block comes from ``generator``; the block's size, position and
    permutation are derived from it with :func:`hash32` (see :func:`block_geometry`).

    Returns:
        ``seeds (B, N)`` int64, ``apply (B,)`` bool, ``max_block (3,)`` and ``spatial (3,)`` int64.
    """
    mx = tuple(max_block) if max_block is not None else default_max_block(spatial)
    if len(mx) != 3 or any(not 1 <= m <= s for m, s in zip(mx, spatial, strict=False)):
        raise ValueError(f"max_block={tuple(mx)} must be three sides within 1..{tuple(spatial)}")
    apply = torch.rand(batch, generator=generator, dtype=torch.float64) < prob
    seeds = torch.randint(0, 2**31, (batch, num_blocks), generator=generator, dtype=torch.int64)
    return {"seeds": seeds, "apply": apply, "max_block": torch.tensor(mx, dtype=torch.int64),
            "spatial": torch.tensor(tuple(spatial), dtype=torch.int64)}


def block_geometry(seeds: torch.Tensor, spatial: Sequence[int], max_block: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Block sizes and starts from block seeds: ``seeds (...)`` -> ``sizes (..., 3)``, ``starts (..., 3)``.

    Size along axis ``a`` is uniform in ``1..max_block[a]`` and the start uniform in
    ``0..dim_a - size`` (Models Genesis: ``random.randint(1, dim // 10)``, ``random.randint(0, dim - size)``).
    """
    base = hash32(seeds & _MASK32)
    sizes, starts = [], []
    for a in range(3):
        hs = hash32((base + (a + 1) * _GOLDEN) & _MASK32)
        size = 1 + ((hs * int(max_block[a])) >> 32)
        hp = hash32((base + (a + 4) * _GOLDEN) & _MASK32)
        starts.append((hp * (int(spatial[a]) - size + 1)) >> 32)
        sizes.append(size)
    return torch.stack(sizes, -1), torch.stack(starts, -1)


def block_permutation(seed: int, n: int) -> list[int]:
    """The permutation of one block of ``n`` voxels (reference, plain Python)."""
    perm = list(range(n))
    for j in range(n - 1, 0, -1):
        r = (int(hash32(torch.tensor((seed + j * _GOLDEN) & _MASK32))) * (j + 1)) >> 32
        perm[j], perm[r] = perm[r], perm[j]
    return perm


# -- CPU: numba kernel -----------------------------------------------------------------------------

def _numba_kernel():  # noqa: ANN202 - imported lazily (numba import ~1 s; compiled kernel cached on disk)
    from volssl._shuffle_kernel import kernel

    return kernel


def _shuffle_numba(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    src = np.ascontiguousarray(x.detach().numpy())
    b, c, *spatial = src.shape
    out = src.copy()
    _numba_kernel()(src.reshape(b * c, -1), out.reshape(b * c, -1), p["seeds"].numpy(), p["apply"].numpy(),
                    np.asarray(spatial, dtype=np.int64), p["max_block"].numpy(), c)
    return torch.from_numpy(out)


# -- any device: batched tensor ops ----------------------------------------------------------------


def _shuffle_torch(x: torch.Tensor, p: dict[str, torch.Tensor], chunk: int = 4) -> torch.Tensor:
    """Same result as the numba kernel, as batched tensor ops (the GPU path); ``chunk`` samples at a time."""
    dev = x.device
    b_all, _, d, h, w = x.shape
    out = x.clone()
    for lo in range(0, b_all, chunk):
        sel = torch.arange(lo, min(lo + chunk, b_all))
        apply = p["apply"][sel]
        if not apply.any():
            continue
        sel = sel[apply]
        seeds = p["seeds"][sel].to(dev)
        sizes, starts = block_geometry(seeds, (d, h, w), p["max_block"].tolist())
        nb, nk = seeds.shape
        sd, sh, sw = sizes.unbind(-1)  # (nb, nk)
        n = (sd * sh * sw).reshape(-1)
        lmax = int(n.max())
        perm = torch.arange(lmax, device=dev).expand(nb * nk, lmax).clone()
        seed = seeds.reshape(-1)
        for j in range(lmax - 1, 0, -1):
            r = ((hash32((seed + j * _GOLDEN) & _MASK32) * (j + 1)) >> 32)[:, None]
            active = (n > j)[:, None]
            a = perm[:, j:j + 1].clone()
            bval = perm.gather(1, r)
            perm[:, j:j + 1] = torch.where(active, bval, a)
            perm.scatter_(1, r, torch.where(active, a, bval))
        i = torch.arange(lmax, device=dev)[None]
        sdf, shf, swf = (s.reshape(-1, 1) for s in (sd, sh, sw))
        d0, h0, w0 = (starts[..., a].reshape(-1, 1) for a in range(3))

        def flat(idx: torch.Tensor, shf=shf, swf=swf, d0=d0, h0=h0, w0=w0) -> torch.Tensor:  # noqa: ANN001
            dd = idx // (shf * swf) + d0
            hh = (idx // swf) % shf + h0
            ww = idx % swf + w0
            return (dd * h + hh) * w + ww

        valid = i < n[:, None]
        owner = torch.arange(nb, device=dev).repeat_interleave(nk)[:, None].expand(-1, lmax)
        dest = flat(i.expand(nb * nk, -1)) + owner * (d * h * w)
        src = flat(perm) + owner * (d * h * w)
        block = torch.arange(nk, device=dev).repeat(nb)[:, None].expand(-1, lmax)
        dest, src, block = dest[valid], src[valid], block[valid]
        winner = torch.full((nb * d * h * w,), -1, dtype=torch.int64, device=dev)
        winner.scatter_reduce_(0, dest, block, reduce="amax")
        keep = winner[dest] == block
        xs = rearrange(x[sel.to(dev)], "b c d h w -> (b d h w) c")
        os_ = xs.clone()
        os_[dest[keep]] = xs[src[keep]]
        out[sel.to(dev)] = rearrange(os_, "(b d h w) c -> b c d h w", b=nb, d=d, h=h, w=w)
    return out


def local_pixel_shuffle(x: torch.Tensor, generator: torch.Generator | None = None, num_blocks: int = 10000,
                        max_block: Sequence[int] | None = None, prob: float = 1.0,
                        params: dict[str, torch.Tensor] | None = None, backend: str = "auto") -> torch.Tensor:
    """Models Genesis local pixel shuffling, batched.

    Args:
        x: ``(B, C, D, H, W)`` volumes (all channels get the same permutation).
        generator: CPU generator for the parameters.
        num_blocks: blocks per volume (paper: 10,000).
        max_block: largest block side per axis; default ``dim // 10`` (paper).
        prob: probability that a volume is shuffled at all (paper: ``local_rate`` 0.5).
        params: pre-drawn parameters from :func:`sample_shuffle_params` (else drawn here).
        backend: "auto" (numba on CPU float32, tensors elsewhere), "numba" or "torch".

    Returns:
        ``(B, C, D, H, W)``, a new tensor; ``x`` is unchanged.
    """
    if x.ndim != 5:
        raise ValueError(f"local_pixel_shuffle needs (B, C, D, H, W); got shape {tuple(x.shape)}")
    if params is None:
        params = sample_shuffle_params(x.shape[0], x.shape[2:], generator, num_blocks, max_block, prob)
    use_numba = backend == "numba" or (backend == "auto" and x.device.type == "cpu" and not x.requires_grad)
    if use_numba:
        return _shuffle_numba(x.float(), params).to(x.dtype)
    return _shuffle_torch(x, params)

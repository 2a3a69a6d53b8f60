"""Counter-based hashing: voxel noise and block permutations that do not depend on the device.

A transform draws one 31-bit seed per sample (or per block) from the CPU generator; everything else
is a hash of that seed and a counter, computed the same way by the tensor path (any device) and by the
numba kernels (:mod:`volssl.transforms._kernels`), so both give bit-identical results.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1
MUL = 0x45D9F3B


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash of int64 values in ``[0, 2^32)`` -> ``[0, 2^32)`` (products stay below 2^59)."""
    x = ((x >> 16) ^ x) * MUL & MASK32
    x = ((x >> 16) ^ x) * MUL & MASK32
    return (x >> 16) ^ x


def hash_uniform(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """Device-independent uniform noise: ``seeds (B,)`` int64 -> ``(B, n)`` float32 in ``[0, 1)``.

    Value ``i`` of row ``b`` is ``hash32((hash32(seed_b) + i * GOLDEN) mod 2^32) >> 8`` scaled by ``2^-24``.
    """
    idx = torch.arange(n, device=seeds.device, dtype=torch.int64)
    h = hash32((hash32(seeds[:, None] & MASK32) + idx[None] * GOLDEN) & MASK32)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def draw_seeds(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """31-bit seeds of ``shape`` (int64, CPU) from ``generator``."""
    return torch.randint(0, 2**31, shape, generator=generator, dtype=torch.int64)


def use_kernel(x: torch.Tensor, backend: str) -> bool:
    """Whether the numba kernel runs: ``backend`` "numba", or "auto" on a CPU float32/float64 tensor without grad,
    outside ``torch.compile``.

    Raises:
        ConfigError: an unknown ``backend``.
    """
    if backend not in ("auto", "numba", "torch"):
        from pretext.errors import ConfigError

        raise ConfigError(f"backend={backend!r} must be 'auto' (numba on CPU, tensor ops elsewhere), 'numba' or 'torch'")
    if backend == "auto":  # under torch.compile the tensor path is traced (numba cannot be)
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad
                and not torch.compiler.is_compiling())
    return backend == "numba"

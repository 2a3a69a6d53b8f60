"""The numba kernel of :func:`volssl.shuffle.local_pixel_shuffle` (CPU path).

Kept in its own module so that numba is imported only when the CPU path runs, and so that the
compiled kernel is cached on disk (``cache=True`` needs module-level functions).
"""

# ruff: noqa
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def hash32_nb(h):  # pragma: no cover - compiled; same as hash32
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return (h >> 16) ^ h


@njit(cache=True, nogil=True, boundscheck=False)
def kernel(x, out, seeds, apply, dims, mx, n_chan):  # pragma: no cover - compiled
    # x, out: (B * C, S) flat voxels; dims = (D, H, W); mx = max block sides
    n_batch, n_blocks = seeds.shape
    stride_d, stride_h = dims[1] * dims[2], dims[2]
    cap = mx[0] * mx[1] * mx[2]
    # table[sh, sw, i]: flat offset of local index i (C order) in a block of sides (., sh, sw)
    table = np.empty((mx[1] + 1, mx[2] + 1, cap), np.int64)
    for sh in range(1, mx[1] + 1):
        for sw in range(1, mx[2] + 1):
            for i in range(cap):
                table[sh, sw, i] = (i // (sh * sw)) * stride_d + ((i // sw) % sh) * stride_h + i % sw
    src = np.empty(cap, np.int64)
    for b in range(n_batch):
        if not apply[b]:
            continue
        for k in range(n_blocks):
            seed = seeds[b, k]
            base = hash32_nb(seed & 0xFFFFFFFF)
            sd = 1 + ((hash32_nb((base + 1 * 0x9E3779B1) & 0xFFFFFFFF) * mx[0]) >> 32)
            sh = 1 + ((hash32_nb((base + 2 * 0x9E3779B1) & 0xFFFFFFFF) * mx[1]) >> 32)
            sw = 1 + ((hash32_nb((base + 3 * 0x9E3779B1) & 0xFFFFFFFF) * mx[2]) >> 32)
            d0 = (hash32_nb((base + 4 * 0x9E3779B1) & 0xFFFFFFFF) * (dims[0] - sd + 1)) >> 32
            h0 = (hash32_nb((base + 5 * 0x9E3779B1) & 0xFFFFFFFF) * (dims[1] - sh + 1)) >> 32
            w0 = (hash32_nb((base + 6 * 0x9E3779B1) & 0xFFFFFFFF) * (dims[2] - sw + 1)) >> 32
            start = d0 * stride_d + h0 * stride_h + w0
            n = sd * sh * sw
            off = table[sh, sw]
            for i in range(n):
                src[i] = off[i]
            for j in range(n - 1, 0, -1):  # Fisher-Yates on the source offsets
                r = (hash32_nb((seed + j * 0x9E3779B1) & 0xFFFFFFFF) * (j + 1)) >> 32
                t = src[j]
                src[j] = src[r]
                src[r] = t
            for c in range(b * n_chan, (b + 1) * n_chan):
                xc = x[c]
                oc = out[c]
                for i in range(n):
                    oc[start + off[i]] = xc[start + src[i]]

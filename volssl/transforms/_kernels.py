"""numba kernels of the CPU path of the Models Genesis transforms (shuffle, intensity table, painting).

Kept in their own module so that numba is imported only when a CPU path runs, and so that the compiled
kernels are cached on disk (``cache=True`` needs module-level functions). Each kernel computes exactly
what its tensor path computes (same hashes, same float32 operations in the same order); the tests
compare them bit for bit.
"""

# ruff: noqa
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def hash32_nb(h):  # pragma: no cover - compiled; same as volssl.transforms.hashing.hash32
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return (h >> 16) ^ h


@njit(cache=True, nogil=True, boundscheck=False)
def shuffle_kernel(x, out, seeds, apply, dims, mx, n_chan):  # pragma: no cover - compiled
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


@njit(cache=True, nogil=True, boundscheck=False)
def lut_kernel(x, out, lut, enabled):  # pragma: no cover - compiled
    # x, out: (B, V) float32; lut: (B, L) float32 samples of a curve on [0, 1]; enabled: (B,) bool
    # two passes per volume: table positions (vectorisable), then the table reads
    n_batch, n_vox = x.shape
    top = lut.shape[1] - 1
    scale = np.float32(top)
    zero, one = np.float32(0.0), np.float32(1.0)
    idx = np.empty(n_vox, np.int32)
    frac = np.empty(n_vox, np.float32)
    for b in range(n_batch):
        xb = x[b]
        ob = out[b]
        if not enabled[b]:
            for i in range(n_vox):
                ob[i] = xb[i]
            continue
        for i in range(n_vox):
            u = xb[i]
            v = u if u > zero else zero  # clamp to [0, 1]; NaN -> 0, so the index stays in the table
            v = v if v < one else one
            pos = v * scale
            i0 = min(np.int32(pos), np.int32(top - 1))
            idx[i] = i0
            w = pos - np.float32(i0)
            frac[i] = w if u == u else u  # NaN: weight NaN, so the output is NaN (as the tensor path)
        lb = lut[b]
        for i in range(n_vox):
            i0 = idx[i]
            lo = lb[i0]
            ob[i] = lo + frac[i] * (lb[i0 + 1] - lo)


@njit(cache=True, nogil=True, boundscheck=False)
def flip_kernel(x, out, axes):  # pragma: no cover - compiled
    # x, out: (B, C, D, H, W); axes: (B, 3) bool, flip D / H / W
    n_batch, n_chan, nd, nh, nw = x.shape
    for b in range(n_batch):
        fd, fh, fw = axes[b, 0], axes[b, 1], axes[b, 2]
        for c in range(n_chan):
            for d in range(nd):
                sd = nd - 1 - d if fd else d
                for h in range(nh):
                    sh = nh - 1 - h if fh else h
                    src = x[b, c, sd, sh]
                    dst = out[b, c, d, h]
                    if fw:
                        for w in range(nw):
                            dst[w] = src[nw - 1 - w]
                    else:
                        for w in range(nw):
                            dst[w] = src[w]


@njit(cache=True, nogil=True, boundscheck=False)
def paint_kernel(x, out, starts, sizes, active, seeds, apply, dims, n_chan, outside):  # pragma: no cover
    # x, out: (B, C * D * H * W); starts, sizes: (B, K, 3) int64; active: (B, K); seeds, apply: (B,)
    # outside=False: hash noise inside the active boxes (in-painting);
    # outside=True: hash noise everywhere except inside the active boxes (out-painting)
    n_batch, n_vox = x.shape
    n_boxes = starts.shape[1]
    vol = dims[0] * dims[1] * dims[2]
    scale = np.float32(1.0 / (1 << 24))
    for b in range(n_batch):
        xb = x[b]
        ob = out[b]
        if not apply[b]:
            for i in range(n_vox):
                ob[i] = xb[i]
            continue
        base = hash32_nb(seeds[b] & 0xFFFFFFFF)
        if outside:
            for i in range(n_vox):
                ob[i] = np.float32(hash32_nb((base + i * 0x9E3779B1) & 0xFFFFFFFF) >> 8) * scale
        else:
            for i in range(n_vox):
                ob[i] = xb[i]
        for k in range(n_boxes):
            if not active[b, k]:
                continue
            d0, h0, w0 = starts[b, k, 0], starts[b, k, 1], starts[b, k, 2]
            sd, sh, sw = sizes[b, k, 0], sizes[b, k, 1], sizes[b, k, 2]
            for c in range(n_chan):
                for d in range(d0, d0 + sd):
                    for h in range(h0, h0 + sh):
                        row = c * vol + (d * dims[1] + h) * dims[2]
                        for i in range(row + w0, row + w0 + sw):
                            if outside:
                                ob[i] = xb[i]
                            else:
                                ob[i] = np.float32(hash32_nb((base + i * 0x9E3779B1) & 0xFFFFFFFF) >> 8) * scale

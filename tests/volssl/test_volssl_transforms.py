"""Volume transforms: paper semantics of the local shuffle, exactness across backends (numba kernels ==
tensor path), painting bounds, Bezier remap, rotations, slabs and permutation sets, MAE masking, and the
random -> deterministic -> pure function pattern."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from pretext.errors import ConfigError
from pretext.transforms import Chain, Compose
from volssl.transforms import (
    LocalPixelShuffle,
    RandomBezierRemap,
    RandomFlip,
    RandomInPaint,
    RandomLocalPixelShuffle,
    RandomOutPaint,
    RandomPainting,
    RandomPatchMask,
    RandomRotate90,
    RandomSlabOrder,
    bezier_curves,
    block_geometry,
    local_pixel_shuffle,
    patchify,
    permutation_set,
    rotate,
    rotation_group,
    sample_boxes,
    slab_geometry,
    unpatchify,
)
from volssl.transforms.shuffle import random_blocks, seeded_blocks, shuffle_blocks_loop, shuffle_torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_shuffle(x: np.ndarray, params: LocalPixelShuffle, spatial) -> np.ndarray:
    """Models Genesis semantics, one block at a time in the NumPy reference loop: read the original, write in order."""
    out = x.copy()
    for b in range(x.shape[0]):
        if params.enabled[b]:
            out[b] = shuffle_blocks_loop(x[b], seeded_blocks(params.seeds[b], spatial, params.max_block))
    return out


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_shuffle_matches_python_reference(backend):
    x = torch.rand(2, 2, 12, 10, 8)
    p = RandomLocalPixelShuffle(num_blocks=40, max_block=(3, 4, 2), prob=1.0, backend=backend).get_params(x.shape, gen(3))
    out = p(x)
    np.testing.assert_array_equal(out.numpy(), reference_shuffle(x.numpy(), p, (12, 10, 8)))
    assert not torch.equal(out, x)


def test_numba_equals_tensor_path_at_paper_defaults():
    x = torch.rand(2, 1, 20, 20, 10)
    p = RandomLocalPixelShuffle(num_blocks=10000).get_params(x.shape, gen(1))
    assert torch.equal(local_pixel_shuffle(x, p.seeds, p.enabled, p.max_block, backend="numba"),
                       local_pixel_shuffle(x, p.seeds, p.enabled, p.max_block, backend="torch"))


def test_reference_loop_follows_the_paper():
    """The NumPy reference (also the benchmark's) draws blocks within the paper's bounds; one block keeps the
    rest of the volume and its own voxels."""
    rng = np.random.default_rng(0)
    blocks = list(random_blocks(rng, (64, 64, 32), num_blocks=3000))
    sizes = np.array([b[1] for b in blocks])
    corners = np.array([b[0] for b in blocks])
    assert sizes.min(0).tolist() == [1, 1, 1] and sizes.max(0).tolist() == [6, 6, 3]  # dim // 10
    assert corners.min() == 0 and ((corners + sizes) <= [64, 64, 32]).all()
    assert all(sorted(b[2]) == list(range(int(np.prod(b[1])))) for b in blocks[:50])
    x = np.random.default_rng(1).permutation(16 ** 3).astype(np.float32).reshape(1, 16, 16, 16)
    (corner, size, order), = random_blocks(rng, (16, 16, 16), num_blocks=1, max_block=(4, 4, 4))
    y = shuffle_blocks_loop(x, [(corner, size, order)])
    inside = np.zeros_like(x, dtype=bool)
    inside[:, corner[0]:corner[0] + size[0], corner[1]:corner[1] + size[1], corner[2]:corner[2] + size[2]] = True
    assert (y[~inside] == x[~inside]).all() and sorted(y[inside]) == sorted(x[inside])


def test_block_geometry_follows_the_paper():
    p = RandomLocalPixelShuffle(num_blocks=20000).get_params((1, 1, 64, 64, 32), gen(0))
    sizes, starts = block_geometry(p.seeds, (64, 64, 32), p.max_block)
    assert list(p.max_block) == [6, 6, 3]  # dim // 10
    for a, (mx, dim) in enumerate(zip((6, 6, 3), (64, 64, 32), strict=False)):
        assert sorted(torch.unique(sizes[..., a]).tolist()) == list(range(1, mx + 1))
        assert int(starts[..., a].min()) == 0 and int((starts[..., a] + sizes[..., a]).max()) == dim


def test_single_block_keeps_its_voxel_multiset():
    x = torch.randperm(16 * 16 * 16).float().reshape(1, 1, 16, 16, 16)
    p = RandomLocalPixelShuffle(num_blocks=1, max_block=(4, 4, 4)).get_params(x.shape, gen(5))
    out = p(x)
    (sd, sh, sw), (d0, h0, w0) = (t[0, 0].tolist() for t in block_geometry(p.seeds, (16,) * 3, [4, 4, 4]))
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[..., d0:d0 + sd, h0:h0 + sh, w0:w0 + sw] = True
    assert torch.equal(out[~inside], x[~inside])
    assert torch.equal(out[inside].sort().values, x[inside].sort().values)


def test_shuffle_seeded_and_probability():
    x = torch.rand(4, 1, 16, 16, 16)
    shuffle = RandomLocalPixelShuffle(num_blocks=200, max_block=(3, 3, 3))
    a, b, c = shuffle(x, gen(7)), shuffle(x, gen(7)), shuffle(x, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(RandomLocalPixelShuffle(num_blocks=200, prob=0.0)(x, gen(7)), x)
    with pytest.raises(ConfigError, match="max_block"):
        RandomLocalPixelShuffle(max_block=(20, 1, 1))(x, gen(0))
    with pytest.raises(ConfigError, match="prob"):
        RandomLocalPixelShuffle(prob=1.5)


def test_bezier_matches_np_interp_and_is_monotone():
    x = torch.rand(4, 1, 8, 8, 8)
    g = gen(11)
    state = g.get_state()
    y = RandomBezierRemap(prob=1.0)(x, g)
    g.set_state(state)
    d = torch.rand(4, 6, generator=g, dtype=torch.float64)
    xv, yv = bezier_curves(d[:, 1:5].reshape(4, 2, 2), 1000)
    for i in range(4):
        xs = np.sort(xv[i].numpy())
        ys = np.sort(yv[i].numpy()) if d[i, 5] >= 0.5 else yv[i].numpy()
        np.testing.assert_allclose(y[i].numpy(), np.interp(x[i].numpy(), xs, ys), atol=1e-5)
        order = x[i].flatten().argsort()
        diffs = y[i].flatten()[order].diff()
        assert (diffs >= -1e-6).all() or (diffs <= 1e-6).all()
    assert torch.equal(RandomBezierRemap(prob=0.0)(x, gen(0)), x)


def test_painting_stays_in_bounds():
    starts, sizes = sample_boxes(64, (32, 32, 16), 5, (5, 5, 2), (10, 10, 5), 3, gen(0))
    assert (starts >= 3).all() and (starts + sizes <= torch.tensor([29, 29, 13])).all()
    assert (sizes >= torch.tensor([5, 5, 2])).all() and (sizes <= torch.tensor([10, 10, 5])).all()
    x = torch.full((8, 1, 32, 32, 16), 2.0)  # outside the noise range [0, 1)
    inp = RandomInPaint()(x, gen(1))
    changed = inp != x
    assert changed.any() and not changed[..., :3, :, :].any() and not changed[..., -3:, :, :].any()
    assert ((inp[changed] >= 0) & (inp[changed] < 1)).all()
    outp = RandomOutPaint()(x, gen(2))
    kept = outp == x
    assert kept.any(dim=(1, 2, 3, 4)).all()  # each volume keeps its window(s)
    assert not kept[..., :3, :, :].any()  # the border is always replaced
    none = dataclasses.replace(RandomInPaint().get_params(x.shape, gen(1)), enabled=torch.zeros(8, dtype=torch.bool))
    assert torch.equal(none(x), x)


@pytest.mark.parametrize("kind", [10, 24])
def test_rotations_invert_and_are_distinct(kind):
    group = rotation_group(kind)
    assert len(group) == kind and group[0] == ()
    x = torch.arange(2 * 6 ** 3, dtype=torch.float32).reshape(2, 1, 6, 6, 6)
    views = {rotate(x[:1], torch.tensor([r]), kind).numpy().tobytes() for r in range(kind)}
    assert len(views) == kind  # every class is a different rotation
    view = RandomRotate90(kind).get_params(x.shape, gen(0))
    labels = view.labels
    assert torch.equal(labels, torch.randint(0, kind, (2,), generator=gen(0)))  # the label is the only draw
    y = view(x)
    assert torch.equal(rotate(y, labels, kind, inverse=True), x)
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    with pytest.raises(ConfigError, match="cubic"):
        rotate(torch.rand(1, 1, 6, 6, 4), torch.tensor([1]), kind)


def test_rotation_group_24_is_closed():
    probe = torch.arange(27.0).reshape(1, 1, 3, 3, 3)
    views = {rotate(probe, torch.tensor([r]), 24).numpy().tobytes() for r in range(24)}
    for a, b in itertools.product(range(24), repeat=2):
        twice = rotate(rotate(probe, torch.tensor([a]), 24), torch.tensor([b]), 24)
        assert twice.numpy().tobytes() in views


def test_permutation_set_is_valid_and_distinct():
    perms = permutation_set(4, 10)
    assert len(set(perms)) == 10 and perms[0] == (0, 1, 2, 3)
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
    dmin = min(sum(a != b for a, b in zip(p, q, strict=False)) for p, q in itertools.combinations(perms, 2))
    naive = list(itertools.permutations(range(4)))[:10]  # lexicographic first ten, for contrast
    dnaive = min(sum(a != b for a, b in zip(p, q, strict=False)) for p, q in itertools.combinations(naive, 2))
    assert dmin >= 3 > dnaive
    assert permutation_set(4, 10) == permutation_set(4, 10, seed=0)
    with pytest.raises(ConfigError, match="num_permutations"):
        permutation_set(3, 7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slabs_are_crops_of_the_volume(axis):
    x = torch.rand(2, 1, 16, 12, 14)
    length = x.shape[2 + axis]
    inplane = [s for a, s in enumerate(x.shape[2:]) if a != axis]
    assert slab_geometry(length, inplane, 4, 0.67, 0.17) == (2, 2)  # thickness 2, jitter 2 voxels
    identity = [(0, 1, 2, 3)]  # one permutation: the slabs come out in their own order
    view = RandomSlabOrder(4, identity, axis, thickness=0.67, jitter=0.17).get_params(x.shape, gen(axis))
    slabs, starts, shifts = view(x), view.starts, view.shifts
    assert slabs.shape[:3] == (2, 4, 1) and slabs.shape[3 + axis] == 2
    for b, j in itertools.product(range(2), range(4)):
        sl = [slice(None)] * 3
        other = [a for a in range(3) if a != axis]
        sl[axis] = slice(int(starts[b, j]), int(starts[b, j]) + 2)
        for o, (ax, size) in enumerate(zip(other, inplane, strict=False)):
            sl[ax] = slice(int(shifts[b, j, o]), int(shifts[b, j, o]) + size - 2)
        torch.testing.assert_close(slabs[b, j], x[b][(slice(None), *sl)])
    seg = length // 4
    assert ((starts >= torch.arange(4) * seg) & (starts + 2 <= (torch.arange(4) + 1) * seg)).all()


def test_masking_exact_ratio_and_patchify_roundtrip():
    m = RandomPatchMask(0.75).get_params((3, 64), gen(0))
    ids, mask = m.ids_keep, m.mask
    assert ids.shape == (3, 16) and (mask.sum(1) == 48).all()
    assert all(len(set(r.tolist())) == 16 for r in ids)
    assert (mask.gather(1, ids) == 0).all()
    x = torch.rand(2, 2, 8, 12, 16)
    tok = patchify(x, (4, 4, 4))
    assert tok.shape == (2, 2 * 3 * 4, 4 * 4 * 4 * 2)
    assert torch.equal(unpatchify(tok, (4, 4, 4), (2, 3, 4), 2), x)
    tokens = torch.rand(3, 64, 5)
    assert torch.equal(m(tokens), torch.stack([tokens[i, ids[i]] for i in range(3)]))  # the visible tokens
    with pytest.raises(ConfigError, match="visible"):
        RandomPatchMask(0.9).get_params((1, 4), gen(0))


@pytest.mark.gpu
def test_same_seed_same_views_on_gpu():
    from volssl.tasks.pixel_shuffle import PixelShuffle, genesis_corrupt

    x = torch.rand(2, 1, 20, 20, 10)
    cfg = PixelShuffle.Config(local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0)
    cpu = genesis_corrupt(x, gen(4), cfg)
    gpu = genesis_corrupt(x.cuda(), gen(4), cfg)
    for a, b in zip(cpu, gpu, strict=False):
        torch.testing.assert_close(a, b.cpu(), atol=1e-5, rtol=0)


def test_shuffle_probability_per_volume_and_chunked_tensor_path():
    x = torch.rand(9, 2, 12, 10, 8)  # > 4 volumes: the tensor path works in chunks
    p = RandomLocalPixelShuffle(num_blocks=100, max_block=(3, 3, 2), prob=0.5).get_params(x.shape, gen(2))
    assert 0 < int(p.enabled.sum()) < 9
    a = dataclasses.replace(p, backend="numba")(x)
    assert torch.equal(a, dataclasses.replace(p, backend="torch")(x))
    changed = (a != x).flatten(1).any(1)
    assert torch.equal(changed, p.enabled)
    for chunk in (1, 16):  # the GPU path takes more volumes at a time: same result
        assert torch.equal(a, shuffle_torch(x, p.seeds, p.enabled, p.max_block, chunk=chunk))


@pytest.mark.parametrize("make", [
    lambda: RandomFlip(prob=0.7),
    lambda: RandomBezierRemap(prob=0.7),
    lambda: RandomInPaint(),
    lambda: RandomOutPaint(),
    lambda: RandomPainting(prob=0.8, inpaint_rate=0.5),
    lambda: RandomLocalPixelShuffle(num_blocks=300, prob=0.7),
])
def test_numba_kernels_equal_the_tensor_path(make):
    """The CPU kernels compute bit for bit what the tensor path (the GPU path) computes."""
    x = torch.rand(6, 2, 20, 16, 12, generator=gen(0))
    x[0, 0, 0, 0, :4] = torch.tensor([-0.5, 1.5, 0.0, 1.0])  # out of range values are clamped by the remap
    params = make().get_params(x.shape, gen(1))
    transforms = params.transforms if isinstance(params, Chain) else (params,)
    fast = Chain(tuple(dataclasses.replace(t, backend="numba") for t in transforms))(x)
    ref = Chain(tuple(dataclasses.replace(t, backend="torch") for t in transforms))(x)
    assert torch.equal(fast, ref) and fast.dtype == x.dtype
    assert torch.equal(make()(x, gen(1)), fast)  # "auto" on a CPU float32 tensor is the kernel


def test_kernels_keep_dtype_and_nan():
    x64 = torch.rand(2, 1, 12, 10, 8, dtype=torch.float64)
    p = RandomLocalPixelShuffle(num_blocks=50).get_params(x64.shape, gen(0))
    y = p(x64)
    assert y.dtype == torch.float64 and torch.equal(y.flatten().sort().values, x64.flatten().sort().values)
    assert torch.equal(y, dataclasses.replace(p, backend="torch")(x64))  # the permutation is exact in float64
    x = torch.rand(2, 1, 8, 8, 8)
    x[0, 0, 1, 2, 3] = float("nan")
    remap = RandomBezierRemap(prob=1.0).get_params(x.shape, gen(0))
    for backend in ("numba", "torch"):
        out = dataclasses.replace(remap, backend=backend)(x)
        assert torch.isnan(out[0, 0, 1, 2, 3]) and int(torch.isnan(out).sum()) == 1
    with pytest.raises(ConfigError, match="backend"):
        dataclasses.replace(remap, backend="cuda")(x)


def test_random_transform_is_params_then_apply():
    """``T(x, g)`` is ``T.get_params(x.shape, g)(x)``; a Compose draws its parts in order from one generator."""
    x = torch.rand(3, 1, 16, 16, 16)
    parts = [RandomFlip(0.9), RandomLocalPixelShuffle(num_blocks=50), RandomBezierRemap(1.0)]
    g = gen(4)
    expected = x
    for t in parts:
        expected = t.get_params(x.shape, g)(expected)
    assert torch.equal(Compose(parts)(x, gen(4)), expected)
    chain = Compose(parts).get_params(x.shape, gen(4))
    assert isinstance(chain, Chain) and torch.equal(chain(x), chain(x))  # deterministic once drawn
    out = RandomOutPaint().get_params(x.shape, gen(0))
    nothing = dataclasses.replace(out, active=torch.zeros_like(out.active))  # no box kept: all noise
    for backend in ("numba", "torch"):
        y = dataclasses.replace(nothing, backend=backend)(x)
        assert ((y >= 0) & (y < 1)).all() and not (y == x).any()

"""Volume transforms: paper semantics of the local shuffle, exactness across backends, painting
bounds, Bezier remap, rotations, slabs and permutation sets, MAE masking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from volssl.shuffle import block_geometry, block_permutation, local_pixel_shuffle, sample_shuffle_params
from volssl.transforms import (
    bezier_curves,
    bezier_remap,
    extract_slabs,
    in_paint,
    out_paint,
    patchify,
    permutation_set,
    random_masking,
    rotate,
    rotation_group,
    sample_boxes,
    sample_slabs,
    unpatchify,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_shuffle(x: np.ndarray, params: dict, spatial) -> np.ndarray:
    """Models Genesis semantics, one block at a time in Python: read the original, write in order."""
    out = x.copy()
    sizes, starts = block_geometry(params["seeds"], spatial, params["max_block"].tolist())
    for b in range(x.shape[0]):
        if not params["apply"][b]:
            continue
        for k in range(params["seeds"].shape[1]):
            (sd, sh, sw), (d0, h0, w0) = sizes[b, k].tolist(), starts[b, k].tolist()
            block = x[b, :, d0:d0 + sd, h0:h0 + sh, w0:w0 + sw].reshape(x.shape[1], -1)
            perm = block_permutation(int(params["seeds"][b, k]), sd * sh * sw)
            out[b, :, d0:d0 + sd, h0:h0 + sh, w0:w0 + sw] = block[:, perm].reshape(x.shape[1], sd, sh, sw)
    return out


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_shuffle_matches_python_reference(backend):
    x = torch.rand(2, 2, 12, 10, 8)
    p = sample_shuffle_params(2, (12, 10, 8), gen(3), num_blocks=40, max_block=(3, 4, 2), prob=1.0)
    out = local_pixel_shuffle(x, params=p, backend=backend)
    np.testing.assert_array_equal(out.numpy(), reference_shuffle(x.numpy(), p, (12, 10, 8)))
    assert not torch.equal(out, x)


def test_numba_equals_tensor_path_at_paper_defaults():
    x = torch.rand(2, 1, 20, 20, 10)
    p = sample_shuffle_params(2, (20, 20, 10), gen(1), num_blocks=10000)
    assert torch.equal(local_pixel_shuffle(x, params=p, backend="numba"), local_pixel_shuffle(x, params=p, backend="torch"))


def test_block_geometry_follows_the_paper():
    p = sample_shuffle_params(1, (64, 64, 32), gen(0), num_blocks=20000)
    sizes, starts = block_geometry(p["seeds"], (64, 64, 32), p["max_block"].tolist())
    assert p["max_block"].tolist() == [6, 6, 3]  # dim // 10
    for a, (mx, dim) in enumerate(zip((6, 6, 3), (64, 64, 32), strict=False)):
        assert sorted(torch.unique(sizes[..., a]).tolist()) == list(range(1, mx + 1))
        assert int(starts[..., a].min()) == 0 and int((starts[..., a] + sizes[..., a]).max()) == dim


def test_single_block_keeps_its_voxel_multiset():
    x = torch.randperm(16 * 16 * 16).float().reshape(1, 1, 16, 16, 16)
    p = sample_shuffle_params(1, (16, 16, 16), gen(5), num_blocks=1, max_block=(4, 4, 4))
    out = local_pixel_shuffle(x, params=p)
    (sd, sh, sw), (d0, h0, w0) = (t[0, 0].tolist() for t in block_geometry(p["seeds"], (16,) * 3, [4, 4, 4]))
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[..., d0:d0 + sd, h0:h0 + sh, w0:w0 + sw] = True
    assert torch.equal(out[~inside], x[~inside])
    assert torch.equal(out[inside].sort().values, x[inside].sort().values)


def test_shuffle_seeded_and_probability():
    x = torch.rand(4, 1, 16, 16, 16)
    a = local_pixel_shuffle(x, gen(7), num_blocks=200, max_block=(3, 3, 3))
    b = local_pixel_shuffle(x, gen(7), num_blocks=200, max_block=(3, 3, 3))
    c = local_pixel_shuffle(x, gen(8), num_blocks=200, max_block=(3, 3, 3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(local_pixel_shuffle(x, gen(7), num_blocks=200, prob=0.0), x)
    with pytest.raises(ValueError, match="max_block"):
        local_pixel_shuffle(x, gen(0), max_block=(20, 1, 1))


def test_bezier_matches_np_interp_and_is_monotone():
    x = torch.rand(4, 1, 8, 8, 8)
    g = gen(11)
    state = g.get_state()
    y = bezier_remap(x, g, prob=1.0)
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
    assert torch.equal(bezier_remap(x, gen(0), prob=0.0), x)


def test_painting_stays_in_bounds():
    starts, sizes = sample_boxes(64, (32, 32, 16), 5, (5, 5, 2), (10, 10, 5), 3, gen(0))
    assert (starts >= 3).all() and (starts + sizes <= torch.tensor([29, 29, 13])).all()
    assert (sizes >= torch.tensor([5, 5, 2])).all() and (sizes <= torch.tensor([10, 10, 5])).all()
    x = torch.full((8, 1, 32, 32, 16), 2.0)  # outside the noise range [0, 1)
    inp = in_paint(x, gen(1))
    changed = inp != x
    assert changed.any() and not changed[..., :3, :, :].any() and not changed[..., -3:, :, :].any()
    assert ((inp[changed] >= 0) & (inp[changed] < 1)).all()
    outp = out_paint(x, gen(2))
    kept = outp == x
    assert kept.any(dim=(1, 2, 3, 4)).all()  # each volume keeps its window(s)
    assert not kept[..., :3, :, :].any()  # the border is always replaced
    none = in_paint(x, gen(1), apply=torch.zeros(8, dtype=torch.bool))
    assert torch.equal(none, x)


@pytest.mark.parametrize("kind", [10, 24])
def test_rotations_invert_and_are_distinct(kind):
    group = rotation_group(kind)
    assert len(group) == kind and group[0] == ()
    x = torch.arange(2 * 6 ** 3, dtype=torch.float32).reshape(2, 1, 6, 6, 6)
    views = {rotate(x[:1], torch.tensor([r]), kind).numpy().tobytes() for r in range(kind)}
    assert len(views) == kind  # every class is a different rotation
    labels = torch.randint(0, kind, (2,), generator=gen(0))
    y = rotate(x, labels, kind)
    assert torch.equal(rotate(y, labels, kind, inverse=True), x)
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    with pytest.raises(ValueError, match="cubic"):
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
    with pytest.raises(ValueError, match="num_permutations"):
        permutation_set(3, 7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slabs_are_crops_of_the_volume(axis):
    x = torch.rand(2, 1, 16, 12, 14)
    length = x.shape[2 + axis]
    inplane = [s for a, s in enumerate(x.shape[2:]) if a != axis]
    starts, shifts = sample_slabs(2, length, inplane, 4, 2, 2, gen(axis))
    slabs = extract_slabs(x, axis, starts, shifts, 2, 2)
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
    ids, mask = random_masking(3, 64, 0.75, gen(0))
    assert ids.shape == (3, 16) and (mask.sum(1) == 48).all()
    assert all(len(set(r.tolist())) == 16 for r in ids)
    assert (mask.gather(1, ids) == 0).all()
    x = torch.rand(2, 2, 8, 12, 16)
    tok = patchify(x, (4, 4, 4))
    assert tok.shape == (2, 2 * 3 * 4, 4 * 4 * 4 * 2)
    assert torch.equal(unpatchify(tok, (4, 4, 4), (2, 3, 4), 2), x)
    with pytest.raises(ValueError, match="visible"):
        random_masking(1, 4, 0.9, gen(0))


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
    p = sample_shuffle_params(9, (12, 10, 8), gen(2), num_blocks=100, max_block=(3, 3, 2), prob=0.5)
    assert 0 < int(p["apply"].sum()) < 9
    a = local_pixel_shuffle(x, params=p, backend="numba")
    assert torch.equal(a, local_pixel_shuffle(x, params=p, backend="torch"))
    changed = (a != x).flatten(1).any(1)
    assert torch.equal(changed, p["apply"])

"""Volume tasks on bad input: clear errors that say what to fix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from pretext.errors import ConfigError, UserError
from pretext.registry import TASKS, create_encoder, create_task
from tests.components import shipped


@pytest.mark.parametrize("name", shipped(TASKS, "volume"))
def test_2d_input_is_rejected(name):
    cls = TASKS.get(name)
    with pytest.raises(UserError, match="3D volumes.*2D image"):
        cls.check_input(cls.Config(), (1, 28, 28))


def test_too_small_for_the_slabs():
    cls = TASKS.get("slice_order")
    with pytest.raises(UserError, match="fewer than 2 per slab.*num_slabs"):
        cls.check_input(cls.Config(num_slabs=4), (1, 6, 32, 32))
    cls.check_input(cls.Config(num_slabs=4, axis=1), (1, 6, 32, 32))


def test_rotation_needs_a_cube():
    cls = TASKS.get("rotation")
    with pytest.raises(UserError, match="cubic"):
        cls.check_input(cls.Config(), (1, 32, 32, 16))


def test_pixel_shuffle_and_mae_need_room():
    with pytest.raises(UserError, match=">= 8"):
        TASKS.get("pixel_shuffle").check_input(TASKS.get("pixel_shuffle").Config(), (1, 4, 16, 16))
    enc = create_encoder("vit_3d", img_size=16, patch_size=16, embed_dim=48, depth=1, num_heads=2)
    with pytest.raises(UserError, match="smaller --encoder.patch_size"):
        create_task("mae3d", enc)


def test_mae_needs_a_token_encoder():
    with pytest.raises(ConfigError, match="vit_3d"):
        create_task("mae3d", create_encoder("resnet18_3d", img_size=16, widen_factor=0.125))


def test_nan_voxels_in_a_batch():
    task = create_task("rotation", create_encoder("resnet18_3d", img_size=16, widen_factor=0.125))
    x = torch.rand(2, 1, 16, 16, 16)
    x[0, 0, 1, 1, 1] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        task({"x": x}, generator=torch.Generator().manual_seed(0))


def test_bad_task_options():
    enc = create_encoder("resnet18_3d", img_size=16, widen_factor=0.125)
    with pytest.raises(ConfigError, match=r"task 'rotation' num_rotations=12 must be one of 10 or 24$"):
        create_task("rotation", enc, num_rotations=12)
    with pytest.raises(ConfigError, match="num_permutations"):
        create_task("slice_order", enc, num_slabs=3, num_permutations=7)
    with pytest.raises(ConfigError, match=r"task 'pixel_shuffle' local_rate=1.5 must be <= 1"):
        create_task("pixel_shuffle", enc, local_rate=1.5)
    with pytest.raises(ConfigError, match=r"task 'mae3d' mask_ratio=1.0 must be < 1"):
        create_task("mae3d", enc, mask_ratio=1.0)
    with pytest.raises(ConfigError, match="weights"):
        create_task("combined", enc, tasks=("rotation", "pixel_shuffle"), weights=(1.0,))
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        create_task("combined", enc, tasks=("rotation", "nope"))
    with pytest.raises(ConfigError, match=r"combined task part 'rotation': unknown option 'bogus'"):
        create_task("combined", enc, tasks=("rotation",), options={"rotation": {"bogus": 1}})


class _Split(torch.utils.data.Dataset):
    def __init__(self, spacing):
        self.meta = pd.DataFrame(spacing, columns=["spacing_d", "spacing_h", "spacing_w"])

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i):
        x = torch.zeros(1, 8, 8, 8)
        x[:, 3:5, 3:5, 3:5] = 1.0
        return {"x": x, "label": torch.tensor(0), "patient": torch.tensor(i), "index": torch.tensor(i)}


def test_rotation_anisotropic_spacing():
    cls = TASKS.get("rotation")
    aniso = _Split(np.array([[2.0, 1.0, 1.0]]))
    with pytest.warns(UserWarning, match="anisotropic"):
        assert cls.wrap_dataset(aniso, cls.Config(anisotropy="warn")) is aniso
    with pytest.raises(UserError, match="anisotropic.*resample"):
        cls.wrap_dataset(aniso, cls.Config(anisotropy="error"))
    view = cls.wrap_dataset(aniso, cls.Config(anisotropy="resample"))
    x = view[0]["x"]
    assert x.shape == (1, 8, 8, 8)
    assert float(x[0, :, 4, 4].gt(0.5).sum()) > float(aniso[0]["x"][0, :, 4, 4].sum())  # stretched along D
    iso = _Split(np.array([[1.0, 1.0, 1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cls.wrap_dataset(iso, cls.Config(anisotropy="error")) is iso

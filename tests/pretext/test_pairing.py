"""Pair policies (views / patches / patient) through the one sampling interface, and patient-aware negatives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset, default_collate

from pretext.errors import UserError
from pretext.sampling import Streamable, pretrain_stream
from tests.components import TinySplit, tiny_task


def _batch(stream: object, n: int) -> dict[str, torch.Tensor]:
    ds = stream.dataset  # type: ignore[attr-defined]
    return (stream.collate_fn or default_collate)([ds[i] for i in range(n)])  # type: ignore[attr-defined]


class ThreePatients(TinySplit):
    """6 items: patients 0, 0, 0, 1, 1, 2 (patient 2 has a single record)."""

    def __init__(self) -> None:
        super().__init__((1, 16, 16, 16), n=6)
        self.patients = np.array([0, 0, 0, 1, 1, 2])
        self.patient_names = ["a", "b", "c"]


def test_views_pairing_iterates_the_split_itself() -> None:
    task = tiny_task("simclr@volume")
    split = TinySplit((1, 16, 16, 16), n=4)
    assert isinstance(split, Streamable) and split.sampling == "items"
    stream = pretrain_stream(split, task)
    assert stream.dataset is split and task.pairing() == "views"


def test_patient_pairing_pairs_records_of_one_patient_with_the_single_record_fallback() -> None:
    task = tiny_task("simclr@volume", pairing="patient")
    split = ThreePatients()
    with pytest.warns(UserWarning, match="1 of 6 items"):
        stream = pretrain_stream(split, task, seed=3)
    ds = stream.dataset
    for v in range(len(ds)):
        j = ds.partner(v)
        i = v % len(split)
        assert split.patients[j] == split.patients[i]
        if split.patients[i] != 2:
            assert j != i  # another record of the same patient
    batch = _batch(stream, 6)
    assert batch["x2"].shape == batch["x"].shape
    out = task(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])


def test_patches_pairing_on_fixed_shape_items_falls_back_to_views() -> None:
    task = tiny_task("vicreg@volume", pairing="patches")
    with pytest.warns(UserWarning, match="falls back|two views"):
        stream = pretrain_stream(TinySplit((1, 16, 16, 16), n=4), task)
    assert "x2" not in _batch(stream, 2)


def test_patches_pairing_draws_two_patches_of_one_scan(tmp_path) -> None:
    from volssl.sampling import PatchConfig, VolumeSplit
    from volssl.store import write_arrays

    vols = np.random.default_rng(0).random((3, 1, 20, 20, 20)).astype(np.float32)
    store = write_arrays(tmp_path / "store", list(vols), 0.5)
    split = VolumeSplit(store, np.arange(3), np.array([0, 1, 0]), np.array([0, 1, 1]), ["a", "b"],
                        PatchConfig(patch=(8, 8, 8), patches_per_volume=2))
    assert split.sampling == "patches"
    task = tiny_task("simclr@volume", pairing="patches")
    stream = pretrain_stream(split, task, seed=1)
    assert stream.collate_fn is not None
    batch = _batch(stream, 3)
    assert batch["x"].shape == batch["x2"].shape == (6, 1, 8, 8, 8)
    assert batch["patient"].tolist() == [0, 0, 1, 1, 1, 1]
    # x2 holds patches of the same scan as x (in a constant volume per scan both would be equal): find each
    # x2 patch inside its own volume
    for k in range(6):
        vol = vols[int(batch["index"][k])]
        p = batch["x2"][k, 0].numpy()
        hits = [(a, b, c) for a in range(13) for b in range(13) for c in range(13)
                if np.array_equal(vol[0, a:a + 8, b:b + 8, c:c + 8], p)]
        assert hits
    # reproducible from the seed (resume): the same items again
    again = _batch(pretrain_stream(split, task, seed=1), 3)
    assert torch.equal(again["x2"], batch["x2"])
    out = task(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and float(out["same_patient_frac"]) > 0


def test_patient_pairing_on_a_plain_dataset_is_refused() -> None:
    task = tiny_task("simclr@volume", pairing="patient")
    with pytest.raises(UserError, match="patient"):
        pretrain_stream(TensorDataset(torch.zeros(4, 1, 16, 16, 16)), task)


def test_simclr_loss_ignores_same_patient_similarity() -> None:
    """Two items of one patient in a batch: with patient-aware negatives (the default), the loss of every row is
    the same whatever their similarity; with ``same_patient="ignore"`` (plain SimCLR) it is not."""
    task = tiny_task("simclr@volume").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = TinySplit((1, 16, 16, 16), n=4).x
    z = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))

    def loss_with(zz: torch.Tensor, mode: str) -> torch.Tensor:
        from pretext.losses import nt_xent

        groups = torch.tensor([0, 0, 1, 2])
        z1, z2 = zz.chunk(2)
        if mode == "ignore":
            return nt_xent(z1, z2, 0.1)
        return nt_xent(z1, z2, 0.1, groups=groups, same_group="exclude")

    z_far = z.clone()
    z_far[1], z_far[5] = -z[0], -z[4]  # item 1 of patient 0 pushed away from item 0, its pair kept aligned
    z_near = z.clone()
    z_near[1], z_near[5] = z[0], z[4]  # item 1 made identical to item 0
    # item 1's own pair changed, so compare the rows of items 2 and 3 only through the full-batch loss
    # difference: excluded pairs are exactly the same-patient off-pair entries
    assert x.shape[0] == 4 and task.cfg.same_patient == "exclude"
    d_exclude = loss_with(z_far, "exclude") - loss_with(z_near, "exclude")
    d_plain = loss_with(z_far, "ignore") - loss_with(z_near, "ignore")
    assert abs(float(d_exclude)) < abs(float(d_plain))

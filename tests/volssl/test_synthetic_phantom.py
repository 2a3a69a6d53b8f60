"""Tests of the synthetic 3D phantom data kind (volssl.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from pretext.data import load_data
from pretext.errors import ConfigError
from volssl.synthetic import CLASSES, patient_table, simulate_scan

SPEC = "synthetic_phantom3d:?n_patients=18&scans_per_patient=2&size=16"


@pytest.fixture(scope="module")
def data():
    return load_data(SPEC)


def test_shapes_splits_and_meta(data):
    assert data.modality == "volume" and data.input_shape == (1, 16, 16, 16)
    assert data.class_names == CLASSES and data.num_classes == 3
    assert data.encoder_kwargs() == {"in_channels": 1, "img_size": (16, 16, 16)}
    assert sum(len(s) for s in data.splits.values()) == 36
    item = data.splits["test"][1]
    assert tuple(item["x"].shape) == (1, 16, 16, 16) and 0 <= item["x"].min() and item["x"].max() <= 1
    sets = {k: set(s.patients.tolist()) for k, s in data.splits.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    for split in data.splits.values():
        assert set(split.labels.tolist()) == {0, 1, 2}
        assert list(split.meta.columns) == ["patient", "sex", "age", "site", "scan"]
        assert all(split.patient_names[p] == n for p, n in zip(split.patients, split.meta["patient"], strict=True))


def test_deterministic(data):
    again = load_data(SPEC)
    assert all(np.array_equal(data.splits["train"].load(i), again.splits["train"].load(i)) for i in range(4))
    other = load_data(SPEC + "&seed=3")
    assert not np.array_equal(data.splits["train"].load(0), other.splits["train"].load(0))


def test_lesions_visible_by_intensity_in_mask():
    """Trivial feature: mean intensity inside the lesion minus around it has the class's sign."""
    table = patient_table(12, seed=0)
    for pt in table.itertuples():
        vol, mask = simulate_scan(pt, 0, 32, seed=0, noise=0.0, return_mask=True)
        if pt.label == 0:
            assert mask.max() == 0
            continue
        core, rim = mask > 0.9, (mask > 0.02) & (mask < 0.3)
        contrast = vol[0][core].mean() - vol[0][rim].mean()
        assert (contrast < -0.05) if pt.label == 1 else (contrast > 0.08), (pt.label, contrast)
        assert core.sum() > (60 if pt.label == 2 else 4)
    large = [m.sum() for pt in table.itertuples() if pt.label == 2
             for m in [simulate_scan(pt, 0, 32, 0, return_mask=True)[1]]]
    small = [m.sum() for pt in table.itertuples() if pt.label == 1
             for m in [simulate_scan(pt, 0, 32, 0, return_mask=True)[1]]]
    assert min(large) > 2 * max(small)


def test_scans_of_a_patient_share_anatomy():
    table = patient_table(4, seed=0)
    rows = list(table.itertuples())
    a0, a1 = simulate_scan(rows[0], 0, 16, 0), simulate_scan(rows[0], 1, 16, 0)
    b0 = simulate_scan(rows[1], 0, 16, 0)
    assert not np.array_equal(a0, a1)
    assert np.abs(a0 - a1).mean() < np.abs(a0 - b0).mean()


def test_bad_options():
    with pytest.raises(ConfigError, match="size"):
        load_data("synthetic_phantom3d:?size=8")
    with pytest.raises(ConfigError, match="n_patients"):
        load_data("synthetic_phantom3d:?n_patients=2")

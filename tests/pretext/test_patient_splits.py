"""pretext.splits (test_patient_splits: tests/sslbench/test_splits.py has the basename): the one patient-level holdout, folds and label fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretext.base import repeated_patient_splits
from pretext.errors import ConfigError
from pretext.splits import (
    LeakageError,
    check_fractions,
    check_no_leakage,
    patient_folds,
    patient_split,
    sample_fraction,
)


def _sides(patients: np.ndarray, roles: np.ndarray) -> dict[object, set[str]]:
    return {p: set(roles[patients == p]) for p in np.unique(patients)}


def test_holdout_by_patient_exact_counts_seeded():
    patients = np.repeat(np.arange(50), 4)
    roles = patient_split(patients, 0.2, 0.1, seed=0)
    sides = _sides(patients, roles)
    assert all(len(s) == 1 for s in sides.values())  # a patient on one side only
    counts = pd.Series([next(iter(s)) for s in sides.values()]).value_counts()
    assert counts["val"] == 10 and counts["test"] == 5 and counts["train"] == 35
    assert (patient_split(patients, 0.2, 0.1, seed=0) == roles).all()
    assert (patient_split(patients, 0.2, 0.1, seed=1) != roles).any()


def test_holdout_stratified_keeps_small_strata():
    patients = np.repeat(np.arange(40), 2)
    strata = [str(p % 4) for p in patients]  # 4 classes of 10 patients
    roles = patient_split(patients, 0.2, 0.2, seed=5, strata=strata)
    for c in range(4):
        mine = roles[np.array([int(s) == c for s in strata])]
        assert set(mine) == {"train", "val", "test"}  # every class on every side
        assert (mine == "test").sum() == 2 * 2 and (mine == "val").sum() == 2 * 2


def test_holdout_string_ids_and_no_split():
    roles = patient_split(np.array(["a", "b", "c", "a"]), 0.0, 0.0)
    assert roles.tolist() == ["train"] * 4


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (1.0, 0.0), (0.5, 0.5), (0.2, 1.2)])
def test_fractions_out_of_range_are_refused(val, test):
    with pytest.raises(ConfigError, match="val_fraction=.*test_fraction="):
        patient_split(np.arange(10), val, test)


def test_check_fractions_can_require_a_test_share():
    check_fractions(0.1, 0.0)
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        check_fractions(0.1, 0.0, need_test=True)


def test_repeated_patient_splits_uses_the_core_split():
    table = pd.DataFrame({"patient": [f"p{i}" for i in range(20)], "label": [i % 2 for i in range(20)]})
    x = np.zeros((40, 1, 4), dtype=np.float32)
    splits = repeated_patient_splits(x, table, 2, 0.2, 0.2, seed=0, item_col="rec")
    assert {k: len(v) for k, v in splits.items()} == {"train": 24, "val": 8, "test": 8}
    names = {k: {v.patient_names[p] for p in v.patients} for k, v in splits.items()}
    assert not names["train"] & names["test"] and not names["val"] & names["test"]
    for v in splits.values():
        assert set(v.labels.tolist()) == {0, 1} and list(v.meta.columns) == ["patient", "rec"]


def test_folds_and_fractions_are_by_patient():
    labels = np.repeat(np.arange(30) % 3, 2)
    pids = np.repeat([f"P{i}" for i in range(30)], 2)
    folds = patient_folds(labels, pids, 5, seed=0)
    assert all(len(set(folds[pids == p])) == 1 for p in np.unique(pids))
    draw = sample_fraction(labels, pids, 0.5, seed=0)
    chosen = set(pids[draw.positions])
    assert all(set(np.flatnonzero(pids == p)) <= set(draw.positions) for p in chosen)
    assert draw.n_patients == 15 and not draw.fallback_classes


def test_leakage_guard_names_the_patients():
    with pytest.raises(LeakageError, match=r"1 patient\(s\) on both 'train' and 'test': p2"):
        check_no_leakage({"train": ["p1", "p2"], "test": ["p2", "p3"]})

"""Patient-level splits, label fractions and the leakage guard."""

from __future__ import annotations

import numpy as np
import pytest

from pretext.errors import ConfigError, DataError
from sslbench.splits import (
    FractionError,
    LeakageError,
    View,
    check_no_leakage,
    make_eval_splits,
    patient_folds,
    sample_fraction,
)
from tests.sslbench._tiny import make_data, make_split


def _toy(n_pat: int = 200, per: int = 3, p_pos: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    pl = (rng.random(n_pat) < p_pos).astype(int)
    return np.repeat(pl, per), np.repeat(np.array([f"P{i:03d}" for i in range(n_pat)]), per)


def test_fraction_is_drawn_by_patient_and_stratified():
    labels, pids = _toy()
    draw = sample_fraction(labels, pids, 0.1, seed=0)
    chosen = set(pids[draw.positions])
    # whole patients: every record of a chosen patient is in, none of the others
    assert np.array_equal(np.isin(pids, list(chosen)), np.isin(np.arange(len(pids)), draw.positions))
    assert draw.n_patients == len(chosen) == 20
    # stratified: the positive rate among chosen patients follows the population (exact per-stratum rounding)
    pos_pat = {p for p, y in zip(pids, labels, strict=False) if y == 1}
    n_pos = len(pos_pat)
    assert len(chosen & pos_pat) == round(0.1 * n_pos)
    assert draw.fallback_classes == []


def test_fraction_is_seeded_and_seeds_differ():
    labels, pids = _toy()
    a = sample_fraction(labels, pids, 0.1, seed=3).positions
    b = sample_fraction(labels, pids, 0.1, seed=3).positions
    c = sample_fraction(labels, pids, 0.1, seed=4).positions
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(sample_fraction(labels, pids, 1.0, seed=0).positions) == len(labels)


def test_fraction_too_small_falls_back_or_errors():
    labels, pids = _toy(n_pat=100, p_pos=0.05)
    draw = sample_fraction(labels, pids, 0.01, seed=0, class_names=["neg", "pos"])
    assert set(labels[draw.positions]) == {0, 1}  # fallback: one patient per missing class added
    assert draw.fallback_classes  # recorded
    with pytest.raises(FractionError, match=r"fraction=0.01.*class 'pos'|fraction=0.01.*class 'neg'"):
        sample_fraction(labels, pids, 0.01, seed=0, strict=True, class_names=["neg", "pos"])
    with pytest.raises(ConfigError, match="fraction=0"):
        sample_fraction(labels, pids, 0.0, seed=0)


def test_multilabel_fraction_keeps_rare_label():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.5, 0.3, 0.2, 0.02]).astype(np.float32)
    y[0, 3] = 1
    pids = np.array([f"p{i // 2}" for i in range(300)])
    draw = sample_fraction(y, pids, 0.05, seed=1)
    assert (y[draw.positions].sum(axis=0) > 0).all()


def test_leakage_guard_names_patients():
    check_no_leakage({"train": ["a", "b"], "test": ["c"]})
    with pytest.raises(LeakageError, match=r"'train' and 'test': b, c"):
        check_no_leakage({"train": ["a", "b", "c"], "val": ["d"], "test": ["c", "b", "e"]}, "spec")


def test_official_split_with_shared_patient_is_refused():
    data = make_data()
    data.splits["test"].patient_names = list(data.splits["test"].patient_names)
    data.splits["test"].patient_names[0] = "tr5"  # patient tr5 is in train too
    with pytest.raises(LeakageError, match="tr5"):
        make_eval_splits(data)


def test_official_splits_used_as_is():
    data = make_data()
    s = make_eval_splits(data)
    assert s.kind == "official"
    assert len(s.test) == len(data.splits["test"]) and len(s.train) == len(data.splits["train"])


def test_kfold_is_patient_wise_and_covers_everything():
    data = make_data(official=False, n=30)
    tests = []
    for fold in range(3):
        s = make_eval_splits(data, k=3, fold=fold, seed=0)
        assert s.kind == "kfold"
        sides = [set(v.patient_ids) for v in (s.train, s.val, s.test)]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        tests.append(sides[2])
    assert set.union(*tests) == {f"s{i}" for i in range(30)}
    assert not (tests[0] & tests[1])


def test_holdout_and_items():
    data = make_data(official=False, n=30)
    s = make_eval_splits(data, seed=0)
    assert s.kind == "holdout" and len(s.train) > len(s.test) > 0
    item = s.test.dataset()[0]
    assert item["x"].shape == (1, 6, 6, 6)


def test_patient_folds_stratified():
    labels, pids = _toy(n_pat=100, per=2, p_pos=0.3)
    folds = patient_folds(labels, pids, 5, seed=0)
    for f in range(5):
        rate = labels[folds == f].mean()
        assert abs(rate - labels.mean()) < 0.12
        assert not set(pids[folds == f]) & set(pids[folds != f])


def test_missing_labels_are_named():
    data = make_data(missing=3)
    with pytest.raises(DataError, match=r"3 record\(s\) of split 'train' have no label.*records \[0, 1, 2\]"):
        make_eval_splits(data)
    s = make_eval_splits(data, drop_unlabelled=True)
    assert len(s.train) == len(data.splits["train"]) - 3


def test_view_subset():
    split = make_split(5)
    v = View(split, np.arange(10), "train").subset(np.array([2, 3]))
    assert list(v.patient_ids) == ["p1", "p1"]


def test_max_items_cuts_each_split_stratified_and_within_it():
    data = make_data(n=60)  # official splits: train 120, val 30, test 40 records
    full = make_eval_splits(data)
    with pytest.warns(UserWarning, match=r"cut to about 20 records each .*train 2\d/120.*not a result"):
        s = make_eval_splits(data, max_items=20)
    for cut, whole in ((s.train, full.train), (s.val, full.val), (s.test, full.test)):
        assert 18 <= len(cut) <= 22 and set(cut.indices) <= set(whole.indices)
        assert set(cut.labels.tolist()) == {0, 1}  # every class kept: probes and AUROC stay defined
        assert abs(cut.labels.mean() - whole.labels.mean()) < 0.15
    again = make_eval_splits(data, max_items=20)
    assert np.array_equal(again.test.indices, s.test.indices)  # seeded
    assert make_eval_splits(data, max_items=500).train.indices.tolist() == full.train.indices.tolist()


def test_max_items_from_the_environment(monkeypatch):
    from pretext.config import max_items_from_env
    from sslbench.evaluate import EvalOptions

    monkeypatch.delenv("MEDSSL_MAX_ITEMS", raising=False)
    assert max_items_from_env() is None and EvalOptions().max_items is None
    monkeypatch.setenv("MEDSSL_MAX_ITEMS", "32")
    assert max_items_from_env() == 32 and EvalOptions().max_items == 32 and EvalOptions(max_items=8).max_items == 8
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("MEDSSL_MAX_ITEMS", bad)
        with pytest.raises(ConfigError, match=rf"MEDSSL_MAX_ITEMS='{bad}' must be a positive whole number.*unset"):
            max_items_from_env()

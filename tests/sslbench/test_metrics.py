"""Metrics against scikit-learn on fixed inputs, bootstrap coverage, calibration and subgroups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from sslbench.metrics import (
    bootstrap_ci,
    compute_metrics,
    expected_calibration_error,
    reliability,
    subgroup_metrics,
    summarize,
)


def _fixed(n=120, c=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_binary_against_sklearn():
    y, p = _fixed()
    m = compute_metrics(y, p)
    pred = p.argmax(1)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert m["auprc"] == pytest.approx(skm.average_precision_score(y, p[:, 1]))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    # hand-checked tiny case
    ties = compute_metrics(np.array([0, 1, 1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1, 0.2, 0.2]))
    ys, ss = np.array([0, 1, 1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1, 0.2, 0.2])
    assert ties["auroc"] == pytest.approx(skm.roc_auc_score(ys, ss))
    assert ties["auprc"] == pytest.approx(skm.average_precision_score(ys, ss))
    tiny = compute_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert tiny["auroc"] == pytest.approx(0.75) and tiny["accuracy"] == pytest.approx(0.75)


def test_multiclass_macro_against_sklearn():
    y, p = _fixed(c=4, seed=1)
    m = compute_metrics(y, p)
    pred = p.argmax(1)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    onehot = np.eye(4)[y]
    assert m["auprc"] == pytest.approx(skm.average_precision_score(onehot, p, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_multilabel_macro_against_sklearn():
    rng = np.random.default_rng(2)
    y = (rng.random((100, 3)) < 0.4).astype(float)
    p = np.clip(0.6 * y + 0.5 * rng.random((100, 3)), 0, 1)
    m = compute_metrics(y, p, multilabel=True)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert m["auprc"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, average="macro"))
    assert m["accuracy"] == pytest.approx(((p >= 0.5) == y).mean())


def test_undefined_auroc_is_nan():
    m = compute_metrics(np.zeros(5, int), np.full((5, 2), 0.5))
    assert np.isnan(m["auroc"]) and m["accuracy"] == 1.0


def test_bootstrap_coverage_patient_level():
    """Patients with 5 identical outcomes: the patient bootstrap covers the true accuracy ~95 % of the time,
    the record bootstrap (ignoring patients) undercovers."""
    rng = np.random.default_rng(0)
    n_pat, per, true_acc = 40, 5, 0.7
    hits = {"patient": 0, "record": 0}
    n_exp = 120
    groups = np.repeat(np.arange(n_pat), per)
    y = np.zeros(n_pat * per, dtype=int)
    for _ in range(n_exp):
        correct = np.repeat(rng.random(n_pat) < true_acc, per)
        p = np.where(correct, 0.2, 0.8)  # prob of class 1; label 0
        proba = np.stack([1 - p, p], 1)
        for kind, g in (("patient", groups), ("record", None)):
            lo, hi = bootstrap_ci(y, proba, groups=g, which=("accuracy",), n_boot=200,
                                  seed=int(rng.integers(1 << 30)))["accuracy"]
            hits[kind] += lo <= true_acc <= hi
    cov_p, cov_r = hits["patient"] / n_exp, hits["record"] / n_exp
    assert 0.88 <= cov_p <= 0.99, cov_p
    assert cov_r < cov_p - 0.1, (cov_r, cov_p)


def test_bootstrap_ci_brackets_point_estimate():
    y, p = _fixed(n=200)
    ci = bootstrap_ci(y, p, n_boot=200, seed=1)
    m = compute_metrics(y, p)
    for k in ("auroc", "accuracy"):
        assert ci[k][0] < m[k] < ci[k][1]


def test_ece_and_reliability():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    y = (rng.random(n) > conf).astype(int)  # class 0 correct with prob conf: perfectly calibrated
    proba = np.stack([conf, 1 - conf], 1)
    assert expected_calibration_error(y, proba) < 0.02
    over = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    y2 = (rng.random(n) > 0.7).astype(int)
    assert expected_calibration_error(y2, over) == pytest.approx(0.29, abs=0.02)
    r = reliability(y2, over, n_bins=10)
    assert r["count"][-1] == n and sum(r["count"]) == n and np.isnan(r["accuracy"][0])


def test_subgroups_from_meta():
    y, p = _fixed(n=60)
    meta = pd.DataFrame({"Gender": ["F", "M"] * 30, "Age": [25] * 30 + [65] * 30, "x": 0})
    rows = subgroup_metrics(y, p, meta)
    keys = {(r["attribute"], r["group"]) for r in rows}
    assert keys == {("sex", "F"), ("sex", "M"), ("age_band", "18-39"), ("age_band", "60-79")}
    f = next(r for r in rows if r["group"] == "F")
    assert f["n"] == 30 and f["auroc"] == pytest.approx(skm.roc_auc_score(y[::2], p[::2, 1]))


def test_summarize_has_everything():
    y, p = _fixed(n=50)
    s = summarize(y, p, groups=np.arange(50) // 2, n_boot=50)
    assert {"auroc", "auroc_lo", "auroc_hi", "ece", "reliability", "subgroups", "kappa"} <= set(s)


def test_threshold_from_validation_keeps_auroc_and_fixes_majority_prediction():
    from sslbench.metrics import apply_threshold, compute_metrics, pick_threshold, summarize

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.25).astype(int)  # imbalanced, like EEGMAT's 3:1
    score = np.clip(0.1 + 0.2 * y + rng.normal(0, 0.05, y.size), 0.01, 0.49)  # ranks well, always below 0.5
    proba = np.stack([1 - score, score], 1)
    plain = compute_metrics(y, proba)
    assert plain["balanced_accuracy"] == pytest.approx(0.5)  # argmax predicts the majority class only
    t = pick_threshold(y[:200], proba[:200])
    assert t.shape == (1,) and 0.1 < t[0] < 0.5
    shifted = apply_threshold(proba, t)
    assert np.array_equal(np.argsort(shifted[:, 1]), np.argsort(proba[:, 1]))  # monotone
    res = summarize(y[200:], proba[200:], threshold=t, n_boot=0)
    assert res["auroc"] == pytest.approx(compute_metrics(y[200:], proba[200:])["auroc"])
    assert res["balanced_accuracy"] > 0.8 and res["threshold"] == [pytest.approx(t[0])]
    assert res["ece"] == pytest.approx(summarize(y[200:], proba[200:], n_boot=0)["ece"])  # calibration unshifted
    assert pick_threshold(np.array([0, 1, 2]), np.eye(3)) is None  # multi-class keeps argmax
    ml = pick_threshold(np.array([[0, 1], [1, 1], [0, 1]]), np.array([[0.1, 0.2], [0.3, 0.9], [0.2, 0.4]]), True)
    assert ml.shape == (2,) and ml[1] == 0.5  # a label with one class keeps 0.5

"""Paired SSL-vs-baseline comparisons and the vectorised bootstrap, against independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import bootstrap as scipy_bootstrap
from scipy.stats import norm

from benchmarks.bench_bootstrap import bootstrap_ci_loop
from sslbench.bootstrap import bootstrap_values, cluster_codes, resample_counts
from sslbench.metrics import bootstrap_ci, compute_metrics
from sslbench.paired import (
    attach_paired,
    combined_comparison,
    delong_test,
    paired_comparison,
    predictions_name,
    save_predictions,
)
from sslbench.store import ResultStore


def _binary(n=120, n_pat=40, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    groups = np.array([f"p{i}" for i in rng.integers(0, n_pat, n)])
    y = rng.integers(0, 2, n)
    a = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    b = np.clip(0.15 * y + 0.5 * a + rng.random(n) * 0.35, 0, 1)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b, groups


def _naive_paired(y, a, b, groups, n_boot, seed, which=("auroc", "auprc")):
    """The definition: the reference loop's resamples, both arms scored on the concatenated patients."""
    _, inverse = np.unique(groups.astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    out = {m: [] for m in which}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
        ra, rb = compute_metrics(y[idx], a[idx], which=which), compute_metrics(y[idx], b[idx], which=which)
        for m in which:
            if np.isfinite(ra[m]) and np.isfinite(rb[m]):
                out[m].append(ra[m] - rb[m])
    return {m: (np.quantile(v, 0.025), np.quantile(v, 0.975)) for m, v in out.items()}


# -- vectorised bootstrap ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_vectorised_bootstrap_equals_reference_loop(kind):
    rng = np.random.default_rng(1)
    n = 150
    groups = rng.integers(0, 50, n)
    if kind == "binary":
        y = rng.integers(0, 2, n)
        p = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)
        proba, ml = np.stack([1 - p, p], axis=1), False
    elif kind == "multiclass":
        y = rng.integers(0, 4, n)
        proba = rng.dirichlet(np.ones(4), n)
        proba[np.arange(n), y] += 0.4
        proba, ml = proba / proba.sum(1, keepdims=True), False
    else:
        y = (rng.random((n, 3)) < 0.25).astype(int)
        proba, ml = np.clip(0.3 * y + 0.7 * rng.random((n, 3)), 0, 1), True
    which = ("auroc", "auprc", "accuracy", "balanced_accuracy")
    fast = bootstrap_ci(y, proba, groups=groups, multilabel=ml, which=which, n_boot=80, seed=5)
    slow = bootstrap_ci_loop(y, proba, groups=groups, multilabel=ml, which=which, n_boot=80, seed=5)
    for m in which:
        assert np.isfinite(fast[m]).all()
        np.testing.assert_allclose(fast[m], slow[m], atol=1e-9)


def test_resample_counts_are_the_loop_draws():
    rng = np.random.default_rng(7)
    picks = [rng.integers(0, 9, size=9) for _ in range(5)]
    counts = resample_counts(9, 5, seed=7)
    assert counts.shape == (5, 9) and (counts.sum(axis=1) == 9).all()
    for row, pick in zip(counts, picks, strict=True):
        np.testing.assert_array_equal(row, np.bincount(pick, minlength=9))


def test_undefined_resamples_are_nan():
    y = np.array([0, 0, 0, 1])  # patient "b" alone holds the positive
    codes, n_g = cluster_codes(4, np.array(["a", "a", "a", "b"]))
    vals = bootstrap_values(y, np.array([0.1, 0.2, 0.3, 0.9]), resample_counts(n_g, 50, 0), codes, which=("auroc",))
    counts = resample_counts(n_g, 50, 0)
    one_class = (counts == 0).any(axis=1)
    assert np.isnan(vals["auroc"][one_class]).all() and (vals["auroc"][~one_class] == 1.0).all()


# -- DeLong --------------------------------------------------------------------------------------------------
def _delong_brute_force(y, a, b):
    """DeLong, DeLong & Clarke-Pearson (1988) from the definition: psi kernel, V10/V01, S10/S01 covariances."""
    y = y.astype(bool)
    v10, v01 = [], []
    for s in (a, b):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    s = s10 / y.sum() + s01 / (~y).sum()
    c = np.array([1.0, -1.0])
    diff = v10[0].mean() - v10[1].mean()
    z = diff / np.sqrt(c @ s @ c)
    return v10[0].mean(), v10[1].mean(), z, 2 * norm.sf(abs(z))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_brute_force_definition(ties):
    y, a, b, _ = _binary(n=90, seed=3, ties=ties)
    res = delong_test(y, a, b)
    auc_a, auc_b, z, p = _delong_brute_force(y, a, b)
    assert res["auc_a"] == pytest.approx(auc_a, abs=1e-12) and res["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert res["auc_a"] == pytest.approx(compute_metrics(y, a, which=("auroc",))["auroc"], abs=1e-12)
    assert res["z"] == pytest.approx(z, rel=1e-9) and res["p"] == pytest.approx(p, rel=1e-9)
    assert 0 < res["p"] < 1


def test_delong_identical_arms_and_null_calibration():
    y, a, _, _ = _binary(seed=4)
    same = delong_test(y, a, a)
    assert same["diff"] == 0 and same["p"] == 1.0
    # two independent noisy scores of equal quality: p < 0.05 in about 5 % of 300 samples
    rng = np.random.default_rng(0)
    ps = []
    for _ in range(300):
        yy = rng.integers(0, 2, 80)
        ps.append(delong_test(yy, yy + rng.normal(0, 1.2, 80), yy + rng.normal(0, 1.2, 80))["p"])
    assert 0.02 <= np.mean(np.asarray(ps) < 0.05) <= 0.09


# -- paired bootstrap ----------------------------------------------------------------------------------------
def test_identical_arms_give_zero_difference_and_interval():
    y, a, _, g = _binary()
    res = paired_comparison(y, a, a, groups=g, n_boot=200, seed=1)
    assert (res["diff"], res["lo"], res["hi"], res["auprc_diff"], res["auprc_lo"], res["auprc_hi"]) == (0, 0, 0, 0, 0, 0)
    assert res["p_delong"] == 1.0 and res["excludes_zero"] is False and res["metric"] == "auroc"


def test_monotone_offset_and_reversed_scores_have_known_answers():
    y, a, _, g = _binary()
    shifted = paired_comparison(y, a, a * 0.5 + 0.2, groups=g, n_boot=200, seed=2)  # same ranking
    assert shifted["diff"] == pytest.approx(0, abs=1e-12)
    assert shifted["lo"] == pytest.approx(0, abs=1e-12) and shifted["hi"] == pytest.approx(0, abs=1e-12)
    # reversed scores: AUROC_b = 1 - AUROC_a on every resample, so the difference is 2 AUROC_a - 1
    rev = paired_comparison(y, a, 1 - a, groups=g, n_boot=200, seed=2)
    lo, hi = bootstrap_ci(y, np.stack([1 - a, a], 1), groups=g, which=("auroc",), n_boot=200, seed=2)["auroc"]
    auc = compute_metrics(y, a, which=("auroc",))["auroc"]
    assert rev["diff"] == pytest.approx(2 * auc - 1, abs=1e-12)
    assert rev["lo"] == pytest.approx(2 * lo - 1, abs=1e-9) and rev["hi"] == pytest.approx(2 * hi - 1, abs=1e-9)
    assert rev["excludes_zero"] is True


def test_paired_bootstrap_equals_naive_loop_over_patients():
    y, a, b, g = _binary(n=100, n_pat=30, seed=6)
    res = paired_comparison(y, a, b, groups=g, n_boot=150, seed=9)
    ref = _naive_paired(y, a, b, g, n_boot=150, seed=9)
    assert (res["lo"], res["hi"]) == pytest.approx(ref["auroc"], abs=1e-9)
    assert (res["auprc_lo"], res["auprc_hi"]) == pytest.approx(ref["auprc"], abs=1e-9)
    full = compute_metrics(y, a, which=("auroc",))["auroc"] - compute_metrics(y, b, which=("auroc",))["auroc"]
    assert res["diff"] == pytest.approx(full, abs=1e-12) and res["n_patients"] == len(set(g))


def test_paired_bootstrap_agrees_with_scipy_bootstrap():
    """Record-level (one record per patient): scipy's paired percentile bootstrap, its own resamples."""
    y, a, b, _ = _binary(n=150, seed=8, ties=False)
    res = paired_comparison(y, a, b, groups=None, n_boot=1000, seed=0)

    def diff(yy, aa, bb):
        return compute_metrics(yy, aa, which=("auroc",))["auroc"] - compute_metrics(yy, bb, which=("auroc",))["auroc"]

    ci = scipy_bootstrap((y, a, b), diff, paired=True, vectorized=False, n_resamples=1000, method="percentile",
                         random_state=np.random.default_rng(1)).confidence_interval
    assert res["lo"] == pytest.approx(ci.low, abs=0.02) and res["hi"] == pytest.approx(ci.high, abs=0.02)


def test_delong_se_agrees_with_bootstrap_spread():
    y, a, b, _ = _binary(n=600, seed=11, ties=False)
    se = delong_test(y, a, b)["se"]
    codes, n_g = cluster_codes(len(y), None)
    counts = resample_counts(n_g, 1000, 0)
    d = bootstrap_values(y, a, counts, codes, which=("auroc",))["auroc"] - \
        bootstrap_values(y, b, counts, codes, which=("auroc",))["auroc"]
    assert np.std(d) == pytest.approx(se, rel=0.12)


def test_multiclass_uses_macro_auroc_without_delong():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    pa, pb = rng.dirichlet(np.ones(3), 90), rng.dirichlet(np.ones(3), 90)
    pa[np.arange(90), y] += 0.5
    res = paired_comparison(y, pa, pb, n_boot=100)
    assert res["metric"] == "macro_auroc" and res["p_delong"] is None
    assert res["lo"] <= res["diff"] <= res["hi"]
    ml = paired_comparison((pa > 0.4).astype(int), pa, pb, multilabel=True, n_boot=50)
    assert ml["metric"] == "macro_auroc" and ml["p_delong"] is None


def test_combined_over_seeds():
    y, a, b, g = _binary(seed=12)
    single = paired_comparison(y, a, b, groups=g, n_boot=200, seed=0)
    twice = combined_comparison(y, [a, a], [b, b], groups=g, n_boot=200, seed=0)  # same pair twice: same answer
    assert (twice["diff"], twice["lo"], twice["hi"]) == pytest.approx((single["diff"], single["lo"], single["hi"]))
    assert twice["seed_sd"] == 0 and twice["n_seeds"] == 2
    _, a2, b2, _ = _binary(seed=13)
    mixed = combined_comparison(y, [a, a2], [b, b2], groups=g, n_boot=200, seed=0)
    other = paired_comparison(y, a2, b2, groups=g, n_boot=200, seed=0)
    assert mixed["diff"] == pytest.approx((single["diff"] + other["diff"]) / 2)
    assert mixed["seed_sd"] == pytest.approx(abs(single["diff"] - other["diff"]) / np.sqrt(2))


# -- the pass over a results folder --------------------------------------------------------------------------
def _cell(arm, seed, protocol="linear"):
    return {"dataset": "d", "task": "rot" if arm == "ssl" else "-", "encoder": "e", "arm": arm,
            "protocol": "finetune" if arm == "scratch" else protocol, "fraction": 1.0, "seed": seed, "fold": 0}


def test_attach_paired_fills_ssl_rows_once(tmp_path):
    y, a, b, g = _binary(seed=14)
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        for arm, p in (("ssl", a), ("random", b), ("scratch", 1 - b)):
            row = _cell(arm, seed)
            save_predictions(tmp_path / "predictions" / predictions_name(row), y, np.stack([1 - p, p], 1), g)
            store.append({**row, "auroc": 0.5})
    store.append({**_cell("ssl", 2), "auroc": 0.5})  # no predictions: left without paired
    before = (tmp_path / "results.jsonl").read_text().splitlines()
    assert attach_paired(tmp_path, n_boot=100) == 2
    after = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [x for x in before if '"ssl"' not in x] == [x for x in after if '"ssl"' not in x]
    rows = [json.loads(x) for x in after]
    ssl0 = next(r for r in rows if r["arm"] == "ssl" and r["seed"] == 0)
    ref = paired_comparison(y, a, b, groups=g, n_boot=100, seed=0)
    assert ssl0["paired"]["random"]["diff"] == pytest.approx(ref["diff"])
    assert ssl0["paired"]["random"]["lo"] == pytest.approx(ref["lo"])
    assert ssl0["paired"]["random"]["p_delong"] == pytest.approx(ref["p_delong"])
    assert ssl0["paired"]["scratch"]["diff"] == pytest.approx(ref["ssl"] - (1 - ref["baseline"]))  # scratch = 1 - b
    assert ssl0["paired"]["random"]["seeds"]["seeds"] == [0, 1]
    assert "paired" not in next(r for r in rows if r["arm"] == "ssl" and r["seed"] == 2)
    assert attach_paired(tmp_path, n_boot=100) == 0  # idempotent


def test_tasks_are_compared_with_each_other_on_the_same_patients(tmp_path):
    """Two SSL tasks of one cell: each row carries the other task's paired difference, signs mirrored, combined
    over the seeds both have; the report shows it as a task − task table."""
    from sslbench.report_tables import load_results, task_table

    y, a, b, g = _binary(seed=15)
    _, a2, b2, _ = _binary(seed=16)
    store = ResultStore(tmp_path)
    probas = {("alpha", 0): a, ("alpha", 1): a2, ("beta", 0): b, ("beta", 1): b2, ("beta", 2): b}
    for (task, seed), p in probas.items():
        row = {**_cell("ssl", seed), "task": task}
        save_predictions(tmp_path / "predictions" / predictions_name(row), y, np.stack([1 - p, p], 1), g)
        store.append({**row, "auroc": 0.5})
    assert attach_paired(tmp_path, n_boot=100) == 5
    rows = store.rows()
    alpha = [r for r in rows if r["task"] == "alpha"]
    beta = {r["seed"]: r for r in rows if r["task"] == "beta"}
    ref = combined_comparison(y, [a, a2], [b, b2], groups=g, n_boot=100)
    for r in alpha:
        e = r["paired_tasks"]["beta"]
        assert e["seeds"] == [0, 1] and e["metric"] == "auroc" and e["n_boot"] == 100
        assert (e["diff"], e["lo"], e["hi"]) == pytest.approx((ref["diff"], ref["lo"], ref["hi"]))
    mirror = beta[0]["paired_tasks"]["alpha"]
    assert (mirror["diff"], mirror["lo"], mirror["hi"]) == pytest.approx((-ref["diff"], -ref["hi"], -ref["lo"]))
    assert mirror["excludes_zero"] == ref["excludes_zero"]
    assert beta[2]["paired_tasks"]["alpha"]["seeds"] == [0, 1]  # seed 2 has no alpha partner, same entry
    assert attach_paired(tmp_path, n_boot=100) == 0  # up to date
    header, table = task_table(load_results(tmp_path))
    assert header[1] == "1 labels" and [r[0] for r in table] == ["ssl:alpha − ssl:beta (AUROC)",
                                                               "ssl:alpha − ssl:beta (AUPRC)"]
    assert table[0][1].startswith(f"{ref['diff']:+.3f} [{ref['lo']:+.3f}, {ref['hi']:+.3f}]")
    assert table[0][1].endswith("(2 seeds)")


def test_harness_cells_write_predictions_that_attach_paired_pairs(tmp_path):
    """Evaluator cells (as evaluate / sslbench run build them) save test predictions keyed by cell."""
    from sslbench.evaluate import Evaluator
    from sslbench.splits import make_eval_splits
    from tests.sslbench import _tiny as T

    data = T.make_data(n=16)
    ev = Evaluator(data, make_eval_splits(data), dataset="tiny", encoder=T.ENCODER, n_boot=50,
                   predictions_dir=tmp_path / "predictions")
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        store.append(ev.run_cell(arm="ssl", protocol="knn", fraction=1.0, seed=seed, task="t",
                                 encoder=ev.random_encoder(100 + seed), weights=f"w{seed}"))
        store.append(ev.run_cell(arm="random", protocol="knn", fraction=1.0, seed=seed))
    assert len(list((tmp_path / "predictions").glob("*.npz"))) == 4
    assert attach_paired(tmp_path, n_boot=50) == 2
    rows = store.rows()
    for r in (r for r in rows if r["arm"] == "ssl"):
        p = r["paired"]["random"]
        base = next(b for b in rows if b["arm"] == "random" and b["seed"] == r["seed"])
        assert p["ssl"] == pytest.approx(r["auroc"]) and p["baseline"] == pytest.approx(base["auroc"])
        assert p["diff"] == pytest.approx(r["auroc"] - base["auroc"]) and p["metric"] == "auroc"
        assert p["lo"] <= p["diff"] <= p["hi"] and 0 <= p["p_delong"] <= 1
        assert p["seeds"]["seeds"] == [0, 1] and p["n_patients"] == r["n_test_patients"]
    assert all("paired" not in r for r in rows if r["arm"] == "random")

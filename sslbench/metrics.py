"""Clinical classification metrics, bootstrap confidence intervals, calibration and subgroups.

Conventions (scikit-learn underneath):

* single-label: ``y_true (N,)`` int class indices, ``proba (N, C)`` class probabilities; the predicted
  class is the argmax (for two classes, after :func:`apply_threshold` with a threshold picked on validation
  by :func:`pick_threshold`, when the caller passes one). Binary AUROC/AUPRC use the positive class (column 1); multi-class AUROC/AUPRC are
  macro one-vs-rest means over the classes present in ``y_true`` (equal to sklearn's
  ``roc_auc_score(multi_class="ovr", average="macro")`` when every class is present); F1 is binary F1 of
  class 1 for two classes and macro F1 otherwise.
* multi-label: ``y_true (N, K)`` multi-hot, ``proba (N, K)`` per-label probabilities, threshold 0.5;
  AUROC/AUPRC/F1 are macro over labels (labels with a single class in ``y_true`` are left out of the
  AUROC mean); accuracy, balanced accuracy and Cohen's kappa are means over labels.
* calibration: single-label uses the top-label confidence; multi-label treats every (record, label) as
  a binary prediction of the positive probability.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "kappa")
CI_METRICS = ("auroc", "auprc", "accuracy", "balanced_accuracy")


def _nan() -> float:
    return float("nan")


def _binary_scores(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """AUROC (Mann-Whitney with tie correction) and average precision (sklearn's step definition).

    Equal to ``sklearn.metrics.roc_auc_score`` / ``average_precision_score`` (checked in the tests) and
    about 20x faster, which the bootstrap needs.
    """
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return _nan(), _nan()
    from scipy.stats import rankdata

    ranks = rankdata(s)
    auroc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-np.asarray(s), kind="mergesort")
    s_sorted, y_sorted = np.asarray(s)[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last index of each distinct score
    tps = np.cumsum(y_sorted)[ends]
    precision = tps / (ends + 1)
    recall = tps / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return float(auroc), ap


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes]))


def compute_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    multilabel: bool = False,
    which: Sequence[str] = METRICS,
) -> dict[str, float]:
    """The metrics in ``which`` (subset of :data:`METRICS`) of one set of predictions.

    Args:
        y_true: ``(N,)`` class indices or ``(N, K)`` multi-hot labels.
        proba: ``(N, C)`` class probabilities or ``(N, K)`` label probabilities.
        multilabel: the labels are multi-hot.
        which: metric names to compute.

    Returns:
        name -> value (NaN where undefined, e.g. AUROC with one class present).
    """
    from sklearn.metrics import f1_score

    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if multilabel:
            yb = (y > 0.5).astype(int)
            pred = (p >= 0.5).astype(int)
            if "auroc" in which or "auprc" in which:
                pairs = [_binary_scores(yb[:, k], p[:, k]) for k in range(yb.shape[1])]
                out["auroc"] = _nanmean([a for a, _ in pairs])
                out["auprc"] = _nanmean([b for _, b in pairs])
            if "accuracy" in which:
                out["accuracy"] = float((pred == yb).mean())
            if "balanced_accuracy" in which:
                out["balanced_accuracy"] = _nanmean(
                    [_balanced_accuracy(yb[:, k], pred[:, k]) for k in range(yb.shape[1])]
                )
            if "f1" in which:
                out["f1"] = float(f1_score(yb, pred, average="macro", zero_division=0))
            if "kappa" in which:
                out["kappa"] = _nanmean([_kappa(yb[:, k], pred[:, k]) for k in range(yb.shape[1])])
        else:
            y = y.astype(int)
            n_cls = p.shape[1]
            pred = p.argmax(axis=1)
            if "auroc" in which or "auprc" in which:
                if n_cls == 2:
                    out["auroc"], out["auprc"] = _binary_scores(y, p[:, 1])
                else:
                    pairs = [_binary_scores((y == c).astype(int), p[:, c]) for c in range(n_cls)]
                    out["auroc"] = _nanmean([a for a, _ in pairs])
                    out["auprc"] = _nanmean([b for _, b in pairs])
            if "accuracy" in which:
                out["accuracy"] = float((pred == y).mean())
            if "balanced_accuracy" in which:
                out["balanced_accuracy"] = _balanced_accuracy(y, pred)
            if "f1" in which:
                avg = "binary" if n_cls == 2 else "macro"
                out["f1"] = float(f1_score(y, pred, average=avg, zero_division=0,
                                           labels=None if n_cls == 2 else list(range(n_cls))))
            if "kappa" in which:
                out["kappa"] = _kappa(y, pred)
    return {k: out[k] for k in which if k in out}


def _kappa(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(np.unique(np.concatenate([y, pred]))) < 2:
        return _nan()
    return float(cohen_kappa_score(y, pred))


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else _nan()


def bootstrap_ci(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    multilabel: bool = False,
    which: Sequence[str] = CI_METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap ``1 - alpha`` confidence intervals of metrics on one test set.

    With ``groups`` (patient ids), whole patients are resampled with replacement (a cluster bootstrap), so
    correlated records of one patient do not narrow the interval; without, records are resampled. Resamples
    where a metric is undefined (one class only) are skipped for that metric. The resamples are drawn once
    (:func:`sslbench.bootstrap.resample_counts`); AUROC, AUPRC and (balanced) accuracy are computed on all of
    them at once, F1 and kappa, which have no vectorised form, by :func:`compute_metrics` on each resample.
    (``benchmarks.bench_bootstrap.bootstrap_ci_loop`` is the per-resample loop this is checked and timed against.)

    Returns:
        name -> ``(low, high)``; ``(nan, nan)`` when fewer than 10 resamples define the metric.
    """
    from sslbench import bootstrap as vb

    fast = [m for m in which if m in vb.VECTOR_METRICS]
    slow = [m for m in which if m not in vb.VECTOR_METRICS]
    y, p = np.asarray(y_true), np.asarray(proba)
    codes, n_g = vb.cluster_codes(len(y), groups)
    counts = vb.resample_counts(n_g, n_boot, seed)
    values = vb.bootstrap_values(y, p, counts, codes, multilabel=multilabel, which=fast) if fast else {}
    if slow:
        rows = np.arange(len(y))
        per: dict[str, list[float]] = {m: [] for m in slow}
        for c in counts:
            idx = np.repeat(rows, c[codes])  # each record as often as its cluster was drawn
            res = compute_metrics(y[idx], p[idx], multilabel=multilabel, which=slow)
            for m in slow:
                per[m].append(res.get(m, _nan()))
        values.update({m: np.asarray(v, dtype=np.float64) for m, v in per.items()})
    return {m: vb.percentile_ci(values[m], alpha) for m in which}


# -- calibration ---------------------------------------------------------------------------------------------
def _confidence(y_true: np.ndarray, proba: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-prediction confidence and correctness (0/1) as used by the calibration measures."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if multilabel:
        return p.ravel(), (y > 0.5).astype(np.float64).ravel()
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    return p.max(axis=1), (p.argmax(axis=1) == y.astype(int)).astype(np.float64)


def reliability(y_true: np.ndarray, proba: np.ndarray, *, multilabel: bool = False, n_bins: int = 10) -> dict[str, Any]:
    """Reliability-diagram data: equal-width confidence bins.

    Returns:
        ``{"edges": (n_bins+1,), "confidence": (n_bins,), "accuracy": (n_bins,), "count": (n_bins,)}`` as
        lists (NaN for empty bins), ready for JSON.
    """
    conf, correct = _confidence(y_true, proba, multilabel)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    s_conf = np.bincount(which, weights=conf, minlength=n_bins)
    s_acc = np.bincount(which, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(count > 0, s_conf / np.maximum(count, 1), np.nan)
        ma = np.where(count > 0, s_acc / np.maximum(count, 1), np.nan)
    return {"edges": edges.tolist(), "confidence": mc.tolist(), "accuracy": ma.tolist(), "count": count.tolist()}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, *, multilabel: bool = False, n_bins: int = 15) -> float:
    """ECE: count-weighted mean ``|accuracy - confidence|`` over equal-width confidence bins."""
    r = reliability(y_true, proba, multilabel=multilabel, n_bins=n_bins)
    count = np.asarray(r["count"], dtype=np.float64)
    if count.sum() == 0:
        return _nan()
    gap = np.nan_to_num(np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"])))
    return float((count * gap).sum() / count.sum())


# -- subgroups -----------------------------------------------------------------------------------------------
_ALIASES = {"sex": ("sex", "gender"), "site": ("site", "center", "centre", "hospital", "institution"),
            "age": ("age",)}


def subgroup_columns(meta: Any, age_edges: Sequence[float] = (0, 18, 40, 60, 80, 200)) -> dict[str, np.ndarray]:
    """Subgroup attributes found in a metadata table: ``sex``, ``age_band`` and ``site`` (case-insensitive aliases).

    Ages are binned by ``age_edges`` into bands like ``"40-59"``; missing values become ``"unknown"``.
    """
    if meta is None or len(meta) == 0:
        return {}
    cols = {str(c).lower(): c for c in meta.columns}
    out: dict[str, np.ndarray] = {}
    for attr, names in _ALIASES.items():
        col = next((cols[n] for n in names if n in cols), None)
        if col is None:
            continue
        values = meta[col]
        if attr == "age":
            import pandas as pd

            age = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            labels = [f"{int(a)}-{int(b) - 1}" if b < 200 else f"{int(a)}+" for a, b in zip(age_edges[:-1], age_edges[1:], strict=False)]
            band = np.full(len(age), "unknown", dtype=object)
            ok = np.isfinite(age)
            band[ok] = np.asarray(labels, dtype=object)[np.clip(np.digitize(age[ok], age_edges[1:-1]), 0, len(labels) - 1)]
            out["age_band"] = band.astype(str)
        else:
            out[attr] = values.fillna("unknown").astype(str).to_numpy()
    return out


def subgroup_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    meta: Any,
    *,
    multilabel: bool = False,
    which: Sequence[str] = ("auroc", "accuracy", "balanced_accuracy"),
    min_size: int = 5,
) -> list[dict[str, Any]]:
    """Metrics per subgroup (sex, age band, site) of the test records.

    Returns:
        one row per (attribute, group) with at least ``min_size`` records:
        ``{"attribute", "group", "n", <metric>: value}``.
    """
    rows = []
    y, p = np.asarray(y_true), np.asarray(proba)
    for attr, groups in subgroup_columns(meta).items():
        for g in sorted(set(groups.tolist())):
            mask = groups == g
            if mask.sum() < min_size:
                continue
            res = compute_metrics(y[mask], p[mask], multilabel=multilabel, which=which)
            rows.append({"attribute": attr, "group": g, "n": int(mask.sum()), **res})
    return rows


def pick_threshold(y_true: np.ndarray, proba: np.ndarray, multilabel: bool = False) -> np.ndarray | None:
    """Decision threshold(s) on the positive probability that maximise Youden's J (TPR - FPR).

    Meant for the validation split. Returns ``(1,)`` for binary, ``(K,)`` for multi-label (0.5 where a label
    has one class only), ``None`` for multi-class (argmax stays the decision rule).
    """
    from sklearn.metrics import roc_curve

    y, p = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    if multilabel:
        cols = [(y[:, k] > 0.5).astype(int) for k in range(y.shape[1])]
        scores = [p[:, k] for k in range(p.shape[1])]
    elif p.ndim == 2 and p.shape[1] == 2:
        cols, scores = [y.astype(int)], [p[:, 1]]
    else:
        return None
    out = []
    for yk, sk in zip(cols, scores, strict=True):
        if len(np.unique(yk)) < 2:
            out.append(0.5)
            continue
        fpr, tpr, thr = roc_curve(yk, sk)
        best = int(np.argmax(tpr - fpr))
        out.append(float(np.clip(thr[best], 1e-6, 1 - 1e-6)))
    return np.asarray(out)


def apply_threshold(proba: np.ndarray, threshold: np.ndarray | None, multilabel: bool = False) -> np.ndarray:
    """Shift probabilities in logit space so that 0.5 (binary argmax, multi-label cut) falls at ``threshold``.

    The shift is monotone per column, so AUROC and AUPRC do not change; thresholded metrics (accuracy,
    balanced accuracy, F1, kappa) then use the chosen threshold.
    """
    if threshold is None:
        return proba
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1 - 1e-12)
    t = np.asarray(threshold, dtype=np.float64)
    shift = np.log(t) - np.log1p(-t)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p) - shift)))
    p1 = 1.0 / (1.0 + np.exp(-(np.log(p[:, 1]) - np.log(p[:, 0]) - shift[0])))
    return np.stack([1.0 - p1, p1], axis=1)


def summarize(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    meta: Any = None,
    multilabel: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything one test evaluation reports: metrics, ``<metric>_lo/_hi`` CIs, ECE, reliability, subgroups.

    ``threshold`` (from :func:`pick_threshold` on validation) sets the decision rule of the thresholded
    metrics; calibration (ECE, reliability) is always computed on the unshifted probabilities.
    """
    decided = apply_threshold(proba, threshold, multilabel)
    res: dict[str, Any] = compute_metrics(y_true, decided, multilabel=multilabel)
    if n_boot > 0:
        for m, (lo, hi) in bootstrap_ci(y_true, decided, groups=groups, multilabel=multilabel,
                                         n_boot=n_boot, seed=seed).items():
            res[f"{m}_lo"], res[f"{m}_hi"] = lo, hi
    res["ece"] = expected_calibration_error(y_true, proba, multilabel=multilabel)
    res["reliability"] = reliability(y_true, proba, multilabel=multilabel)
    res["subgroups"] = subgroup_metrics(y_true, decided, meta, multilabel=multilabel) if meta is not None else []
    if threshold is not None:
        res["threshold"] = [float(t) for t in np.atleast_1d(threshold)]
    return res

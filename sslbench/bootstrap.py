"""Vectorised (cluster) bootstrap of the clinical metrics: all resamples at once.

A resample of a cluster bootstrap is a multiset of patients, i.e. a count per patient (an
``(n_boot, n_patients)`` count matrix); each record then carries its patient's count as an integer weight.
Every metric of :data:`VECTOR_METRICS` is computed from those counts for all resamples together (in chunks
of resamples):

* AUROC / average precision: the records are sorted by score once; per resample the positive and negative
  weight of each distinct-score block (a sparse blocks x patients matrix times the counts) gives the
  Mann-Whitney statistic (ties count 1/2) and sklearn's step-wise average precision exactly as
  :func:`sslbench.metrics.compute_metrics` computes them on the concatenated resample (duplicated
  records share a score, so they fall in the same block);
* accuracy / balanced accuracy: weighted means of the per-record correctness, through per-patient totals.

The resamples are drawn exactly like the reference loop ``benchmarks.bench_bootstrap.bootstrap_ci_loop``
(``rng.integers(0, n_patients, n_patients)`` once per resample from ``default_rng(seed)``), so the same seed
gives the same resamples and the same intervals up to floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VECTOR_METRICS = ("auroc", "auprc", "accuracy", "balanced_accuracy")
_CHUNK_CELLS = 4_000_000  # resamples x records per chunk (bounds the float64 work arrays)


def cluster_codes(n: int, groups: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Cluster index of every record (patients ordered like ``np.unique`` of their string ids) and their count."""
    if groups is None:
        return np.arange(n), n
    uniq, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return inverse.ravel(), len(uniq)


def resample_counts(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_clusters)`` times each cluster is drawn, same draws as the reference loop."""
    # one (n_boot, n_clusters) draw is the same stream as n_boot draws of n_clusters (checked in the tests)
    picks = np.random.default_rng(seed).integers(0, n_clusters, size=(n_boot, n_clusters))
    flat = (np.arange(n_boot)[:, None] * n_clusters + picks).ravel()
    return np.bincount(flat, minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)


def _auc_ap(y: np.ndarray, s: np.ndarray, counts_t: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AUROC and average precision of binary ``y`` / scores ``s`` for every resample.

    ``counts_t`` is ``(n_clusters, n_boot)``. The positive / negative weight of each distinct-score block is
    a sparse (blocks x clusters) matrix of record counts times the cluster counts, so the work per resample
    is one sparse product and cumulative sums over the blocks.
    """
    from scipy.sparse import csr_matrix

    order = np.argsort(-s, kind="mergesort")
    s_sorted, pos = s[order], y[order].astype(bool)
    block = np.r_[0, np.cumsum(np.diff(s_sorted) != 0)]  # distinct-score block of each record, highest first
    n_blk, n_g = int(block[-1]) + 1 if len(block) else 0, counts_t.shape[0]
    cl = codes[order]
    p_blk = (csr_matrix((np.ones(int(pos.sum())), (block[pos], cl[pos])), shape=(n_blk, n_g)) @ counts_t).T
    n_blk_w = (csr_matrix((np.ones(int((~pos).sum())), (block[~pos], cl[~pos])), shape=(n_blk, n_g)) @ counts_t).T
    w_pos, w_neg = p_blk.sum(axis=1), n_blk_w.sum(axis=1)
    fps = np.cumsum(n_blk_w, axis=1)
    neg_below = w_neg[:, None] - fps  # negative weight with a strictly lower score
    ok = (w_pos > 0) & (w_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(ok, (p_blk * (neg_below + 0.5 * n_blk_w)).sum(axis=1) / (w_pos * w_neg), np.nan)
        tps = np.cumsum(p_blk, axis=1)
        denom = tps + fps
        precision = np.divide(tps, denom, out=np.zeros_like(tps), where=denom > 0)
        ap = np.where(ok, (p_blk * precision).sum(axis=1) / w_pos, np.nan)
    return auc, ap


def _nanmean_rows(values: list[np.ndarray]) -> np.ndarray:
    """Mean over the list (classes / labels) ignoring NaN; NaN where every entry is NaN."""
    v = np.stack(values)
    ok = np.isfinite(v)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


class _Sums:
    """Weighted sums of per-record vectors for every resample, through per-cluster totals (``counts @ totals``)."""

    def __init__(self, counts: np.ndarray, codes: np.ndarray, n_g: int) -> None:
        self.counts, self.codes, self.n_g = counts, codes, n_g

    def __call__(self, *vectors: np.ndarray) -> list[np.ndarray]:
        totals = np.stack([np.bincount(self.codes, weights=v, minlength=self.n_g) for v in vectors], axis=1)
        res = self.counts @ totals
        return [res[:, i] for i in range(len(vectors))]


def _balanced(sums: _Sums, y: np.ndarray, correct: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Mean over the classes present (weight > 0) of the weighted recall."""
    recalls = []
    for c in classes:
        member = (y == c).astype(np.float64)
        tot, hit = sums(member, member * correct)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(tot > 0, hit / np.where(tot > 0, tot, 1.0), np.nan))
    return _nanmean_rows(recalls)


def _chunk_values(y: np.ndarray, p: np.ndarray, counts: np.ndarray, codes: np.ndarray, multilabel: bool,
                  which: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    need_rank = "auroc" in which or "auprc" in which
    counts = counts.astype(np.float64)
    counts_t = np.ascontiguousarray(counts.T)
    sums = _Sums(counts, codes, counts.shape[1])
    thresholded = "accuracy" in which or "balanced_accuracy" in which
    if multilabel:
        yb = (y > 0.5).astype(int)
        if need_rank:
            pairs = [_auc_ap(yb[:, k], p[:, k], counts_t, codes) for k in range(yb.shape[1])]
            out["auroc"], out["auprc"] = _nanmean_rows([a for a, _ in pairs]), _nanmean_rows([b for _, b in pairs])
        if thresholded:
            correct = ((p >= 0.5).astype(int) == yb).astype(np.float64)
            out["accuracy"] = np.divide(*sums(correct.mean(axis=1), np.ones(len(yb))))
            out["balanced_accuracy"] = _nanmean_rows(
                [_balanced(sums, yb[:, k], correct[:, k], (0, 1)) for k in range(yb.shape[1])])
    else:
        yi = y.astype(int)
        n_cls = p.shape[1]
        if need_rank:
            if n_cls == 2:
                out["auroc"], out["auprc"] = _auc_ap(yi, p[:, 1], counts_t, codes)
            else:
                pairs = [_auc_ap((yi == c).astype(int), p[:, c], counts_t, codes) for c in range(n_cls)]
                out["auroc"] = _nanmean_rows([a for a, _ in pairs])
                out["auprc"] = _nanmean_rows([b for _, b in pairs])
        if thresholded:
            correct = (p.argmax(axis=1) == yi).astype(np.float64)
            out["accuracy"] = np.divide(*sums(correct, np.ones(len(yi))))
            out["balanced_accuracy"] = _balanced(sums, yi, correct, np.unique(yi).tolist())
    return {m: out[m] for m in which}


def bootstrap_values(y_true: np.ndarray, proba: np.ndarray, counts: np.ndarray, codes: np.ndarray, *,
                     multilabel: bool = False, which: Sequence[str] = VECTOR_METRICS) -> dict[str, np.ndarray]:
    """Each metric of ``which`` (subset of :data:`VECTOR_METRICS`) on every resample: name -> ``(n_boot,)``.

    Args:
        y_true, proba: as :func:`sslbench.metrics.compute_metrics` takes them.
        counts: ``(n_boot, n_clusters)`` from :func:`resample_counts`.
        codes: ``(N,)`` cluster of each record from :func:`cluster_codes`.

    NaN marks resamples where a metric is undefined (e.g. AUROC with one class).
    """
    bad = [m for m in which if m not in VECTOR_METRICS]
    if bad:
        raise ValueError(f"no vectorised bootstrap for {bad}; use one of {VECTOR_METRICS}")
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    codes = np.asarray(codes)
    n_boot = counts.shape[0]
    step = max(1, _CHUNK_CELLS // max(1, len(codes)))
    parts = [_chunk_values(y, p, counts[i:i + step], codes, multilabel, which) for i in range(0, n_boot, step)]
    if not parts:
        return {m: np.zeros(0) for m in which}
    return {m: np.concatenate([part[m] for part in parts]) for m in which}


def percentile_ci(values: np.ndarray, alpha: float = 0.05, min_defined: int = 10) -> tuple[float, float]:
    """Percentile interval of the finite values; NaNs when fewer than ``min_defined`` resamples are finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < min_defined:
        return float("nan"), float("nan")
    return float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))


__all__ = ["VECTOR_METRICS", "bootstrap_values", "cluster_codes", "percentile_ci", "resample_counts"]

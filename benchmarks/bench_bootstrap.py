"""Speed of the patient-level bootstrap CIs: the vectorised path against the reference per-resample loop.

Both run in the same process on the same synthetic test set (records clustered in patients) with the same
seed, so they draw the same resamples; the script reports each one's time, the ratio (loop / vectorised)
and the largest difference between their interval bounds.

    python -m benchmarks.bench_bootstrap --n 5000 --n-boot 1000 --out benchmarks/results/metrics
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.metrics import CI_METRICS, bootstrap_ci, compute_metrics
from sslbench.paired import paired_comparison


def bootstrap_ci_loop(
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
    """Reference per-resample loop of :func:`sslbench.metrics.bootstrap_ci`: its parity oracle in the tests
    and the baseline this benchmark times it against (not used by the library).

    Percentile bootstrap ``1 - alpha`` confidence intervals of metrics on one test set.

    With ``groups`` (patient ids), whole patients are resampled with replacement (a cluster bootstrap),
    so correlated records of one patient do not narrow the interval; without, records are resampled.
    Resamples where a metric is undefined (one class only) are skipped for that metric.

    Returns:
        name -> ``(low, high)``; ``(nan, nan)`` when fewer than 10 resamples define the metric.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, bounds)
    n_g = len(members)
    values: dict[str, list[float]] = {m: [] for m in which}
    for _ in range(n_boot):
        pick = rng.integers(0, n_g, size=n_g)
        idx = np.concatenate([members[g] for g in pick])
        res = compute_metrics(y[idx], p[idx], multilabel=multilabel, which=which)
        for m in which:
            if math.isfinite(res.get(m, float("nan"))):
                values[m].append(res[m])
    out = {}
    for m in which:
        v = np.asarray(values[m])
        if len(v) < 10:
            out[m] = (float("nan"), float("nan"))
        else:
            out[m] = (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2)))
    return out


def make_case(kind: str, n: int, per_patient: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Synthetic test predictions: ``(y, proba, patient ids, multilabel)``, scores rounded to 3 decimals (ties)."""
    rng = np.random.default_rng(seed)
    n_pat = max(2, int(round(n / per_patient)))
    groups = rng.integers(0, n_pat, n)
    if kind == "binary":
        y = (rng.random(n_pat) < 0.3).astype(int)[groups]
        p = np.round(1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.5, n)))), 3)
        return y, np.stack([1 - p, p], axis=1), groups, False
    if kind == "multiclass":
        y = rng.integers(0, 4, n_pat)[groups]
        logits = rng.normal(0, 1.5, (n, 4))
        logits[np.arange(n), y] += 1.5
        e = np.exp(logits)
        return y, np.round(e / e.sum(axis=1, keepdims=True), 3), groups, False
    raise ValueError(kind)


def _time(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench(kind: str, n: int, n_boot: int, per_patient: float, repeat: int) -> dict[str, Any]:
    y, proba, groups, ml = make_case(kind, n, per_patient)
    kw = dict(groups=groups, multilabel=ml, which=CI_METRICS, n_boot=n_boot, seed=0)
    t_loop, ref = _time(lambda: bootstrap_ci_loop(y, proba, **kw), 1)
    t_vec, new = _time(lambda: bootstrap_ci(y, proba, **kw), repeat)
    worst = max(abs(a - b) for m in CI_METRICS for a, b in zip(ref[m], new[m], strict=True))
    t_pair, _ = _time(lambda: paired_comparison(y, proba, proba[:, ::-1],
                                                groups=groups, multilabel=ml, n_boot=n_boot), repeat)
    return {"kind": kind, "n_records": n, "n_patients": int(len(np.unique(groups))), "n_boot": n_boot,
            "metrics": list(CI_METRICS), "loop_s": round(t_loop, 3), "vectorised_s": round(t_vec, 4),
            "speedup": round(t_loop / t_vec, 1), "max_abs_ci_difference": float(worst),
            "paired_comparison_s": round(t_pair, 4),
            "intervals": {m: {"loop": list(ref[m]), "vectorised": list(new[m])} for m in CI_METRICS}}


def to_markdown(res: dict[str, Any]) -> str:
    lines = [f"# Bootstrap CI speed ({res['machine']})", "",
             f"Command: `{res['command']}`", "",
             "| case | records | patients | resamples | loop (s) | vectorised (s) | speed-up | max CI difference | "
             "paired SSL-vs-baseline (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        lines.append(f"| {r['kind']} | {r['n_records']} | {r['n_patients']} | {r['n_boot']} | {r['loop_s']:.2f} | "
                     f"{r['vectorised_s']:.3f} | {r['speedup']:.0f}x | {r['max_abs_ci_difference']:.1e} | "
                     f"{r['paired_comparison_s']:.3f} |")
    lines += ["", "Metrics: " + ", ".join(CI_METRICS) + " (patient-level cluster bootstrap, percentile 95 % CI). "
              "Both paths use the same seed, hence the same resamples; 'loop' is "
              "`benchmarks.bench_bootstrap.bootstrap_ci_loop` (one `compute_metrics` per resample), 'vectorised' is "
              "`sslbench.metrics.bootstrap_ci` (all resamples at once, `sslbench.bootstrap`), best of "
              f"{res['repeat']} runs. The paired column scores two arms on the same resamples "
              "(AUROC + AUPRC difference, DeLong)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="test records")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--per-patient", type=float, default=2.5, help="mean records per patient")
    ap.add_argument("--kinds", default="binary,multiclass")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/metrics")
    args = ap.parse_args(argv)
    cases = [bench(k, args.n, args.n_boot, args.per_patient, args.repeat) for k in args.kinds.split(",") if k]
    res = {"command": "python -m benchmarks.bench_bootstrap " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
           "machine": f"{platform.processor() or platform.machine()}, numpy {np.__version__}",
           "repeat": args.repeat, "cases": cases}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_bootstrap.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "bench_bootstrap.md").write_text(to_markdown(res))
    for r in cases:
        print(f"{r['kind']}: {r['n_records']} records / {r['n_patients']} patients, {r['n_boot']} resamples: loop "
              f"{r['loop_s']:.2f}s, vectorised {r['vectorised_s']:.3f}s ({r['speedup']:.0f}x), max CI difference "
              f"{r['max_abs_ci_difference']:.1e}")
    return res


if __name__ == "__main__":
    main()

"""Paired comparisons of the SSL arm against its baselines on the same test patients.

Every cell saves its test predictions (``OUT/predictions/<cell>.npz``: labels, probabilities, patient ids;
:func:`save_predictions`). Once an SSL cell and a baseline cell of the same (dataset, encoder, fold,
protocol, fraction, seed) are both finished, :func:`attach_paired` (run at the end of ``evaluate`` and of
``sslbench run``, and safe to rerun: it only adds what is missing) writes into the SSL cell's row

``paired[<baseline>] = {"metric", "ssl", "baseline", "diff", "lo", "hi", "p_delong", "auprc_diff", "auprc_lo",
"auprc_hi", "excludes_zero", "n_patients", "n_boot", "seed", "seeds": {...}}``

* ``diff`` = SSL minus baseline ``metric`` on the whole test split; ``lo``/``hi`` its paired patient-level
  percentile bootstrap 95 % interval: each resample draws patients with replacement and scores *both* arms
  on the same resampled patients (same resamples as the cell's own CI: seed = the cell's seed);
* ``metric`` is ``"auroc"`` for binary tasks, where ``p_delong`` is DeLong's two-sided test of the two
  correlated AUROCs (records treated as independent, as in DeLong et al. 1988); for multi-class and
  multi-label tasks it is ``"macro_auroc"`` (one-vs-rest / per-label mean) with the bootstrap interval
  only and ``p_delong = None`` (DeLong is defined for one binary AUROC);
* ``auprc_*``: the same for AUPRC (bootstrap only);
* ``seeds``: the combined estimate over the label-draw seeds finished so far: ``diff`` = mean of the
  per-seed differences, ``lo``/``hi`` the percentile interval of that mean under the same patient resamples
  for every seed (bootstrap seed 0), ``seed_sd`` the spread of the per-seed differences (training / label
  draw variability, which the test-set interval does not contain), ``n_seeds`` and the ``seeds`` used.

Where a folder holds several SSL tasks of one (dataset, encoder, protocol, fraction, fold), every task is also
compared with every other on the same test patients: ``paired_tasks[<other task>]`` in each of its rows holds
this task minus the other, combined over the seeds both have (the same fields as ``seeds`` above, plus
``metric`` and ``seeds``), so "is SimCLR better than VICReg here?" has a paired interval, not two overlapping ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pretext.atomic import atomic_write, atomic_write_text
from sslbench.bootstrap import bootstrap_values, cluster_codes, percentile_ci, resample_counts
from sslbench.metrics import compute_metrics
from sslbench.store import RESULTS_NAME, _clean, cell_key

PREDICTIONS_DIR = "predictions"
BASELINES = ("random", "scratch")


# -- DeLong --------------------------------------------------------------------------------------------------
def _components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components (placement values) via mid-ranks (Sun & Xu 2014).

    ``V10[i]`` = share of negatives ranked below positive ``i`` (ties 1/2), ``V01[j]`` = share of positives
    ranked above negative ``j``; ``mean(V10) == mean(V01) == AUROC``.
    """
    from scipy.stats import rankdata

    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    both = rankdata(np.r_[pos, neg])
    v10 = (both[:m] - rankdata(pos)) / n
    v01 = 1.0 - (both[m:] - rankdata(neg)) / m
    return v10, v01


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated binary AUROCs scored on the same records.

    Returns:
        ``{"auc_a", "auc_b", "diff", "se", "z", "p"}``; ``p`` is two-sided; NaN where undefined (one class
        only); with zero variance ``p`` is 1 for equal AUROCs and NaN otherwise.
    """
    from scipy.stats import norm

    y = np.asarray(y_true).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    nan = float("nan")
    if m < 2 or n < 2:
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "se": nan, "z": nan, "p": nan}
    a10, a01 = _components(y, np.asarray(score_a, dtype=np.float64))
    b10, b01 = _components(y, np.asarray(score_b, dtype=np.float64))
    auc_a, auc_b = float(a10.mean()), float(b10.mean())
    diff = auc_a - auc_b
    var = float(np.var(a10 - b10, ddof=1) / m + np.var(a01 - b01, ddof=1) / n)
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-15:
        return {"auc_a": auc_a, "auc_b": auc_b, "diff": diff, "se": 0.0, "z": nan,
                "p": 1.0 if abs(diff) <= 1e-15 else nan}
    z = diff / se
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": diff, "se": se, "z": z, "p": float(2 * norm.sf(abs(z)))}


# -- paired bootstrap ----------------------------------------------------------------------------------------
def _as_2d(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=1) if p.ndim == 1 else p


def _is_binary(proba: np.ndarray, multilabel: bool) -> bool:
    return not multilabel and _as_2d(proba).shape[1] == 2


def paired_comparison(y_true: np.ndarray, proba_ssl: np.ndarray, proba_base: np.ndarray, *,
                      groups: np.ndarray | None = None, multilabel: bool = False, n_boot: int = 1000,
                      seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """SSL minus baseline AUROC and AUPRC with a paired (cluster) bootstrap interval and DeLong's p.

    Both arms are scored on the same resampled patients; resamples where either arm's metric is
    undefined are skipped. See the module docstring for the fields.
    """
    y = np.asarray(y_true)
    pa, pb = _as_2d(proba_ssl), _as_2d(proba_base)
    codes, n_g = cluster_codes(len(y), groups)
    counts = resample_counts(n_g, n_boot, seed)
    which = ("auroc", "auprc")
    va = bootstrap_values(y, pa, counts, codes, multilabel=multilabel, which=which)
    vb = bootstrap_values(y, pb, counts, codes, multilabel=multilabel, which=which)
    fa = compute_metrics(y, pa, multilabel=multilabel, which=which)
    fb = compute_metrics(y, pb, multilabel=multilabel, which=which)
    out: dict[str, Any] = {}
    for m, prefix in (("auroc", ""), ("auprc", "auprc_")):
        lo, hi = percentile_ci(va[m] - vb[m], alpha)
        out[f"{prefix}diff"], out[f"{prefix}lo"], out[f"{prefix}hi"] = fa[m] - fb[m], lo, hi
    binary = _is_binary(pa, multilabel)
    p = delong_test(y.astype(int), pa[:, 1], pb[:, 1])["p"] if binary else None
    return {"metric": "auroc" if binary else "macro_auroc", "ssl": fa["auroc"], "baseline": fb["auroc"],
            "diff": out["diff"], "lo": out["lo"], "hi": out["hi"], "p_delong": p,
            "auprc_diff": out["auprc_diff"], "auprc_lo": out["auprc_lo"], "auprc_hi": out["auprc_hi"],
            "excludes_zero": _excludes_zero(out["lo"], out["hi"]), "n_patients": int(n_g), "n_boot": int(n_boot),
            "seed": int(seed)}


def combined_comparison(y_true: np.ndarray, probas_ssl: Sequence[np.ndarray], probas_base: Sequence[np.ndarray], *,
                        groups: np.ndarray | None = None, multilabel: bool = False, n_boot: int = 1000,
                        seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Mean over seeds of the SSL-minus-baseline differences with a joint paired bootstrap interval.

    All seeds' predictions are on the same test records; each resample draws patients once and scores
    every seed's pair on them, so the interval is that of the seed-averaged difference.
    """
    y = np.asarray(y_true)
    codes, n_g = cluster_codes(len(y), groups)
    counts = resample_counts(n_g, n_boot, seed)
    which = ("auroc", "auprc")
    full: dict[str, list[float]] = {m: [] for m in which}
    boot: dict[str, list[np.ndarray]] = {m: [] for m in which}
    for pa, pb in zip(probas_ssl, probas_base, strict=True):
        pa, pb = _as_2d(pa), _as_2d(pb)
        va = bootstrap_values(y, pa, counts, codes, multilabel=multilabel, which=which)
        vb = bootstrap_values(y, pb, counts, codes, multilabel=multilabel, which=which)
        fa = compute_metrics(y, pa, multilabel=multilabel, which=which)
        fb = compute_metrics(y, pb, multilabel=multilabel, which=which)
        for m in which:
            full[m].append(fa[m] - fb[m])
            boot[m].append(va[m] - vb[m])
    out: dict[str, Any] = {"n_seeds": len(full["auroc"])}
    for m, prefix in (("auroc", ""), ("auprc", "auprc_")):
        d = np.asarray(full[m], dtype=np.float64)
        lo, hi = percentile_ci(np.mean(np.stack(boot[m]), axis=0), alpha)  # NaN where any seed is undefined
        out[f"{prefix}diff"] = float(np.mean(d))
        out[f"{prefix}lo"], out[f"{prefix}hi"] = lo, hi
        out[f"{prefix}seed_sd"] = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
    out["excludes_zero"] = _excludes_zero(out["lo"], out["hi"])
    out["n_boot"], out["seed"] = int(n_boot), int(seed)
    return out


def _excludes_zero(lo: float, hi: float) -> bool:
    return bool(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0))


# -- predictions on disk -------------------------------------------------------------------------------------
def predictions_name(row: dict[str, Any]) -> str:
    """File name of a cell's test predictions: readable cell key plus a short hash (unique per cell)."""
    key = cell_key(row)
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", key)[:120] + "_" + hashlib.sha1(key.encode()).hexdigest()[:10] + ".npz"


def save_predictions(path: str | Path, y_true: np.ndarray, proba: np.ndarray, groups: np.ndarray) -> Path:
    """Write a cell's test labels, probabilities and patient ids (atomically: temp file, then rename)."""
    path = Path(path)
    atomic_write(path, lambda fh: np.savez(fh, y=np.asarray(y_true), proba=np.asarray(proba, dtype=np.float64),
                                           groups=np.asarray(groups).astype(str)))
    return path


def load_predictions(path: str | Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("y", "proba", "groups")}
    except (OSError, KeyError, ValueError):
        return None


# -- the pass over a results folder --------------------------------------------------------------------------
def _baseline_key(row: dict[str, Any], baseline: str) -> str | None:
    if baseline == "random" and row["protocol"] == "finetune":
        return None  # random-init fine-tune is the scratch arm
    return cell_key({**row, "task": "-", "arm": baseline,
                     "protocol": row["protocol"] if baseline == "random" else "finetune"})


def _same_records(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return (a["y"].shape == b["y"].shape and np.array_equal(a["y"], b["y"])
            and np.array_equal(a["groups"], b["groups"]) and a["proba"].shape == b["proba"].shape)


def attach_paired(folder: str | Path, *, n_boot: int = 1000, multilabel: bool | None = None,
                  log: Callable[[str], None] | None = None) -> int:
    """Add ``paired`` to every SSL row of ``folder/results.jsonl`` whose baselines' predictions are there.

    Rows that already carry an up-to-date entry are left alone; the file is rewritten atomically (other
    lines kept byte for byte) only when something was added. ``multilabel`` defaults to "labels are 2-D".

    Returns:
        the number of SSL rows updated.
    """
    folder = Path(folder)
    path = folder / RESULTS_NAME
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and "arm" in r:
            rows[i] = r
    by_key = {cell_key(r): r for r in rows.values()}
    cache: dict[str, dict[str, np.ndarray] | None] = {}

    def preds(row: dict[str, Any]) -> dict[str, np.ndarray] | None:
        key = cell_key(row)
        if key not in cache:
            f = folder / PREDICTIONS_DIR / predictions_name(row)
            cache[key] = load_predictions(f) if f.is_file() else None
        return cache[key]

    def is_ml(p: dict[str, np.ndarray]) -> bool:
        return bool(multilabel) if multilabel is not None else p["y"].ndim == 2

    changed: set[int] = set()
    groups_of: dict[tuple[Any, ...], list[int]] = {}
    for i, r in rows.items():
        if r["arm"] != "ssl":
            continue
        groups_of.setdefault(tuple(r.get(k) for k in ("dataset", "task", "encoder", "protocol", "fraction", "fold")),
                             []).append(i)
        for b in BASELINES:
            bkey = _baseline_key(r, b)
            base = by_key.get(bkey) if bkey else None
            old = (r.get("paired") or {}).get(b)
            if base is None or (old and old.get("baseline_cell") == bkey and old.get("n_boot") == n_boot):
                continue
            pa, pb = preds(r), preds(base)
            if pa is None or pb is None or not _same_records(pa, pb):
                if pa is not None and pb is not None and log:
                    log(f"paired: {cell_key(r)} and {bkey} were not scored on the same test records; skipped")
                continue
            entry = paired_comparison(pa["y"], pa["proba"], pb["proba"], groups=pa["groups"],
                                      multilabel=is_ml(pa), n_boot=n_boot, seed=int(r["seed"]))
            r.setdefault("paired", {})[b] = {**entry, "baseline_cell": bkey}
            changed.add(i)
    for idx in groups_of.values():  # combined over seeds
        for b in BASELINES:
            have = [(int(rows[i]["seed"]), i) for i in idx if b in (rows[i].get("paired") or {})]
            seeds = sorted(s for s, _ in have)
            if len(have) < 2 or all((rows[i]["paired"][b].get("seeds") or {}).get("seeds") == seeds
                                    and rows[i]["paired"][b]["seeds"].get("n_boot") == n_boot for _, i in have):
                continue
            have.sort()
            pa = [preds(rows[i]) for _, i in have]
            pb = [preds(by_key[rows[i]["paired"][b]["baseline_cell"]]) for _, i in have]
            if any(p is None for p in pa + pb) or not all(_same_records(pa[0], p) for p in pa + pb):  # type: ignore[arg-type]
                continue
            comb = combined_comparison(pa[0]["y"], [p["proba"] for p in pa], [p["proba"] for p in pb],  # type: ignore[index]
                                       groups=pa[0]["groups"], multilabel=is_ml(pa[0]), n_boot=n_boot)  # type: ignore[index,arg-type]
            comb["seeds"] = seeds
            for _, i in have:
                rows[i]["paired"][b]["seeds"] = comb
                changed.add(i)
    changed |= _attach_task_pairs(rows, preds, is_ml, n_boot)
    if changed:
        if lines and len(lines) - 1 not in rows:
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                lines.pop()  # a partial last line from a kill
        for i in changed:
            lines[i] = json.dumps(_clean(rows[i]), sort_keys=False)
        atomic_write_text(path, "\n".join(lines) + "\n")
    return len(changed)


def _negated(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` for the two arms swapped: the difference and its interval change sign (same resamples)."""
    out = dict(entry)
    for prefix in ("", "auprc_"):
        out[f"{prefix}diff"] = -entry[f"{prefix}diff"]
        out[f"{prefix}lo"], out[f"{prefix}hi"] = -entry[f"{prefix}hi"], -entry[f"{prefix}lo"]
    return out


def _attach_task_pairs(rows: dict[int, dict[str, Any]], preds: Callable[[dict[str, Any]], dict[str, np.ndarray] | None],
                       is_ml: Callable[[dict[str, np.ndarray]], bool], n_boot: int) -> set[int]:
    """Every SSL task against every other of its (dataset, encoder, protocol, fraction, fold), over the seeds both
    have: ``paired_tasks`` (module docstring). Up-to-date entries (same seeds, same ``n_boot``) are kept."""
    groups: dict[tuple[Any, ...], dict[str, dict[int, int]]] = {}
    for i, r in rows.items():
        if r["arm"] == "ssl":
            key = tuple(r.get(k) for k in ("dataset", "encoder", "protocol", "fraction", "fold"))
            groups.setdefault(key, {}).setdefault(str(r["task"]), {})[int(r["seed"])] = i
    changed: set[int] = set()

    def current(idx: list[int], other: str, seeds: list[int]) -> bool:
        entries = [(rows[i].get("paired_tasks") or {}).get(other) or {} for i in idx]
        return all(e.get("seeds") == seeds and e.get("n_boot") == n_boot for e in entries)

    for by_task in groups.values():
        names = sorted(by_task)
        for k, a in enumerate(names):
            for b in names[k + 1:]:
                seeds = sorted(set(by_task[a]) & set(by_task[b]))
                all_a, all_b = list(by_task[a].values()), list(by_task[b].values())  # every row shows the pair
                if not seeds or (current(all_a, b, seeds) and current(all_b, a, seeds)):
                    continue
                pa, pb = [preds(rows[by_task[a][s]]) for s in seeds], [preds(rows[by_task[b][s]]) for s in seeds]
                first = pa[0]
                if first is None or any(p is None or not _same_records(first, p) for p in pa + pb):
                    continue
                ml = is_ml(first)
                entry = combined_comparison(first["y"], [p["proba"] for p in pa], [p["proba"] for p in pb],  # type: ignore[index]
                                            groups=first["groups"], multilabel=ml, n_boot=n_boot)
                entry.update(metric="auroc" if _is_binary(first["proba"], ml) else "macro_auroc", seeds=seeds)
                for idx, other, e in ((all_a, b, entry), (all_b, a, _negated(entry))):
                    for i in idx:
                        rows[i].setdefault("paired_tasks", {})[other] = e
                        changed.add(i)
    return changed


__all__ = ["attach_paired", "combined_comparison", "delong_test", "load_predictions", "paired_comparison",
           "predictions_name", "save_predictions"]

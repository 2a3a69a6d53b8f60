"""The tables of a results report (:mod:`sslbench.reports`): each returns ``(header, rows)`` of strings.

* label efficiency per protocol (mean ± std over seeds, mean bootstrap CI), SSL minus baseline paired by seed,
  and on the same test patients (paired bootstrap CI, DeLong p), the headline (each task minus its matched
  baseline), all metrics at the largest fraction, subgroup AUROC.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pretext.errors import DataError
from sslbench.store import ResultStore

METRIC_COLS = ("auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "kappa", "ece")


def method_name(row: pd.Series | dict[str, Any]) -> str:
    """"ssl:<task>" for SSL rows, else the arm ("random", "scratch")."""
    return f"ssl:{row['task']}" if row["arm"] == "ssl" else str(row["arm"])


class MalformedRowWarning(UserWarning):
    """A results.jsonl record without the fields a report needs (named by file and line); it is left out."""


# What a row needs to be placed in a report (the cell's identity and its headline metric).
REQUIRED_FIELDS = ("dataset", "task", "encoder", "arm", "protocol", "fraction", "seed", "auroc")


def load_results(folder: str | Path) -> pd.DataFrame:
    """The rows of ``folder/results.jsonl`` as a table.

    A line that is not a complete record (a torn last line from a kill; a record without the cell fields; a
    line that is not a JSON object) is skipped; each, except a torn last line, is named by file and line with the
    missing fields or what it holds instead (:class:`MalformedRowWarning`).

    Raises:
        DataError: no usable row.
    """
    store = ResultStore(folder)
    rows, skipped = [], []
    for line, row in store.numbered_rows(skipped):
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            skipped.append((line, f"record has no {', '.join(missing)} field(s) (not a result of sslbench "
                                  "run/evaluate, or edited)"))
            continue
        rows.append(row)
    for line, why in sorted(skipped):
        warnings.warn(f"{store.path}, line {line}: the {why}; it is left out of the report", MalformedRowWarning,
                      stacklevel=2)
    if not rows:
        raise DataError(f"no results in {str(store.path)!r}; run sslbench run/evaluate first")
    df = pd.DataFrame(rows)
    df["method"] = [method_name(r) for r in rows]
    for c in METRIC_COLS + tuple(f"{m}_{s}" for m in ("auroc", "auprc", "accuracy", "balanced_accuracy") for s in ("lo", "hi")):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def cells_for(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Rows shown under one protocol: its SSL and random rows plus the (protocol-free) scratch rows."""
    return df[(df.protocol == protocol) & (df.arm != "scratch") | (df.arm == "scratch")]


def _mean_std(x: pd.Series) -> str:
    x = x.dropna()
    if len(x) == 0:
        return "n/a"
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def method_order(methods: Sequence[str]) -> list[str]:
    ssl = sorted(m for m in methods if m.startswith("ssl:"))
    return ssl + [m for m in ("random", "scratch") if m in methods]


def efficiency_table(df: pd.DataFrame, metric: str = "auroc") -> tuple[list[str], list[list[str]]]:
    """Rows: methods; columns: fractions; cells ``mean ± std [CI low, high] (n seeds)``."""
    fracs = sorted(df.fraction.unique())
    header = ["method"] + [f"{f:g} labels" for f in fracs]
    rows = []
    for m in method_order(df.method.unique()):
        row = [m]
        for f in fracs:
            sub = df[(df.method == m) & (df.fraction == f)]
            if sub.empty:
                row.append("")
                continue
            ci = " [CI n/a]"  # too few resamples define the interval (a small test split), or --n-boot 0
            if f"{metric}_lo" in sub and sub[f"{metric}_lo"].notna().any():
                ci = f" [{sub[f'{metric}_lo'].mean():.3f}, {sub[f'{metric}_hi'].mean():.3f}]"
            row.append(f"{_mean_std(sub[metric])}{ci} (n={sub.seed.nunique()})")
        rows.append(row)
    return header, rows


def delta_table(df: pd.DataFrame, metric: str = "auroc") -> tuple[list[str], list[list[str]]]:
    """SSL minus each baseline, paired by (fraction, seed): mean ± std of the differences."""
    fracs = sorted(df.fraction.unique())
    header = ["comparison"] + [f"{f:g} labels" for f in fracs]
    rows = []
    base = {b: df[df.method == b].set_index(["fraction", "seed"])[metric] for b in ("random", "scratch")}
    for m in method_order(df.method.unique()):
        if not m.startswith("ssl:"):
            continue
        s = df[df.method == m].set_index(["fraction", "seed"])[metric]
        for b, bs in base.items():
            if bs.empty:
                continue
            row = [f"{m} − {b}"]
            for f in fracs:
                d = (s - bs).dropna()
                d = d[d.index.get_level_values(0) == f]
                row.append(f"{d.mean():+.3f} ± {d.std(ddof=1):.3f}" if len(d) > 1 else (f"{d.mean():+.3f}" if len(d) else ""))
            rows.append(row)
    return header, rows


def _pm(x: Any) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):+.3f}"


def _combined(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed-combined comparison of a cell's ``paired`` entries (or the single seed's own)."""
    comb = entries[0].get("seeds") if len(entries) > 1 else None
    return comb if isinstance(comb, dict) else entries[0]


def _excl(lo: Any, hi: Any) -> bool:
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _diff_ci(top: dict[str, Any], prefix: str = "") -> str:
    lo, hi = top.get(f"{prefix}lo"), top.get(f"{prefix}hi")
    return f"{_pm(top.get(f'{prefix}diff'))} [{_pm(lo)}, {_pm(hi)}]{' *' if _excl(lo, hi) else ''}"


def _entries(sub: pd.DataFrame, fraction: float, other: str, column: str = "paired") -> list[dict[str, Any]]:
    """The comparisons with ``other`` (a baseline, or a task under ``paired_tasks``) of ``sub``'s rows at ``fraction``."""
    return [p[other] for p in sub[sub.fraction == fraction][column]
            if isinstance(p, dict) and isinstance(p.get(other), dict)]


def paired_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """SSL minus each baseline from the rows' ``paired`` entries (same test patients), per fraction.

    A cell shows the difference combined over seeds with its paired bootstrap 95 % CI (or the single seed's),
    ``*`` where the interval excludes 0, then how many seeds' own intervals exclude 0 and (binary AUROC) how
    many have DeLong p < 0.05. One row per comparison and metric (AUROC, AUPRC).
    """
    fracs = sorted(df.fraction.unique())
    header = ["comparison (paired, same test patients)"] + [f"{f:g} labels" for f in fracs]
    rows: list[list[str]] = []
    if "paired" not in df.columns:
        return header, rows
    for m in method_order(df.method.unique()):
        if not m.startswith("ssl:"):
            continue
        sub = df[df.method == m]
        for b in ("random", "scratch"):
            for metric, prefix in (("AUROC", ""), ("AUPRC", "auprc_")):
                row, seen, last = [], False, {}
                for f in fracs:
                    entries = _entries(sub, f, b)
                    if not entries:
                        row.append("")
                        continue
                    seen, last = True, entries[0]
                    text = _diff_ci(_combined(entries), prefix)
                    n_ex = sum(1 for e in entries if _excl(e.get(f"{prefix}lo"), e.get(f"{prefix}hi")))
                    text += f" ({n_ex}/{len(entries)} seeds CI excl. 0"
                    ps = [e.get("p_delong") for e in entries if e.get("p_delong") is not None]
                    if not prefix and ps:
                        text += f"; DeLong p<0.05 {sum(p < 0.05 for p in ps)}/{len(ps)}"
                    row.append(text + ")")
                if seen:
                    macro = "" if last.get("metric", "auroc") == "auroc" else "macro "
                    rows.append([f"{m} − {b} ({macro}{metric})"] + row)
    return header, rows


def task_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """SSL task minus SSL task on the same test patients (the rows' ``paired_tasks``), per fraction.

    One row per pair of tasks (in the report's method order) and metric: the difference combined over the seeds
    both have, with its paired bootstrap 95 % CI, ``*`` where it excludes 0, and the number of seeds.
    """
    fracs = sorted(df.fraction.unique())
    header = ["task − task (paired, same test patients)"] + [f"{f:g} labels" for f in fracs]
    rows: list[list[str]] = []
    if "paired_tasks" not in df.columns:
        return header, rows
    ssl = [m for m in method_order(df.method.unique()) if m.startswith("ssl:")]
    task_of = {m: str(df[df.method == m].task.iloc[0]) for m in ssl}
    for k, a in enumerate(ssl):
        for b in ssl[k + 1:]:
            found = [_entries(df[df.method == a], f, task_of[b], "paired_tasks") for f in fracs]
            entries = [e[0] if e else None for e in found]  # every row of a task carries the same pair entry
            if not any(entries):
                continue
            macro = "" if next(e for e in entries if e).get("metric", "auroc") == "auroc" else "macro "
            for metric, prefix in (("AUROC", ""), ("AUPRC", "auprc_")):
                rows.append([f"{a} − {b} ({macro}{metric})"] + [
                    f"{_diff_ci(e, prefix)} ({len(e.get('seeds') or [])} seeds)" if e else "" for e in entries])
    return header, rows


#: the baseline each protocol is judged against: frozen-feature probes against the same probe on a randomly
#: initialised encoder, full fine-tuning against supervised training from scratch (random-init fine-tune)
MATCHED_BASELINE = {"linear": "random", "knn": "random", "partial": "random", "finetune": "scratch"}


def headline_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One line per SSL task and protocol: SSL minus its matched baseline (:data:`MATCHED_BASELINE`).

    Cells: test AUROC difference combined over seeds on the same test patients, with the paired bootstrap
    95 % CI, ``*`` where it excludes 0. The compact view of :func:`paired_table` for a paper's main table.
    """
    fracs = sorted(df.fraction.unique())
    header = ["SSL − matched baseline (test AUROC, paired)"] + [f"{f:g} labels" for f in fracs]
    rows: list[list[str]] = []
    if "paired" not in df.columns:
        return header, rows
    for m in method_order(df.method.unique()):
        if not m.startswith("ssl:"):
            continue
        for proto, base in MATCHED_BASELINE.items():
            sub = df[(df.method == m) & (df.protocol == proto)]
            cells = [_entries(sub, f, base) for f in fracs]
            if any(cells):
                rows.append([f"{m} {proto} − {base}"] + [_diff_ci(_combined(e)) if e else "" for e in cells])
    return header, rows


def metrics_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """All metrics at the largest fraction, mean ± std over seeds."""
    f = df.fraction.max()
    sub = df[df.fraction == f]
    cols = [c for c in METRIC_COLS if c in sub.columns]
    header = [f"method (fraction {f:g})"] + cols
    rows = [[m] + [_mean_std(sub[sub.method == m][c]) for c in cols] for m in method_order(sub.method.unique())]
    return header, rows


def subgroup_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    f = df.fraction.max()
    recs = []
    for _, r in df[df.fraction == f].iterrows():
        for g in r.get("subgroups") or []:
            recs.append({"method": r["method"], "group": f"{g['attribute']}={g['group']}", "n": g["n"],
                         "auroc": g.get("auroc")})
    if not recs:
        return None
    sg = pd.DataFrame(recs)
    sg["auroc"] = pd.to_numeric(sg["auroc"], errors="coerce")
    groups = sorted(sg.group.unique())
    header = [f"method (fraction {f:g}), test AUROC"] + [f"{g} (n={int(sg[sg.group == g].n.iloc[0])})" for g in groups]
    rows = [[m] + [_mean_std(sg[(sg.method == m) & (sg.group == g)].auroc) for g in groups]
            for m in method_order(sg.method.unique())]
    return header, rows


__all__ = ["METRIC_COLS", "REQUIRED_FIELDS", "MalformedRowWarning", "cells_for", "delta_table", "efficiency_table", "headline_table", "load_results", "method_name",
           "method_order", "metrics_table", "paired_table", "subgroup_table", "task_table"]

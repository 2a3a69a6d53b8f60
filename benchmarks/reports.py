"""Reports of a results folder: Markdown + HTML tables and PNG plots.

``write_report(DIR)`` reads ``DIR/results.jsonl`` (and ``DIR/audit/*.json`` from the embedding audit) and
writes ``DIR/report/report.md``, ``report.html`` and PNGs:

* label-efficiency table per dataset / encoder / protocol: test AUROC mean ± std over seeds and the mean
  bootstrap 95 % CI, for each SSL task beside the random-init and scratch baselines;
* SSL minus baseline differences (paired by seed), and on the same test patients from the rows' ``paired``
  entries (difference, paired bootstrap CI, DeLong p; see :mod:`benchmarks.paired`);
* all metrics (AUROC, AUPRC, accuracy, balanced accuracy, F1, kappa, ECE) at the largest fraction;
* subgroup AUROC (sex, age band, site) where the data has metadata;
* plots: label-efficiency curves with CI bands, and reliability diagrams.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.store import ResultStore
from pretext.errors import DataError


class MalformedRowWarning(UserWarning):
    """A results.jsonl record without the fields a report needs (named by file and line); it is left out."""


METRIC_COLS = ("auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "kappa", "ece")
Block = tuple[str, Any]


def method_name(row: pd.Series | dict[str, Any]) -> str:
    """"ssl:<task>" for SSL rows, else the arm ("random", "scratch")."""
    return f"ssl:{row['task']}" if row["arm"] == "ssl" else str(row["arm"])


# What a row needs to be placed in a report (the cell's identity and its headline metric).
REQUIRED_FIELDS = ("dataset", "task", "encoder", "arm", "protocol", "fraction", "seed", "auroc")


def load_results(folder: str | Path) -> pd.DataFrame:
    """The rows of ``folder/results.jsonl`` as a table.

    A line that is not a complete record (a torn last line from a kill; a record without the cell fields) is
    skipped; each record without fields is named by file, line and missing fields (:class:`MalformedRowWarning`).

    Raises:
        DataError: no usable row.
    """
    store = ResultStore(folder)
    rows = []
    for line, row in store.numbered_rows():
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            warnings.warn(f"{store.path}, line {line}: the record has no {', '.join(missing)} field(s) (not a "
                          "result of sslbench run/evaluate, or edited); it is left out of the report",
                          MalformedRowWarning, stacklevel=2)
            continue
        rows.append(row)
    if not rows:
        raise DataError(f"no results in {str(store.path)!r}; run sslbench run/evaluate first")
    df = pd.DataFrame(rows)
    df["method"] = [method_name(r) for r in rows]
    for c in METRIC_COLS + tuple(f"{m}_{s}" for m in ("auroc", "auprc", "accuracy", "balanced_accuracy") for s in ("lo", "hi")):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _cells_for(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Rows shown under one protocol: its SSL and random rows plus the (protocol-free) scratch rows."""
    return df[(df.protocol == protocol) & (df.arm != "scratch") | (df.arm == "scratch")]


def _mean_std(x: pd.Series) -> str:
    x = x.dropna()
    if len(x) == 0:
        return "n/a"
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def _order(methods: Sequence[str]) -> list[str]:
    ssl = sorted(m for m in methods if m.startswith("ssl:"))
    return ssl + [m for m in ("random", "scratch") if m in methods]


def efficiency_table(df: pd.DataFrame, metric: str = "auroc") -> tuple[list[str], list[list[str]]]:
    """Rows: methods; columns: fractions; cells ``mean ± std [CI low, high] (n seeds)``."""
    fracs = sorted(df.fraction.unique())
    header = ["method"] + [f"{f:g} labels" for f in fracs]
    rows = []
    for m in _order(df.method.unique()):
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
    for m in _order(df.method.unique()):
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


def _entries(sub: pd.DataFrame, fraction: float, baseline: str) -> list[dict[str, Any]]:
    return [p[baseline] for p in sub[sub.fraction == fraction].paired
            if isinstance(p, dict) and isinstance(p.get(baseline), dict)]


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
    for m in _order(df.method.unique()):
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
    for m in _order(df.method.unique()):
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
    rows = [[m] + [_mean_std(sub[sub.method == m][c]) for c in cols] for m in _order(sub.method.unique())]
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
            for m in _order(sg.method.unique())]
    return header, rows


# -- plots ---------------------------------------------------------------------------------------------------
def plot_efficiency(df: pd.DataFrame, path: Path, title: str, metric: str = "auroc") -> Path:
    """Label-efficiency curves: mean over seeds (error bars: std), shaded band: mean bootstrap 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for m in _order(df.method.unique()):
        g = df[df.method == m].groupby("fraction")
        x = np.array(sorted(g.groups))
        mean = g[metric].mean().reindex(x).to_numpy()
        std = g[metric].std(ddof=1).reindex(x).fillna(0).to_numpy()
        style = {"random": dict(ls="--", color="grey"), "scratch": dict(ls=":", color="black")}.get(m, {})
        line = ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=m, **style)
        if f"{metric}_lo" in df.columns:
            lo, hi = g[f"{metric}_lo"].mean().reindex(x), g[f"{metric}_hi"].mean().reindex(x)
            ax.fill_between(x, lo.to_numpy(dtype=float), hi.to_numpy(dtype=float), alpha=0.12,
                            color=line.lines[0].get_color())
    ax.set_xscale("log")
    fracs = sorted(df.fraction.unique())
    ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
    ax.minorticks_off()
    ax.set_xlabel("label fraction (patients)")
    ax.set_ylabel(f"test {metric.upper() if metric == 'auroc' else metric}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_reliability(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Reliability diagram at the largest fraction; bins pooled over seeds (count-weighted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = df.fraction.max()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=1)
    for m in _order(df.method.unique()):
        rel = [r for r in df[(df.method == m) & (df.fraction == f)].reliability if isinstance(r, dict)]
        if not rel:
            continue
        cnt = np.sum([np.asarray(r["count"], dtype=float) for r in rel], axis=0)
        conf = np.nansum([np.nan_to_num(np.asarray(r["confidence"], dtype=float)) * np.asarray(r["count"]) for r in rel], axis=0)
        acc = np.nansum([np.nan_to_num(np.asarray(r["accuracy"], dtype=float)) * np.asarray(r["count"]) for r in rel], axis=0)
        ok = cnt > 0
        ece = df[(df.method == m) & (df.fraction == f)].ece.mean()
        ax.plot(conf[ok] / cnt[ok], acc[ok] / cnt[ok], marker="o", label=f"{m} (ECE {ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- rendering -----------------------------------------------------------------------------------------------
def _md(blocks: list[Block]) -> str:
    out = []
    for kind, val in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + val)
        elif kind == "p":
            out.append(val)
        elif kind == "table":
            header, rows = val
            out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
                       + "\n".join("| " + " | ".join(r) + " |" for r in rows))
        elif kind == "img":
            out.append(f"![{val[1]}]({val[0]})")
    return "\n\n".join(out) + "\n"


def _html(blocks: list[Block], title: str) -> str:
    body = []
    for kind, val in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(val)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(val)}</p>")
        elif kind == "table":
            header, rows = val
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
        elif kind == "img":
            body.append(f'<figure><img src="{html.escape(val[0])}" alt="{html.escape(val[1])}">'
                        f"<figcaption>{html.escape(val[1])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:560px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"


def _slug(*parts: Any) -> str:
    return "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(p)) for p in parts)


def audit_blocks(folder: Path, report_dir: Path) -> list[Block]:
    """Blocks for the embedding audit results in ``folder/audit/*.json`` (written by the runner)."""
    files = sorted((folder / "audit").glob("*.json"))
    if not files:
        return []
    blocks: list[Block] = [("h2", "Embedding audit (validation split)")]
    header = ["encoder", "kNN purity", "kNN purity, other patients", "chance", "same-patient neighbours",
              "invariance ratio (perturbed / between-class)", "label kept under perturbation"]
    rows, imgs = [], []
    for f in files:
        a = json.loads(f.read_text())
        inv = a.get("invariance") or {}
        rows.append([str(a.get("name", f.stem))] + [
            _f(a.get(k)) for k in ("knn_purity", "knn_purity_other_patients", "chance_purity", "same_patient_neighbours")
        ] + [_f(inv.get("ratio_between")), _f(inv.get("knn_label_stability"))])
        for p in (a.get("plots") or {}).values():
            pp = Path(p)
            if not pp.is_file():
                pp = folder / "audit" / Path(p).name  # the results folder was moved
            if pp.is_file():  # copied beside the report, so the report folder stands alone
                shutil.copyfile(pp, report_dir / pp.name)
                imgs.append(("img", (pp.name, f"embedding map: {a.get('name', f.stem)}")))
    blocks.append(("table", (header, rows)))
    blocks.append(("p", "Purity: share of the 10 nearest neighbours (cosine) with the record's label; 'other "
                        "patients' excludes the record's own patient. Invariance ratio: embedding distance to a "
                        "clinically irrelevant perturbation of the same record over the mean distance between "
                        "classes (well below 1 is good)."))
    return blocks + imgs


def _f(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.3f}"


def build_blocks(df: pd.DataFrame, report_dir: Path, title: str) -> list[Block]:
    blocks: list[Block] = [("h1", title)]
    n_seeds = df.seed.nunique()
    blocks.append(("p", f"{len(df)} cells; datasets {', '.join(sorted(df.dataset.unique()))}; "
                        f"seeds {sorted(df.seed.unique().tolist())}. Cells: test metric mean ± std over {n_seeds} "
                        "seed(s) of the label draw, then the mean patient-level bootstrap 95 % CI in brackets. "
                        "random = same encoder randomly initialised under the same protocol; scratch = the same "
                        "encoder trained supervised from random init on the same labels (random-init fine-tune "
                        "is the scratch row)."))
    for (dataset, encoder), dd in df.groupby(["dataset", "encoder"]):
        first = dd.iloc[0]
        blocks.append(("h2", f"{dataset} · {encoder}"))
        blocks.append(("p", f"data: {first.get('data', '')}; split: {first.get('split', '')}, "
                            f"train/val/test records {first.get('n_train')}/{first.get('n_val')}/{first.get('n_test')}"))
        if "small_test" in dd and dd["small_test"].fillna(False).astype(bool).any():
            per_class = first.get("test_patients_per_class")
            blocks.append(("p", f"Warning: the test split is small (test patients per class: {per_class}); its "
                                "metrics are unreliable and intervals that too few resamples define show n/a."))
        ht = headline_table(dd)
        if ht[1]:
            blocks.append(("p", "Headline: each SSL task minus its matched baseline (frozen-feature probes vs the "
                                "same probe on a random encoder; fine-tune vs training from scratch), test AUROC on "
                                "the same test patients, combined over seeds, paired bootstrap 95 % CI; * = the "
                                "interval excludes 0."))
            blocks.append(("table", ht))
        protocols = [p for p in ("linear", "knn", "partial", "finetune") if p in set(dd[dd.arm != "scratch"].protocol)]
        if not protocols:
            protocols = ["finetune"]
        for proto in protocols:
            sub = _cells_for(dd, proto)
            blocks.append(("h3", f"{proto}: test AUROC by label fraction"))
            blocks.append(("table", efficiency_table(sub)))
            dt = delta_table(sub)
            if dt[1]:
                blocks.append(("p", "SSL minus baseline (paired by fraction and seed), test AUROC:"))
                blocks.append(("table", dt))
            pt = paired_table(sub)
            if pt[1]:
                blocks.append(("p", "SSL minus baseline scored on the same test patients: difference (mean over "
                                    "seeds) [paired patient-level bootstrap 95 % CI]; * = the interval excludes 0. "
                                    "DeLong's test for binary AUROC; macro AUROC (multi-class / multi-label) has "
                                    "the bootstrap interval only."))
                blocks.append(("table", pt))
            blocks.append(("table", metrics_table(sub)))
            sg = subgroup_table(sub)
            if sg:
                blocks.append(("table", sg))
            png = plot_efficiency(sub, report_dir / f"{_slug(dataset, encoder, proto)}_efficiency.png",
                                  f"{dataset} · {encoder} · {proto}")
            blocks.append(("img", (png.name, f"label efficiency, {dataset}, {proto}")))
            rel = plot_reliability(sub, report_dir / f"{_slug(dataset, encoder, proto)}_reliability.png",
                                   f"reliability, {dataset} · {proto}")
            blocks.append(("img", (rel.name, f"reliability, {dataset}, {proto}")))
    return blocks


def write_report(folder: str | Path, out: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNGs for the results in ``folder``.

    Returns:
        ``{"markdown": path, "html": path, "dir": report folder}``.
    """
    folder = Path(folder)
    df = load_results(folder)
    report_dir = Path(out) if out else folder / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    name = title or f"Benchmark report: {', '.join(sorted(set(df.get('recipe', pd.Series(dtype=str)).dropna()))) or folder.name}"
    blocks = build_blocks(df, report_dir, name) + audit_blocks(folder, report_dir)
    md, htm = report_dir / "report.md", report_dir / "report.html"
    md.write_text(_md(blocks), encoding="utf-8")
    htm.write_text(_html(blocks, name), encoding="utf-8")
    summary = df.groupby(["dataset", "encoder", "method", "protocol", "fraction"])["auroc"].agg(["mean", "std", "count"])
    summary.reset_index().to_csv(report_dir / "summary.csv", index=False)
    return {"markdown": md, "html": htm, "dir": report_dir}


__all__ = ["load_results", "write_report", "efficiency_table", "delta_table", "metrics_table", "paired_table",
           "headline_table"]

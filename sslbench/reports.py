"""Reports of a results folder: Markdown + HTML tables and PNG plots.

``write_report(DIR)`` reads ``DIR/results.jsonl`` (and ``DIR/audit/*.json`` from the embedding audit, the
pretraining ``metrics.csv`` files for the online monitor's curves: :mod:`sslbench.report_monitor`) and
writes ``DIR/report/report.md``, ``report.html`` and PNGs:

* label-efficiency table per dataset / encoder / protocol: test AUROC mean ± std over seeds and the mean
  bootstrap 95 % CI, for each SSL task beside the random-init and scratch baselines;
* SSL minus baseline differences (paired by seed), and on the same test patients from the rows' ``paired``
  entries (difference, paired bootstrap CI, DeLong p; see :mod:`sslbench.paired`);
* all metrics (AUROC, AUPRC, accuracy, balanced accuracy, F1, kappa, ECE) at the largest fraction;
* subgroup AUROC (sex, age band, site) where the data has metadata;
* plots: label-efficiency curves with CI bands, and reliability diagrams.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslbench.report_monitor import monitor_blocks
from sslbench.report_tables import (  # noqa: F401  (MalformedRowWarning: re-exported for callers)
    MalformedRowWarning,
    cells_for,
    delta_table,
    efficiency_table,
    headline_table,
    load_results,
    method_order,
    metrics_table,
    paired_table,
    subgroup_table,
    task_table,
)

Block = tuple[str, Any]
TEMPLATES = Path(__file__).parent / "templates"


# -- plots ---------------------------------------------------------------------------------------------------
def plot_efficiency(df: pd.DataFrame, path: Path, title: str, metric: str = "auroc") -> Path:
    """Label-efficiency curves: mean over seeds (error bars: std), shaded band: mean bootstrap 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for m in method_order(df.method.unique()):
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
    for m in method_order(df.method.unique()):
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
    """The HTML page of ``blocks``, rendered from ``templates/report.html`` (Jinja2, every value escaped)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, keep_trailing_newline=True)
    return env.get_template("report.html").render(blocks=blocks, title=title)


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
    if "max_items" in df and df["max_items"].notna().any():
        blocks.append(("p", f"A quick check, not results: evaluation splits were cut to about "
                            f"{int(df['max_items'].max())} records each (max_items / $MEDSSL_MAX_ITEMS)."))
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
            sub = cells_for(dd, proto)
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
            tt = task_table(sub)
            if tt[1]:
                blocks.append(("p", "Task against task on the same test patients: the first minus the second, mean "
                                    "over the seeds both have [paired patient-level bootstrap 95 % CI]; * = the "
                                    "interval excludes 0."))
                blocks.append(("table", tt))
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
    blocks = build_blocks(df, report_dir, name) + audit_blocks(folder, report_dir) + monitor_blocks(folder, report_dir)
    md, htm = report_dir / "report.md", report_dir / "report.html"
    md.write_text(_md(blocks), encoding="utf-8")
    htm.write_text(_html(blocks, name), encoding="utf-8")
    summary = df.groupby(["dataset", "encoder", "method", "protocol", "fraction"])["auroc"].agg(["mean", "std", "count"])
    summary.reset_index().to_csv(report_dir / "summary.csv", index=False)
    return {"markdown": md, "html": htm, "dir": report_dir}


__all__ = ["load_results", "write_report", "efficiency_table", "delta_table", "metrics_table", "paired_table",
           "headline_table"]

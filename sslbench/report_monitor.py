"""The online representation monitor in the report: its curves over pretraining steps.

Every pretraining the runner does writes ``pretrain/DATASET/ENCODER/TASK/metrics.csv``; the engine's monitor
(:class:`pretext.engine.hooks.RepresentationMonitor`) adds the columns ``monitor/eff_rank`` (effective rank of the
embeddings of a fixed subset of training items), ``monitor/std_ratio`` (mean per-dimension std of the L2-normalised
embeddings times sqrt(dim): about 1 when they spread over the sphere, toward 0 at collapse) and ``monitor/knn_top1`` (kNN top-1 on the subset's labels, where there are
labels). :func:`monitor_blocks` plots them, one figure per dataset and encoder with a line per task, and tabulates
the first and last measurement. A results folder copied without ``pretrain/`` (checkpoints are not committed)
keeps the CSVs under ``monitor/DATASET/ENCODER/TASK/metrics.csv`` (:func:`copy_monitor_csvs`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["MONITOR_COLUMNS", "copy_monitor_csvs", "monitor_blocks", "monitor_curves", "plot_monitor"]

#: column -> axis label of the plotted monitor metrics
MONITOR_COLUMNS = {"monitor/eff_rank": "effective rank", "monitor/std_ratio": "per-dim std x sqrt(dim)",
                   "monitor/knn_top1": "kNN top-1 (train subset)"}


def _csvs(folder: Path) -> tuple[Path, list[Path]]:
    for sub in ("pretrain", "monitor"):
        root = folder / sub
        files = sorted(root.glob("*/*/*/metrics.csv")) if root.is_dir() else []
        if files:
            return root, files
    return folder, []


def monitor_curves(folder: str | Path) -> dict[tuple[str, str], dict[str, pd.DataFrame]]:
    """``{(dataset, encoder): {task: rows with a monitor measurement (step + monitor columns)}}``."""
    root, files = _csvs(Path(folder))
    out: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}
    for f in files:
        dataset, encoder, task = f.relative_to(root).parts[:3]
        try:
            df = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if "step" not in df.columns or "monitor/eff_rank" not in df.columns:
            continue
        rows = df[df["monitor/eff_rank"].notna()]
        if len(rows):
            cols = ["step"] + [c for c in (*MONITOR_COLUMNS, "monitor/collapse") if c in rows.columns]
            out.setdefault((dataset, encoder), {})[task] = rows[cols].reset_index(drop=True)
    return out


def plot_monitor(curves: dict[str, pd.DataFrame], path: Path, title: str) -> Path:
    """One row of panels (effective rank, std ratio, kNN top-1) against the step, a line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in MONITOR_COLUMNS if any(c in d.columns and d[c].notna().any() for d in curves.values())]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.2), dpi=100, squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for task, d in sorted(curves.items()):
            if col in d.columns and d[col].notna().any():
                ax.plot(d["step"], d[col], marker="o", ms=3, label=task)
        ax.set_xlabel("pretraining step")
        ax.set_ylabel(MONITOR_COLUMNS[col])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _f(x: Any) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{float(x):.3f}"


def monitor_blocks(folder: str | Path, report_dir: Path) -> list[tuple[str, Any]]:
    """Report blocks (``h2``, ``table``, ``p``, ``img``) for the monitor curves of ``folder``; none without them."""
    groups = monitor_curves(folder)
    if not groups:
        return []
    blocks: list[tuple[str, Any]] = [("h2", "Online representation monitor (pretraining)")]
    header = ["dataset · encoder · task", "steps measured", "eff. rank first → last", "std ratio first → last",
              "kNN top-1 first → last", "collapse warnings"]
    rows, imgs = [], []
    for (dataset, encoder), curves in sorted(groups.items()):
        for task, d in sorted(curves.items()):
            first, last = d.iloc[0], d.iloc[-1]
            rows.append([f"{dataset} · {encoder} · {task}", f"{int(first['step'])}–{int(last['step'])} ({len(d)})"]
                        + [f"{_f(first.get(c))} → {_f(last.get(c))}" for c in MONITOR_COLUMNS]
                        + [str(int(d["monitor/collapse"].fillna(0).sum())) if "monitor/collapse" in d else "n/a"])
        name = f"monitor_{dataset}_{encoder}.png".replace("/", "-")
        plot_monitor(curves, report_dir / name, f"online monitor: {dataset} · {encoder}")
        imgs.append(("img", (name, f"online monitor: {dataset} · {encoder}")))
    blocks.append(("table", (header, rows)))
    blocks.append(("p", "Measured by the engine every monitor_every steps and at the last step on a fixed subset of "
                        "training items (eval mode): effective rank = exp(entropy of the normalised singular values "
                        "of the centred embeddings); std ratio = mean per-dimension std of the L2-normalised "
                        "embeddings times sqrt(dim) (about 1 when spread, toward 0 at collapse); kNN top-1 on the subset's labels (half the patients as the bank), "
                        "not the test split."))
    return blocks + imgs


def copy_monitor_csvs(folder: str | Path, dest: str | Path) -> list[Path]:
    """Copy ``folder``'s pretraining ``metrics.csv`` files to ``dest/monitor/DATASET/ENCODER/TASK/`` (to commit a
    results folder without its checkpoints and keep its monitor curves)."""
    root, files = _csvs(Path(folder))
    out = []
    for f in files:
        target = Path(dest) / "monitor" / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        out.append(target)
    return out

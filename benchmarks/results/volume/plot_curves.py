"""Plot pretraining curves (``metrics.csv`` of each run) and summarise first/last losses.

Usage: ``python benchmarks/results/volume/plot_curves.py RUNS_CSV_DIR --out OUT_DIR``
writes ``OUT_DIR/pretrain_curves.png`` and ``OUT_DIR/pretrain_summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# run name -> the trivial-solution loss it should be read against (keys of baselines.json)
TRIVIAL = {
    "rotation_28": "rotation_chance_ce",
    "slice_order_28": "slice_order_chance_ce",
    "pixel_shuffle_28": "pixel_shuffle_zero_prediction_mse_28",
    "mae3d_28": "mae_normpix_patch_mean_28_pad32_p8",
    "mae3d_28_p4": "mae_normpix_patch_mean_28_pad32_p4",
    "mae3d_64": "mae_normpix_patch_mean_64_p16",
    "mae3d_64_raw": "mae_raw_global_mean_mse_64",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--baselines", type=Path, default=None, help="baselines.json (trivial-solution losses)")
    args = ap.parse_args()
    base = json.loads(args.baselines.read_text()) if args.baselines and args.baselines.is_file() else {}
    files = sorted(args.runs.glob("*.csv"))
    if not files:
        raise SystemExit(f"no metrics CSV files in {args.runs}")
    fig, axes = plt.subplots(2, (len(files) + 1) // 2, figsize=(4 * ((len(files) + 1) // 2), 6.5), squeeze=False)
    summary = {}
    for ax, f in zip(axes.flat, files, strict=False):
        df = pd.read_csv(f)
        ax.plot(df["step"], df["loss"], label="loss", color="C0")
        extra = [c for c in df.columns if c.endswith("identity_loss")]
        for c in extra:
            ax.plot(df["step"], df[c], "--", label=f"{c} (input as output)", color="C3")
        if extra and not any(c.endswith("acc") for c in df.columns):
            ax.set_yscale("log")
        key = TRIVIAL.get(f.stem)
        if key and key in base:
            ax.axhline(base[key], color="0.5", ls="-.", lw=1, label=f"trivial: {key}")
            ax.legend(fontsize=6)
        ax.set_title(f.stem)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        acc = [c for c in df.columns if c.endswith("acc")]
        if acc:
            ax2 = ax.twinx()
            for c in acc:
                ax2.plot(df["step"], df[c], ":", label=c, color="C2")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("accuracy", fontsize=7)
        k = max(1, len(df) // 5)
        summary[f.stem] = {
            "steps": int(df["step"].iloc[-1]),
            "loss_first": float(df["loss"].iloc[0]),
            "loss_last": float(df["loss"].iloc[-1]),
            "loss_first_fifth_mean": float(df["loss"].iloc[:k].mean()),
            "loss_last_fifth_mean": float(df["loss"].iloc[-k:].mean()),
            **{f"{c}_last": float(df[c].iloc[-1]) for c in acc + extra},
        }
    for ax in list(axes.flat)[len(files):]:
        ax.axis("off")
    fig.suptitle("Volume pretext tasks on AdrenalMNIST3D (CPU, 1 thread): training loss")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "pretrain_curves.png", dpi=110)
    (args.out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

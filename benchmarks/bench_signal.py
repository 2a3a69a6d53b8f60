# ruff: noqa: B023  (the timed closures run inside the loop iteration that defines them)
"""Signal-side performance, each number a ratio against a reference measured in the same run.

1. CPC loss: the vectorised :func:`signalssl.tasks.cpc.cpc_loss` against the straightforward
   loop over (step, position) and the loop over steps only; same input, values equal to 1e-5.
2. An epoch over the ingested store against re-reading each item from its WFDB/EDF file
   (the reference reads a random sample of items, since it is slow; rates are per item).
3. Training-step throughput (windows/s: forward, backward, AdamW step) of each signal task on
   CPU, and on a CUDA GPU in bf16 autocast when one is present.

Usage::

    python -m benchmarks.bench_signal [--out benchmarks/results/signal] [--quick]

Real data from ``../shared/data`` (or ``$MEDSSL_SHARED_DATA``) is used when present; otherwise
the script writes small WFDB/EDF files itself. Results: ``bench_signal.json`` and ``bench_signal.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from pretext.data import encoder_for_data, load_data
from pretext.registry import create_task
from signalssl.io import read_record
from signalssl.preprocess import preprocess
from signalssl.tasks.cpc import NEGATIVES, cpc_loss

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


# -- the reference CPC loss: the parity oracle of signalssl.tasks.cpc.cpc_loss (tests/signalssl/tasks) and the
# -- baseline this benchmark times it against; not used by the library
def cpc_loss_loop(z: torch.Tensor, pred: torch.Tensor, negatives: str = "both", temperature: float = 1.0,
                  per_position: bool = True) -> torch.Tensor:
    """Reference CPC loss as a Python loop over the horizon's steps (and, by default, over positions).

    The straightforward implementation, for parity tests and this benchmark: one small matmul and
    cross-entropy per (step, position). Same arguments and value as :func:`signalssl.tasks.cpc.cpc_loss`.
    """
    z, pred = z.float(), pred.float()
    b, n, k, _ = pred.shape
    bidx = torch.arange(b, device=z.device)
    flat = z.reshape(b * n, -1)
    per_step = []
    for step in range(1, k + 1):
        positions = range(n - step)
        if not positions:
            continue
        if not per_position:  # vectorised over positions, looped over steps
            p = pred[:, : n - step, step - 1]  # (B, n-step, D)
            tgt = z[:, step:]
            total = _step_block(p, tgt, z, flat, negatives, step, bidx, temperature)
            per_step.append(total / (b * (n - step)))
            continue
        total = torch.zeros((), device=z.device)
        for t in positions:
            p = pred[:, t, step - 1]  # (B, D)
            if negatives == "batch":
                logits, target = p @ z[:, t + step].T, bidx
            elif negatives == "same_seq":
                logits, target = torch.einsum("bd,bsd->bs", p, z), torch.full((b,), t + step, device=z.device)
            elif negatives == "all":
                logits, target = p @ flat.T, bidx * n + t + step
            else:
                seq = torch.einsum("bd,bsd->bs", p, z)
                seq[:, t + step] = float("-inf")
                logits, target = torch.cat([p @ z[:, t + step].T, seq], dim=1), bidx
            total = total + F.cross_entropy(logits / temperature, target, reduction="sum")
        per_step.append(total / (b * (n - step)))
    return torch.stack(per_step).mean()


def _step_block(p: torch.Tensor, tgt: torch.Tensor, z: torch.Tensor, flat: torch.Tensor, negatives: str, step: int,
                bidx: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed cross-entropy of one step over all its positions (helper of :func:`cpc_loss_loop`)."""
    b, m, _ = p.shape
    n = z.shape[1]
    t = torch.arange(m, device=z.device)
    if negatives == "batch":
        logits, target = torch.einsum("btd,ctd->btc", p, tgt), bidx[:, None].expand(b, m)
    elif negatives == "same_seq":
        logits, target = torch.einsum("btd,bsd->bts", p, z), (t + step)[None].expand(b, m)
    elif negatives == "all":
        logits, target = torch.einsum("btd,sd->bts", p, flat), bidx[:, None] * n + (t + step)[None]
    else:
        seq = torch.einsum("btd,bsd->bts", p, z).masked_fill(F.one_hot(t + step, n).bool()[None], float("-inf"))
        logits = torch.cat([torch.einsum("btd,ctd->btc", p, tgt), seq], dim=-1)
        target = bidx[:, None].expand(b, m)
    return F.cross_entropy(rearrange(logits / temperature, "b t c -> (b t) c"), target.reshape(-1), reduction="sum")


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------ 1. CPC
def bench_cpc_loss(quick: bool) -> list[dict[str, Any]]:
    rows = []
    b, n, k, d = (16, 48, 12, 64) if quick else (32, 94, 12, 128)  # 10 s at 300 Hz through cpc_encoder (/32)
    g = torch.Generator().manual_seed(0)
    z0, p0 = torch.randn(b, n, d, generator=g), torch.randn(b, n, k, d, generator=g) / d**0.5
    for neg in NEGATIVES:
        vec = float(cpc_loss(z0, p0, neg)[0])
        loop = float(cpc_loss_loop(z0, p0, neg))
        steps = float(cpc_loss_loop(z0, p0, neg, per_position=False))
        row: dict[str, Any] = {"negatives": neg, "shape": {"B": b, "N": n, "K": k, "D": d},
                               "abs_diff_loop": abs(vec - loop), "abs_diff_steploop": abs(vec - steps)}
        for mode in ("forward", "forward_backward"):
            def run(f: Callable[..., Any], mode: str = mode) -> Callable[[], None]:
                def call() -> None:
                    z, p = z0.clone().requires_grad_(mode != "forward"), p0.clone().requires_grad_(mode != "forward")
                    out = f(z, p)
                    out = out[0] if isinstance(out, tuple) else out
                    if mode != "forward":
                        out.backward()
                return call

            reps = 3 if quick else 5
            t_vec = timeit(run(lambda z, p: cpc_loss(z, p, neg)), reps)
            t_loop = timeit(run(lambda z, p: cpc_loss_loop(z, p, neg)), max(1, reps - 2))
            t_step = timeit(run(lambda z, p: cpc_loss_loop(z, p, neg, per_position=False)), reps)
            row[mode] = {"vectorised_ms": 1e3 * t_vec, "loop_ms": 1e3 * t_loop, "steploop_ms": 1e3 * t_step,
                         "speedup_vs_loop": t_loop / t_vec, "speedup_vs_steploop": t_step / t_vec}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ 2. store vs re-read
def _synthetic_sources(tmp: Path) -> dict[str, str]:
    """Small WFDB and EDF folders for machines without the shared data."""
    import mne
    import wfdb

    rng = np.random.default_rng(0)
    (tmp / "wfdb").mkdir()
    for i in range(40):
        sig = rng.standard_normal((9000, 1)) * 0.2
        wfdb.wrsamp(f"r{i:03d}", fs=300, units=["mV"], sig_name=["ECG"], p_signal=sig, fmt=["16"], write_dir=str(tmp / "wfdb"))
    (tmp / "edf").mkdir()
    for s in range(6):
        for k in (1, 2):
            raw = mne.io.RawArray(rng.standard_normal((8, 30000)) * 2e-5, mne.create_info(8, 500.0, "eeg"), verbose="error")
            mne.export.export_raw(str(tmp / "edf" / f"Subject{s:02d}_{k}.edf"), raw, fmt="edf", verbose="error")
    return {"wfdb": f"wfdb:{tmp / 'wfdb'}", "edf": f"edf:{tmp / 'edf'}?pattern=(?P<patient>Subject\\d\\d)_(?P<label>\\d)"}


def bench_store(cache: str, quick: bool, tmp: Path) -> list[dict[str, Any]]:
    c17 = SHARED / "physionet2017-af-validation" / "validation"
    eeg = SHARED / "eegmat-mental-arithmetic" / "eeg-during-mental-arithmetic-tasks-1.0.0"
    if c17.is_dir() and eeg.is_dir():
        specs = {"WFDB (CinC 2017, 300 Hz, 1 lead)": f"cinc2017:{c17}", "EDF (EEGMAT, 500 Hz, 8 ch)": f"eegmat:{eeg}"}
    else:
        syn = _synthetic_sources(tmp)
        specs = {"WFDB (synthetic)": syn["wfdb"], "EDF (synthetic)": syn["edf"]}
    rows = []
    for name, spec in specs.items():
        sep = "&" if "?" in spec else "?"
        t0 = time.perf_counter()
        data = load_data(f"{spec}{sep}window=4&split=none&cache={cache}")
        t_ingest = time.perf_counter() - t0
        split = data.splits["train"]
        store = split.store
        paths = store.index["path"].tolist()

        def epoch() -> None:
            for i in range(len(split)):
                split[i]

        t_epoch = timeit(epoch, 1 if quick else 3)
        rng = np.random.default_rng(0)
        sample = rng.choice(len(split), size=min(len(split), 30 if quick else 100), replace=False)

        def reread() -> None:
            for i in sample:
                r = int(split.records[i])
                rec = preprocess(read_record(paths[r]))
                x = rec.signal[:, split.starts[i]: split.starts[i] + split.window]
                torch.from_numpy(np.ascontiguousarray(x))

        t_re = timeit(reread, 1, warmup=0)
        store_rate, re_rate = len(split) / t_epoch, len(sample) / t_re
        rows.append({"source": name, "spec": spec, "items": len(split), "window": split.window,
                     "ingest_s_first_load": t_ingest, "store_items_per_s": store_rate,
                     "reread_items_per_s": re_rate, "reread_sampled_items": len(sample),
                     "speedup": store_rate / re_rate, "store_dtype": store.meta["dtype"]})
    return rows


# ------------------------------------------------------------------------- 3. task throughput
def bench_tasks(cache: str, quick: bool, tmp: Path, device: str) -> list[dict[str, Any]]:
    eeg = SHARED / "eegmat-mental-arithmetic" / "eeg-during-mental-arithmetic-tasks-1.0.0"
    c17 = SHARED / "physionet2017-af-validation" / "validation"
    if eeg.is_dir() and c17.is_dir():
        datas = {"EEGMAT 8x1000 (100 Hz, 10 s)": f"eegmat:{eeg}?sfreq=100&window=10",
                 "CinC2017 1x3000 (300 Hz, 10 s)": f"cinc2017:{c17}?window=10"}
    else:
        syn = _synthetic_sources(tmp / "tp")
        datas = {"synthetic EDF 8x1000": syn["edf"] + "&sfreq=100&window=10"}
    cases = [("cpc", "cpc_encoder", {}), ("pclr", "xresnet1d18", {}), ("pclr", "ribeiro_resnet", {})]
    bs = 16 if quick else 32
    rows = []
    for dname, spec in datas.items():
        sep = "&" if "?" in spec else "?"
        data = load_data(f"{spec}{sep}cache={cache}&split=none")
        split = data.splits["train"]
        for task_name, enc_name, kw in cases:
            if enc_name == "ribeiro_resnet" and data.input_shape[-1] < 256:
                continue
            task = create_task(task_name, encoder_for_data(enc_name, data, **kw)).to(device)
            ds = task.wrap_dataset(split, task.cfg, 0)
            items = [ds[i] for i in range(bs)]
            batch = {key: torch.stack([it[key] for it in items]).to(device) for key in items[0]}
            opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
            amp = device == "cuda"

            def step() -> None:
                with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                    loss = task(batch, generator=torch.Generator().manual_seed(0))["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t = timeit(step, 2 if quick else 4, warmup=1, sync=device == "cuda")
            rows.append({"data": dname, "task": task_name, "encoder": enc_name, "device": device,
                         "precision": "bf16-mixed" if amp else "32", "batch": bs, "input": list(data.input_shape),
                         "step_ms": 1e3 * t, "windows_per_s": bs / t,
                         "params_M": sum(p.numel() for p in task.parameters()) / 1e6})
    return rows


def write_md(res: dict[str, Any], path: Path) -> None:
    L = [f"# Signal benchmarks\n\n{res['machine']}; torch {res['torch']}, {res['threads']} thread(s). "
         f"Command: `{res['command']}`\n", "## 1. CPC loss: vectorised vs loops (same input)\n",
         "| negatives | B,N,K,D | mode | vectorised ms | per-(step,position) loop ms | x | per-step loop ms | x | max abs diff |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in res["cpc_loss"]:
        s = r["shape"]
        for mode in ("forward", "forward_backward"):
            m = r[mode]
            L.append(f"| {r['negatives']} | {s['B']},{s['N']},{s['K']},{s['D']} | {mode} | {m['vectorised_ms']:.2f} | "
                     f"{m['loop_ms']:.1f} | **{m['speedup_vs_loop']:.1f}x** | {m['steploop_ms']:.2f} | "
                     f"{m['speedup_vs_steploop']:.1f}x | {max(r['abs_diff_loop'], r['abs_diff_steploop']):.1e} |")
    L += ["\n## 2. An epoch over the store vs re-reading each item from its file\n",
          "| source | items (4 s windows) | store items/s | re-read items/s (sampled) | speedup | first load (ingest) s |",
          "|---|---|---|---|---|---|"]
    for r in res["store"]:
        L.append(f"| {r['source']} | {r['items']} | {r['store_items_per_s']:.0f} | {r['reread_items_per_s']:.1f} "
                 f"({r['reread_sampled_items']}) | **{r['speedup']:.0f}x** | {r['ingest_s_first_load']:.1f} |")
    L += ["\n## 3. Training-step throughput (forward + backward + AdamW step)\n",
          "| data | task | encoder | device | precision | batch | step ms | windows/s | params (M) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in res["tasks"]:
        L.append(f"| {r['data']} | {r['task']} | {r['encoder']} | {r['device']} | {r['precision']} | {r['batch']} | "
                 f"{r['step_ms']:.0f} | {r['windows_per_s']:.1f} | {r['params_M']:.2f} |")
    if not res["gpu"]:
        L.append("\nNo CUDA GPU in this run: the bf16 GPU rows are not measured (run the same command on a GPU machine).")
    path.write_text("\n".join(L) + "\n")


def summarise_runs(runs: list[str], out: Path, window: int = 20) -> list[dict[str, Any]]:
    """Copy each run's ``metrics.csv``/``config.yaml`` under ``out/pretrain_logs``, plot the loss curves, summarise."""
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = []
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        r = Path(run)
        dest = out / "pretrain_logs" / r.name  # not "runs/": that name is git-ignored
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.csv", "config.yaml"):
            if (r / f).exists():
                shutil.copy(r / f, dest / f)
        m = pd.read_csv(r / "metrics.csv").dropna(subset=["loss"])
        k = max(1, min(window // 5, len(m) // 4))  # logged every few steps: first/last k log points
        first, last = float(m["loss"].iloc[:k].mean()), float(m["loss"].iloc[-k:].mean())
        extra = {c: float(m[c].iloc[-k:].mean()) for c in ("cpc_acc", "pos_sim", "same_record_frac") if c in m}
        rows.append({"run": r.name, "steps": int(m["step"].iloc[-1]), "loss_first": first, "loss_last": last,
                     "ratio": last / first, "falls": last < first, "log_points_averaged": k, **extra})
        ax.plot(m["step"], m["loss"], lw=1.2)
        ax.set_title(r.name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pretrain_curves.png", dpi=110)
    (out / "pretrain_summary.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "signal"))
    ap.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (smoke run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curves", nargs="+", metavar="RUN_DIR", help="only summarise and plot these pretraining runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.curves:
        summarise_runs(args.curves, out)
        return 0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        cache = str(tmp / "cache")
        res: dict[str, Any] = {
            "command": "python -m benchmarks.bench_signal" + (" --quick" if args.quick else ""),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "threads": args.threads, "gpu": torch.cuda.is_available(),
        }
        res["cpc_loss"] = bench_cpc_loss(args.quick)
        print(json.dumps(res["cpc_loss"], indent=1))
        res["store"] = bench_store(cache, args.quick, tmp)
        print(json.dumps(res["store"], indent=1))
        res["tasks"] = bench_tasks(cache, args.quick, tmp, "cpu")
        if torch.cuda.is_available():
            res["tasks"] += bench_tasks(cache, args.quick, tmp, "cuda")
        print(json.dumps(res["tasks"], indent=1))
    (out / "bench_signal.json").write_text(json.dumps(res, indent=1))
    write_md(res, out / "bench_signal.md")
    print(f"wrote {out / 'bench_signal.json'} and {out / 'bench_signal.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

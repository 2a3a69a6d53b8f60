"""The demo (``make demo``): pretrain -> probe at 1 %, 10 %, 100 % labels -> baselines -> audit -> report.

Runs on data the project generates itself, so it needs no download::

    python -m sslbench.demo --out runs/demo            # or: sslbench demo --out runs/demo
    python -m sslbench.demo --out /tmp/d --quick       # tiny version for the tests (~30 s)

For each modality (``--modalities signal,volume`` by default; about 3-4 minutes on 2 CPU cores), in its own
folder ``OUT/<modality>/``:

1. generate the synthetic data (:mod:`signalssl.synthetic` 12-lead ECGs with four rhythm classes,
   :mod:`volssl.synthetic` 3D phantoms with three lesion classes), cached under ``OUT/<modality>/data``;
2. pretrain a pretext task through the shared engine (:func:`pretext.pipeline.pretrain`) into
   ``OUT/<modality>/pretrain``;
3. evaluate with the harness (:func:`sslbench.evaluate.evaluate`): linear probe on frozen features at label
   fractions drawn by patient, several seeds, beside the random-init encoder (same probe) and the same encoder
   trained supervised from scratch on the same labelled patients; cells go to ``OUT/<modality>/results.jsonl``;
4. audit the embeddings of the validation patients (:mod:`sslbench.audit`), SSL against random init;
5. write the harness report of the modality (``OUT/<modality>/report/report.md`` and ``.html``).

Then ``OUT/REPORT.md`` and ``OUT/REPORT.html`` put both modalities side by side and link their reports; the last
line printed says where it is.

Everything is seeded. Rerunning with the same settings and ``--out`` reuses what is there (the data cache, a
finished or killed pretraining run, finished cells) and says so; other settings in the same folder are refused
before anything is written, naming the way out: ``--force`` (start afresh in that folder) or a new ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import torch

from pretext.atomic import atomic_write_text
from sslbench.demo_report import headline, write_demo_report


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the demo runs for one modality."""

    modality: str
    kind: str
    data: dict[str, Any]
    task: str
    task_cfg: dict[str, Any]
    encoder: str
    encoder_cfg: dict[str, Any]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    scratch_seeds: int  # scratch runs on the first N seeds (it costs a full training per cell)


def plans(quick: bool) -> dict[str, Plan]:
    """The demo's settings; ``quick`` shrinks everything for the tests."""
    ecg = dict(n_patients=60 if quick else 400, recordings_per_patient=3, sfreq=100, seconds=5 if quick else 10)
    vol = dict(n_patients=30 if quick else 180, scans_per_patient=2, size=16 if quick else 24)
    return {
        "signal": Plan(
            modality="signal", kind="synthetic_ecg", data=ecg, task="pclr",
            task_cfg={"sfreq": 100.0, "augment": ["wander", "noise", "scale"], "proj_layers": 2, "proj_dim": 64,
                      "proj_hidden": 128},
            encoder="cpc_encoder", encoder_cfg={},
            pretrain={"steps": 6 if quick else 120, "batch_size": 32 if quick else 64, "lr": 1e-3, "warmup_steps": 2 if quick else 10},
            finetune={"steps": 6 if quick else 80, "min_steps": 4 if quick else 30, "eval_every": 3 if quick else 20,
                      "batch_size": 32, "lr": 2e-3, "warmup_steps": 2 if quick else 5},
            scratch_seeds=1 if quick else 3,
        ),
        "volume": Plan(
            modality="volume", kind="synthetic_phantom3d", data=vol, task="rotation", task_cfg={},
            encoder="resnet18_3d", encoder_cfg={"widen_factor": 0.25},
            pretrain={"steps": 4 if quick else 40, "batch_size": 16 if quick else 32, "lr": 1e-3, "warmup_steps": 2 if quick else 5},
            finetune={"steps": 4 if quick else 30, "min_steps": 2 if quick else 15, "eval_every": 2 if quick else 15,
                      "batch_size": 16 if quick else 32, "lr": 2e-3, "warmup_steps": 2 if quick else 5},
            scratch_seeds=1,
        ),
    }


def _log(msg: str, t0: float) -> None:
    print(f"[demo {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def run_modality(plan: Plan, out: Path, *, fractions: Sequence[float], seeds: Sequence[int], n_boot: int,
                 map_method: str, t0: float) -> dict[str, Any]:
    """Pretrain, evaluate, audit and report one modality in its own folder ``out``.

    Returns:
        Timings, result rows, audits and the paths of the modality's harness report.
    """
    from pretext.config import TrainConfig, build_config
    from pretext.data import encoder_for_data, load_data
    from pretext.pipeline import pretrain
    from sslbench.audit import audit_encoder
    from sslbench.evaluate import evaluate
    from sslbench.pretrained import encoder_from_checkpoint
    from sslbench.reports import write_report
    from sslbench.splits import View

    times: dict[str, float] = {}
    tic = time.perf_counter()
    spec = f"{plan.kind}:{out / 'data'}?{urlencode(plan.data)}"
    data = load_data(spec)
    times["data_s"] = time.perf_counter() - tic
    _log(f"{plan.modality}: {plan.kind} {dict(plan.data)}: {', '.join(f'{k} {len(s)}' for k, s in data.splits.items())} "
         f"records, classes {data.class_names}", t0)

    tic = time.perf_counter()
    run_dir = out / "pretrain"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    train = build_config(TrainConfig, {"precision": "32", "progress": False, "log_every": 10,
                                          "ckpt_every": 10_000, "seed": 0, **plan.pretrain})
    _, fit = pretrain(plan.task, plan.encoder, spec, run_dir, train, plan.task_cfg, plan.encoder_cfg,
                      resume=ckpt.is_file())
    times["pretrain_s"] = time.perf_counter() - tic
    losses = [h["loss"] for h in fit.history if "loss" in h]
    _log(f"{plan.modality}: pretrained {plan.task} / {plan.encoder} for {fit.steps} steps"
         + (f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""), t0)

    tic = time.perf_counter()
    common = dict(data=data, protocol="linear", out=out, n_boot=n_boot, finetune=plan.finetune, dataset=plan.kind,
                  extend=True)  # one matrix built in three calls
    # At 100 % the label draw is the whole training split: one seed there; all seeds below 100 %.
    low, full = tuple(f for f in fractions if f < 1), tuple(f for f in fractions if f >= 1)
    df = pd.DataFrame()
    if low:
        evaluate(ckpt, fractions=low, seeds=tuple(seeds), baselines=("random",), **common)
        df = evaluate(ckpt, fractions=low, seeds=tuple(seeds[: plan.scratch_seeds]), baselines=("scratch",), **common)
    if full:
        df = evaluate(ckpt, fractions=full, seeds=tuple(seeds[:1]), baselines=("random", "scratch"), **common)
    df = df[(df["dataset"] == plan.kind) & df["fraction"].isin(fractions) & df["seed"].isin(seeds)]
    times["evaluate_s"] = time.perf_counter() - tic
    _log(f"{plan.modality}: evaluated {len(df)} cells (SSL and random init + linear probe, supervised scratch; "
         f"fractions {list(fractions)}, seeds {list(seeds)} below 100 %, scratch on {plan.scratch_seeds})", t0)

    tic = time.perf_counter()
    view = View(data.splits["val"], np.arange(len(data.splits["val"])), "val")
    enc_ssl, _ = encoder_from_checkpoint(ckpt, data)
    torch.manual_seed(0)
    enc_rand = encoder_for_data(plan.encoder, data, **plan.encoder_cfg)
    audits = {}
    for arm, enc, label in (("ssl", enc_ssl, plan.task), ("random", enc_rand, "random-init")):
        name = f"{plan.kind}_{plan.encoder}_{label}"  # the runner's naming: OUT/audit/NAME.json + PNG
        done = out / "audit" / f"{name}.json"  # written last, after its plots: a rerun reuses it
        if done.is_file():
            audits[arm] = json.loads(done.read_text(encoding="utf-8"))
            continue
        audits[arm] = audit_encoder(enc, view, modality=plan.modality, sfreq=data.sfreq, class_names=data.class_names,
                                    out_dir=out / "audit", name=name, method=map_method, k=10)
        atomic_write_text(done, json.dumps(audits[arm], indent=1, default=float))
    times["audit_s"] = time.perf_counter() - tic
    _log(f"{plan.modality}: audit done (kNN purity other patients: ssl "
         f"{audits['ssl'].get('knn_purity_other_patients', float('nan')):.2f}, random "
         f"{audits['random'].get('knn_purity_other_patients', float('nan')):.2f})", t0)
    report = write_report(out, title=f"medssl demo, {plan.modality}: {plan.kind} · {plan.task} / {plan.encoder}")
    _log(f"{plan.modality}: report {report['html']}", t0)
    return {"plan": dataclasses.asdict(plan), "spec": spec, "times": times, "rows": df, "audits": audits,
            "pretrain_loss": losses, "report": report}


STAMP = "demo_plan.json"
LAYOUT = 2  # 1: both modalities in one folder (before issue 23); 2: one folder per modality


def prepare_out(out: Path, chosen: dict[str, dict[str, Any]], force: bool = False) -> str:
    """Check that ``out`` can take a demo with the ``chosen`` plans before anything is written.

    Returns ``"new"`` (empty or absent folder), ``"reuse"`` (a demo with the same settings: its finished parts are
    kept) or ``"replaced"`` (``force`` and a demo of other settings: its content was deleted).

    Raises:
        UserError: ``out`` holds something that is not a demo (never deleted, even with ``force``), or a demo
            made with other settings or by an older version (without ``force``); the message names the way out.
    """
    from pretext.errors import UserError

    plans_json = json.loads(json.dumps(chosen))
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "new"
    path = out / STAMP
    if not out.is_dir() or not path.is_file():
        raise UserError(f"{str(out)!r} exists and is not a demo folder (no {STAMP}); the demo writes only into a "
                        "new or empty folder or one it made: choose another --out")
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        stamp = {"unreadable": str(err)}
    saved = stamp.get("modalities") if stamp.get("layout") == LAYOUT else None
    if saved is None:
        why = "an older version of the demo (both modalities in one folder)" if "unreadable" not in stamp else \
            f"a demo whose {STAMP} cannot be read ({stamp['unreadable']})"
    else:
        clash = sorted(m for m, plan in plans_json.items() if m in saved and saved[m] != plan)
        if not clash:
            atomic_write_text(path, json.dumps({"layout": LAYOUT, "modalities": {**saved, **plans_json}}, indent=1))
            return "reuse"
        why = f"a demo with other settings for {clash} (e.g. --quick vs full)"
    if not force:
        raise UserError(f"{str(out)!r} holds {why}; nothing was changed. Pass --force to delete it and start "
                        "afresh, or choose another --out")
    trash = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    out.rename(trash)  # one step: the folder is either the old demo or gone, never half of each
    shutil.rmtree(trash)
    return "replaced"


def run_demo(out: str | Path, *, quick: bool = False, modalities: Sequence[str] = ("signal", "volume"),
             seeds: Sequence[int] = (0, 1, 2), fractions: Sequence[float] = (0.01, 0.1, 1.0),
             n_boot: int | None = None, map_method: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` (one sub-folder per modality); see :func:`prepare_out` for an existing ``out``.

    Returns:
        ``{"report": OUT/REPORT.md, "html": OUT/REPORT.html, "results": per modality, "total_s": ...}``.
    """
    from pretext.errors import ConfigError

    t0 = time.perf_counter()
    out = Path(out)
    all_plans = plans(quick)
    bad = [m for m in modalities if m not in all_plans]
    if bad or not modalities:
        raise ConfigError(f"unknown demo modality {bad or list(modalities)}; choose from {sorted(all_plans)}")
    chosen = {m: dataclasses.asdict(all_plans[m]) for m in modalities}
    state = prepare_out(out, chosen, force=force)
    if state == "reuse":
        _log(f"reusing the demo in {out}: finished parts are kept (data, pretraining, cells); --force starts afresh", t0)
    elif state == "replaced":
        _log(f"--force: deleted the previous demo in {out}", t0)
    out.mkdir(parents=True, exist_ok=True)
    if state != "reuse":
        atomic_write_text(out / STAMP, json.dumps({"layout": LAYOUT, "modalities": chosen}, indent=1))
    n_boot = n_boot if n_boot is not None else (50 if quick else 200)
    map_method = map_method or ("pca" if quick else "auto")
    results = {m: run_modality(all_plans[m], out / m, fractions=fractions, seeds=seeds, n_boot=n_boot,
                               map_method=map_method, t0=t0) for m in modalities}
    total = time.perf_counter() - t0
    report = write_demo_report(out, results, total, quick)
    summary = {m: {"times": r["times"], "headline": headline(r["rows"]).to_dict("records"),
                   "report": str(r["report"]["html"])} for m, r in results.items()}
    atomic_write_text(out / "summary.json", json.dumps({"total_s": total, "quick": quick, **summary}, indent=1,
                                                       default=float))
    _log(f"done in {total:.0f} s", t0)
    for m, r in results.items():
        print(f"{m} report: {Path(r['report']['html']).resolve()}")
    print(f"Report: {report.resolve()} (HTML: {(out / 'REPORT.html').resolve()})")
    return {"report": report, "html": out / "REPORT.html", "results": results, "total_s": total}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="python -m sslbench.demo", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny data and budgets (for tests; numbers are not meaningful)")
    p.add_argument("--force", action="store_true",
                   help="if --out holds a demo with other settings, delete it and start afresh (a folder the demo "
                        "did not make is never deleted)")
    p.add_argument("--modalities", default="signal,volume", help="comma list of signal, volume (default: both)")
    p.add_argument("--seeds", default="0,1,2", help="label-draw seeds (default: 0,1,2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1, predictable on a shared machine; 0 = torch's choice)")
    p.add_argument("--map", dest="map_method", choices=["auto", "umap", "tsne", "pca"], default=None,
                   help="2-D map of the audit (default: auto = UMAP, t-SNE without umap-learn; pca with --quick)")
    return p


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = args or build_parser().parse_args(argv)
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    run_demo(args.out, quick=args.quick, modalities=[m.strip() for m in args.modalities.split(",") if m.strip()],
             seeds=[int(s) for s in args.seeds.split(",") if s.strip()], map_method=args.map_method,
             force=args.force)
    return 0


if __name__ == "__main__":
    from pretext.errors import UserError

    try:
        sys.exit(main())
    except UserError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        sys.exit(2)

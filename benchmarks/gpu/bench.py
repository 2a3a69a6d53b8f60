"""One GPU benchmark command: training-step throughput in bf16 and fp32, the Models Genesis chain,
the data-wait fraction of a real ``sslbench pretrain``, peak memory and a ``torch.compile`` line.

    python -m benchmarks.gpu [--device cuda] [--quick] [--out benchmarks/results/gpu]
    python -m benchmarks.gpu --expectations-only      # FLOPs -> expected times (CPU, writes README.md)
    python -m benchmarks.gpu --device cpu --quick      # the same code paths at small sizes, < 1 min

Every measurement is time-boxed (warmup, then N timed steps or ``--item-s`` seconds, with
``torch.cuda.synchronize``); the whole run stops starting new items after ``--budget-s``. After each
item the JSON and Markdown are rewritten, so a run cut short still leaves its results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu.flops import PCIE_GB_S, expectations, flops_at_batch
from benchmarks.gpu.markdown import expectations_markdown, fmt_or_dash, to_markdown
from benchmarks.gpu.measure import (
    Item,
    build_items,
    compile_items,
    measure_chain,
    measure_data_wait,
    measure_h2d,
    measure_item,
)
from pretext.errors import UserError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
EXPECTATIONS_FILE = "expectations.json"


def compute_expectations(items: Sequence[Item], log: Callable[[str], None]) -> dict[str, Any]:
    """FLOPs per step (counted on CPU, fp32 shapes) and bytes per item of each configuration."""
    out = {}
    for it in items:
        t0 = time.perf_counter()
        small = (2, 4)  # batch norm in the heads needs 2
        try:
            fl = flops_at_batch(it.make_task, it.make_batch, it.batch, small)
        except (RuntimeError, UserError, ValueError) as err:
            out[it.name] = {"key": it.key(), "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            log(f"  flops {it.name}: {out[it.name]['error']}")
            continue
        host = it.make_batch(2)
        bpi = sum(v.numel() * v.element_size() for v in host.values()) / 2
        out[it.name] = {"key": it.key(), **fl, **expectations(fl["flops"], it.batch, bpi), "batch": it.batch,
                        "unit": it.unit}
        log(f"  flops {it.name}: {fl['flops'] / 1e12:.3f} TFLOP/step ({time.perf_counter() - t0:.1f}s)")
    return out


def load_expectations(items: Sequence[Item], out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The committed expectations when they match these configurations; else counted now (CPU, seconds each)."""
    for path in (out_dir / EXPECTATIONS_FILE, DEFAULT_OUT / EXPECTATIONS_FILE):
        if path.is_file():
            saved = json.loads(path.read_text()).get("items", {})
            if all(it.name in saved and saved[it.name].get("key") == it.key() for it in items):
                return {it.name: saved[it.name] for it in items}
    log("counting FLOPs on the CPU (no matching expectations.json)")
    return compute_expectations(items, log)


# ------------------------------------------------------------------------------ reporting
def env_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
                            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(),
                            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mem_gb=p.total_memory / 1e9, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --quick or --expectations-only)")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps; on cpu also small sizes (< 1 min)")
    ap.add_argument("--tiny", action="store_true", help="cpu: a subset of the configurations (for the tests)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for gpu.json and gpu.md")
    ap.add_argument("--expectations-only", action="store_true",
                    help="count FLOPs of the GPU configurations on the CPU; write expectations.json and README.md")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only the items whose name has one")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 10, quick 4)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, cpu 1)")
    ap.add_argument("--item-s", dest="item_s", type=float, default=3.0, help="cap on the timed seconds per measurement")
    ap.add_argument("--budget-s", dest="budget_s", type=float, default=420.0,
                    help="start no new item after this many seconds (the run then writes what it has)")
    ap.add_argument("--workers", default="2,4", help="loader workers for the data-wait runs")
    ap.add_argument("--compile-backend", dest="compile_backend", default=None,
                    help="torch.compile backend (default inductor on cuda, eager on cpu)")
    args = ap.parse_args(argv)
    for name in ("steps", "warmup"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "steps" else 0):
            raise UserError(f"--{name} {v} must be >= {1 if name == 'steps' else 0}")
    try:
        args.workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError as err:
        raise UserError(f"--workers {args.workers!r} must be comma-separated integers, e.g. 2,4") from err
    return args


def resolve_device(args: argparse.Namespace) -> torch.device:
    if args.device not in ("cuda", "cpu") and not args.device.startswith("cuda:"):
        raise UserError(f"--device {args.device!r} is not cuda, cuda:N or cpu")
    if args.expectations_only:  # FLOPs are counted on the CPU whatever --device says
        return torch.device("cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} but no CUDA GPU is visible (torch {torch.__version__}, "
                        f"CUDA build {torch.version.cuda}); run this on a GPU machine, or check the script on CPU with "
                        "--device cpu --quick (or count FLOPs with --expectations-only)")
    if args.device == "cpu" and not (args.quick or args.expectations_only):
        raise UserError("--device cpu runs only with --quick (small sizes, the same code paths) or "
                        "--expectations-only; the full sizes need a GPU")
    return torch.device(args.device)


def _selected(items: list[Item], only: str) -> list[Item]:
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [i for i in items if not pats or any(p in i.name for p in pats)]


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    device = resolve_device(args)
    cmd = "python -m benchmarks.gpu " + " ".join(args.argv)
    if args.expectations_only:
        items = _selected(build_items("gpu"), args.only)
        log(f"counting FLOPs of {len(items)} GPU configurations on the CPU")
        exp = compute_expectations(items, log)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / EXPECTATIONS_FILE).write_text(json.dumps({"command": cmd, "items": exp}, indent=1))
        (args.out / "README.md").write_text(expectations_markdown(exp, cmd))
        log(f"wrote {args.out / EXPECTATIONS_FILE} and {args.out / 'README.md'}")
        return {"expectations": exp}

    args.scale = "gpu" if device.type == "cuda" else ("tiny" if args.tiny else "cpu")
    args.steps = args.steps or (4 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else {"gpu": 3, "cpu": 1, "tiny": 0}[args.scale]
    if device.type == "cpu":
        args.steps = min(args.steps, 1)
    backend = args.compile_backend or ("inductor" if device.type == "cuda" else "eager")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    items = _selected(build_items(args.scale), args.only)
    exp = load_expectations(items, args.out, log) if args.scale == "gpu" else compute_expectations(items, log)
    t_start = time.perf_counter()
    res: dict[str, Any] = {"command": cmd, "scale": args.scale, "env": env_info(device), "partial": True,
                           "items": [], "data_wait": [], "compile": []}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu" if device.type == "cuda" else "cpu_quick"

    def save() -> None:
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
        (out / f"{stem}.md").write_text(to_markdown(res))

    def over_budget(reserve_s: float = 0.0) -> bool:
        return time.perf_counter() - t_start > args.budget_s - reserve_s

    # the step items leave time for the chain, the two data-wait runs and the two compile lines after them
    reserve = 150.0 if args.scale == "gpu" else 0.0

    for n, it in enumerate(items, 1):
        row: dict[str, Any] = {"name": it.name, "task": it.task, "encoder": it.encoder, "shape": list(it.shape),
                               "batch": it.batch, "unit": it.unit, "encoder_kw": it.encoder_kw}
        e = exp.get(it.name)
        e = e if e and "error" not in e else None
        if e:
            row["expected"] = {k: e[k] for k in ("flops_per_step", "step_ms_at_peak", "items_per_s_at_peak",
                                                 "items_per_s_at_40pct", "bytes_per_item", "pcie_items_per_s")}
        if over_budget(reserve):
            row["skipped"] = f"budget of {args.budget_s - reserve:.0f}s for the step items spent"
        else:
            with _guard(row, device):
                for prec in ("bf16", "fp32"):
                    row[prec] = measure_item(it, device, prec, args)
                    if e:
                        achieved = e["flops_per_step"] / (row[prec]["step_ms"] / 1e3)
                        row[prec]["achieved_tflops"] = achieved / 1e12
                        if prec == "bf16":
                            row[prec]["measured_over_expected_peak"] = row[prec]["items_per_s"] / e["items_per_s_at_peak"]
                            row[prec]["measured_over_expected_40pct"] = (row[prec]["items_per_s"]
                                                                         / e["items_per_s_at_40pct"])
                row["bf16_over_fp32"] = row["bf16"]["items_per_s"] / row["fp32"]["items_per_s"]
                h = measure_h2d(it, device)
                h["measured_over_expected_pcie"] = h["copy_gb_s"] / PCIE_GB_S
                row["h2d"] = h
        res["items"].append(row)
        b = row.get("bf16", {})
        log(f"[{n}/{len(items)}] {it.name}: bf16 {fmt_or_dash(b.get('items_per_s'))} {it.unit}/s, "
            f"fp32 {fmt_or_dash(row.get('fp32', {}).get('items_per_s'))}, peak {fmt_or_dash(b.get('peak_mem_gb'), '.2f')} GB"
            + (f"  ({row.get('error') or row.get('skipped')})" if "error" in row or "skipped" in row else "")
            + f"  [{time.perf_counter() - t_start:.0f}s]")
        save()

    if _selected_any(args.only, ("chain", "genesis")) and over_budget():
        res["chain"] = {"skipped": "budget spent"}
    elif _selected_any(args.only, ("chain", "genesis")):
        chain: dict[str, Any] = {}
        with _guard(chain, device):
            chain = measure_chain(device, args)
        res["chain"] = chain
        log(f"chain: {json.dumps({k: v for k, v in chain.items() if k != 'shape'}, default=str)[:300]}")
        save()

    if _selected_any(args.only, ("data", "wait")):
        for w in (args.workers_list if args.scale != "tiny" else args.workers_list[:1]):
            if over_budget():
                res["data_wait"].append({"workers": w, "skipped": "budget spent"})
                continue
            dw: dict[str, Any] = {"workers": w}
            with _guard(dw, device):
                dw = measure_data_wait(device, w, args)
            res["data_wait"].append(dw)
            log(f"data wait, {w} workers: {fmt_or_dash(dw.get('data_wait_frac'), '.3f')} "
                f"({fmt_or_dash(dw.get('samples_per_s'))} samples/s) {dw.get('skipped') or dw.get('error') or ''}")
            save()

    if _selected_any(args.only, ("compile",)):
        for it in compile_items(items)[: 2 if args.scale == "gpu" else 1]:  # dynamo on CPU: ~10 s per model
            if over_budget():
                res["compile"].append({"name": it.name, "error": "skipped: budget spent"})
                continue
            row = {"name": it.name, "backend": backend}
            with _guard(row, device):
                eager = measure_item(it, device, "bf16", args)
                comp = measure_item(it, device, "bf16", args, compile_backend=backend)
                row.update(eager_items_per_s=eager["items_per_s"], compiled_items_per_s=comp["items_per_s"],
                           speedup=comp["items_per_s"] / eager["items_per_s"], first_step_s=comp["first_step_s"],
                           peak_mem_gb_compiled=comp["peak_mem_gb"])
            res["compile"].append(row)
            log(f"compile {it.name}: x{fmt_or_dash(row.get('speedup'), '.2f')} {row.get('error', '')}")
            save()
    res["partial"] = False
    res["elapsed_s"] = time.perf_counter() - t_start
    save()
    log(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} in {res['elapsed_s']:.0f}s")
    return res


def _selected_any(only: str, names: Sequence[str]) -> bool:
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return not pats or any(p in n or n in p for p in pats for n in names)


@contextlib.contextmanager
def _guard(row: dict[str, Any], device: torch.device) -> Iterator[None]:
    """One failing item (out of memory, a bug) is recorded in its row; the run goes on."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError, UserError, ValueError) as err:
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        args.argv = argv
        run(args, lambda s: print(s, flush=True))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Item", "build_items", "main", "run"]

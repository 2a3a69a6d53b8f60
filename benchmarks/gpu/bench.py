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
import csv
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu.flops import MAIN_PEAK, PCIE_GB_S, PEAK_TFLOPS, UTILISATION, expectations, flops_at_batch
from pretext.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
EXPECTATIONS_FILE = "expectations.json"


@dataclass(frozen=True)
class Item:
    """One training-step configuration: a registered task on a registered encoder at one input size."""

    name: str
    task: str
    encoder: str
    shape: tuple[int, ...]  # per item: (C, T) signals, (C, D, H, W) volumes
    batch: int
    unit: str  # "windows" or "volumes"
    encoder_kw: dict[str, Any] = field(default_factory=dict)
    task_kw: dict[str, Any] = field(default_factory=dict)
    sfreq: float | None = None

    @property
    def modality(self) -> str:
        from pretext.registry import TASKS

        return str(TASKS.meta(self.task)["modality"])

    def make_task(self) -> torch.nn.Module:
        from pretext.modality import get_modality
        from pretext.registry import create_encoder, create_task

        size = get_modality(self.modality).encoder_kwargs(self.shape, self.sfreq)
        return create_task(self.task, create_encoder(self.encoder, **size, **self.encoder_kw), **self.task_kw)

    def make_batch(self, b: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """A host batch as the loader gives it (float32; PCLR pairs with patient ids)."""
        b = b or self.batch
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(b, *self.shape, generator=g)
        if self.task != "pclr":
            return {"x": x}
        return {"x": x, "x2": x + 0.1 * torch.randn(x.shape, generator=g), "patient": torch.arange(b) // 2}

    def key(self) -> str:
        return json.dumps({"task": self.task, "encoder": self.encoder, "shape": self.shape, "batch": self.batch,
                           "encoder_kw": self.encoder_kw, "task_kw": self.task_kw}, sort_keys=True)


def build_items(scale: str) -> list[Item]:
    """The configurations: ``scale`` "gpu" (the real sizes), "cpu" (small) or "tiny" (a subset, for tests)."""
    if scale == "gpu":
        sig_b, rates = 128, (100, 500)
        vols = [((28, 28, 28), 64), ((64, 64, 64), 16), ((64, 64, 32), 32), ((96, 96, 96), 8)]
        res_kw: dict[str, Any] = {}
        vit_kw: dict[str, Any] = {}
        sig_kw: dict[str, dict[str, Any]] = {}
        cpc_kw: dict[str, Any] = {}
    else:  # the same models, narrow, and 10 s windows at 30 and 60 Hz (CPU bf16 autocast is slow)
        sig_b, rates = 2, (30, 60)
        vols = [((12, 12, 12), 2), ((12, 12, 8), 2)] if scale == "cpu" else [((12, 12, 12), 2)]
        res_kw = {"widen_factor": 0.125}
        vit_kw = {"embed_dim": 24, "depth": 1, "num_heads": 2, "patch_size": 4}
        sig_kw = {"xresnet1d50": {"widths": (8, 8, 16, 16)}, "ribeiro_resnet": {"filters": (8, 8, 16, 16, 16)}}
        cpc_kw = {"horizon": 4}  # 300 samples give 9 latents
    items: list[Item] = []
    for hz in rates if scale != "tiny" else rates[:1]:
        items.append(Item(f"cpc cpc_encoder 12x{10 * hz} ({hz} Hz)", "cpc", "cpc_encoder", (12, 10 * hz), sig_b,
                          "windows", task_kw=cpc_kw, sfreq=float(hz)))
        for enc in ("xresnet1d50", "ribeiro_resnet"):
            items.append(Item(f"pclr {enc} 12x{10 * hz} ({hz} Hz)", "pclr", enc, (12, 10 * hz), sig_b, "windows",
                              encoder_kw=sig_kw.get(enc, {}), task_kw={"sfreq": float(hz)}, sfreq=float(hz)))
    for shape, b in vols:
        side = "x".join(map(str, shape)) if len(set(shape)) > 1 else f"{shape[0]}^3"
        cubic = len(set(shape)) == 1  # 90-degree rotations need a cube: patches get combined without rotation
        combo = {"tasks": ("rotation", "pixel_shuffle") if cubic else ("slice_order", "pixel_shuffle")}
        for task in ("rotation", "slice_order", "pixel_shuffle", "combined"):
            if task == "rotation" and not cubic:
                continue
            items.append(Item(f"{task} resnet18_3d {side}", task, "resnet18_3d", (1, *shape), b, "volumes",
                              encoder_kw=res_kw, task_kw=combo if task == "combined" else {}))
        items.append(Item(f"mae3d vit_3d {side}", "mae3d", "vit_3d", (1, *shape), b, "volumes", encoder_kw=vit_kw))
    if scale == "tiny":  # one item per code path: CPC, PCLR, a classification task, the Genesis chain, MAE
        items = [i for i in items if i.encoder != "xresnet1d50" and i.task not in ("slice_order", "combined")]
    return items


def compile_items(items: Sequence[Item]) -> list[Item]:
    """The two main encoders for the compile line: resnet18_3d (rotation) and xresnet1d50 (PCLR), largest shapes."""
    rot = [i for i in items if i.task == "rotation"]
    pclr = [i for i in items if i.encoder == "xresnet1d50"]
    pick = []
    if rot:
        pick.append(max(rot[:2], key=lambda i: math.prod(i.shape)))  # 64^3 on a GPU
    if pclr:
        pick.append(pclr[-1])
    return pick


# ------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """What the engine's loader does: a (pinned, on CUDA) host batch copied with ``non_blocking``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _pin(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # CUDA only: pinning needs a driver (on a CPU-only machine pin_memory() raises).
    return {k: v.pin_memory() for k, v in batch.items()} if device.type == "cuda" else batch


def time_steps(step: Callable[[], Any], device: torch.device, warmup: int, steps: int, cap_s: float) -> dict[str, float]:
    """``warmup`` calls, then up to ``steps`` timed calls (fewer if ``cap_s`` runs out); seconds per call."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while n < steps:
        step()
        n += 1
        if n % 2 == 0 or n == steps:
            _sync(device)
            if time.perf_counter() - t0 > cap_s:
                break
    _sync(device)
    return {"step_s": (time.perf_counter() - t0) / n, "timed_steps": n, "warmup_s": warm_s}


def train_step_fn(task: torch.nn.Module, host: dict[str, torch.Tensor], device: torch.device,
                  precision: str) -> Callable[[], None]:
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = _to_device(host, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = task(batch, generator=gen)["loss"]
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure_item(item: Item, device: torch.device, precision: str, args: argparse.Namespace,
                 compile_backend: str | None = None) -> dict[str, Any]:
    torch.manual_seed(0)
    _reset_peak(device)
    task = item.make_task().to(device)
    task.train()
    t_compile = None
    if compile_backend:
        logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph breaks at .item() are expected
        task = torch.compile(task, backend=compile_backend)
    host = _pin(item.make_batch(), device)
    step = train_step_fn(task, host, device, precision)
    if compile_backend:
        t0 = time.perf_counter()
        step()
        _sync(device)
        t_compile = time.perf_counter() - t0
    t = time_steps(step, device, args.warmup, args.steps, args.item_s)
    out = {"precision": precision, "step_ms": 1e3 * t["step_s"], f"{item.unit}_per_s": item.batch / t["step_s"],
           "items_per_s": item.batch / t["step_s"], "timed_steps": t["timed_steps"], "warmup_s": t["warmup_s"],
           "peak_mem_gb": _peak_gb(device)}
    if t_compile is not None:
        out.update(compile_backend=compile_backend, first_step_s=t_compile)
    del task, step
    return out


def measure_h2d(item: Item, device: torch.device, reps: int = 20) -> dict[str, Any]:
    host = _pin(item.make_batch(), device)
    nbytes = sum(v.numel() * v.element_size() for v in host.values())
    t = time_steps(lambda: _to_device(host, device), device, 2, reps, 2.0)
    return {"bytes_per_item": nbytes / item.batch, "batch_bytes": nbytes, "pinned": device.type == "cuda",
            "copy_ms": 1e3 * t["step_s"], "copy_gb_s": nbytes / t["step_s"] / 1e9,
            "copy_vs_pcie": nbytes / t["step_s"] / 1e9 / PCIE_GB_S}


# ------------------------------------------------------------------------- the other parts
def measure_chain(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Models Genesis chain (flip, shuffle, Bezier, painting; all probabilities 1): device tensor path vs CPU numba."""
    from volssl.tasks.pixel_shuffle import PixelShuffle, genesis_corrupt

    b, shape, blocks = (32, (64, 64, 32), 10000) if args.scale == "gpu" else (2, (16, 16, 8), 500)
    cfg = PixelShuffle.Config(local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, num_blocks=blocks)
    out: dict[str, Any] = {"batch": b, "shape": list(shape), "num_blocks": blocks}
    for name, dev, backend in (("tensor_path", device, "torch"), ("cpu_numba", torch.device("cpu"), "numba")):
        x = torch.rand(b, 1, *shape, generator=torch.Generator().manual_seed(0)).to(dev)
        g = torch.Generator().manual_seed(0)
        _reset_peak(dev)
        t = time_steps(lambda x=x, g=g, dev=dev, backend=backend: genesis_corrupt(x, g, cfg, backend=backend),
                       dev, 1, args.steps, args.item_s)
        out[name] = {"device": str(dev), "cubes_per_s": b / t["step_s"], "batch_ms": 1e3 * t["step_s"],
                     "timed_steps": t["timed_steps"], "peak_mem_gb": _peak_gb(dev)}
    out["tensor_over_numba"] = out["tensor_path"]["cubes_per_s"] / out["cpu_numba"]["cubes_per_s"]
    return out


def data_spec(scale: str) -> str | None:
    root = SHARED / "adrenalmnist3d"
    name = "adrenalmnist3d_64.npz" if scale == "gpu" else "adrenalmnist3d.npz"
    return f"medmnist3d:{root / name}" if (root / name).is_file() else None


def measure_data_wait(device: torch.device, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """A real ``sslbench pretrain`` (rotation / resnet18_3d on AdrenalMNIST3D); the engine logs data-wait."""
    from benchmarks.cli import main as sslbench

    spec = data_spec(args.scale)
    if spec is None:
        return {"skipped": f"no shipped data at {SHARED / 'adrenalmnist3d'} (set MEDSSL_SHARED_DATA)"}
    gpu = args.scale == "gpu"
    steps, batch = (120, 32) if gpu else (4, 2)
    log_every = 10 if gpu else 1
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "run"
        argv = ["pretrain", "--task", "rotation", "--encoder", "resnet18_3d", "--data", spec, "--out", str(out),
                "--steps", str(steps), "--batch-size", str(batch), "--num-workers", str(workers),
                "--precision", "bf16-mixed" if device.type == "cuda" else "32",
                "--accelerator", device.type, "--log-every", str(log_every), "--ckpt-every", str(10 * steps),
                "--warmup-steps", "1", "--progress", "false"]
        if not gpu:
            argv += ["--encoder.widen_factor", "0.25"]
        _reset_peak(device)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            rc = sslbench(argv)
        wall = time.perf_counter() - t0
        if rc != 0:
            return {"error": f"sslbench pretrain exited {rc}", "command": "sslbench " + " ".join(argv)}
        with (out / "metrics.csv").open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("data_wait_frac")]
    steady = rows[1:] or rows  # the first window holds worker start-up
    waits = [float(r["data_wait_frac"]) for r in steady]
    rates = [float(r["samples_per_s"]) for r in steady]
    return {"command": "sslbench " + " ".join(argv).replace(td, "$TMP"), "workers": workers, "steps": steps,
            "batch": batch, "data_wait_frac": sum(waits) / len(waits), "samples_per_s": sum(rates) / len(rates),
            "wall_s": wall, "peak_mem_gb": _peak_gb(device), "log_windows": len(steady)}


# --------------------------------------------------------------------------- expectations
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


def _f(v: Any, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def to_markdown(res: dict[str, Any]) -> str:
    e = res["env"]
    L = ["# GPU benchmark", "", f"Command: `{res['command']}`", "",
         f"Device: {e.get('gpu', e['device'])}; torch {e['torch']}" + (f", CUDA {e['cuda']}" if "cuda" in e else "")
         + f"; {e['time_utc']}. Scale: {res['scale']}." + (" Partial: the run stopped early." if res.get("partial") else ""),
         "", "## Training steps (forward, backward, AdamW; pinned batch copied non_blocking each step)", "",
         "| configuration | batch | bf16 items/s | fp32 items/s | bf16/fp32 | bf16 TFLOP/s | measured/expected (40 % peak) "
         "| peak GB bf16 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["items"]:
        b, f = r.get("bf16", {}), r.get("fp32", {})
        if "error" in r or "skipped" in r:
            L.append(f"| {r['name']} | {r['batch']} | {r.get('error') or r.get('skipped')} | | | | | |")
            continue
        L.append(f"| {r['name']} | {r['batch']} | {_f(b.get('items_per_s'))} | {_f(f.get('items_per_s'))} | "
                 f"{_f(r.get('bf16_over_fp32'), '.2f')} | {_f(b.get('achieved_tflops'))} | "
                 f"{_f(b.get('measured_over_expected_40pct'), '.2f')} | {_f(b.get('peak_mem_gb'), '.2f')} |")
    h2d = [(r["name"], r["h2d"]) for r in res["items"] if "h2d" in r]
    if h2d:
        L += ["", "## Host to device (" + ("pinned" if h2d[0][1]["pinned"] else "unpinned") + ", non_blocking)", "",
              "| configuration | bytes/item | batch copy ms | GB/s | of PCIe Gen5 x16 (64 GB/s) |", "|---|---:|---:|---:|---:|"]
        for name, h in h2d:
            L.append(f"| {name} | {h['bytes_per_item']:.0f} | {h['copy_ms']:.3f} | {h['copy_gb_s']:.1f} | "
                     f"{h['copy_vs_pcie']:.2f} |")
    c = res.get("chain")
    if c and "tensor_path" in c:
        L += ["", f"## Models Genesis chain, batch {c['batch']}, {'x'.join(map(str, c['shape']))}, "
              f"{c['num_blocks']} blocks, all probabilities 1", "",
              f"Tensor path on {c['tensor_path']['device']}: {c['tensor_path']['cubes_per_s']:.1f} cubes/s "
              f"(peak {_f(c['tensor_path']['peak_mem_gb'], '.2f')} GB); CPU numba path: "
              f"{c['cpu_numba']['cubes_per_s']:.1f} cubes/s; ratio {c['tensor_over_numba']:.2f}."]
    if res.get("data_wait"):
        L += ["", "## Data wait in a real `sslbench pretrain`", "", "| workers | data-wait fraction | samples/s | peak GB |",
              "|---:|---:|---:|---:|"]
        for w in res["data_wait"]:
            if "data_wait_frac" in w:
                L.append(f"| {w['workers']} | {w['data_wait_frac']:.3f} | {w['samples_per_s']:.1f} | "
                         f"{_f(w['peak_mem_gb'], '.2f')} |")
            else:
                L.append(f"| {w.get('workers', '-')} | {w.get('skipped') or w.get('error')} | | |")
        cmd = next((w["command"] for w in res["data_wait"] if "command" in w), None)
        if cmd:
            L += ["", f"Command (workers varied): `{cmd}`"]
    if res.get("compile"):
        L += ["", "## torch.compile (bf16)", ""]
        for r in res["compile"]:
            if "speedup" in r:
                L.append(f"- {r['name']}: eager {r['eager_items_per_s']:.1f} -> compiled {r['compiled_items_per_s']:.1f}"
                         f" items/s (x{r['speedup']:.2f}; backend {r['backend']}, first step {r['first_step_s']:.1f} s)")
            else:
                L.append(f"- {r['name']}: {r.get('error')}")
    return "\n".join(L) + "\n"


def expectations_markdown(exp: dict[str, Any], command: str) -> str:
    peak = PEAK_TFLOPS[MAIN_PEAK]
    L = ["# GPU benchmark: expectations on paper", "",
         f"Generated by `{command}` (FLOPs counted on the CPU from the models with "
         "`torch.utils.flop_counter.FlopCounterMode`, forward + backward of one training step; the AdamW update is "
         "elementwise and not counted). Volume steps are counted at batch 2 and 3 and extended linearly to the batch "
         "(per-sample work); signal steps at batch 2, 4 and 8 and extended by the quadratic through them (the "
         "contrastive scores grow as batch^2).", "",
         f"Peak: {MAIN_PEAK} {peak:.0f} TFLOP/s (H100 PCIe ~{PEAK_TFLOPS['H100 PCIe bf16 dense']:.0f}); "
         f"'40 %' is {UTILISATION:.0%} of that peak, a good utilisation for convolutional nets. "
         f"PCIe: Gen5 x16 ~{PCIE_GB_S:.0f} GB/s one way. A GPU run (`python -m benchmarks.gpu`) reports measured / "
         "expected beside each figure in `gpu.json`.", "",
         "| configuration | batch | GFLOP/step | ms/step at peak | items/s at peak | items/s at 40 % | bytes/item "
         "| PCIe ms/step | items/s PCIe bound |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in exp.items():
        if "error" in e:
            L.append(f"| {name} | | {e['error']} | | | | | | |")
            continue
        L.append(f"| {name} | {e['batch']} | {e['flops_per_step'] / 1e9:,.1f} | {e['step_ms_at_peak']:.3f} | "
                 f"{_f(e['items_per_s_at_peak'], ',.0f')} | {_f(e['items_per_s_at_40pct'], ',.0f')} | "
                 f"{e['bytes_per_item']:,.0f} | {e['pcie_ms_per_step']:.3f} | {_f(e['pcie_items_per_s'], ',.0f')} |")
    L += ["", "Reading: where items/s at 40 % exceeds the PCIe bound, the host-to-device copy (or the loader feeding it) "
          "limits the step, not the GPU; the data-wait fraction of the real `sslbench pretrain` says which. "
          "resnet18_3d's `stem=\"auto\"` keeps full resolution (3^3 stride-1 stem) when the smallest side is < 48, so "
          "28^3 and 64x64x32 cost more per voxel than 64^3 and 96^3.", "",
          "## CUDA-only branches (not reached by the CPU tests)", "",
          "- `pin_memory()` of the host batch and the engine's `pin_memory=True` loader: pinning needs an NVIDIA "
          "driver (on a CPU-only machine `pin_memory()` raises). On CPU the same copy runs unpinned with "
          "`non_blocking=True`.",
          "- `torch.cuda.synchronize`, `reset_peak_memory_stats` / `max_memory_allocated`: CUDA calls; CPU runs "
          "report peak memory as null.",
          "- `torch.compile` with the inductor backend: on CPU the tests use `backend=\"eager\"` (dynamo traces the "
          "task; inductor's C++/Triton code generation takes minutes on a 2-core machine). `TrainConfig.compile` (the CLI's "
          "`--compile true`) is tested to reach `torch.compile` with the task.",
          "- `precision bf16-mixed` in the engine on CUDA (Fabric's bf16 plugin) and `16-mixed` (GradScaler): CPU "
          "tests run bf16 autocast on CPU; `16-mixed` is refused on CPU by design.",
          "- The local pixel shuffle's tensor path runs on CPU in the tests (`backend=\"torch\"`), the same code as on "
          "the GPU; only its speed differs.", "",
          "## Running it on a lent GPU", "",
          "The lent machine cannot reach a registry, so `make install` cannot build the venv there; its `python3` "
          "already holds torch, lightning, numba, einops, pandas, scipy and tensorboard. Here, download the "
          "missing pure-Python wheels (monai, nibabel, torchio, wfdb, mne, pytorch-ignite, jsonschema and its "
          "dependencies, ...) into a git-excluded `.whl/` and the data into a git-excluded `.gpu_data/` "
          "(`cp -r ../shared/data/adrenalmnist3d .gpu_data/`), then one `run` call with `carry: [\".whl\", "
          "\".gpu_data\"]` and `timeout_s` 600:", "",
          "```bash",
          "python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
          "export PYTHONPATH=/tmp/site:. MEDSSL_MODALITIES=volssl.modality,signalssl.modality MEDSSL_SHARED_DATA=.gpu_data PYTHONUNBUFFERED=1 && mkdir -p $OUT/gpu && "
          "python3 -m benchmarks.gpu --out $OUT/gpu 2>&1 | tee $OUT/gpu/log    # < 8 min on an H200",
          "# only part: --only cpc,mae3d    fewer steps: --quick    wall limit: --budget-s 300",
          "```", "",
          "With a venv that can be built (a GPU machine with a registry): `make gpu-bench`. Then copy `gpu.json` and "
          "`gpu.md` into `benchmarks/results/gpu/` and commit them (JSON written after each item: a run cut short "
          "still leaves its figures, marked partial).", ""]
    return "\n".join(L)


# ------------------------------------------------------------------------------------- main
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
        log(f"[{n}/{len(items)}] {it.name}: bf16 {_f(b.get('items_per_s'))} {it.unit}/s, "
            f"fp32 {_f(row.get('fp32', {}).get('items_per_s'))}, peak {_f(b.get('peak_mem_gb'), '.2f')} GB"
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
            log(f"data wait, {w} workers: {_f(dw.get('data_wait_frac'), '.3f')} "
                f"({_f(dw.get('samples_per_s'))} samples/s) {dw.get('skipped') or dw.get('error') or ''}")
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
            log(f"compile {it.name}: x{_f(row.get('speedup'), '.2f')} {row.get('error', '')}")
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

"""The GPU benchmark's items and measurements: what one training step is (:class:`Item`, :func:`build_items`)
and how a step, a host-to-device copy, the Models Genesis chain and the data wait of a real run are timed
(each time-boxed, with ``torch.cuda.synchronize``). The command is :mod:`benchmarks.gpu.bench`."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu.flops import PCIE_GB_S

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


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
    from sslbench.cli import main as sslbench

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

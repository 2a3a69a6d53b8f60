"""``fit``: the training loop shared by every pretext task and by fine-tuning.

Built on Lightning Fabric, which gives devices, precision plugins (bf16 autocast, fp16 with
a GradScaler), DDP/FSDP strategies and the torchrun / SLURM / subprocess launchers. Around it
this module adds what SSL pretraining needs: gradient accumulation, clipping, warmup+cosine LR, optional EMA of
weights, a non-finite-loss guard, deterministic resumable data order, per-step seeded views, atomic checkpoints,
logs, and step hooks (EMA teacher, online monitor: :mod:`pretext.engine.hooks`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pretext.atomic import remove_partial_writes
from pretext.config import TrainConfig, to_dict, to_yaml
from pretext.engine.checkpoint import (
    atomic_write_text,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    save_safetensors,
)
from pretext.engine.fabric import make_fabric
from pretext.engine.hooks import engine_hooks, restore_hooks, run_hooks
from pretext.engine.monitor import RunLogger, Throughput, progress_bar
from pretext.engine.precision import resolve_accelerator, resolve_precision
from pretext.engine.resume import CKPT_NAME, check_out_dir, check_same_run
from pretext.engine.sampler import ResumableBatchSampler, step_generator
from pretext.engine.schedule import WarmupCosine
from pretext.errors import NonFiniteLossError, UserError, raise_preempted
from pretext.sampling import pretrain_stream


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per logged step (step, loss, lr, task scalars, samples_per_s, data_wait_frac).
        evals: one dict per ``evaluate`` call (step plus the callback's metrics).
        steps: the last optimizer step reached.
        nonfinite_skipped: optimizer steps skipped because the loss was not finite.
        out_dir: the run folder (None for in-memory runs).
        elapsed_s: wall time of this call.
    """

    history: list[dict[str, float]]
    evals: list[dict[str, float]]
    steps: int
    nonfinite_skipped: int
    out_dir: Path | None
    elapsed_s: float


def param_groups_with_decay(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels, none on biases, norms and embeddings' 1-D params."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") or "pos_embed" in name or "token" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def fit(
    task: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    run_config: dict[str, Any] | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
    param_groups: Sequence[dict[str, Any]] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> FitResult:
    """Train ``task`` (any module whose ``forward(batch, generator)`` returns ``{"loss": ...}``).

    Args:
        task: a :class:`pretext.base.PretextTask` or any module with that forward contract.
        dataset: a split (it says how it is sampled and paired: :mod:`pretext.sampling`) or any dataset of dicts.
        cfg: engine settings.
        out_dir: run folder for ``config.yaml``, ``metrics.csv``, TensorBoard logs,
            ``checkpoints/last.ckpt`` and ``encoder.safetensors``; None trains in memory.
        resume: continue from ``out_dir/checkpoints/last.ckpt``; the result equals an
            uninterrupted run (same data order, same views, same RNG and optimizer state).
        run_config: the resolved configuration to embed in ``config.yaml`` and checkpoints
            (task, task_cfg, encoder, encoder_cfg, data, ...); also checked on resume.
        evaluate: called as ``evaluate(module)`` (eval mode, no grad) every ``eval_every`` steps
            and at the end, on rank 0; its dict is logged with prefix ``val/``.
        param_groups: optimizer groups instead of the default decay/no-decay split; a group's
            ``lr_scale`` multiplies the peak LR (layer-wise LR decay).
        collate_fn: DataLoader collate function.

    Returns:
        A :class:`FitResult`.

    Raises:
        UserError: bad output folder / resume mismatch; ConfigError: a precision the device
        cannot do; NonFiniteLossError: ``cfg.max_nonfinite`` non-finite losses in a row.
    """
    t_start = time.perf_counter()
    run_config = {**_recorded_config(task), **(run_config or {})}
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = check_out_dir(out, resume) if out is not None else None
    if resume and out is None:
        raise UserError("resume=True needs an out_dir holding the run to continue")

    precision = resolve_precision(cfg.precision, resolve_accelerator(cfg.accelerator))
    fabric = make_fabric(cfg)
    resolved = {**run_config, "train": {**to_dict(cfg), "precision": str(precision)}}

    state: dict[str, Any] | None = None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        check_same_run(state.get("run_config", {}), resolved, ckpt_path)
        task.load_state_dict(state["model"])
    start_step = int(state["step"]) if state else 0
    if state is not None and start_step >= cfg.steps:  # a finished run: nothing to train, nothing rewritten
        return FitResult([], [], start_step, int((state.get("nonfinite") or {}).get("skipped", 0)), out,
                         time.perf_counter() - t_start)

    hooks = engine_hooks(task, dataset, cfg, fabric.is_global_zero)  # EMA teacher, online monitor
    stream = pretrain_stream(dataset, task, seed=cfg.seed)  # the split's sampling, the task's pairing; draws from seed
    dataset, collate_fn = stream.dataset, collate_fn or stream.collate_fn
    groups = [dict(g) for g in param_groups] if param_groups is not None else param_groups_with_decay(task, cfg.weight_decay)
    for g in groups:
        g["lr"] = cfg.lr * float(g.pop("lr_scale", 1.0))
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr))

    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(task, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        ema.to(fabric.device)

    module = torch.compile(task) if cfg.compile else task
    model, optimizer = fabric.setup(module, optimizer)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for fn in scheduler.lr_lambdas:  # the schedule follows this call's --steps, not the saved one
            if isinstance(fn, WarmupCosine):
                fn.__init__(cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)  # type: ignore[misc]
        if state.get("scaler"):
            fabric.strategy.precision.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        restore_rng(state["rng"])
        restore_hooks(hooks, state)

    sampler = ResumableBatchSampler(len(cast(Sized, dataset)), cfg.batch_size, seed=cfg.seed, start=start_step * cfg.accumulate,
                                    rank=fabric.global_rank, world_size=fabric.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_fn,
                        pin_memory=fabric.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed),
                        persistent_workers=cfg.num_workers > 0)
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    batches = iter(loader)

    is_main = fabric.is_global_zero
    if out is not None and is_main:
        for folder in (out, out / "checkpoints"):  # partial copies a killed writer left (the run folder is ours)
            remove_partial_writes(folder)
        atomic_write_text(out / "config.yaml", to_yaml(resolved))
    nonfinite = dict(state.get("nonfinite", {"skipped": 0, "consecutive": 0})) if state else {"skipped": 0, "consecutive": 0}
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    window: dict[str, list[float]] = defaultdict(list)
    meter = Throughput()

    def checkpoint(step: int) -> None:
        if out is None:
            return
        if is_main:
            save_checkpoint(out / "checkpoints" / CKPT_NAME, {
                "model": _unwrap(task).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": fabric.strategy.precision.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": capture_rng(),
                "step": step,
                "nonfinite": dict(nonfinite),
                "hooks": {h.name: h.state_dict() for h in hooks},
                "run_config": resolved,
            })
        fabric.barrier()

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        model.eval()
        with torch.no_grad():
            metrics = evaluate(_unwrap(task)) if is_main else {}
        model.train()
        metrics = fabric.broadcast(metrics, src=0)
        evals.append({"step": step, **metrics})
        logger.log(step, {f"val/{k}": v for k, v in metrics.items()})

    logger = RunLogger(out, start_step=start_step, enabled=is_main)
    bar = progress_bar(cfg.steps, start_step, cfg.progress and is_main)
    try:  # the progress bar and the TensorBoard writer thread are closed on every way out
        model.train()
        step = start_step
        previous_sigterm = _install_sigterm()
        try:
            while step < cfg.steps:
                bad = False
                for a in range(cfg.accumulate):
                    t0 = time.perf_counter()
                    batch = next(batches)
                    meter.add(_batch_size(batch) * fabric.world_size, time.perf_counter() - t0)
                    gen = step_generator(cfg.seed, step * cfg.accumulate + a, fabric.global_rank)
                    with fabric.no_backward_sync(model, enabled=a < cfg.accumulate - 1):
                        outputs = model(batch, generator=gen)
                        loss = outputs["loss"].float()
                        flag = fabric.all_reduce((~torch.isfinite(loss.detach())).float(), reduce_op="sum")
                        if float(flag) > 0:
                            bad = True
                            break
                        fabric.backward(loss / cfg.accumulate)
                    for k, v in outputs.items():
                        if torch.is_tensor(v) and v.numel() == 1:
                            window[k].append(float(v.detach().float()))
                if bad:
                    optimizer.zero_grad(set_to_none=True)
                    nonfinite["skipped"] += 1
                    nonfinite["consecutive"] += 1
                    if nonfinite["consecutive"] >= cfg.max_nonfinite:
                        raise NonFiniteLossError(
                            f"loss was non-finite for {nonfinite['consecutive']} steps in a row (at step {step}); "
                            "lower --lr, use --precision 32 or bf16-mixed instead of 16-mixed, or check the data for NaN"
                        )
                else:
                    nonfinite["consecutive"] = 0
                    if cfg.clip_grad > 0:
                        gn = fabric.clip_gradients(model, optimizer, max_norm=cfg.clip_grad, error_if_nonfinite=False)
                        if gn is not None:
                            window["grad_norm"].append(float(gn))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update_parameters(_unwrap(task))
                    run_hooks(hooks, step + 1, _unwrap(task), window)
                with warnings.catch_warnings():  # a skipped step still advances the schedule
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    row: dict[str, Any] = {k: sum(v) / len(v) for k, v in window.items() if v}
                    row.update(meter.read(), lr=scheduler.get_last_lr()[0], nonfinite_skipped=nonfinite["skipped"])
                    window.clear()
                    meter.reset()
                    history.append({"step": step, **row})
                    logger.log(step, row)
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", sps=f"{row['samples_per_s']:.1f}",
                                    wait=f"{row['data_wait_frac']:.0%}")
                if eval_every and step % eval_every == 0 and step != cfg.steps:
                    run_eval(step)
                if step % cfg.ckpt_every == 0 and step != cfg.steps:
                    checkpoint(step)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Preempted) through the handler installed below
            checkpoint(step)  # a step boundary: the run resumes exactly from here
            if out is not None:
                err.checkpoint, err.step = str(out / "checkpoints" / CKPT_NAME), step  # type: ignore[attr-defined]
            raise
        finally:
            _restore_sigterm(previous_sigterm)
        run_eval(step)
        checkpoint(step)
        if out is not None and is_main:
            encoder = getattr(_unwrap(task), "encoder", None)
            meta = {"run_config": json.dumps(resolved, default=str)}
            if encoder is not None:
                save_safetensors(out / "encoder.safetensors", encoder.state_dict(), meta)
                if ema is not None:
                    ema_encoder = getattr(ema.module, "encoder", None)
                    if ema_encoder is not None:
                        save_safetensors(out / "encoder_ema.safetensors", ema_encoder.state_dict(), meta)
            summary = {"steps": step, "nonfinite_skipped": nonfinite["skipped"], "elapsed_s": time.perf_counter() - t_start,
                       "final": history[-1] if history else {}, "precision": str(precision)}
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
        return FitResult(history, evals, step, nonfinite["skipped"], out, time.perf_counter() - t_start)
    finally:
        bar.close()
        logger.close()


def _install_sigterm() -> Any:
    """SIGTERM (SLURM / Kubernetes pre-emption) raises :class:`Preempted`, which checkpoints like Ctrl-C.

    Only the main thread can install handlers; elsewhere (a thread running ``fit``) SIGTERM keeps its handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_preempted)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _recorded_config(task: nn.Module) -> dict[str, Any]:
    """What ``create_task`` / ``create_encoder`` recorded about how ``task`` and its encoder were built."""
    out: dict[str, Any] = {}
    encoder = getattr(task, "encoder", None)
    for part in (encoder, task):
        info = getattr(part, "medssl_config", None) if part is not None else None
        if isinstance(info, dict):
            out.update({k: v for k, v in info.items() if v is not None})
    return out


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "_orig_mod", module)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if torch.is_tensor(v) and v.ndim > 0:
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return int(batch[0].shape[0])
    return 0

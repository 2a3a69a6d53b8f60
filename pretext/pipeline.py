"""One-call pretraining: data spec -> sized encoder -> task -> ``fit`` (what ``sslbench pretrain`` runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pretext.config import TrainConfig, build_config, to_dict
from pretext.data import encoder_for_data, load_data
from pretext.engine.loop import FitResult, fit
from pretext.engine.resume import CKPT_NAME
from pretext.errors import ConfigError
from pretext.registry import ENCODERS, TASKS, create_task
from pretext.runfolder import data_fingerprint, hold


def seed_everything(seed: int) -> None:
    from lightning_fabric.utilities.seed import seed_everything as _seed

    _seed(seed, verbose=False)


def default_encoder(task: str, modality: str) -> str:
    """The encoder a task uses when none is named: the task's own ``encoder=`` (``mae3d`` needs tokens:
    ``vit_3d``), else the encoder registered with ``default=True`` for the modality."""
    named = TASKS.meta(task).get("encoder")
    if named:
        return str(named)
    defaults = ENCODERS.names(modality=modality, default=True)
    if not defaults:
        raise ConfigError(f"no default encoder is registered for {modality} data; pass --encoder, one of: "
                          f"{', '.join(ENCODERS.names(modality=modality))}")
    return defaults[0]


def build_run(task: str, encoder: str | None, data: str, task_cfg: dict[str, Any] | None = None,
              encoder_cfg: dict[str, Any] | None = None, seed: int = 0, split: str = "train",
              log: Callable[[str], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``data``, build encoder and task, and return ``(task_module, dataset, run_config)``.

    ``encoder=None`` picks :func:`default_encoder` (and says so through ``log``).

    Raises:
        ConfigError: unknown names/options, or a task whose modality differs from the data's.
    """
    task_cfg, encoder_cfg = dict(task_cfg or {}), dict(encoder_cfg or {})
    task_cls = TASKS.get(task)
    ds = load_data(data)
    if not encoder:
        encoder = default_encoder(task, ds.modality)
        if log is not None:
            log(f"no encoder given: using {encoder!r}, the default for {task!r} on {ds.modality} data "
                "(choose another with --encoder; sslbench list encoders)")
    t_mod = TASKS.meta(task).get("modality") or getattr(task_cls, "modality", "")
    if t_mod and t_mod not in (ds.modality, "any"):
        raise ConfigError(f"task {task!r} is for {t_mod} data but {data!r} is {ds.modality}; "
                          f"pick one of: {', '.join(TASKS.names(modality=ds.modality))}")
    if split not in ds.splits:
        raise ConfigError(f"data {data!r} has no split {split!r}; it has {sorted(ds.splits)}")
    seed_everything(seed)
    enc = encoder_for_data(encoder, ds, **encoder_cfg)
    module = create_task(task, enc, **task_cfg)
    check = getattr(type(module), "check_input", None)
    if callable(check):
        check(module.cfg, ds.input_shape)
    run_config = run_config_for(task, to_dict(module.cfg) if module.cfg is not None else task_cfg, encoder,
                                encoder_cfg, ds, seed)
    return module, ds.splits[split], run_config


def run_config_for(task: str, task_cfg: dict[str, Any], encoder: str, encoder_cfg: dict[str, Any], data: Any,
                   seed: int = 0) -> dict[str, Any]:
    """The ``run_config`` a checkpoint embeds: what rebuilds its encoder for ``data`` (an :class:`SSLData`)."""
    return {
        "task": task,
        "task_cfg": dict(task_cfg),
        "encoder": encoder,
        "encoder_cfg": {**{k: v for k, v in data.encoder_kwargs().items() if v is not None}, **encoder_cfg},
        "data": data.source,
        "data_fingerprint": data_fingerprint(data),
        "modality": data.modality,
        "input_shape": list(data.input_shape),
        "sfreq": data.sfreq,
        "channel_names": list(data.channel_names),
        "seed": seed,
    }


def pretrain(task: str, encoder: str | None, data: str, out: str | Path | None,
             train: TrainConfig | dict[str, Any] | None = None, task_cfg: dict[str, Any] | None = None,
             encoder_cfg: dict[str, Any] | None = None, resume: bool = False,
             log: Callable[[str], None] | None = None) -> tuple[Any, FitResult]:
    """Pretrain ``task`` with ``encoder`` on ``data``; returns ``(task_module, FitResult)``.

    ``task_module.encoder`` is the pretrained encoder; ``out/encoder.safetensors`` holds its weights and
    ``out/checkpoints/last.ckpt`` the full resumable state with the resolved config.

    ``out`` is owned by this process while it trains (:func:`pretext.runfolder.hold`): another process on the
    same folder is refused, and a user error before the first checkpoint leaves nothing behind.
    """
    train_cfg = train if isinstance(train, TrainConfig) else build_config(TrainConfig, train or {})
    module, dataset, run_config = build_run(task, encoder, data, task_cfg, encoder_cfg, seed=train_cfg.seed, log=log)
    if out is None:
        return module, fit(module, dataset, train_cfg, out_dir=out, resume=resume, run_config=run_config)
    with hold(out, "pretrain", keep=(f"checkpoints/{CKPT_NAME}", "encoder.safetensors")):
        result = fit(module, dataset, train_cfg, out_dir=out, resume=resume, run_config=run_config)
    return module, result


__all__ = ["build_run", "default_encoder", "pretrain", "run_config_for", "seed_everything", "to_dict"]

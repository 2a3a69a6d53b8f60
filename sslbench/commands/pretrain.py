"""``sslbench pretrain``: pretrain a task on a data spec through the shared engine.

Task options come as ``--task.FIELD VALUE`` (fields of the task's ``Config``), encoder options
as ``--encoder.KW VALUE``; ``--config run/config.yaml`` replays a resolved config, and
``--resume`` with only ``--out`` continues a run with the config it saved.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pretext.config import (
    TrainConfig,
    build_config,
    config_fields,
    parse_overrides,
    read_value,
    read_yaml_mapping,
)
from pretext.errors import ConfigError, UserError
from pretext.pipeline import pretrain

_FLAG_FIELDS = {"steps", "batch_size", "precision", "lr", "seed"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain a pretext task on a data spec",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sslbench pretrain --task rotation --encoder resnet18_3d "
               "--data medmnist3d:../shared/data/adrenalmnist3d/adrenalmnist3d.npz --steps 200 --out runs/rot",
    )
    p.add_argument("--task", help="registered task name (sslbench list tasks)")
    p.add_argument("--encoder", help="registered encoder name (sslbench list encoders); default: the task's or the "
                                     "data modality's default (resnet18_3d, vit_3d for mae3d, cpc_encoder)")
    p.add_argument("--data", help="data spec KIND:PATH[?opt=val&...] (sslbench list data)")
    p.add_argument("--out", required=True, help="run folder (config.yaml, metrics.csv, checkpoints/, tensorboard/)")
    p.add_argument("--config", help="YAML run config (e.g. a previous run's config.yaml); flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    # values are strings here: TrainConfig validates them all (one message naming the field and the fix)
    p.add_argument("--steps", help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", dest="batch_size", help="samples per device per micro-batch (default 32)")
    p.add_argument("--precision", help="auto, bf16-mixed, 16-mixed or 32 (default auto)")
    p.add_argument("--lr", help="peak learning rate (default 0.001)")
    p.add_argument("--seed", help="seed of data order, views and initialisation (default 0)")
    g = p.add_argument_group("engine options (TrainConfig)")
    for name, default in config_fields(TrainConfig).items():
        if name not in _FLAG_FIELDS:
            g.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar=name.upper(),
                           help=f"(default: {default!r})")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    base: dict[str, Any] = {}
    if args.resume and not args.config and not (out / "config.yaml").is_file():
        raise UserError(f"--resume given but {str(out)!r} holds no run (no config.yaml); drop --resume to start a "
                        "new run there, or pass the --out of the run to continue")
    cfg_file = Path(args.config) if args.config else (out / "config.yaml" if args.resume else None)
    if cfg_file is not None:
        base = read_yaml_mapping(cfg_file, "config file")
    dotted = parse_overrides(args.extra, "sslbench pretrain", scopes=("task", "encoder"))
    task = args.task or base.get("task")
    encoder = args.encoder or base.get("encoder")
    data = args.data or base.get("data")
    missing = [n for n, v in (("--task", task), ("--data", data)) if not v]  # the encoder has a default
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}; see sslbench pretrain --help and sslbench list")
    task_cfg = {**(base.get("task_cfg") or {}), **dotted["task"]} if task == base.get("task") else dotted["task"]
    enc_cfg = {**(base.get("encoder_cfg") or {}), **dotted["encoder"]} if encoder == base.get("encoder") else dotted["encoder"]
    if data == base.get("data"):  # sizing comes from the data again; keep only explicit extras
        for k in ("in_channels", "img_size", "n_chans", "n_times", "sfreq"):
            enc_cfg.pop(k, None)
        enc_cfg.update(dotted["encoder"])
    train = dict(base.get("train") or {})
    flags = {}  # a bad value given as a flag is named by its flag
    for name in config_fields(TrainConfig):
        val = getattr(args, name, None)
        if val is not None:
            train[name] = read_value(val)
            flags[name] = f"--{name.replace('_', '-')}"
    train_cfg = build_config(TrainConfig, train, what="train", flags=flags)
    module, result = pretrain(task, encoder, data, out, train_cfg, task_cfg, enc_cfg, resume=args.resume, log=print)
    encoder = encoder or getattr(module.encoder, "medssl_config", {}).get("encoder", "default encoder")
    if args.resume and not result.history and result.steps >= train_cfg.steps:
        print(f"run {str(out)!r} is already complete: its checkpoint is at step {result.steps} (--steps "
              f"{train_cfg.steps}); nothing was trained or rewritten. To train further, pass a larger --steps "
              f"with --resume; its results stay in {out / 'summary.json'}")
        return 0
    last = result.history[-1] if result.history else {}
    first = result.history[0] if result.history else {}
    print(f"pretrained {task} / {encoder} for {result.steps} steps in {result.elapsed_s:.0f}s: "
          f"loss {first.get('loss', float('nan')):.4f} -> {last.get('loss', float('nan')):.4f}"
          + (f", {result.nonfinite_skipped} non-finite steps skipped" if result.nonfinite_skipped else ""))
    print(f"run folder: {out}  (encoder weights: {out / 'encoder.safetensors'}, "
          f"checkpoint: {out / 'checkpoints' / 'last.ckpt'}, log: {out / 'metrics.csv'})")
    return 0

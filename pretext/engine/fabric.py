"""The Lightning Fabric a run trains on: accelerator and precision resolved and checked, devices and nodes
from the configuration or from the launcher (torchrun, SLURM)."""

from __future__ import annotations

import os
from typing import Any

from pretext.config import TrainConfig
from pretext.engine.precision import resolve_accelerator, resolve_precision


def _devices(cfg: TrainConfig) -> Any:
    if cfg.devices != "auto":
        return [int(d) for d in cfg.devices.split(",") if d] if "," in cfg.devices else int(cfg.devices)
    # "auto": the world a launcher (torchrun / SLURM) made, else one device.
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def _num_nodes(cfg: TrainConfig) -> int:
    if cfg.num_nodes != 1:
        return cfg.num_nodes
    world, local = os.environ.get("WORLD_SIZE", ""), os.environ.get("LOCAL_WORLD_SIZE", "")
    if world.isdigit() and local.isdigit() and int(local) > 0:
        return max(1, int(world) // int(local))  # torchrun --nnodes N
    nodes = os.environ.get("SLURM_NNODES", "")
    return int(nodes) if nodes.isdigit() and os.environ.get("SLURM_NTASKS") else 1


def make_fabric(cfg: TrainConfig) -> Any:
    """A launched ``lightning.fabric.Fabric`` for ``cfg`` (precision resolved and checked)."""
    from lightning_fabric import Fabric

    accelerator = resolve_accelerator(cfg.accelerator)
    precision = resolve_precision(cfg.precision, accelerator)
    fabric = Fabric(accelerator=accelerator, devices=_devices(cfg), num_nodes=_num_nodes(cfg),
                    strategy=cfg.strategy, precision=precision)  # type: ignore[arg-type]
    fabric.launch()
    return fabric


__all__ = ["make_fabric"]

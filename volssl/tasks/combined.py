"""A weighted sum of several volume pretext tasks on one shared encoder.

``--task.tasks rotation,pixel_shuffle --task.weights 1,0.5 --task.options '{rotation: {num_rotations: 24}}'``
builds each named task around the same encoder (each keeps its own heads/decoders) and optimises
``sum_i w_i * loss_i``; every part's loss and scalars are logged as ``NAME_KEY``.

A joint-embedding task (``simclr``, ``vicreg``, ``dino``: modality ``any``) combines with a generative one as in
VoCo and Swin UNETR pretraining: ``--task.tasks simclr,pixel_shuffle --task.weights 1,1``. The combination asks
the split for the pairing of its joint-embedding part (at most one part may pair); the generative parts read
``x``. A part with an EMA teacher (``dino``) is updated by the engine's hook through :meth:`teacher_pairs`.
``--task.tasks dino,mae3d`` on ``vit_3d`` needs ``--task.options '{dino: {local_size: 1.0}}'`` (a ViT takes one
input size, so DINO's local crops are resampled to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pretext.base import Batch, PretextTask, SSLSplit
from pretext.config import ConfigModel, build_config, model_validator
from pretext.errors import ConfigError
from pretext.registry import TASKS, register_task


def _part_configs(cfg: Any) -> list[tuple[str, type, Any]]:
    out = []
    for name in cfg.tasks:
        cls = TASKS.get(name)
        sub = build_config(cls.Config, dict(cfg.options.get(name, {}) or {}), what=f"combined task part {name!r}")
        out.append((name, cls, sub))
    return out


@register_task("combined", modality="volume")
class Combined(PretextTask):
    """Weighted multi-task pretraining (the seed studies report combinations doing best)."""

    class Config(ConfigModel):
        """Attributes:
            tasks: names of registered volume tasks to combine (each at most once).
            weights: one weight per task; empty = all 1.
            options: per-task config values, ``{task_name: {field: value}}``.
        """

        tasks: tuple[str, ...] = ("rotation", "pixel_shuffle")
        weights: tuple[float, ...] = ()
        options: dict[str, Any] = {}

        @model_validator(mode="after")
        def _consistent(self) -> Any:
            if not self.tasks:
                raise ConfigError("combined: tasks is empty; name at least one task, e.g. --task.tasks rotation,mae3d")
            if len(set(self.tasks)) != len(self.tasks):
                raise ConfigError(f"combined: tasks={self.tasks} repeats a task")
            if "combined" in self.tasks:
                raise ConfigError("combined: a combined task cannot contain itself")
            if self.weights and len(self.weights) != len(self.tasks):
                raise ConfigError(f"combined: {len(self.weights)} weights for {len(self.tasks)} tasks {self.tasks}")
            if any(w < 0 for w in self.weights):
                raise ConfigError(f"combined: weights={self.weights} must be >= 0")
            unknown = sorted(set(self.options) - set(self.tasks))
            if unknown:
                raise ConfigError(f"combined: options given for {unknown}, which are not in tasks={self.tasks}")
            for name in self.tasks:
                if TASKS.meta(name).get("modality") not in (None, "volume", "any"):
                    raise ConfigError(f"combined: {name!r} is not a volume task")
            return self

    name = "combined"
    modality = "volume"

    def __init__(self, encoder: nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        self.parts = nn.ModuleDict({name: cls(encoder, sub) for name, cls, sub in _part_configs(self.cfg)})
        self.weights = list(self.cfg.weights) or [1.0] * len(self.cfg.tasks)
        self.pairing()  # two parts that each pair are refused here, before any data is read

    def pairing(self) -> str:
        """The pairing of the part that pairs (a joint-embedding task), else ``"none"``."""
        pairings = {name: part.pairing() for name, part in self.parts.items() if part.pairing() != "none"}
        if len(pairings) > 1:
            raise ConfigError(f"combined: parts {sorted(pairings)} each ask for a pairing; combine at most one "
                              "joint-embedding task with generative ones")
        return next(iter(pairings.values()), "none")

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The EMA teacher pairs of every part that has one (the engine's EMA hook updates them)."""
        return [pair for part in self.parts.values() if callable(getattr(part, "teacher_pairs", None))
                for pair in part.teacher_pairs()]

    def teacher_momentum(self) -> tuple[float, float]:
        for part in self.parts.values():
            if callable(getattr(part, "teacher_momentum", None)):
                return part.teacher_momentum()  # type: ignore[no-any-return]
        return 0.0, 0.0

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = None
        for (name, part), w in zip(self.parts.items(), self.weights, strict=False):
            res = part(batch, generator=generator)
            term = w * res["loss"].float()
            total = term if total is None else total + term
            for k, v in res.items():
                out[f"{name}_{k}"] = v.detach()
        out["loss"] = total  # type: ignore[assignment]
        return out

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        for _, part, sub in _part_configs(cfg or cls.Config()):
            part.check_input(sub, input_shape)

    @classmethod
    def wrap_dataset(cls, split: SSLSplit, cfg: Any, seed: int = 0) -> Dataset:
        data: Any = split
        for _, part, sub in _part_configs(cfg or cls.Config()):
            data = part.wrap_dataset(data, sub, seed)
        return data

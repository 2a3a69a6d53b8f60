"""Engine hooks run after each optimizer step: the EMA teacher of BYOL/DINO-style tasks and the online
representation monitor. Both are engine code, not task code: a task only declares that it has a teacher
(:class:`HasTeacher`), and every pretext task is monitored.

A hook returns scalars to log (they go to ``metrics.csv`` and TensorBoard with the step's other values) and
its state is saved in ``checkpoints/last.ckpt`` under ``"hooks"``, so a resumed run continues it.

The monitor (anchors: solo-learn's online kNN, lightly's std metric) encodes a fixed subset of the training
split (``TrainConfig.monitor_items``) every ``monitor_every`` steps and at the last step, with the encoder in
eval mode and no gradient, and logs

* ``monitor/eff_rank``: effective rank of the centred features (exp of the entropy of the normalised singular
  values; Roy & Vetterli 2007), and ``monitor/eff_rank_frac`` = it over ``min(items, features)``;
* ``monitor/std``: mean per-dimension std of the L2-normalised features (0 when collapsed to a point, about
  ``1/sqrt(F)`` when spread evenly), and ``monitor/std_ratio`` = ``std * sqrt(F)`` (in [0, 1]);
* ``monitor/knn_top1``: where items have class labels, the accuracy of a weighted kNN (k=20, cosine,
  temperature 0.07, as solo-learn) that classifies half of the subset from the other half, the halves split by
  patient so no patient is on both sides;
* ``monitor/collapse``: 1 when ``std_ratio`` falls below ``COLLAPSE_STD_RATIO`` or the effective rank below
  ``COLLAPSE_RANK`` (a warning is printed once per run), else 0.

The labels are only read by the monitor, never by training. Nothing here draws from torch's random generators,
so a monitored run and a resumed one stay bit for bit the same.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn

from pretext.capabilities import PooledFeatures

__all__ = ["COLLAPSE_RANK", "COLLAPSE_STD_RATIO", "EMATeacher", "HasTeacher", "RepresentationMonitor", "StepHook",
           "embedding_stats", "engine_hooks", "knn_top1"]

COLLAPSE_STD_RATIO = 0.05
COLLAPSE_RANK = 1.5


@runtime_checkable
class HasTeacher(Protocol):
    """A task with an EMA teacher (BYOL, DINO): the engine's :class:`EMATeacher` updates it after each step."""

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(student, teacher)`` module pairs with parameters in the same order."""
        ...

    def teacher_momentum(self) -> tuple[float, float]:
        """``(start, end)`` of the teacher's momentum, raised along a cosine over the run (BYOL, DINO)."""
        ...


class StepHook:
    """Base of the engine hooks: :meth:`after_step` after each optimizer step, state saved in checkpoints."""

    name = "hook"

    def after_step(self, step: int, module: nn.Module) -> dict[str, float]:
        """Called with the number of optimizer steps done and the (unwrapped) task; returns scalars to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def cosine_momentum(step: int, total: int, start: float, end: float) -> float:
    """``end - (end - start) * (cos(pi * step / total) + 1) / 2`` (lightly's ``cosine_schedule``)."""
    if total <= 0:
        return end
    return end - (end - start) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


class EMATeacher(StepHook):
    """``teacher <- m * teacher + (1 - m) * student`` for every parameter of the task's teacher pairs, ``m``
    following :func:`cosine_momentum` from the task's start to its end value over ``total_steps``."""

    name = "ema_teacher"

    def __init__(self, total_steps: int) -> None:
        self.total_steps = int(total_steps)
        self.updates = 0

    @torch.no_grad()
    def after_step(self, step: int, module: nn.Module) -> dict[str, float]:
        assert isinstance(module, HasTeacher)
        start, end = module.teacher_momentum()
        m = cosine_momentum(step - 1, self.total_steps, start, end)  # the first update uses the start value
        for student, teacher in module.teacher_pairs():
            s_params: list[torch.Tensor] = [p.detach() for p in student.parameters()]
            t_params: list[torch.Tensor] = list(teacher.parameters())
            if len(s_params) != len(t_params):
                raise RuntimeError("teacher and student have different parameter lists")
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - m)
        self.updates += 1
        return {"teacher_momentum": m}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))


def embedding_stats(f: torch.Tensor) -> dict[str, float]:
    """Effective rank and per-dimension std of features ``f (N, F)`` (see the module docstring)."""
    f = f.float()
    n, d = f.shape
    s = torch.linalg.svdvals(f - f.mean(0, keepdim=True))
    p = s / s.sum().clamp(min=1e-12)
    erank = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())) if float(s.sum()) > 0 else 0.0
    z = nn.functional.normalize(f, dim=1)
    std = float(z.std(0).mean()) if n > 1 else 0.0
    return {"monitor/eff_rank": erank, "monitor/eff_rank_frac": erank / max(1, min(n, d)),
            "monitor/std": std, "monitor/std_ratio": std * math.sqrt(d)}


def knn_top1(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor,
             k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN top-1 accuracy (cosine similarity, weights ``exp(sim / T)``; solo-learn's online kNN)."""
    b = nn.functional.normalize(bank.float(), dim=1)
    q = nn.functional.normalize(query.float(), dim=1)
    sim = q @ b.T
    k = min(k, b.shape[0])
    top, idx = sim.topk(k, dim=1)
    classes = int(max(int(bank_y.max()), int(query_y.max()))) + 1
    votes = torch.zeros(q.shape[0], classes).scatter_add_(1, bank_y[idx], torch.exp(top / temperature))
    return float((votes.argmax(1) == query_y).float().mean())


class RepresentationMonitor(StepHook):
    """The online monitor (see the module docstring).

    Args:
        dataset: the training split (items are dicts with ``"x"`` and, for the kNN, ``"label"``/``"patient"``).
        every: steps between measurements (also measured at ``total_steps``).
        items: how many items to encode (a fixed subset drawn from ``seed``).
        total_steps: the run's last step.
        batch_size: items per encoder call.
    """

    name = "monitor"

    def __init__(self, dataset: Any, every: int, items: int, total_steps: int, seed: int = 0,
                 batch_size: int = 64) -> None:
        self.dataset, self.every, self.total = dataset, int(every), int(total_steps)
        n = len(dataset)
        self.index = np.sort(np.random.default_rng([int(seed), 0x40A1]).permutation(n)[:min(int(items), n)])
        self.batch_size = int(batch_size)
        self.x: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.bank: torch.Tensor | None = None
        self.warned = False

    def _load(self) -> None:
        rows = [self.dataset[int(i)] for i in self.index]
        self.x = torch.stack([r["x"] for r in rows])
        labels = [r.get("label") for r in rows]
        if all(torch.is_tensor(v) and v.ndim == 0 for v in labels):
            y = torch.stack(labels).long()
            pats = np.array([int(r["patient"]) if "patient" in r else int(i) for r, i in zip(rows, self.index,
                                                                                                strict=True)])
            keep = y >= 0
            bank = torch.from_numpy((pats * 2654435761 % 2**32) % 2 == 0)
            if int(keep.sum()) >= 4 and 0 < int((bank & keep).sum()) < int(keep.sum()):
                self.labels, self.bank = torch.where(keep, y, -1), bank

    def due(self, step: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == self.total)

    @torch.no_grad()
    def measure(self, encoder: nn.Module) -> dict[str, float]:
        """Encode the subset with ``encoder`` (eval mode, restored after) and compute the metrics."""
        if self.x is None:
            self._load()
        assert self.x is not None
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was = encoder.training
        encoder.eval()
        try:
            forward = cast(PooledFeatures, encoder).forward_features
            feats = torch.cat([forward(self.x[i:i + self.batch_size].to(device)).float().cpu()
                               for i in range(0, len(self.x), self.batch_size)])
        finally:
            encoder.train(was)
        out = embedding_stats(feats)
        if self.labels is not None and self.bank is not None:
            y, bank = self.labels, self.bank
            q = (~bank) & (y >= 0)
            b = bank & (y >= 0)
            out["monitor/knn_top1"] = knn_top1(feats[b], y[b], feats[q], y[q])
        collapsed = out["monitor/std_ratio"] < COLLAPSE_STD_RATIO or out["monitor/eff_rank"] < COLLAPSE_RANK
        out["monitor/collapse"] = float(collapsed)
        if collapsed and not self.warned:
            self.warned = True
            warnings.warn(f"representation collapse: per-dimension std ratio {out['monitor/std_ratio']:.3f} "
                          f"(threshold {COLLAPSE_STD_RATIO}), effective rank {out['monitor/eff_rank']:.2f} "
                          f"(threshold {COLLAPSE_RANK}); lower the lr, raise the temperature or the variance weight, "
                          "or check the views", stacklevel=2)
        return out

    def after_step(self, step: int, module: nn.Module) -> dict[str, float]:
        if not self.due(step):
            return {}
        encoder = getattr(module, "encoder", None)
        return self.measure(encoder) if isinstance(encoder, nn.Module) else {}

    def state_dict(self) -> dict[str, Any]:
        return {"warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warned = bool(state.get("warned", False))


def engine_hooks(task: nn.Module, dataset: Any, cfg: Any, is_main: bool = True) -> list[StepHook]:
    """The hooks ``fit`` runs for ``task`` on ``dataset`` (the split, before pairing): the EMA teacher when the
    task has one, and the monitor on the main process for every pretext task (``cfg.monitor_every > 0``)."""
    from pretext.base import PretextTask

    hooks: list[StepHook] = []
    if isinstance(task, HasTeacher) and task.teacher_pairs():
        hooks.append(EMATeacher(cfg.steps))
    if (is_main and isinstance(task, PretextTask) and getattr(cfg, "monitor_every", 0) > 0
            and len(dataset) > 1 and hasattr(dataset, "__getitem__")):
        from pretext.config import max_items_from_env

        cap = max_items_from_env()  # a quick check ($MEDSSL_MAX_ITEMS): the monitor encodes at most that many
        items = min(cfg.monitor_items, cap) if cap else cfg.monitor_items
        hooks.append(RepresentationMonitor(dataset, cfg.monitor_every, items, cfg.steps, seed=cfg.seed))
    return hooks


def restore_hooks(hooks: list[StepHook], state: dict[str, Any] | None) -> None:
    """Load each hook's state from a checkpoint's ``"hooks"`` entry (absent in older checkpoints: fresh state)."""
    saved = (state or {}).get("hooks") or {}
    for h in hooks:
        if h.name in saved:
            h.load_state_dict(saved[h.name])


def run_hooks(hooks: list[StepHook], step: int, module: nn.Module, window: dict[str, list[float]]) -> None:
    """Run every hook after optimizer step ``step`` and add what it returns to the engine's log window."""
    for h in hooks:
        for k, v in h.after_step(step, module).items():
            window[k].append(float(v))

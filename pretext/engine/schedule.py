"""Learning-rate schedule: linear warmup then cosine decay (as in MAE, DINO, nanoGPT)."""

from __future__ import annotations

import math


class WarmupCosine:
    """Multiplier of the peak LR at optimizer step ``s`` (use with ``torch.optim.lr_scheduler.LambdaLR``).

    Args:
        warmup: steps of linear warmup from ~0 to 1.
        total: total steps; after it the multiplier stays at ``floor``.
        floor: final multiplier (``min_lr / lr``).
    """

    def __init__(self, warmup: int, total: int, floor: float = 0.0) -> None:
        self.warmup = max(0, int(warmup))
        self.total = max(1, int(total))
        self.floor = float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

"""Tiny components for tests and examples (importable by any test, including subprocess scripts).

Not used by the library itself.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from pretext.base import PretextTask, SSLSplit
from pretext.config import ConfigModel


class TinyEncoder(nn.Module):
    """A two-layer MLP over flattened input with dropout; ``(B, *shape) -> (B, F)``."""

    def __init__(self, in_features: int = 16, num_features: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(32, num_features))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class ToyTask(PretextTask):
    """Denoising: reconstruct ``x`` from ``x + noise`` (noise drawn from the step generator)."""

    class Config(ConfigModel):
        noise: float = 0.5
        nan_steps: tuple[int, ...] = ()  # forward calls whose loss is made NaN (guard tests)
        fail_at: int = -1  # forward call that raises (kill simulation)

    name = "toy"
    modality = "signal"
    encoder: TinyEncoder
    calls: torch.Tensor

    def __init__(self, encoder: TinyEncoder, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        self.decoder = nn.Linear(encoder.num_features, cast(nn.Linear, encoder.net[1]).in_features)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"].flatten(1)
        call = int(self.calls)
        self.calls += 1
        if call == self.cfg.fail_at:
            raise RuntimeError(f"simulated crash at forward call {call}")
        noise = torch.randn(x.shape, generator=generator).to(x.device) * self.cfg.noise
        recon = self.decoder(self.encoder.forward_features(x + noise))
        loss = (recon.float() - x.float()).pow(2).mean()
        if call in self.cfg.nan_steps:
            loss = loss * float("nan")
        return {"loss": loss, "noise_std": noise.std()}


class RandomSplit(SSLSplit):
    """``n`` items of shape ``shape`` (fixed by ``seed``) with binary labels and ``n // 2`` patients."""

    def __init__(self, n: int = 64, shape: tuple[int, ...] = (2, 8), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn((n, *shape), generator=g)
        self.labels = (self.x.flatten(1).mean(1) > 0).long().numpy()
        self.patients = np.arange(n) // 2
        self.patient_names = [f"p{i}" for i in range(n // 2 + 1)]

    def __len__(self) -> int:
        return len(self.x)

    def load(self, i: int) -> torch.Tensor:
        return self.x[i]

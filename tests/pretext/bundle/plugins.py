"""Tiny components the bundle tests register (importable as ``tests.pretext.bundle.plugins`` in subprocesses too).

They stand in for the built-in encoders and tasks, so the bundle tests do not depend on them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from pretext.base import PretextTask, SSLData, SSLSplit
from pretext.registry import DATA, ENCODERS, TASKS


class TinyCNN3d(nn.Module):
    """Two strided 3D convolutions and global average pooling: ``(B, C, D, H, W) -> (B, width*2)``."""

    def __init__(self, in_channels: int = 1, img_size: tuple[int, ...] = (16, 16, 16), spatial_dims: int = 3,
                 width: int = 4) -> None:
        super().__init__()
        self.num_features = width * 2
        self.img_size = tuple(img_size)
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, stride=2, padding=1), nn.BatchNorm3d(width), nn.ReLU(),
            nn.Conv3d(width, width * 2, 3, stride=2, padding=1), nn.ReLU(),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class TinyCNN1d(nn.Module):
    """Two strided 1D convolutions and global average pooling: ``(B, C, T) -> (B, width*2)``."""

    def __init__(self, n_chans: int = 2, n_times: int = 256, sfreq: float = 100.0, width: int = 4) -> None:
        super().__init__()
        self.num_features = width * 2
        self.body = nn.Sequential(nn.Conv1d(n_chans, width, 7, stride=2, padding=3), nn.ReLU(),
                                  nn.Conv1d(width, width * 2, 7, stride=2, padding=3), nn.ReLU())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class Denoise(PretextTask):
    """Reconstruct the input's mean intensity per channel from a noisy view (a tiny real pretext task)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        noise: float = 0.1

    name = "bundle_test_denoise"
    modality = "volume"

    def __init__(self, encoder: nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        self.decoder = nn.Linear(encoder.num_features, 1)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        noise = torch.randn(x.shape, generator=generator).to(x.device) * self.cfg.noise
        pred = self.decoder(self.encoder.forward_features(x + noise)).squeeze(1)
        loss = (pred.float() - x.float().mean(dim=tuple(range(1, x.ndim)))).pow(2).mean()
        return {"loss": loss}


class RandomVolumes(SSLSplit):
    """Random items of one shape (volumes or signal windows) with alternating labels."""

    def __init__(self, n: int, shape: tuple[int, ...], seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand((n, *shape), generator=g)
        self.labels = np.arange(n) % 2
        self.patients = np.arange(n)
        self.patient_names = [f"p{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.x)

    def load(self, i: int) -> torch.Tensor:
        return self.x[i]


def random_volumes(path: str = "", n: int = 8, size: int = 16, seed: int = 0) -> SSLData:
    """``n`` random ``(1, size, size, size)`` volumes with alternating labels (a virtual data kind)."""
    shape = (1, size, size, size)
    return SSLData(modality="volume", splits={"train": RandomVolumes(n, shape, seed)}, input_shape=shape,
                   num_classes=2, class_names=["a", "b"])


def random_signals(path: str = "", n: int = 8, n_chans: int = 2, n_times: int = 256, sfreq: float = 100.0,
                   seed: int = 0) -> SSLData:
    """``n`` random ``(n_chans, n_times)`` ECG-like windows at ``sfreq`` Hz (a virtual data kind)."""
    shape = (n_chans, n_times)
    return SSLData(modality="signal", splits={"train": RandomVolumes(n, shape, seed)}, input_shape=shape,
                   num_classes=2, class_names=["a", "b"], sfreq=sfreq, channel_names=[f"lead{i}" for i in range(n_chans)])


COMPONENTS = (
    (ENCODERS, "bundle_test_cnn3d", TinyCNN3d, {"modality": "volume"}),
    (ENCODERS, "bundle_test_cnn1d", TinyCNN1d, {"modality": "signal"}),
    (TASKS, "bundle_test_denoise", Denoise, {"modality": "volume"}),
    (DATA, "bundle_test_random", random_volumes, {"modality": "volume", "virtual": True}),
    (DATA, "bundle_test_ecg", random_signals, {"modality": "signal", "virtual": True}),
)


def register() -> None:
    """Register the test components (idempotent)."""
    for registry, name, obj, meta in COMPONENTS:
        if name not in registry._items:
            registry.register(name, obj, **meta)


def unregister() -> None:
    """Remove them again, so tests that list every registered component do not see them."""
    for registry, name, _, _ in COMPONENTS:
        registry._items.pop(name, None)
        registry._meta.pop(name, None)


register()  # on import: subprocesses and bundle configs import this module to get the components

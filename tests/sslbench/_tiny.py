"""Tiny in-memory data and encoder for the harness tests (registered here, independent of volssl/signalssl)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from pretext.base import PretextTask, SSLData, SSLSplit
from pretext.registry import DATA, ENCODERS, TASKS, register_data, register_encoder, register_task

DATA_KIND = "_bench_tiny"
ENCODER = "_bench_tiny_enc"
TASK = "_bench_tiny_task"


class TinySplit(SSLSplit):
    """``n_patients`` x ``per_patient`` volumes ``(C, 6, 6, 6)``; class 1 is brighter in the centre."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, patients: np.ndarray, names: list[str], meta=None):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.labels = labels
        self.patients = patients
        self.patient_names = names
        self.meta = meta

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        return self.x[i]


def make_split(n_patients: int, per_patient: int = 2, seed: int = 0, prefix: str = "p", channels: int = 1,
               p_pos: float = 0.3, missing: int = 0) -> TinySplit:
    rng = np.random.default_rng(seed)
    pat_label = (rng.random(n_patients) < p_pos).astype(np.int64)
    pat_label[0], pat_label[-1] = 0, 1
    labels = np.repeat(pat_label, per_patient)
    patients = np.repeat(np.arange(n_patients), per_patient)
    x = rng.normal(size=(len(labels), channels, 6, 6, 6)).astype(np.float32)
    x[:, :, 2:4, 2:4, 2:4] += 2.0 * labels[:, None, None, None, None]
    if missing:
        labels = labels.copy()
        labels[:missing] = -1
    meta = pd.DataFrame({"sex": np.where(patients % 2 == 0, "F", "M"), "age": 20 + 7 * (patients % 9)})
    return TinySplit(x, labels, patients, [f"{prefix}{i}" for i in range(n_patients)], meta)


def make_data(path: str = "", official: bool = True, channels: int = 1, missing: int = 0, n: int = 40) -> SSLData:
    if official:
        splits = {"train": make_split(n, seed=1, prefix="tr", channels=channels, missing=missing),
                  "val": make_split(max(6, n // 4), seed=2, prefix="va", channels=channels),
                  "test": make_split(max(8, n // 3), seed=3, prefix="te", channels=channels)}
    else:
        splits = {"train": make_split(n, seed=1, prefix="s", channels=channels, missing=missing)}
    return SSLData("volume", splits, (channels, 6, 6, 6), num_classes=2, class_names=["neg", "pos"],
                   source=f"{DATA_KIND}:{path}")


class TinyEncoder(nn.Module):
    """Two conv blocks + pooling: ``(B, C, D, H, W) -> (B, 8)``."""

    def __init__(self, in_channels: int = 1, img_size=(6, 6, 6), width: int = 8) -> None:
        super().__init__()
        self.num_features = width
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv3d(width, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.block(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class TinyTask(PretextTask):
    """Predict the mean intensity of the input from the features (a toy pretext task)."""

    def __init__(self, encoder: nn.Module, cfg=None) -> None:
        super().__init__(encoder, cfg)
        self.head = nn.Linear(encoder.num_features, 1)

    def forward(self, batch, generator=None):
        x = batch["x"]
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        pred = self.head(self.encoder.forward_features(x + 0.1 * noise)).squeeze(1)
        return {"loss": ((pred.float() - x.mean(dim=(1, 2, 3, 4)).float()) ** 2).mean()}


def _data_kind(path: str, official: bool = True, channels: int = 1, missing: int = 0, n: int = 40) -> SSLData:
    return make_data(path, official, channels, missing, n)


def register() -> None:
    """Register the tiny kind/encoder/task once (idempotent)."""
    if DATA_KIND not in DATA._items:
        register_data(DATA_KIND, modality="volume", virtual=True)(_data_kind)
    if ENCODER not in ENCODERS._items:
        register_encoder(ENCODER, modality="volume")(TinyEncoder)
    if TASK not in TASKS._items:
        register_task(TASK, modality="volume")(TinyTask)



def write_recipe(folder: Path, steps: int = 2, **over: Any) -> Path:
    """``folder/recipe.yaml``: the tiny kind, encoder and task, ``steps`` pretraining steps, a kNN probe at 100 %
    with one seed against the random baseline; ``over`` replaces top-level recipe keys."""
    rec = {"name": "tiny", "imports": ["tests.sslbench._tiny"], "datasets": {"tiny": {"data": f"{DATA_KIND}:"}},
           "tasks": [TASK], "encoders": {ENCODER: {"width": 8}},
           "pretrain": {"steps": steps, "batch_size": 8, "precision": "32"}, "protocols": ["knn"], "fractions": [1.0],
           "seeds": [0], "baselines": ["random"], "n_boot": 10, "audit": False, "threads": 1, **over}
    path = Path(folder) / "recipe.yaml"
    path.write_text(yaml.safe_dump(rec))
    return path


register()

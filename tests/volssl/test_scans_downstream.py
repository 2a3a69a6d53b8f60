"""Whole-volume downstream from patch encoders: pooled grid features, and every harness protocol on them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pretext.config import TrainConfig
from pretext.data import load_data
from pretext.registry import create_encoder
from sslbench.pooled import pooled_features, reads_patch_grids
from sslbench.splits import View


def _cubes(path: Path, side: int = 16, n=(12, 6, 6)) -> Path:
    """A MedMNIST-like file whose label is a bright blob somewhere in the cube (found only by looking around)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        x = (rng.random((k, side, side, side)) * 60).astype(np.uint8)
        y = np.arange(k) % 2
        for i in np.flatnonzero(y):
            z, a, b = rng.integers(0, side - 4, 3)
            x[i, z:z + 4, a:a + 4, b:b + 4] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(k, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


class MaxEncoder(torch.nn.Module):
    """Features: the patch's maximum and mean (enough to test pooling exactly)."""

    num_features = 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1).amax(1), x.flatten(1).mean(1)], 1)


def test_pooled_features_follow_the_grid(tmp_path: Path) -> None:
    data = load_data(f"medmnist3d:{_cubes(tmp_path / 'cubesmnist3d.npz')}?patch=8&overlap=0&pool=max&cache=none")
    split = data.splits["test"]
    view = View(split, np.arange(len(split)), "test")
    assert reads_patch_grids(view) and len(split.grid(0)) == 8
    feats = pooled_features(MaxEncoder(), view, batch_size=5)
    for i in range(len(split)):
        vol = split.windows(i)
        assert feats[i, 0] == pytest.approx(float(vol.amax()))  # max pool of patch maxima = volume max
    mean = pooled_features(MaxEncoder(), view, batch_size=3, pool="mean")
    for i in range(len(split)):
        assert mean[i, 1] == pytest.approx(float(split.windows(i).mean()), rel=1e-5)
    assert (feats[np.asarray(split.labels) == 1, 0] > 0.99).all()


@pytest.mark.parametrize("protocol", ["linear", "knn", "partial", "finetune"])
def test_every_protocol_runs_on_pooled_patches(tmp_path: Path, protocol: str) -> None:
    from pretext.pipeline import pretrain
    from sslbench.evaluate import evaluate

    spec = f"medmnist3d:{_cubes(tmp_path / 'cubesmnist3d.npz')}?patch=8&patches_per_volume=2&cache=none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain("rotation", "resnet18_3d", spec, tmp_path / "run",
                 TrainConfig(steps=2, batch_size=2, progress=False, precision="32", warmup_steps=1),
                 encoder_cfg={"widen_factor": 0.125})
        df = evaluate(tmp_path / "run", spec, protocol=protocol, fractions=(1.0,), seeds=(0,), out=tmp_path / "ev",
                      baselines=(), n_boot=10, finetune={"steps": 4, "min_steps": 2, "eval_every": 2, "batch_size": 4})
    row = df.iloc[0]
    assert row["protocol"] == protocol and 0.0 <= row["auroc"] <= 1.0 and row["n_labelled"] == 12


def test_finetune_trains_on_patches_and_predicts_pooled(tmp_path: Path) -> None:
    from sslbench.probes import FinetuneConfig, finetune

    data = load_data(f"medmnist3d:{_cubes(tmp_path / 'cubesmnist3d.npz')}?patch=8&patches_per_volume=3&cache=none")
    views = {s: View(data.splits[s], np.arange(len(data.splits[s])), s) for s in ("train", "val")}
    seen: list[tuple[int, ...]] = []
    enc = create_encoder("resnet18_3d", img_size=(8, 8, 8), widen_factor=0.125)
    forward = enc.forward_features
    enc.forward_features = lambda x: seen.append(tuple(x.shape)) or forward(x)  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = finetune(enc, views["train"], views["val"], num_classes=2,
                               cfg=FinetuneConfig(steps=2, min_steps=2, eval_every=2, batch_size=4))
    assert (12, 1, 8, 8, 8) in seen  # 4 volumes x 3 patches per training step
    proba = model.predict_proba(views["val"])
    assert proba.shape == (6, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)

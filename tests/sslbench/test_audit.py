"""Tests of the embedding audit (sslbench.audit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pretext.data import load_data
from signalssl.transforms import perturb_signal
from sslbench.audit import (
    agreement,
    audit_encoder,
    audit_features,
    chance,
    invariance,
    neighbours,
)
from sslbench.splits import View
from volssl.transforms import perturb_volume


def _clusters(n_per: int = 20, n_classes: int = 3, dim: int = 16, spread: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per)
    return centres[labels] + spread * rng.normal(0, 1, (len(labels), dim)), labels


def test_purity_high_for_clusters_and_chance_for_noise():
    z, y = _clusters()
    res = audit_features(z, y, k=5)
    assert res["knn_purity"] > 0.95 and res["chance_purity"] == pytest.approx(1 / 3)
    noise = np.random.default_rng(1).normal(size=z.shape)
    assert abs(audit_features(noise, y, k=5)["knn_purity"] - 1 / 3) < 0.15


def test_patient_identity_is_exposed():
    """Features that only encode the patient: plain purity looks fine, other-patient purity is chance."""
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(30), 3)
    labels = patients % 2  # one class per patient
    z = rng.normal(0, 1, (30, 8))[patients] + 0.05 * rng.normal(0, 1, (90, 8))
    res = audit_features(z, labels, patients=patients.astype(str), k=2)
    assert res["same_patient_neighbours"] > 0.95 and res["knn_purity"] > 0.95
    assert res["knn_purity_other_patients"] < 0.75


def test_neighbours_and_agreement_by_hand():
    z = np.array([[1.0, 0], [0.99, 0.1], [0, 1.0], [0.1, 0.99]])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    nb = neighbours(z, 1)
    assert nb[:, 0].tolist() == [1, 0, 3, 2]
    assert agreement(nb, np.array([0, 0, 1, 1])) == 1.0 and agreement(nb, np.array([0, 1, 0, 1])) == 0.0
    groups = np.array(["a", "a", "b", "b"])
    assert neighbours(z, 1, groups)[:, 0].tolist() == [3, 3, 1, 1]  # own group skipped
    assert chance(np.array([0, 0, 1, 1])) == 0.5


def test_invariance_small_vs_large_perturbation():
    z, y = _clusters()
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    small = zn + 0.01 * np.random.default_rng(2).normal(size=z.shape)
    small /= np.linalg.norm(small, axis=1, keepdims=True)
    inv = invariance(zn, small, y)
    assert inv["ratio_between"] < 0.1 and inv["knn_label_stability"] == 1.0
    assert inv["d_within"] < inv["d_between"]
    big = np.random.default_rng(3).normal(size=z.shape)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    inv_big = invariance(zn, big, y)
    assert inv_big["ratio_between"] > 0.8 and inv_big["knn_label_stability"] < 0.8


def test_perturbations_seeded_and_small():
    x = torch.randn(2, 3, 256)
    a = perturb_signal(x, torch.Generator().manual_seed(0))
    b = perturb_signal(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0 < (a - x).std() < 0.2 * x.std()
    v = torch.rand(2, 1, 16, 16, 16)
    pv = perturb_volume(v, torch.Generator().manual_seed(0))
    assert pv.shape == v.shape and torch.equal(pv, perturb_volume(v, torch.Generator().manual_seed(0)))
    assert 0 < (pv - v).abs().mean() < 0.1


class _MeanStd(nn.Module):
    """A trivial encoder: per-channel mean, std and mean |diff| (rate/width sensitive)."""

    num_features = 36

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1), x.diff(dim=-1).abs().mean(-1)], 1)


def test_audit_encoder_writes_plot_and_uses_meta(tmp_path):
    data = load_data("synthetic_ecg:?n_patients=16&recordings_per_patient=2&seconds=4")
    split = data.splits["train"]
    view = View(split, np.arange(len(split)), "train")
    res = audit_encoder(_MeanStd(), view, sfreq=100.0, class_names=data.class_names, out_dir=tmp_path,
                        name="meanstd", k=3, method="pca")
    assert res["n"] == len(split) and res["map_method"] == "pca"
    assert set(res["meta_agreement"]) == {"sex", "site", "age_band"}
    assert 0 <= res["invariance"]["ratio_between"] < 1.0
    png = tmp_path / "embedding_meanstd.png"
    assert res["plots"]["embedding"] == str(png) and png.stat().st_size > 5000
    assert res["knn_purity"] > res["chance_purity"]  # |diff| tracks heart rate: better than chance


def test_tsne_fallback_and_bad_input(tmp_path):
    z, y = _clusters(n_per=8)
    meta = pd.DataFrame({"sex": np.where(y == 0, "F", "M"), "age": np.linspace(20, 80, len(y))})
    res = audit_features(z, y, meta=meta, out_dir=tmp_path, method="tsne", k=3)
    assert res["map_method"] == "tsne" and (tmp_path / "embedding_encoder.png").exists()
    assert res["meta_agreement"]["sex"]["agreement"] > 0.9
    with pytest.raises(ValueError, match="at least 3"):
        audit_features(z[:2], y[:2])
    with pytest.raises(ValueError, match="method"):
        audit_features(z, y, out_dir=tmp_path, method="isomap")


def test_umap_path_keeps_torch_threads(monkeypatch):
    """umap-learn's numba layer resets torch's OpenMP thread count; the audit puts it back."""
    import sys
    import types

    from sslbench.audit import embed_2d

    class FakeUMAP:
        def __init__(self, **kw):
            self.kw = kw

        def fit_transform(self, z):
            torch.set_num_threads(2)
            return z[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        coords, used = embed_2d(np.random.default_rng(0).normal(size=(20, 4)), "auto")
        assert used == "umap" and coords.shape == (20, 2) and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

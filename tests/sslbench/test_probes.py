"""Probes and fine-tuning: selection on validation, blocks, layer-wise LR decay, frozen parts stay put."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pretext.errors import ConfigError
from sslbench.features import cached_features
from sslbench.probes import (
    Classifier,
    FinetuneConfig,
    encoder_blocks,
    finetune,
    knn_probe,
    layer_decay_groups,
    linear_probe,
)
from sslbench.splits import make_eval_splits
from tests.sslbench._tiny import TinyEncoder, make_data


def _blobs(n, seed, shift=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + shift * np.eye(3, 5)[y]
    return x, y


def test_linear_and_knn_probes_pick_on_val_and_separate_blobs():
    xtr, ytr = _blobs(90, 0)
    xva, yva = _blobs(30, 1)
    xte, yte = _blobs(60, 2)
    for probe, key in ((linear_probe, "C"), (knn_probe, "k")):
        predict, info = probe(xtr, ytr, xva, yva, n_classes=3)
        p = predict(xte)
        assert p.shape == (60, 3) and np.allclose(p.sum(1), 1)
        assert (p.argmax(1) == yte).mean() > 0.8
        assert key in info and info["val_score"] > 0.8


def test_probe_with_missing_class_in_train_still_outputs_all_columns():
    xtr, ytr = _blobs(60, 0)
    keep = ytr != 2
    predict, _ = linear_probe(xtr[keep], ytr[keep], *_blobs(30, 1), n_classes=3)
    p = predict(_blobs(10, 2)[0])
    assert p.shape == (10, 3) and np.all(p[:, 2] == 0)


def test_multilabel_knn_and_linear():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], 1).astype(float)
    for probe in (linear_probe, knn_probe):
        predict, _ = probe(x[:80], y[:80], x[80:100], y[80:100], n_classes=2, multilabel=True)
        p = predict(x[100:])
        assert p.shape == (20, 2) and ((p > 0.5) == (y[100:] > 0.5)).mean() > 0.7


def test_blocks_found_through_wrappers():
    enc = TinyEncoder()
    assert [type(b).__name__ for b in encoder_blocks(enc)] == ["Sequential", "Sequential"]

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_features = 8
            self.net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 8))

    assert len(encoder_blocks(Wrapped())) == 2  # descends through .net; ReLU has no params


def test_partial_freezes_lower_blocks_and_their_batchnorm():
    enc = nn.Module()
    enc.num_features = 4
    enc.a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    enc.b = nn.Linear(4, 4)
    enc.forward_features = lambda x: enc.b(enc.a(x))
    clf = Classifier(enc, 2)
    clf.freeze_all_but_last(1)
    clf.train()
    assert not enc.a[1].training and enc.b.training
    assert not any(p.requires_grad for p in enc.a.parameters()) and all(p.requires_grad for p in enc.b.parameters())
    with pytest.raises(ConfigError, match="k_blocks=3"):
        clf.freeze_all_but_last(3)


def test_layer_decay_groups():
    clf = Classifier(TinyEncoder(), 2)
    groups = layer_decay_groups(clf, 0.5, 0.01)
    scales = {}
    for g in groups:
        for p in g["params"]:
            scales[id(p)] = g["lr_scale"]
    assert scales[id(clf.head.weight)] == 1.0
    assert scales[id(clf.encoder.block[0].weight)] == 0.5
    assert scales[id(clf.encoder.stem[0].weight)] == 0.25
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim < 2)


def test_finetune_through_engine_learns_and_keeps_best_val_state():
    data = make_data()
    s = make_eval_splits(data)
    torch.manual_seed(0)
    enc = TinyEncoder()
    model, info = finetune(enc, s.train, s.val, num_classes=2,
                           cfg=FinetuneConfig(steps=80, lr=1e-2, eval_every=10, batch_size=16), seed=0)
    p = model.predict_proba(s.val)
    from sslbench.probes import val_score

    assert val_score(s.val.labels, p, False) == pytest.approx(info["val_score"])  # the best state is loaded
    assert info["val_score"] > 0.8 and 0 < info["best_step"] <= info["steps"]


def test_partial_finetune_leaves_frozen_weights_untouched():
    data = make_data()
    s = make_eval_splits(data)
    enc = TinyEncoder()
    before = enc.stem[0].weight.detach().clone()
    top = enc.block[0].weight.detach().clone()
    model, _ = finetune(enc, s.train, s.val, num_classes=2, mode="partial",
                        cfg=FinetuneConfig(steps=20, eval_every=10, batch_size=16, lr=1e-2), seed=0)
    assert torch.equal(model.encoder.stem[0].weight, before)
    assert not torch.equal(model.encoder.block[0].weight, top)


def test_feature_cache_reuses_and_keys(tmp_path):
    data = make_data()
    s = make_eval_splits(data)
    enc = TinyEncoder()
    f1 = cached_features(enc, s.val, weights="w1", source="src", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    with torch.no_grad():
        enc.stem[0].weight.mul_(0)  # a changed encoder under the same weights id reads the cache
    f2 = cached_features(enc, s.val, weights="w1", source="src", cache_dir=tmp_path)
    assert np.array_equal(f1, f2) and f1.shape == (len(s.val), 8)
    f3 = cached_features(enc, s.val, weights="w2", source="src", cache_dir=tmp_path)
    assert not np.array_equal(f1, f3) and len(list(tmp_path.glob("*.npy"))) == 2

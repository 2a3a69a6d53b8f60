"""PCLR: the patient-pair sampler's properties, fallback counts, the loss and the task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretext.base import SSLSplit
from pretext.errors import UserError
from pretext.registry import create_encoder, create_task
from signalssl.tasks.pclr import PCLR, PatientPairs, pair_candidates


class ToySplit(SSLSplit):
    """Items are 1x64 signals whose value encodes (patient, record, window) for checking pairs."""

    def __init__(self, patients: list[int], records: list[int]) -> None:
        self.patients = np.asarray(patients)
        self.records = np.asarray(records)
        self.labels = np.zeros(len(patients), dtype=np.int64)
        self.patient_names = [str(p) for p in sorted(set(patients))]

    def __len__(self) -> int:
        return len(self.patients)

    def load(self, i: int) -> torch.Tensor:
        return torch.full((1, 64), float(i))


# patient 0: records 0 (3 windows) and 1 (2 windows); patient 1: record 2 (2 windows);
# patient 2: record 3 (1 window); patient 3: records 4 and 5 (1 window each)
PATIENTS = [0, 0, 0, 1, 0, 0, 1, 2, 3, 3]
RECORDS = [0, 0, 0, 2, 1, 1, 2, 3, 4, 5]


def test_pairs_never_cross_patients_and_prefer_other_recordings() -> None:
    split = ToySplit(PATIENTS, RECORDS)
    with pytest.warns(UserWarning, match="3 of 10 items"):
        ds = PatientPairs(split, seed=0, repeats=20)
    assert ds.n_fallback == 3 and ds.n_same_window == 1  # patient 1 (2 items) and patient 2 (1 item)
    fallback_items = {3, 6, 7}
    for v in range(len(ds)):
        i, j = v % len(split), ds.partner(v)
        assert split.patients[i] == split.patients[j]
        if i in fallback_items:
            assert split.records[i] == split.records[j]  # only then two windows of one recording
            assert (i == j) == (i == 7)  # a single-window record pairs with itself
        else:
            assert split.records[i] != split.records[j]
    item = ds[4]
    assert item["x"].shape == item["x2"].shape == (1, 64)
    j = int(item["x2"][0, 0])
    assert PATIENTS[j] == 0 and RECORDS[j] == 0 and not bool(item["same_record"])


def test_pairs_deterministic_and_varied() -> None:
    split = ToySplit(PATIENTS, RECORDS)
    with pytest.warns(UserWarning):
        a, b = PatientPairs(split, seed=5, repeats=8), PatientPairs(split, seed=5, repeats=8)
    pa = [a.partner(v) for v in range(len(a))]
    assert pa == [b.partner(v) for v in range(len(b))]
    partners_of_0 = {pa[v] for v in range(0, len(a), len(split))}
    assert partners_of_0 <= {4, 5} and len(partners_of_0) == 2  # both windows of the other recording get used


def test_record_mode_pairs_windows_of_one_recording() -> None:
    split = ToySplit(PATIENTS, RECORDS)
    ds = PatientPairs(split, seed=0, repeats=5, pair="record")
    for v in range(len(ds)):
        i, j = v % len(split), ds.partner(v)
        assert split.records[i] == split.records[j]
        assert i != j or RECORDS.count(RECORDS[i]) == 1
    with pytest.raises(UserError, match="pair"):
        PatientPairs(split, pair="other")


def test_pair_candidates_bounds() -> None:
    c = pair_candidates(np.array(PATIENTS), np.array(RECORDS))
    order = c["order"]
    for i in range(len(PATIENTS)):
        block = order[c["p_lo"][i]: c["p_hi"][i]]
        assert sorted(block.tolist()) == [k for k, p in enumerate(PATIENTS) if p == PATIENTS[i]]
        rblock = order[c["r_lo"][i]: c["r_hi"][i]]
        assert sorted(rblock.tolist()) == [k for k, r in enumerate(RECORDS) if r == RECORDS[i]]


def _batch(n: int = 4, t: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(n, 2, t, generator=g), "x2": torch.randn(n, 2, t, generator=g),
            "patient": torch.tensor([0, 1, 1, 2])[:n], "same_record": torch.tensor([False, True, False, False])[:n]}


def test_task_forward_backward_and_metrics() -> None:
    enc = create_encoder("xresnet1d18", n_chans=2, n_times=256, widths=(8, 8, 16, 16))
    task = create_task("pclr", enc, proj_dim=8, proj_hidden=16, augment=("noise", "scale", "mask", "dropout", "wander"))
    out = task(_batch(), generator=torch.Generator().manual_seed(0))
    assert out["loss"].dtype == torch.float32 and float(out["same_record_frac"]) == 0.25
    assert float(out["dup_patient_frac"]) == pytest.approx(0.25)
    out["loss"].backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_seeded_views_are_reproducible() -> None:
    enc = create_encoder("cpc_encoder", n_chans=2, n_times=256, dim=8, context_dim=8).eval()
    task = create_task("pclr", enc, augment=("noise", "mask"), aug_p=1.0).eval()
    b = _batch()
    a1 = task(b, generator=torch.Generator().manual_seed(3))["loss"]
    a2 = task(b, generator=torch.Generator().manual_seed(3))["loss"]
    a3 = task(b, generator=torch.Generator().manual_seed(4))["loss"]
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_multi_positive_changes_the_loss() -> None:
    enc = create_encoder("cpc_encoder", n_chans=2, n_times=256, dim=8, context_dim=8).eval()
    torch.manual_seed(0)
    multi = create_task("pclr", enc, proj_layers=0).eval()
    single = create_task("pclr", enc, proj_layers=0, multi_positive=False).eval()
    b = _batch()
    assert not torch.allclose(multi(b)["loss"], single(b)["loss"])
    b["patient"] = torch.arange(4)
    assert torch.allclose(multi(b)["loss"], single(b)["loss"])


def test_wrap_dataset_and_errors() -> None:
    split = ToySplit([0, 0, 1, 1], [0, 1, 2, 3])
    ds = PCLR.wrap_dataset(split, PCLR.Config(repeats=3), seed=1)
    assert isinstance(ds, PatientPairs) and len(ds) == 12 and ds.n_fallback == 0
    enc = create_encoder("cpc_encoder", n_chans=2, n_times=256, dim=8, context_dim=8)
    task = create_task("pclr", enc)
    with pytest.raises(UserError, match="wrap_dataset"):
        task({"x": torch.randn(2, 2, 256), "patient": torch.arange(2)})
    with pytest.raises(UserError, match="augment"):
        create_task("pclr", enc, augment=("rotate",))
    with pytest.raises(UserError, match="temperature"):
        create_task("pclr", enc, temperature=0)
    with pytest.raises(UserError, match="at least 2"):
        task({"x": torch.randn(1, 2, 256), "x2": torch.randn(1, 2, 256), "patient": torch.zeros(1, dtype=torch.long)})


def test_pclr_learns_patient_identity() -> None:
    """Recordings of one patient share a waveform: a few steps pull their embeddings together."""
    torch.manual_seed(0)
    t = torch.arange(256) / 64.0
    base = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (1.0, 2.0, 3.5, 5.0, 7.0, 9.0)])  # 6 patients
    enc = create_encoder("cpc_encoder", n_chans=1, n_times=256, dim=16, context_dim=16)
    task = create_task("pclr", enc, proj_dim=16, proj_hidden=32)
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        g = torch.Generator().manual_seed(step)
        x1 = base[:, None] + 0.3 * torch.randn(6, 1, 256, generator=g)
        x2 = base[:, None] + 0.3 * torch.randn(6, 1, 256, generator=g)
        loss = task({"x": x1, "x2": x2, "patient": torch.arange(6)})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])

"""Integration on the real shared data (read in place): CinC 2017, CinC 2021 sample, EEGMAT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretext.data import encoder_for_data, load_data
from pretext.registry import create_task

pytestmark = pytest.mark.data


def test_cinc2017_validation_set(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "physionet2017-af-validation" / "validation"
    data = load_data(f"cinc2017:{folder}?cache={tmp_path}&window=10")
    assert data.meta["n_records"] == 300 and data.meta["n_patients"] == 300 and data.sfreq == 300.0
    labels = np.concatenate([s.labels for s in data.splits.values()])
    recs = np.concatenate([s.records for s in data.splits.values()])
    per_record = {int(r): int(lab) for r, lab in zip(recs, labels, strict=True)}
    counts = np.bincount(list(per_record.values()), minlength=4)
    assert counts.tolist() == [150, 50, 70, 30]  # N, A, O, ~ as documented in SOURCE.md
    x = data.splits["train"][0]["x"]
    assert x.shape == (1, 3000) and 0.05 < float(x.std()) < 5  # mV scale


def test_cinc2021_sample_mat_records(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "cinc2021-sample" / "cinc2021_sample"
    data = load_data(f"cinc2021:{folder}?cache={tmp_path}&sfreq=100&split=none")
    assert data.input_shape == (12, 1000) and data.channel_names[3] == "aVR" and data.multilabel
    tr = data.splits["train"]
    assert len(tr) == 50
    tachy = data.class_names.index("427084000")
    assert int(tr.labels[:, tachy].sum()) == 23  # sinus tachycardia count from SOURCE.md


def test_eegmat_two_recordings_per_subject(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "eegmat-mental-arithmetic" / "eeg-during-mental-arithmetic-tasks-1.0.0"
    data = load_data(f"eegmat:{folder}?cache={tmp_path}&window=4&sfreq=100")
    assert data.meta["n_records"] == 72 and data.meta["n_patients"] == 36
    assert data.meta["patients_with_one_record"] == 0 and data.channel_names[0] == "EEG F3"
    tr = data.splits["train"]
    ds = create_task("pclr", encoder_for_data("cpc_encoder", data, dim=8, context_dim=8)).wrap_dataset(tr, None, 0)
    assert ds.n_fallback == 0
    item = ds[0]
    assert item["x"].shape == item["x2"].shape == (8, 400) and not bool(item["same_record"])
    assert 1.0 < float(item["x"].std()) < 200.0  # microvolts
    assert torch.isfinite(item["x2"]).all()

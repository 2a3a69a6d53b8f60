"""Tests of the synthetic 12-lead ECG data kind (signalssl.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from pretext.data import load_data
from pretext.errors import ConfigError, DataError
from signalssl.synthetic import CLASSES, LEADS, lead_vectors

SPEC = "synthetic_ecg:?n_patients=24&recordings_per_patient=2&seconds=8&sfreq=100"


@pytest.fixture(scope="module")
def data():
    return load_data(SPEC)


def _rr(x: np.ndarray, sfreq: float) -> np.ndarray:
    """RR intervals (s) from the QRS energy of all leads (a trivial beat detector)."""
    energy = (np.diff(x, axis=1) ** 2).sum(0)
    peaks, _ = find_peaks(energy, height=0.25 * np.percentile(energy, 99.5), distance=int(0.27 * sfreq))
    return np.diff(peaks) / sfreq


def test_shapes_splits_and_meta(data):
    assert data.modality == "signal" and data.input_shape == (12, 800) and data.sfreq == 100.0
    assert data.channel_names == LEADS and data.class_names == CLASSES and data.num_classes == 4
    assert set(data.splits) == {"train", "val", "test"}
    assert sum(len(s) for s in data.splits.values()) == 48
    item = data.splits["train"][0]
    assert item["x"].shape == (12, 800) and item["x"].dtype.__str__() == "torch.float32"
    assert item["label"].item() in range(4)
    for split in data.splits.values():
        assert split.labels.shape == split.patients.shape == (len(split),)
        assert list(split.meta.columns) == ["patient", "sex", "age", "site", "recording"]
        assert all(split.patient_names[p] == n for p, n in zip(split.patients, split.meta["patient"], strict=True))
    # patient-wise: no patient on two sides; every class in every split
    sets = {k: set(s.patients.tolist()) for k, s in data.splits.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    for split in data.splits.values():
        assert set(split.labels.tolist()) == set(range(4))
        for p in np.unique(split.patients):  # one class per patient, all recordings present
            assert np.unique(split.labels[split.patients == p]).size == 1 and (split.patients == p).sum() == 2


def test_deterministic_and_seeded(tmp_path, data):
    again = load_data(SPEC)
    a, b = data.splits["val"], again.splits["val"]
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(a.load(i).numpy(), b.load(i).numpy()) for i in range(len(a)))
    other = load_data(SPEC + "&seed=1").splits["val"]
    assert not np.array_equal(a.load(0).numpy(), other.load(0).numpy())
    cached = load_data(SPEC.replace(":?", f":{tmp_path}?"))  # written, then read back from the cache
    assert len(list(tmp_path.glob("*.npy"))) == 1
    reread = load_data(SPEC.replace(":?", f":{tmp_path}?"))
    assert np.array_equal(cached.splits["val"].load(3).numpy(), a.load(3).numpy())
    assert np.array_equal(reread.splits["val"].load(3).numpy(), a.load(3).numpy())


def test_einthoven_and_recordings_differ():
    clean = load_data(SPEC + "&noise=0").splits["train"]
    x = clean.load(0).numpy()
    lead = {n: i for i, n in enumerate(LEADS)}
    # III = II - I up to the per-recording gain (electrode jitter breaks it only slightly)
    resid = x[lead["III"]] - (x[lead["II"]] - x[lead["I"]])
    assert np.abs(resid).max() < 0.35 * np.abs(x[lead["II"]]).max()
    vecs = lead_vectors()
    assert np.allclose(vecs[2], vecs[1] - vecs[0]) and np.allclose(vecs[3] + vecs[4] + vecs[5], 0)
    assert not np.allclose(clean.load(0).numpy(), clean.load(1).numpy())  # two recordings of one patient


def test_classes_separable_by_rr_features():
    data = load_data("synthetic_ecg:?n_patients=40&recordings_per_patient=1&seconds=10")
    feats = {c: [] for c in range(4)}
    for split in data.splits.values():
        for i in range(len(split)):
            rr = _rr(split.load(i).numpy(), 100.0)
            feats[int(split.labels[i])].append((60 / np.median(rr), np.std(np.diff(rr)) / np.mean(rr)))
    hr = {c: np.array([f[0] for f in v]) for c, v in feats.items()}
    irr = {c: np.array([f[1] for f in v]) for c, v in feats.items()}
    assert hr[2].min() > hr[0].max() - 5  # tachycardia: rate alone separates it from normal sinus
    assert np.median(hr[2]) > 100 > np.median(hr[0])
    # AF: successive RR differences are large; sinus rhythms are regular
    assert np.median(irr[1]) > 3 * np.median(irr[0]) and np.mean(irr[1] > np.max(irr[0])) >= 0.8


def test_bad_options():
    with pytest.raises(ConfigError, match="n_patients"):
        load_data("synthetic_ecg:?n_patients=3")
    with pytest.raises(ConfigError, match="sfreq"):
        load_data("synthetic_ecg:?sfreq=10")
    with pytest.raises(ConfigError, match="unknown option"):
        load_data("synthetic_ecg:?patients=10")


def test_cache_path_that_is_a_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="x.txt"):
        load_data(f"synthetic_ecg:{f}?n_patients=8&recordings_per_patient=1")


def test_wide_qrs_separable_by_qrs_width():
    """Bundle-branch-like class: the QRS energy lobe (all leads, clean signals) is wider than in every other class."""
    data = load_data("synthetic_ecg:?n_patients=24&recordings_per_patient=1&seconds=6&sfreq=500&noise=0")
    widths = {c: [] for c in range(4)}
    for split in data.splits.values():
        for i in range(len(split)):
            energy = np.sqrt((np.diff(split.load(i).numpy(), axis=1) ** 2).sum(0))
            peaks, _ = find_peaks(energy, height=0.3 * energy.max(), distance=int(0.27 * 500))
            per_beat = []
            for p in peaks[1:-1]:
                above = energy > 0.15 * energy[p]
                left, right = p, p
                while left > 0 and above[left]:
                    left -= 1
                while right < len(energy) - 1 and above[right]:
                    right += 1
                per_beat.append((right - left) / 500)
            widths[int(split.labels[i])].append(np.median(per_beat))
    narrow = max(max(widths[c]) for c in (0, 1, 2))
    assert min(widths[3]) > narrow

"""Tiny real-format signal files written by the tests: WFDB (wfdb.wrsamp), EDF (mne export),
a miniature PTB-XL in the official layout, an EEGMAT-like folder, Sleep-EDF and a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

LEADS12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg_like(n_chans: int, n_times: int, sfreq: float, seed: int = 0, hr: float = 70.0) -> np.ndarray:
    """``(C, T)`` mV: a spiky periodic beat train + noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / sfreq
    phase = (t * hr / 60.0) % 1.0
    beat = np.exp(-((phase - 0.3) ** 2) / 0.0008) - 0.2 * np.exp(-((phase - 0.6) ** 2) / 0.004)
    gains = rng.uniform(0.5, 1.5, size=(n_chans, 1))
    return (gains * beat[None] + 0.02 * rng.standard_normal((n_chans, n_times))).astype(np.float64)


def write_wfdb(folder: Path, name: str, sig: np.ndarray, sfreq: float, leads: list[str], units: str = "mV",
               comments: list[str] | None = None) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=sfreq, units=[units] * sig.shape[0], sig_name=leads, p_signal=sig.T,
                fmt=["16"] * sig.shape[0], comments=comments or [], write_dir=str(folder))
    return folder / name


def write_edf(path: Path, data_uv: np.ndarray, sfreq: float, ch_names: list[str],
              annotations: list[tuple[float, float, str]] | None = None) -> Path:
    import edfio  # noqa: F401  (mne's EDF export needs it; it is in requirements.lock, so a missing one fails)
    import mne

    path.parent.mkdir(parents=True, exist_ok=True)
    info = mne.create_info(ch_names, sfreq, "eeg")
    raw = mne.io.RawArray(data_uv * 1e-6, info, verbose="error")
    if annotations:
        on, du, de = zip(*annotations, strict=True)
        raw.set_annotations(mne.Annotations(list(on), list(du), list(de)))
    mne.export.export_raw(str(path), raw, fmt="edf", overwrite=True, verbose="error")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def wfdb_folder(tmp_path: Path) -> Path:
    """Three 2-lead 100 Hz records (8 s, 5 s, 2 s) in one folder."""
    root = tmp_path / "wfdb"
    for i, secs in enumerate((8, 5, 2)):
        write_wfdb(root, f"rec{i}", ecg_like(2, int(secs * 100), 100.0, seed=i), 100.0, ["I", "II"])
    return root


@pytest.fixture
def mini_ptbxl(tmp_path: Path) -> Path:
    """PTB-XL in its official layout: 6 records of 4 patients, folds 1-10, records100 and records500."""
    root = tmp_path / "ptbxl"
    st = pd.DataFrame(
        {"description": ["normal", "inferior MI", "anteroseptal MI", "LVH", "sinus rhythm", "AF", "non-diag T"],
         "diagnostic": [1, 1, 1, 1, np.nan, np.nan, 1], "form": [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 1],
         "rhythm": [np.nan, np.nan, np.nan, np.nan, 1, 1, np.nan],
         "diagnostic_class": ["NORM", "MI", "MI", "HYP", np.nan, np.nan, "STTC"],
         "diagnostic_subclass": ["NORM", "IMI", "AMI", "LVH", np.nan, np.nan, "STTC"]},
        index=pd.Index(["NORM", "IMI", "ASMI", "LVH", "SR", "AFIB", "NDT"]))
    root.mkdir()
    st.to_csv(root / "scp_statements.csv")
    codes = ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 50.0, 'ASMI': 80.0, 'SR': 0.0}", "{'LVH': 100.0, 'AFIB': 0.0}",
             "{'NORM': 80.0, 'SR': 0.0}", "{'NDT': 100.0, 'SR': 0.0}", "{'AFIB': 0.0}"]
    rows = []
    for i, (code, pat, fold) in enumerate(zip(codes, [11, 11, 22, 33, 44, 44], [1, 2, 9, 10, 3, 10], strict=True)):
        eid = i + 1
        lr, hr = f"records100/00000/{eid:05d}_lr", f"records500/00000/{eid:05d}_hr"
        write_wfdb(root / "records100" / "00000", f"{eid:05d}_lr", ecg_like(12, 1000, 100.0, eid), 100.0, LEADS12)
        write_wfdb(root / "records500" / "00000", f"{eid:05d}_hr", ecg_like(12, 5000, 500.0, eid), 500.0, LEADS12)
        rows.append({"ecg_id": eid, "patient_id": float(pat), "age": 50 + i, "sex": i % 2, "scp_codes": code,
                     "strat_fold": fold, "filename_lr": lr, "filename_hr": hr})
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    return root


@pytest.fixture
def eegmat_like(tmp_path: Path) -> Path:
    """EEGMAT naming: SubjectNN_1.edf (rest, 8 s) and SubjectNN_2.edf (task, 4 s), 2 EEG channels, 100 Hz."""
    root = tmp_path / "eegmat"
    rng = np.random.default_rng(0)
    subs = [f"Subject{i:02d}" for i in range(5)]
    for s in subs:
        for k, secs in ((1, 8), (2, 4)):
            write_edf(root / f"{s}_{k}.edf", 20 * rng.standard_normal((2, secs * 100)), 100.0, ["EEG F3", "EEG Fz"])
    pd.DataFrame({"Subject": subs, "Age": [20, 21, 22, 23, 24], "Count quality": [1, 0, 1, 1, 0]}).to_csv(
        root / "subject-info.csv", index=False)
    return root


@pytest.fixture
def sleepedf_like(tmp_path: Path) -> Path:
    """One Sleep-EDF night: PSG (2 EEG channels, 100 Hz, 6 min) + hypnogram sidecar."""
    root = tmp_path / "sleep"
    rng = np.random.default_rng(1)
    write_edf(root / "SC4001E0-PSG.edf", 20 * rng.standard_normal((2, 36000)), 100.0, ["EEG Fpz-Cz", "EEG Pz-Oz"])
    stages = [(0, 60, "Sleep stage W"), (60, 60, "Sleep stage 1"), (120, 90, "Sleep stage 2"),
              (210, 60, "Sleep stage 4"), (270, 30, "Movement time"), (300, 60, "Sleep stage R")]
    write_edf(root / "SC4001EC-Hypnogram.edf", np.zeros((1, 360)), 1.0, ["Event marker"], stages)
    return root

"""Readers on files the tests write: WFDB (.dat and .mat), EDF, .npy; preprocessing; bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.signal import welch

from pretext.errors import DataError, UserError
from signalssl.io import check_edf_size, read_record
from signalssl.preprocess import match_channels, preprocess, resample
from tests.signalssl.conftest import ecg_like, write_edf, write_wfdb


def test_wfdb_dat_in_mv_with_lead_names(tmp_path: Path) -> None:
    sig = ecg_like(3, 500, 250.0)
    write_wfdb(tmp_path, "r", sig, 250.0, ["I", "aVR", "V1"])
    rec = read_record(tmp_path / "r.hea")
    assert rec.signal.shape == (3, 500) and rec.signal.dtype == np.float32
    assert rec.channels == ["I", "aVR", "V1"] and rec.units == ["mV"] * 3 and rec.sfreq == 250.0
    np.testing.assert_allclose(rec.signal, sig, atol=2e-3)  # 16-bit quantisation


def test_wfdb_microvolts_converted_to_mv(tmp_path: Path) -> None:
    sig_uv = 1000 * ecg_like(1, 300, 100.0)
    write_wfdb(tmp_path, "u", sig_uv, 100.0, ["II"], units="uV")
    rec = read_record(tmp_path / "u")
    assert rec.units == ["mV"]
    np.testing.assert_allclose(rec.signal, sig_uv / 1000, atol=2e-3)


def test_wfdb_mat_format(tmp_path: Path) -> None:
    """A PhysioNet-challenge style record: MATLAB v4 ``val`` int16 + header with byte offset 24."""
    dig = (ecg_like(2, 400, 200.0) * 1000).astype(np.int16)
    scipy.io.savemat(tmp_path / "m1.mat", {"val": dig}, format="4")
    header = ["m1 2 200 400"] + [f"m1.mat 16+24 1000/mV 16 0 {dig[i, 0]} 0 0 {n}" for i, n in enumerate(["I", "II"])]
    (tmp_path / "m1.hea").write_text("\n".join(header + ["# Dx: 426783006"]) + "\n")
    rec = read_record(tmp_path / "m1.mat")
    np.testing.assert_allclose(rec.signal, dig / 1000.0, atol=1e-6)
    assert rec.channels == ["I", "II"] and "Dx: 426783006" in rec.meta["comments"]


def test_wfdb_header_with_date_before_time(tmp_path: Path) -> None:
    """CinC 2017 headers write the date before the time, which wfdb cannot parse; we repair it."""
    dig = (ecg_like(1, 300, 300.0) * 1000).astype(np.int16)
    scipy.io.savemat(tmp_path / "A1.mat", {"val": dig}, format="4")
    (tmp_path / "A1.hea").write_text("A1 1 300 300 2014-05-08 05:05:15 \nA1.mat 16+24 1000/mV 16 0 0 0 0 ECG \n")
    rec = read_record(tmp_path / "A1")
    assert rec.signal.shape == (1, 300) and rec.sfreq == 300.0


def test_edf_in_microvolts_with_annotations(tmp_path: Path) -> None:
    data = 30 * np.random.default_rng(0).standard_normal((2, 1000))
    f = write_edf(tmp_path / "a.edf", data, 100.0, ["EEG F3", "EEG Fz"], [(1.0, 2.0, "blink")])
    rec = read_record(f)
    assert rec.channels == ["EEG F3", "EEG Fz"] and rec.units == ["uV", "uV"] and rec.sfreq == 100.0
    np.testing.assert_allclose(rec.signal, data, atol=0.05 * np.abs(data).max() / 100)
    assert rec.meta["annotations"] == [(1.0, 2.0, "blink")]


def test_npy_needs_rate_and_right_orientation(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((2, 256), np.float32))
    assert read_record(tmp_path / "x.npy", sfreq=128).signal.shape == (2, 256)
    with pytest.raises(DataError, match="stores no sampling rate"):
        read_record(tmp_path / "x.npy")
    np.save(tmp_path / "t.npy", np.ones((256, 2), np.float32))
    with pytest.raises(DataError, match="transpose"):
        read_record(tmp_path / "t.npy", sfreq=128)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.faults
def test_truncated_edf_names_file_and_fix(tmp_path: Path) -> None:
    f = write_edf(tmp_path / "ok.edf", np.zeros((2, 1000)), 100.0, ["A", "B"])
    check_edf_size(f)
    cut = tmp_path / "cut.edf"
    cut.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"cut\.edf.*truncated.*re-download"):
        read_record(cut)
    grown = tmp_path / "grown.edf"
    grown.write_bytes(f.read_bytes() + b"\r\n")
    with pytest.raises(DataError, match="line-ending"):
        read_record(grown)


@pytest.mark.faults
def test_truncated_wfdb_names_file(tmp_path: Path) -> None:
    write_wfdb(tmp_path, "t", ecg_like(2, 500, 100.0), 100.0, ["I", "II"])
    dat = tmp_path / "t.dat"
    dat.write_bytes(dat.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"t\.dat: truncated WFDB signal file.*1950 bytes.*2000"):
        read_record(tmp_path / "t")


def test_nan_samples_rejected(tmp_path: Path) -> None:
    sig = ecg_like(2, 300, 100.0)
    sig[1, 10:20] = np.nan  # wfdb writes NaN as the invalid-sample value and reads it back as NaN
    write_wfdb(tmp_path, "n", sig, 100.0, ["I", "II"])
    with pytest.raises(DataError, match=r"n: 10 NaN/inf samples in channel\(s\) \['II'\]"):
        read_record(tmp_path / "n")
    arr = np.zeros((1, 50), np.float32)
    arr[0, 3] = np.inf
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(DataError, match="bad.npy: 1 NaN/inf"):
        read_record(tmp_path / "bad.npy", sfreq=10)


def test_declared_rate_mismatch(tmp_path: Path) -> None:
    write_wfdb(tmp_path, "r", ecg_like(1, 300, 100.0), 100.0, ["I"])
    with pytest.raises(DataError, match="sampling-rate mismatch.*100 Hz.*sfreq=250"):
        read_record(tmp_path / "r", sfreq=250)


def test_missing_and_unknown_channels(tmp_path: Path) -> None:
    write_wfdb(tmp_path, "r", ecg_like(2, 300, 100.0), 100.0, ["I", "aVR"])
    rec = read_record(tmp_path / "r")
    with pytest.raises(DataError, match=r"channel 'V7' is missing; available channels: \['I', 'aVR'\]"):
        preprocess(rec, channels=["I", "V7"])
    assert match_channels(["EEG F3", "EEG Fz"], ["fz", "F3"]) == [1, 0]
    assert match_channels(["I", "aVR"], ["AVR"]) == [1]
    with pytest.raises(DataError, match="ambiguous"):
        match_channels(["EEG Fz", "ECG Fz"], ["fz"])


def test_missing_header(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown signal format"):
        read_record(tmp_path / "nothing")
    with pytest.raises(DataError, match="header not found"):
        read_record(tmp_path / "nothing.hea")


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_order_filter_resample(tmp_path: Path) -> None:
    sfreq, n = 500.0, 5000
    t = np.arange(n) / sfreq
    sig = np.stack([np.sin(2 * np.pi * 5 * t) + np.sin(2 * np.pi * 50 * t), 0.1 * np.sin(2 * np.pi * 0.05 * t) + np.sin(2 * np.pi * 10 * t)])
    write_wfdb(tmp_path, "p", sig, sfreq, ["A", "B"])
    rec = read_record(tmp_path / "p")
    out = preprocess(rec, sfreq=100, channels=["B", "A"], bandpass_hz=(1.0, 40.0), notch_hz=50.0)
    assert out.channels == ["B", "A"] and out.sfreq == 100.0 and out.signal.shape == (2, 1000)
    f, p = welch(out.signal[1], fs=100.0, nperseg=256)
    assert p[np.argmin(np.abs(f - 5))] > 100 * p[np.argmin(np.abs(f - 45))]  # 5 Hz kept, 50 Hz gone
    with pytest.raises(UserError, match="below Nyquist"):
        preprocess(rec, bandpass_hz=(1.0, 300.0))
    assert resample(np.ones((1, 300), np.float32), 300.0, 100.0).shape == (1, 100)


@pytest.mark.data
def test_real_edf_sizes_match(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "eegmat-mental-arithmetic" / "eeg-during-mental-arithmetic-tasks-1.0.0"
    files = sorted(folder.glob("*.edf"))
    assert len(files) == 72
    for f in files[:6]:
        check_edf_size(f)
    tmp_copy = Path(shutil.copy(files[0], tmp_path / files[0].name))
    with open(tmp_copy, "r+b") as fh:
        fh.truncate(tmp_copy.stat().st_size - 1)
    with pytest.raises(DataError, match="truncated"):
        check_edf_size(tmp_copy)


@pytest.mark.parametrize("fmt", ["bdf", "fif"])
def test_bdf_and_fif(tmp_path: Path, fmt: str) -> None:
    import mne

    data = 1e-5 * np.random.default_rng(0).standard_normal((2, 500))
    raw = mne.io.RawArray(data, mne.create_info(["Cz", "Pz"], 100.0, "eeg"), verbose="error")
    path = tmp_path / (f"x.{fmt}" if fmt == "bdf" else "x_raw.fif")
    if fmt == "bdf":
        import edfio  # noqa: F401  (mne's BDF export needs it; in requirements.lock)
        mne.export.export_raw(str(path), raw, fmt="bdf", verbose="error")
        check_edf_size(path)  # 3 bytes per sample
    else:
        raw.save(path, verbose="error")
    rec = read_record(path)
    assert rec.channels == ["Cz", "Pz"] and rec.units == ["uV", "uV"]
    np.testing.assert_allclose(rec.signal, data * 1e6, atol=1e-3 if fmt == "bdf" else 1e-4)

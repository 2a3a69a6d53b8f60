"""Data faults are said by name with the fix (issue 10, items 4 and 5): nothing is silently reused,
relabelled or lost. Each test writes a tiny bad file with the real library (nibabel, wfdb, numpy, mne)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pretext.data import load_data
from pretext.errors import ConfigError, DataError
from signalssl.io import read_record
from sslbench.splits import FractionFallbackWarning, sample_fraction
from volssl.io import read_medmnist, read_volume


def _nifti(path: Path, data: np.ndarray, time_unit: str | None = None) -> Path:
    img = nib.Nifti1Image(data, np.eye(4))
    if time_unit:
        img.header.set_xyzt_units("mm", time_unit)
    nib.save(img, str(path))
    return path


def _volumes(folder: Path, n: int = 3) -> list[str]:
    rng = np.random.default_rng(0)
    return [_nifti(folder / f"v{i}.nii.gz", rng.random((8, 8, 8)).astype(np.float32)).name for i in range(n)]


def _wfdb(folder: Path, name: str, n_times: int, sfreq: float = 100.0) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    sig = np.random.default_rng(len(name) + n_times).standard_normal((n_times, 1))
    wfdb.wrsamp(name, fs=sfreq, units=["mV"], sig_name=["I"], p_signal=sig, fmt=["16"], write_dir=str(folder))
    return folder / name


def _medmnist(path: Path, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, k in zip(("train", "val", "test"), (4, 2, 2), strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, 8, 8, 8)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 2).reshape(k, 1).astype(np.uint8)
    arrays.update(override)
    np.savez(path, **arrays)
    return path


# -- item 4: errors ---------------------------------------------------------------------------------------
def test_volume_manifest_missing_file_named_or_skipped(tmp_path: Path) -> None:
    a, b, _ = _volumes(tmp_path)
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,patient_id\n{a},0,p0\nnope.nii.gz,1,p1\n{b},1,p2\n")
    with pytest.raises(DataError) as err:
        load_data(f"manifest3d:{csv}?cache=none")
    msg = str(err.value)
    assert str(csv) in msg and "line 3" in msg and str(tmp_path / "nope.nii.gz") in msg and "skip_broken" in msg
    with pytest.warns(UserWarning, match=r"line 3: .*nope\.nii\.gz"):
        data = load_data(f"manifest3d:{csv}?cache=none&skip_broken=true")
    assert len(data.splits["train"]) == 2 and data.meta["skipped"] == [str(tmp_path / "nope.nii.gz")]


def test_signal_manifest_missing_file_named_or_skipped(tmp_path: Path) -> None:
    _wfdb(tmp_path, "r0", 300)
    _wfdb(tmp_path, "r1", 300)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,patient_id\nr0,x,p0\ngone,y,p1\nr1,y,p2\n")
    spec = f"manifest:{csv}?cache={tmp_path / 'c'}&window=1&split=none"
    with pytest.raises(DataError) as err:
        load_data(spec)
    msg = str(err.value)
    assert str(csv) in msg and "line 3" in msg and str(tmp_path / "gone") in msg and "skip_broken=true" in msg
    with pytest.warns(UserWarning, match=r"line 3: .*gone does not exist"):
        data = load_data(spec + "&skip_broken=true")
    assert data.meta["n_records"] == 2 and [s["record"] for s in data.meta["skipped"]] == ["gone"]
    with pytest.raises(ConfigError, match=r"option 'on_error' is now called skip_broken \(true or false\)"):
        load_data(spec + "&on_error=skip")  # the 0.1 spelling is refused with the one to write
    with pytest.raises(ConfigError, match=r"skip_broken='sometimes' must be true or false"):
        load_data(spec + "&skip_broken=sometimes")


@pytest.mark.parametrize("bad", ["abc", "-5", "0"])
def test_sfreq_option_must_be_positive(tmp_path: Path, bad: str) -> None:
    _wfdb(tmp_path / "w", "r0", 300)
    with pytest.raises(ConfigError, match=f"sfreq must be a number > 0, got '{bad}'"):
        load_data(f"wfdb:{tmp_path / 'w'}?cache={tmp_path / 'c'}&window=1&split=none&sfreq={bad}")
    with pytest.raises(ConfigError, match=f"sfreq must be a number > 0, got '{bad}'"):
        read_record(tmp_path / "w" / "r0", sfreq=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["fast", "-250"])
def test_manifest_sfreq_column_must_be_positive(tmp_path: Path, bad: str) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 500), dtype=np.float32))
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,patient_id,sfreq\na.npy,x,p0,{bad}\n")
    with pytest.raises(DataError, match=rf"m\.csv line 2: sfreq must be a number > 0, got '{bad}'"):
        load_data(f"manifest:{csv}?cache={tmp_path / 'c'}&window=1")


@pytest.mark.parametrize("rate", ["-100", "0"])
def test_wfdb_header_rate_must_be_positive(tmp_path: Path, rate: str) -> None:
    rec = _wfdb(tmp_path, "r0", 300)
    hea = rec.with_name("r0.hea")
    lines = hea.read_text().splitlines()
    first = lines[0].split()
    first[2] = rate  # wfdb itself reads "-100" as its default 250 Hz
    hea.write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=rf"r0\.hea: sampling rate '{rate}' .* must be > 0"):
        read_record(rec)


def test_edf_record_duration_must_be_positive(tmp_path: Path) -> None:
    import edfio  # noqa: F401  (mne's EDF export needs it; in requirements.lock)
    import mne

    raw = mne.io.RawArray(np.random.default_rng(0).standard_normal((1, 400)) * 1e-5,
                          mne.create_info(["Fz"], 100.0, "eeg"), verbose="error")
    raw.export(str(tmp_path / "a.edf"), verbose="error")
    data = bytearray((tmp_path / "a.edf").read_bytes())
    data[244:252] = b"-1".ljust(8)  # record duration (s): rate = samples per record / duration
    (tmp_path / "n.edf").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"n\.edf: .*record duration is -1 s.*must be > 0"):
        read_record(tmp_path / "n.edf")


@pytest.mark.parametrize(("value", "found"), [(np.array(["a", "b"]), r"not numeric \(dtype <U1\)"),
                                              (None, r"object \(pickled\) array")])
def test_npz_string_or_object_dtype_is_named_never_unpickled(tmp_path: Path, value: object, found: str) -> None:
    marker = tmp_path / "unpickled"
    if value is None:  # an object array whose unpickling would create `marker`
        value = np.empty(2, dtype=object)
        value[0] = value[1] = _Touch(marker)
    path = _medmnist(tmp_path / "x.npz", train_images=value)
    with pytest.raises(DataError) as err:
        read_medmnist(path)
    msg = str(err.value)
    assert "x.npz" in msg and "train_images" in msg and "truncated" not in msg
    assert re.search(found, msg), msg
    assert not marker.exists()


class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


# -- item 5: silent changes become loud --------------------------------------------------------------------
def test_volume_manifest_duplicate_rows_refused(tmp_path: Path) -> None:
    a, b, _ = _volumes(tmp_path)
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,patient_id\n{a},0,p0\n{b},1,p1\n{a},0,p0\n")
    with pytest.raises(DataError, match=rf"{a}.* on lines \[2, 4\].*delete the repeated rows"):
        load_data(f"manifest3d:{csv}?cache=none")


def test_signal_manifest_duplicate_rows_refused(tmp_path: Path) -> None:
    _wfdb(tmp_path, "r0", 300)
    _wfdb(tmp_path, "r1", 300)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,patient_id\nr0,x,p0\nr1,y,p1\nr0.hea,x,p0\n")  # r0.hea is record r0 again
    with pytest.raises(DataError, match=r"r0 on lines \[2, 4\].*delete the repeated rows"):
        load_data(f"manifest:{csv}?cache={tmp_path / 'c'}&window=1")


@pytest.mark.parametrize("kind", ["manifest3d", "manifest"])
def test_patient_on_two_splits_refused_on_both_sides(tmp_path: Path, kind: str) -> None:
    if kind == "manifest3d":
        a, b, _ = _volumes(tmp_path)
    else:
        a, b = _wfdb(tmp_path, "r0", 300).name, _wfdb(tmp_path, "r1", 300).name
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,patient_id,split\n{a},0,p7,train\n{b},1,p7,test\n")
    with pytest.raises(DataError, match=r"m\.csv.*more than one split: p7 \(test/train\).*by patient"):
        load_data(f"{kind}:{csv}?cache={tmp_path / 'c'}&window=1")


def test_signal_record_shorter_than_window(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    _wfdb(folder, "long", 800)
    _wfdb(folder, "short", 150)
    spec = f"wfdb:{folder}?cache={tmp_path / 'c'}&window=2&split=none"
    with pytest.raises(DataError, match=r"short \(150 samples\).*pad_short=true.*skip_broken=true"):
        load_data(spec)
    with pytest.warns(UserWarning, match=r"shorter than one window.*short \(150 samples\)"):
        skipped = load_data(spec + "&skip_broken=true")
    assert len(skipped.splits["train"]) == 4 and skipped.meta["skipped"][0]["record"] == "short"
    padded = load_data(spec + "&pad_short=true")
    assert len(padded.splits["train"]) == 5 and padded.meta["n_padded_records"] == 1


def test_complex_nifti_refused(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "c.nii.gz", (np.ones((8, 8, 8)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(DataError, match=r"c\.nii\.gz' is complex-valued \(dtype complex64\).*np\.abs"):
        read_volume(path)


def test_4d_nifti_named_with_the_fix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    series = _nifti(tmp_path / "ts.nii.gz", rng.random((8, 8, 8, 5)).astype(np.float32), time_unit="sec")
    with pytest.raises(DataError, match=r"ts\.nii\.gz' is a 4D time series of 5 volumes.*fslsplit.*volume_index"):
        read_volume(series)
    one = read_volume(series, volume_index=3)
    assert one.array.shape == (1, 8, 8, 8)
    np.testing.assert_allclose(one.array[0], np.asarray(nib.load(series).dataobj)[..., 3])
    with pytest.raises(DataError, match="volume_index=9 must be in 0..4"):
        read_volume(series, volume_index=9)
    # a 4D file without a time unit is read as channels, and the ingest says so by name
    folder = tmp_path / "multi"
    folder.mkdir()
    _nifti(folder / "m.nii.gz", rng.random((8, 8, 8, 2)).astype(np.float32))
    with pytest.warns(UserWarning, match=r"4D; their last axis is read as channels: .*m\.nii\.gz \(2 volumes\)"):
        data = load_data(f"nifti:{folder}?cache=none&normalize=none")
    assert data.input_shape == (2, 8, 8, 8)
    assert load_data(f"nifti:{folder}?cache=none&normalize=none&volume_index=1").input_shape == (1, 8, 8, 8)


def test_npz_nan_volume_found_with_its_index(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((4, 8, 8, 8)).astype(np.float32)
    images[2, 1, 1, 1] = np.nan
    images[3, 0, 0, 0] = np.inf
    path = _medmnist(tmp_path / "n.npz", train_images=images)
    with pytest.raises(DataError, match=r"n\.npz': train_images\[2\] contains NaN .*indices \[2, 3\]"):
        load_data(f"medmnist3d:{path}?cache=none")


def test_fraction_fallback_is_a_visible_warning() -> None:
    labels = np.array([0] * 98 + [1] * 2)
    pids = np.array([f"p{i}" for i in range(100)])
    with pytest.warns(FractionFallbackWarning, match=r"fraction 0\.01 \(seed 0\) left class\(es\) \['pos'\].*strict"):
        draw = sample_fraction(labels, pids, 0.01, seed=0, class_names=["neg", "pos"])
    assert draw.fallback_classes == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when no class is left empty
        assert sample_fraction(labels, pids, 1.0, seed=0).fallback_classes == []

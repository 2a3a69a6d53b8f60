"""Data kinds end to end on files the tests write: layouts, labels, splits, store cache, windows, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import signalssl.ingest as store_mod
from pretext.data import load_data
from pretext.errors import DataError, UserError
from pretext.registry import list_data_kinds
from pretext.splits import patient_split
from signalssl.io import read_record
from signalssl.layouts import scan_ptbxl, sleep_events
from tests.signalssl.conftest import ecg_like, write_edf, write_wfdb

SIGNAL_KINDS = ["wfdb", "ptbxl", "cinc2017", "cinc2021", "edf", "eegmat", "sleepedf", "manifest"]


def test_kinds_registered() -> None:
    assert set(SIGNAL_KINDS) <= set(list_data_kinds("signal"))


def test_ptbxl_label_sets(mini_ptbxl: Path) -> None:
    def labels(ls: str) -> list[list[str]]:
        return [s.label for s in scan_ptbxl(mini_ptbxl, 100, ls)]

    assert labels("superclass") == [["NORM"], ["MI"], ["HYP"], ["NORM"], ["STTC"], []]
    assert labels("subclass") == [["NORM"], ["AMI", "IMI"], ["LVH"], ["NORM"], ["STTC"], []]
    assert labels("diagnostic") == [["NORM"], ["ASMI", "IMI"], ["LVH"], ["NORM"], ["NDT"], []]
    assert labels("rhythm") == [["SR"], ["SR"], ["AFIB"], ["SR"], ["SR"], ["AFIB"]]
    assert labels("form") == [[], [], [], [], ["NDT"], []]
    assert labels("all")[1] == ["ASMI", "IMI", "SR"]
    with pytest.raises(DataError, match="label_set"):
        scan_ptbxl(mini_ptbxl, 100, "nonsense")


def test_ptbxl_kind_official_folds(mini_ptbxl: Path, cache: str) -> None:
    data = load_data(f"ptbxl:{mini_ptbxl}?cache={cache}")
    assert data.input_shape == (12, 1000) and data.sfreq == 100.0 and data.multilabel
    assert data.class_names == ["HYP", "MI", "NORM", "STTC"]
    tr, va, te = data.splits["train"], data.splits["val"], data.splits["test"]
    # ecg 6 has no superclass label and is dropped (drop_empty); folds 1,2,3 -> train, 9 -> val, 10 -> test
    assert len(tr) == 3 and len(va) == 1 and len(te) == 1
    assert data.channel_names[:3] == ["I", "II", "III"] and data.meta["channel_units"] == ["mV"] * 12
    assert [tr.patient_names[p] for p in tr.patients] == ["11", "11", "44"]
    np.testing.assert_array_equal(va.labels[0], [1, 0, 0, 0])  # LVH -> HYP
    item = tr[1]
    assert item["x"].shape == (12, 1000) and item["label"].tolist() == [0, 1, 0, 0]
    hi = load_data(f"ptbxl:{mini_ptbxl}?cache={cache}&rate=500&labels=rhythm&drop_empty=false")
    assert hi.input_shape == (12, 5000) and hi.class_names == ["AFIB", "SR"] and len(hi.splits["test"]) == 2


def test_store_is_reused_and_never_reparsed(wfdb_folder: Path, cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"wfdb:{wfdb_folder}?cache={cache}&window=2&split=none&dtype=float32"
    first = load_data(spec)
    monkeypatch.setattr(store_mod, "read_record", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-read")))
    second = load_data(spec)
    assert first.meta["store"] == second.meta["store"]
    tr = second.splits["train"]
    # 8 s -> 4 windows, 5 s -> 2 windows, 2 s -> 1 window (200 samples each)
    assert len(tr) == 7 and tr.records.tolist() == [0, 0, 0, 0, 1, 1, 2]
    raw = read_record(wfdb_folder / "rec0").signal  # the module's own reader is not patched
    np.testing.assert_allclose(tr[1]["x"].numpy(), raw[:, 200:400], atol=1e-6)
    monkeypatch.undo()  # a changed option makes a new store
    assert load_data(spec.replace("window=2", "window=2&sfreq=50")).meta["store"] != first.meta["store"]


def test_cache_layout_is_the_volumes_one(wfdb_folder: Path, tmp_path: Path) -> None:
    # a given folder holds the stores in its signal/ subfolder (volumes: volumes/), named KIND-HASH
    data = load_data(f"wfdb:{wfdb_folder}?cache={tmp_path / 'c'}&window=2&split=none")
    store = Path(data.meta["store"])
    assert store.parent == tmp_path / "c" / "signal" and store.name.startswith("wfdb-")
    # cache=none: a temporary store, outside every cache folder, deleted when the process ends
    temp = Path(load_data(f"wfdb:{wfdb_folder}?cache=none&window=2&split=none").meta["store"])
    assert temp.is_dir() and tmp_path / "c" not in temp.parents and temp.parent.name.startswith("medssl-signal-")


def test_short_records_padded_and_float16(wfdb_folder: Path, cache: str) -> None:
    data = load_data(f"wfdb:{wfdb_folder}?cache={cache}&window=6&split=none&pad_short=true")
    tr = data.splits["train"]
    assert data.meta["n_padded_records"] == 2 and len(tr) == 3
    assert tr.sampling == "windows" and tr.records.tolist() == [0, 1, 2]  # declared (pretext.sampling)
    x = tr[2]["x"]
    assert x.shape == (2, 600) and torch.all(x[:, 200:] == 0) and x[:, :200].abs().sum() > 0
    assert np.memmap(Path(data.meta["store"]) / "signals.bin", dtype=np.float16).size == 2 * (800 + 500 + 200)


def test_dataloader_workers_read_same_items(wfdb_folder: Path, cache: str) -> None:
    tr = load_data(f"wfdb:{wfdb_folder}?cache={cache}&window=1&split=none").splits["train"]
    assert tr.store.data is not None  # opened in the parent; workers must reopen their own
    serial = torch.stack([tr[i]["x"] for i in range(len(tr))])
    batches = list(DataLoader(tr, batch_size=4, num_workers=2, shuffle=False))
    assert torch.equal(torch.cat([b["x"] for b in batches]), serial)


def test_eegmat_like_labels_patients_splits(eegmat_like: Path, cache: str) -> None:
    data = load_data(f"eegmat:{eegmat_like}?cache={cache}&window=2&val_fraction=0.2&test_fraction=0.2")
    assert data.class_names == ["rest", "task"] and data.input_shape == (2, 200)
    assert data.meta["n_patients"] == 5 and data.meta["patients_with_one_record"] == 0
    seen: dict[str, set[str]] = {}
    for name, sp in data.splits.items():
        for p in set(sp.patients.tolist()):
            seen.setdefault(sp.patient_names[p], set()).add(name)
        rec_labels = {(int(r), int(lab)) for r, lab in zip(sp.records, sp.labels, strict=True)}
        idx = sp.store.index
        for r, lab in sorted(rec_labels):  # _1 files are rest, _2 files are task
            assert idx["record"][r].endswith(f"_{lab + 1}.edf")
    assert all(len(v) == 1 for v in seen.values())  # no patient on two sides
    assert sum(len(s) for s in data.splits.values()) == 5 * (4 + 2)
    meta = json.loads(data.splits["train"].store.index["meta"][0])
    assert "Count quality" in meta


def test_edf_pattern_errors(eegmat_like: Path, cache: str) -> None:
    with pytest.raises(DataError, match="does not match pattern"):
        load_data(f"edf:{eegmat_like}?cache={cache}&pattern=(?P<patient>Patient\\d+)")
    with pytest.raises(DataError, match="not in label_map"):
        load_data(f"edf:{eegmat_like}?cache={cache}&pattern=(?P<patient>Subject\\d\\d)_(?P<label>\\d)&label_map=1:rest")


def test_sleepedf_epochs(sleepedf_like: Path, cache: str) -> None:
    data = load_data(f"sleepedf:{sleepedf_like}?cache={cache}&split=none")
    tr = data.splits["train"]
    assert data.input_shape == (1, 3000) and data.channel_names == ["EEG Fpz-Cz"]
    names = [data.class_names[i] for i in tr.labels]
    # W W N1 N1 N2 N2 N2 N3(stage 4) N3 [movement dropped] REM REM
    assert names == ["W", "W", "N1", "N1", "N2", "N2", "N2", "N3", "N3", "REM", "REM"]
    assert tr.starts.tolist()[-1] == 330 * 100
    assert sleep_events([(0, 3600, "Sleep stage W"), (3600, 30, "Sleep stage 2")], trim_wake_min=30)[0][0] == 1800


def test_cinc_layouts(tmp_path: Path, cache: str) -> None:
    root = tmp_path / "c17"
    for i in range(5):
        write_wfdb(root, f"A{i:04d}", ecg_like(1, 300 * (3 + i), 300.0, i), 300.0, ["ECG"])
    (root / "REFERENCE.csv").write_text("".join(f"A{i:04d},{lab}\n" for i, lab in enumerate("NAON~")))
    d = load_data(f"cinc2017:{root}?cache={cache}&window=3&split=none")
    assert d.class_names == ["N", "A", "O", "~"] and d.input_shape == (1, 900)
    assert d.splits["train"].labels[:1].tolist() == [0] and d.meta["n_patients"] == 5
    af = load_data(f"cinc2017:{root}?cache={cache}&window=3&split=none&classes=af")
    assert af.class_names == ["non-AF", "AF"] and int(af.splits["train"].labels.sum()) == 1  # A0001 (4 s) -> 1 window
    r21 = tmp_path / "c21"
    write_wfdb(r21, "E1", ecg_like(2, 500, 500.0), 500.0, ["I", "II"], comments=["Age: 60", "Dx: 426783006,164889003"])
    write_wfdb(r21, "E2", ecg_like(2, 250, 250.0), 250.0, ["I", "II"], comments=["Age: 70", "Dx: 164889003"])
    d21 = load_data(f"cinc2021:{r21}?cache={cache}&window=1&split=none&sfreq=250")
    assert d21.class_names == ["164889003", "426783006"] and d21.multilabel
    assert d21.splits["train"].labels.tolist() == [[1, 1], [1, 0]]


# -------------------------------------------------------------------------------- bad input
def test_rate_mismatch_in_folder_names_record_and_fix(tmp_path: Path, cache: str) -> None:
    root = tmp_path / "mix"
    write_wfdb(root, "a", ecg_like(1, 500, 100.0), 100.0, ["I"])
    write_wfdb(root, "b", ecg_like(1, 1250, 250.0), 250.0, ["I"])
    with pytest.raises(DataError, match=r"b: sampling-rate mismatch: 250 Hz.*100 Hz; pass sfreq=100"):
        load_data(f"wfdb:{root}?cache={cache}&window=1")
    assert load_data(f"wfdb:{root}?cache={cache}&window=1&sfreq=100&split=none").meta["n_items"]["train"] == 10


@pytest.mark.faults
def test_broken_record_in_folder_reported_by_name(wfdb_folder: Path, cache: str) -> None:
    dat = wfdb_folder / "rec1.dat"
    dat.write_bytes(dat.read_bytes()[:100])
    with pytest.raises(DataError, match=r"1 of 3 record\(s\) could not be ingested:\n  rec1: .*truncated"):
        load_data(f"wfdb:{wfdb_folder}?cache={cache}&window=1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(f"wfdb:{wfdb_folder}?cache={cache}&window=1&skip_broken=true&split=none")
    assert any("rec1" in str(w.message) for w in caught)
    assert [s["record"] for s in data.meta["skipped"]] == ["rec1"] and data.meta["n_records"] == 2


def test_channel_mismatch_and_missing_channel(tmp_path: Path, cache: str) -> None:
    root = tmp_path / "ch"
    write_wfdb(root, "a", ecg_like(2, 300, 100.0), 100.0, ["I", "II"])
    write_wfdb(root, "b", ecg_like(2, 300, 100.0), 100.0, ["I", "V1"])
    with pytest.raises(DataError, match=r"b: channels \['I', 'V1'\] differ.*pass channels="):
        load_data(f"wfdb:{root}?cache={cache}&window=1")
    with pytest.raises(DataError, match=r"channel 'II' is missing"):
        load_data(f"wfdb:{root}?cache={cache}&window=1&channels=I,II")
    d = load_data(f"wfdb:{root}?cache={cache}&window=1&channels=I&split=none")
    assert d.channel_names == ["I"] and d.input_shape == (1, 100)


def test_manifest_mixed_formats_and_errors(tmp_path: Path, wfdb_folder: Path, cache: str) -> None:
    np.save(tmp_path / "a.npy", ecg_like(2, 400, 100.0).astype(np.float32))
    write_edf(tmp_path / "e.edf", 1000 * ecg_like(2, 400, 100.0), 100.0, ["I", "II"])
    rows = [("a.npy", "AF", "p1", "100", "train"), (str(wfdb_folder / "rec0"), "N", "p2", "", "val"),
            ("e.edf", "N", "p3", "100", "test")]
    m = tmp_path / "m.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient_id", "sfreq", "split"]).to_csv(m, index=False)
    d = load_data(f"manifest:{m}?cache={cache}&window=2&dtype=float32&channels=I,II")  # names the .npy channels
    assert d.class_names == ["AF", "N"] and {k: len(v) for k, v in d.splits.items()} == {"train": 2, "val": 4, "test": 2}
    assert d.meta["split_mode"] == "official"
    pd.DataFrame({"path": ["a.npy"], "label": ["AF"]}).to_csv(tmp_path / "nopat.csv", index=False)
    with pytest.raises(DataError, match=r"nopat.csv.*lacks column\(s\) \['patient_id'\].*add it"):
        load_data(f"manifest:{tmp_path / 'nopat.csv'}")
    pd.DataFrame({"path": ["a.npy"], "label": ["AF"], "patient_id": ["p"], "sfreq": ["250"]}).to_csv(tmp_path / "r.csv", index=False)
    pd.DataFrame({"path": ["e.edf"], "label": ["AF"], "patient_id": ["p"], "sfreq": ["250"]}).to_csv(tmp_path / "r2.csv", index=False)
    with pytest.raises(DataError, match=r"e.edf: sampling-rate mismatch: the file says 100 Hz"):
        load_data(f"manifest:{tmp_path / 'r2.csv'}?cache={cache}")
    pd.DataFrame({"path": ["gone.npy"], "label": ["AF"], "patient_id": ["p"]}).to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(DataError, match="gone.npy does not exist"):
        load_data(f"manifest:{tmp_path / 'g.csv'}")


def test_bad_options(wfdb_folder: Path, cache: str) -> None:
    with pytest.raises(UserError, match="different lengths"):
        load_data(f"wfdb:{wfdb_folder}?cache={cache}&window=null")
    with pytest.raises(UserError, match="normalize"):
        load_data(f"wfdb:{wfdb_folder}?cache={cache}&normalize=minmax")
    with pytest.raises(UserError, match="bandpass"):
        load_data(f"wfdb:{wfdb_folder}?cache={cache}&bandpass=1")


def test_patient_split_no_leak_and_quotas() -> None:
    patients = np.repeat(np.arange(40), 3)
    strata = [str(p % 7) for p in patients]  # many small strata
    side = patient_split(patients, 0.1, 0.2, seed=3, strata=strata)
    per_patient = {p: set(side[patients == p]) for p in range(40)}
    assert all(len(s) == 1 for s in per_patient.values())
    counts = pd.Series([next(iter(s)) for s in per_patient.values()]).value_counts()
    assert counts["test"] == 8 and counts["val"] == 4 and counts["train"] == 28
    assert (patient_split(patients, 0.1, 0.2, seed=3, strata=strata) == side).all()

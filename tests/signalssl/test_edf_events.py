"""Real EDF files as they come: latin-1 EDF+ annotations, and trial events in a WFDB annotation file beside each EDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pretext.data import load_data
from pretext.errors import DataError
from signalssl.io import read_edf
from tests.signalssl.conftest import write_edf

SFREQ = 100.0


def _latin1_edf(path: Path) -> Path:
    """An intact EDF+ whose annotation channel holds latin-1 bytes (as written by many European systems)."""
    rng = np.random.default_rng(0)
    write_edf(path, rng.normal(0, 20, (2, 1000)), SFREQ, ["Fz", "Cz"], annotations=[(1.0, 0.0, "Müller Augen zu")])
    data = path.read_bytes()
    utf8 = "Müller".encode()
    assert data.count(utf8) == 1
    # same size: the latin-1 text is one byte shorter, the TAL's trailing NUL padding takes the byte
    path.write_bytes(data.replace(utf8 + b" Augen zu\x14", "Müller".encode("latin-1") + b" Augen zu\x14\x00"))
    assert path.stat().st_size == len(data)
    return path


def test_latin1_annotations_are_read(tmp_path: Path) -> None:
    import mne

    path = _latin1_edf(tmp_path / "s01.edf")
    with pytest.raises(Exception, match="latin1"):  # what MNE says today
        mne.io.read_raw_edf(str(path), preload=True, verbose="error")
    rec = read_edf(path)
    assert [a[2] for a in rec.meta["annotations"]] == ["Müller Augen zu"] and rec.signal.shape == (2, 1000)
    data = load_data(f"edf:{tmp_path}?window=2&cache={tmp_path / 'cache'}")
    assert len(data.splits["train"]) + sum(len(s) for k, s in data.splits.items() if k != "train") == 5


def test_size_refusal_is_kept(tmp_path: Path) -> None:
    path = _latin1_edf(tmp_path / "s01.edf")
    path.write_bytes(path.read_bytes() + b"\r")
    with pytest.raises(DataError, match="longer than its header implies"):
        read_edf(path)


def _motor_imagery(folder: Path, n: int = 3, with_events: bool = True) -> list[Path]:
    """EDFs with T0/T1/T2 trial events in WFDB annotation files NAME.edf.event (PhysioNet eegmmidb layout)."""
    import wfdb

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        edf = write_edf(folder / f"S00{i + 1}R04.edf", rng.normal(0, 20, (2, 3000)), SFREQ, ["C3", "C4"])
        if with_events or i:
            onsets = np.arange(0, 2700, 300)
            notes = [("T0", "T1", "T0", "T2")[k % 4] for k in range(len(onsets))]
            wfdb.wrann(edf.stem, "event", sample=onsets, symbol=["+"] * len(onsets), aux_note=notes, fs=SFREQ,
                       write_dir=str(folder))  # wfdb writes NAME.event; eegmmidb names it NAME.edf.event
            (folder / f"{edf.stem}.event").rename(folder / f"{edf.name}.event")
        out.append(edf)
    return out


def test_wfdb_events_beside_each_edf_label_the_windows(tmp_path: Path) -> None:
    folder = tmp_path / "mi"
    _motor_imagery(folder)
    data = load_data(f"edf:{folder}?pattern=(?P<patient>S\\d+)R&window=2&split=none&cache={tmp_path / 'cache'}")
    train = data.splits["train"]
    assert data.class_names == ["T0", "T1", "T2"] and len(train) == 3 * 9
    assert np.bincount(np.asarray(train.labels)).tolist() == [15, 6, 6]
    assert train[0]["x"].shape == (2, 200)
    sliding = load_data(f"edf:{folder}?window=2&events=none&split=none&cache={tmp_path / 'cache'}")
    assert len(sliding.splits["train"]) == 3 * 15 and sliding.num_classes is None


def test_events_missing_for_some_files_say_how_to_give_them(tmp_path: Path) -> None:
    folder = tmp_path / "mi"
    _motor_imagery(folder, with_events=False)
    with pytest.raises(DataError, match=r"2 of 3 EDF files have a WFDB annotation file .*S001R04.edf has none.*"
                                        r"NAME.edf.event.*\?events=none"):
        load_data(f"edf:{folder}?window=2&cache={tmp_path / 'cache'}")
    assert len(load_data(f"edf:{folder}?window=2&events=none&split=none&cache={tmp_path / 'cache'}").splits["train"]) == 45

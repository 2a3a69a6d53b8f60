"""Damaged caches heal or say so; a full disk is said in words and leaves nothing half-written."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pretext.atomic as atomic_mod
from pretext.atomic import atomic_dir, atomic_write_text
from pretext.data import load_data
from pretext.engine.checkpoint import load_checkpoint, save_checkpoint
from pretext.errors import DataError
from signalssl.ingest import ingest
from signalssl.layouts import RecordSpec
from signalssl.store import SignalStore

SFREQ = 100.0


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    else:  # truncate: keep the first half (at least one byte less)
        data = path.read_bytes()
        path.write_bytes(data[: max(0, min(len(data) // 2, len(data) - 1))])


# -- signal store -------------------------------------------------------------------------------------


@pytest.fixture
def signal_source(tmp_path: Path) -> tuple[list[RecordSpec], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, n)).astype(np.float32) for n in (300, 200)]
    specs = []
    for i, a in enumerate(arrays):
        np.save(tmp_path / f"r{i}.npy", a)
        specs.append(RecordSpec(name=f"r{i}", path=str(tmp_path / f"r{i}.npy"), patient=f"p{i}", label="N",
                                sfreq=SFREQ))
    return specs, arrays


def _events(spec: RecordSpec, rec) -> list[tuple[float, str]]:
    return [(0.0, "W"), (1.0, "N1")]


def _ingest(specs: list[RecordSpec], cache: Path) -> SignalStore:
    return ingest(specs, "faulttest", dtype="float32", cache=cache, events_fn=_events)


def _assert_signal_equal(store: SignalStore, arrays: list[np.ndarray]) -> None:
    assert len(store) == len(arrays)
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(store.record(i), a)
    assert list(store.events["label"]) == ["W", "N1"] * len(arrays)


@pytest.mark.parametrize("how", ["delete", "truncate"])
@pytest.mark.parametrize("name", ["signals.bin", "index.csv", "events.csv", "meta.json"])
def test_signal_store_damaged_file_is_rebuilt(tmp_path, signal_source, name, how):
    specs, arrays = signal_source
    cache = tmp_path / "cache"
    store = _ingest(specs, cache)
    _assert_signal_equal(store, arrays)
    _damage(store.root / name, how)
    with pytest.warns(UserWarning, match=rf"{store.root.name}.*damaged.*{name}.*rebuilding"):
        again = _ingest(specs, cache)
    assert again.root == store.root
    _assert_signal_equal(again, arrays)
    with warnings.catch_warnings():  # healed: the next open is silent
        warnings.simplefilter("error")
        _assert_signal_equal(_ingest(specs, cache), arrays)


@pytest.mark.parametrize("name", ["signals.bin", "index.csv", "events.csv"])
def test_signal_store_opened_without_source_refuses_by_name(tmp_path, signal_source, name):
    store = _ingest(signal_source[0], tmp_path / "cache")
    _damage(store.root / name, "truncate")
    with pytest.raises(DataError, match=rf"{store.root.name}.*damaged.*{name}.*delete .*{store.root.name} and rerun"):
        SignalStore(store.root)


def test_signal_store_build_out_of_space_leaves_no_temp_folder(tmp_path, signal_source, monkeypatch):
    specs, arrays = signal_source
    cache = tmp_path / "cache"
    import signalssl.ingest as store_mod

    real_to_csv = store_mod.pd.DataFrame.to_csv

    def full_disk(self, path=None, *a, **k):  # the samples fit, the index does not
        if path is not None:
            _enospc()
        return real_to_csv(self, path, *a, **k)

    monkeypatch.setattr(store_mod.pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(DataError, match=r"no space left on .*faulttest.*needed about [\d.]+ [kM]B"):
        _ingest(specs, cache)
    assert list((cache / "signal").iterdir()) == []  # neither a temp folder nor a half store
    monkeypatch.undo()
    _assert_signal_equal(_ingest(specs, cache), arrays)


# -- volume store -------------------------------------------------------------------------------------


@pytest.fixture
def medmnist(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, k in (("train", 4), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = (rng.random((k, 6, 6, 6)) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 2).reshape(k, 1).astype(np.uint8)
    path = tmp_path / "faultmnist3d.npz"
    np.savez(path, **arrays)
    return path, arrays


def _load_volumes(path: Path, cache: Path):
    return load_data(f"medmnist3d:{path}?normalize=none&cache={cache}")


def _assert_volumes_equal(data, arrays: dict[str, np.ndarray]) -> None:
    for split in ("train", "val", "test"):
        sp = data.splits[split]
        got = torch.stack([sp.load(i) for i in range(len(sp))])[:, 0].numpy()
        np.testing.assert_array_equal(got, arrays[f"{split}_images"].astype(np.float32))
        np.testing.assert_array_equal(np.asarray(sp.labels), arrays[f"{split}_labels"][:, 0])


def _volume_entry(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "volumes").iterdir() if p.is_dir()]
    return entry


def _nan_bytes(path: Path) -> None:
    """Overwrite the middle of a stored array with NaN bytes, keeping the file's size (silent disk corruption)."""
    data = bytearray(path.read_bytes())
    nan = np.full(8, np.nan, dtype=np.float16).tobytes()
    mid = len(data) - len(data) // 3
    data[mid:mid + len(nan)] = nan
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["delete", "truncate"])
@pytest.mark.parametrize("name", ["vol/train-000001.npy", "vol/test-000000.json", "sets/all.json"])
def test_volume_store_damaged_file_is_rebuilt(tmp_path, medmnist, name, how):
    path, arrays = medmnist
    cache = tmp_path / "cache"
    _assert_volumes_equal(_load_volumes(path, cache), arrays)
    entry = _volume_entry(cache)
    _damage(entry / name, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _load_volumes(path, cache)
    if not name.startswith("sets"):  # a lost index only makes the load check every item again
        assert any(entry.name in str(w.message) and "rebuilding" in str(w.message) for w in caught), caught
    _assert_volumes_equal(data, arrays)
    assert _volume_entry(cache) == entry


def test_volume_store_corrupted_without_change_of_size_is_named_and_rebuilt(tmp_path, medmnist):
    """NaN bytes written over a stored item (same size): the checksum written at ingest names the cache file,
    the item is ingested again from the source, and the data are the source's (issue 27)."""
    path, arrays = medmnist
    cache = tmp_path / "cache"
    _load_volumes(path, cache)
    item = _volume_entry(cache) / "vol" / "val-000001.npy"
    size = item.stat().st_size
    _nan_bytes(item)
    assert item.stat().st_size == size
    with pytest.warns(UserWarning, match=rf"volume cache .*{_volume_entry(cache).name}.*val-000001.npy does not match "
                                         "the checksum.*again"):
        data = _load_volumes(path, cache)
    _assert_volumes_equal(data, arrays)


def test_scan_store_nan_bytes_are_named_at_open_and_while_training(tmp_path):
    """A scan store item overwritten with NaN bytes: a load heals it (named); a split already open names the
    cache file (not the source data) on its next read, and deletes it so that a rerun ingests it again."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    for i in range(2):
        nib.save(nib.Nifti1Image(rng.random((12, 10, 8)).astype(np.float32), np.eye(4)), str(tmp_path / f"s{i}.nii"))
    spec = f"nifti:{tmp_path}?normalize=minmax&patch=4&cache={tmp_path / 'cache'}"
    data = load_data(spec)
    want = data.splits["train"].volume(1).clone()
    pool = _volume_entry(tmp_path / "cache")
    item = pool / "vol" / f"{data.splits['train'].source.fids[1]}.npy"
    _nan_bytes(item)
    with pytest.warns(UserWarning, match=rf"{item.name} does not match the checksum.*ingesting .*s1.nii again"):
        healed = load_data(spec)
    assert torch.equal(healed.splits["train"].volume(1), want)
    _nan_bytes(item)  # again, under a split that is already open (a training run)
    split = healed.splits["train"]
    with pytest.raises(DataError, match=rf"volume cache file .*{item.name}.* \(from .*s1.nii\) is damaged.*rerun"):
        for corner in split.grid(1):
            split.patch(1, corner)
    assert not item.exists()
    assert torch.equal(load_data(spec).splits["train"].volume(1), want)


def test_volume_store_build_out_of_space_leaves_no_index(tmp_path, medmnist, monkeypatch):
    path, arrays = medmnist
    cache = tmp_path / "cache"
    monkeypatch.setattr(np, "save", _enospc)
    with pytest.raises(DataError, match=r"no space left on .*medmnist3d-.*needed about [\d.]+ (bytes|[kM]B)"):
        _load_volumes(path, cache)
    assert not list(_volume_entry(cache).glob("sets/*")) and not list(_volume_entry(cache).glob("vol/.*tmp"))
    monkeypatch.undo()
    _assert_volumes_equal(_load_volumes(path, cache), arrays)


# -- checkpoints and the shared helper ----------------------------------------------------------------


def test_checkpoint_out_of_space_keeps_previous(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint(ckpt, {"model": {"w": torch.arange(4.0)}, "step": 1})
    before = ckpt.read_bytes()
    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(DataError, match=r"no space left on .*last\.ckpt.*needed about [\d.]+ [kM]B.*previous checkpoint"):
        save_checkpoint(ckpt, {"model": {"w": torch.zeros(1000)}, "step": 2})
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]  # no temp file left
    state = load_checkpoint(ckpt)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.arange(4.0))


def test_checkpoint_out_of_space_on_fsync(tmp_path, monkeypatch):
    ckpt = tmp_path / "last.ckpt"
    save_checkpoint(ckpt, {"model": {"w": torch.ones(3)}, "step": 7})
    monkeypatch.setattr(atomic_mod.os, "fsync", _enospc)
    with pytest.raises(DataError, match="no space left"):
        save_checkpoint(ckpt, {"model": {"w": torch.zeros(3)}, "step": 8})
    monkeypatch.undo()
    assert load_checkpoint(ckpt)["step"] == 7 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_dir_keeps_nothing_on_failure_and_other_errors_pass_through(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(KeyError):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("half")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("whole")
    with atomic_dir(target) as tmp:  # another process finished first: theirs is kept
        (tmp / "x").write_text("late")
    assert (target / "x").read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_atomic_write_text_out_of_space(tmp_path, monkeypatch):
    f = tmp_path / "summary.json"
    atomic_write_text(f, "old")
    monkeypatch.setattr(atomic_mod.os, "replace", _enospc)
    with pytest.raises(DataError, match=r"no space left on .*summary\.json.*needed about 3 bytes"):
        atomic_write_text(f, "new")
    monkeypatch.undo()
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]

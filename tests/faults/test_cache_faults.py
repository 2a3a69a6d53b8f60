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
from signalssl.layouts import RecordSpec
from signalssl.store import SignalStore, ingest
from volssl.store import ArrayStore

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
    import signalssl.store as store_mod

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


@pytest.mark.parametrize("how", ["delete", "truncate"])
@pytest.mark.parametrize("name", ["train_images.npy", "test_labels.npy", "index.json"])
def test_volume_store_damaged_file_is_rebuilt(tmp_path, medmnist, name, how):
    path, arrays = medmnist
    cache = tmp_path / "cache"
    _assert_volumes_equal(_load_volumes(path, cache), arrays)
    entry = _volume_entry(cache)
    _damage(entry / name, how)
    with pytest.warns(UserWarning, match=rf"{entry.name}.*damaged.*{name}.*rebuilding"):
        data = _load_volumes(path, cache)
    _assert_volumes_equal(data, arrays)
    assert _volume_entry(cache) == entry and ArrayStore.damage(entry) is None


@pytest.mark.parametrize("name", ["val_images.npy", "index.json"])
def test_volume_store_opened_without_source_refuses_by_name(tmp_path, medmnist, name):
    cache = tmp_path / "cache"
    _load_volumes(medmnist[0], cache)
    entry = _volume_entry(cache)
    _damage(entry / name, "truncate")
    with pytest.raises(DataError, match=rf"{entry.name}.*damaged.*{name}.*delete .*{entry.name} and rerun"):
        ArrayStore(entry)


def test_volume_store_build_out_of_space_leaves_no_temp_folder(tmp_path, medmnist, monkeypatch):
    path, arrays = medmnist
    cache = tmp_path / "cache"
    monkeypatch.setattr(np.memmap, "flush", _enospc)
    with pytest.raises(DataError, match=r"no space left on .*medmnist3d-.*needed about [\d.]+ [kM]B"):
        _load_volumes(path, cache)
    assert [p.name for p in (cache / "volumes").iterdir()] == []  # neither a temp folder nor a half entry
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

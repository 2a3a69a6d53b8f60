"""The one store of preprocessed signals: one compact memmap + an index table, read in place
(the volume side's is :mod:`volssl.store`; it is written by :mod:`signalssl.ingest`).

A store is a folder::

    signals.bin   all samples, time-major (T_total, C), float16 or float32
    index.csv     record, path, patient, label (JSON), split, offset, length, native_sfreq, meta (JSON)
    events.csv    labelled epochs (record, start sample, label), e.g. Sleep-EDF stages; may be empty
    meta.json     channels, sfreq, dtype, options, source signature, skipped records

The folder is ``$MEDSSL_CACHE/signal/KIND-HASH`` (:mod:`pretext.cache`: a hash of the source files' paths,
sizes and mtimes, the records and every option that changes the samples), so a second load with the same
options reads only the index. Windows are then index arithmetic on the memmap (:mod:`signalssl.sampling`).
The memmap is opened lazily in each process, so the store is safe in DataLoader workers.

``meta.json`` records each file's size at build time; opening compares them (cheap: no hashing), so a
deleted or truncated file is found before any read: :func:`signalssl.ingest.ingest` then deletes the store
with a warning and rebuilds it from the source, and :class:`SignalStore` alone refuses it with a
:class:`DataError` naming the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretext import cache as cache_paths
from pretext.errors import DataError

__all__ = ["CACHE_SUBFOLDER", "DTYPES", "STORE_VERSION", "SignalStore", "default_cache_dir", "store_damage"]

STORE_VERSION = 1
CACHE_SUBFOLDER = "signal"
DTYPES = ("float16", "float32")


def default_cache_dir() -> Path:
    """``$MEDSSL_CACHE/signal`` (default ``~/.cache/medssl/signal``): :func:`pretext.cache.cache_dir`."""
    return cache_paths.cache_dir(CACHE_SUBFOLDER)


def store_damage(root: str | Path) -> str | None:
    """What is wrong with the store at ``root`` (missing, unreadable or wrong-sized files), or ``None``.

    Cheap: reads ``meta.json`` and stats the other files against the sizes it recorded.
    """
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        return "meta.json is missing"
    try:
        meta = json.loads(meta_path.read_text())
        expected = int(meta["total_samples"]) * len(meta["channels"]) * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"meta.json cannot be read ({type(err).__name__}); it is truncated or corrupt"
    if meta.get("version") != STORE_VERSION:
        return f"store version {meta.get('version')} != {STORE_VERSION}"
    sizes = {"signals.bin": expected, **(meta.get("files") or {})}
    return cache_paths.files_damage(root, {name: sizes.get(name) for name in ("signals.bin", "index.csv", "events.csv")})


class SignalStore:
    """A read-only ingested dataset: ``read(record, start, length) -> (C, length)`` float32.

    Attributes:
        root: the store folder.
        index: one row per record (see module docstring).
        events: labelled epochs (may be empty).
        channels: channel names in order.
        sfreq: sampling rate of the stored samples (Hz).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{self.root}: not a signal store (no meta.json); delete it and load the data again")
        problem = store_damage(self.root)
        if problem:
            raise DataError(f"signal store {str(self.root)!r} is damaged ({problem}); delete {self.root} and rerun "
                            "(it is rebuilt from the source records)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.index = pd.read_csv(self.root / "index.csv", dtype={"record": str, "patient": str, "split": str},
                                 keep_default_na=False)
        ev = self.root / "events.csv"
        self.events = pd.read_csv(ev, dtype={"label": str}) if ev.stat().st_size > 0 else pd.DataFrame(
            columns=["record", "start", "label"])
        self.channels: list[str] = list(self.meta["channels"])
        self.sfreq = float(self.meta["sfreq"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.offsets = self.index["offset"].to_numpy(np.int64)
        self.lengths = self.index["length"].to_numpy(np.int64)
        self._mm: np.memmap | None = None
        self._pid: int | None = None

    @property
    def n_chans(self) -> int:
        return len(self.channels)

    @property
    def data(self) -> np.memmap:
        """The ``(T_total, C)`` memmap, opened once per process (fork/spawn safe)."""
        if self._mm is None or self._pid != os.getpid():
            total = int(self.meta["total_samples"])
            self._mm = np.memmap(self.root / "signals.bin", dtype=self.dtype, mode="r", shape=(total, self.n_chans))
            self._pid = os.getpid()
        return self._mm

    def read(self, rec: int, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` of record ``rec`` as ``(C, length)`` float32, zero-padded past its end."""
        n = int(self.lengths[rec])
        lo, hi = max(0, start), min(n, start + length)
        out = np.zeros((self.n_chans, length), dtype=np.float32)
        if hi > lo:
            off = int(self.offsets[rec])
            out[:, lo - start: hi - start] = self.data[off + lo: off + hi].T
        return out

    def record(self, rec: int) -> np.ndarray:
        """The whole record ``rec`` as ``(C, T)`` float32."""
        return self.read(rec, 0, int(self.lengths[rec]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mm"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.index)

"""A compact on-disk cache of preprocessed volumes: one ``.npy`` per split, memory-mapped.

Volumes are read and preprocessed once; training then only slices a memory map (no file
parsing per step). The cache key hashes the source files (path, size, mtime) and the
preprocessing settings, so a changed file or setting makes a new entry. Entries are written
to a temporary folder and renamed into place, so a killed ingest never leaves a half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

STORE_VERSION = 1


def default_cache_dir() -> Path:
    """``$MEDSSL_CACHE`` or ``~/.cache/medssl``, with a ``volumes`` subfolder."""
    root = os.environ.get("MEDSSL_CACHE") or Path.home() / ".cache" / "medssl"
    return Path(root) / "volumes"


def file_fingerprint(paths: Iterable[str | Path]) -> list[tuple[str, int, int]]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():  # DICOM series: fingerprint its files
            st = [(f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir()) if f.is_file()]
            out.append((str(p.resolve()), sum(s for s, _ in st), max((m for _, m in st), default=0)))
        else:
            st_ = p.stat()
            out.append((str(p.resolve()), st_.st_size, st_.st_mtime_ns))
    return out


def cache_key(kind: str, sources: Iterable[str | Path], settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {"v": STORE_VERSION, "kind": kind, "files": file_fingerprint(sources), "settings": settings},
        sort_keys=True,
        default=str,
    )
    return f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


class ArrayStore:
    """Named arrays of a cache entry, each a memory-mapped ``.npy`` file, plus ``index.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.index: dict[str, Any] = json.loads((self.folder / "index.json").read_text())

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / "index.json").is_file()

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def open(self, name: str) -> np.ndarray:
        return np.load(self.path(name), mmap_mode="r")

    @classmethod
    def build(
        cls,
        folder: Path,
        arrays: dict[str, tuple[tuple[int, ...], str, Callable[[np.ndarray], None]]],
        index: dict[str, Any],
    ) -> ArrayStore:
        """Create an entry atomically.

        Args:
            folder: final location.
            arrays: ``name -> (shape, dtype, fill)`` where ``fill(memmap)`` writes the data.
            index: JSON metadata saved as ``index.json``.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
        try:
            for name, (shape, dtype, fill) in arrays.items():
                mm = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                fill(mm)
                mm.flush()
                del mm
            (tmp / "index.json").write_text(json.dumps(index, indent=1, default=str))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process won the race: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(folder)


class LazyArray:
    """A picklable handle that opens a ``.npy`` memory map on first use (in each worker process)."""

    def __init__(self, path: Path | None = None, array: np.ndarray | None = None) -> None:
        self.path = path
        self._array = array

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            assert self.path is not None
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = None
        return state

    def __len__(self) -> int:
        return len(self.array)

"""A compact on-disk cache of preprocessed volumes: one ``.npy`` per split, memory-mapped.

Volumes are read and preprocessed once; training then only slices a memory map (no file
parsing per step). The cache key hashes the source files (path, size, mtime) and the
preprocessing settings, so a changed file or setting makes a new entry. Entries are written
to a temporary folder and renamed into place (:func:`pretext.atomic.atomic_dir`), so a killed
ingest never leaves a half entry, and a full disk says so in words.

``index.json`` records each array file's size at build time; opening an entry compares the
sizes (cheap: no hashing), so a deleted or truncated file is found before any read.
:meth:`ArrayStore.exists` removes such an entry with a warning (the caller rebuilds it from the
source); :class:`ArrayStore` itself refuses it with a :class:`DataError` naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pretext.atomic import atomic_dir, preallocate
from pretext.errors import DataError

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
        problem = self.damage(self.folder)
        if problem:
            raise DataError(f"volume cache {str(self.folder)!r} is damaged ({problem}); "
                            f"delete {self.folder} and rerun (it is rebuilt from the source files)")
        self.index: dict[str, Any] = json.loads((self.folder / "index.json").read_text())

    @staticmethod
    def damage(folder: Path) -> str | None:
        """What is wrong with the entry at ``folder`` (a missing or wrong-sized file), or ``None``.

        Cheap: reads ``index.json`` and stats the files it lists (sizes recorded at build time).
        """
        folder = Path(folder)
        meta = folder / "index.json"
        if not folder.is_dir():
            return "the folder does not exist"
        if not meta.is_file():
            return "index.json is missing"
        try:
            index = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            return f"index.json cannot be read ({type(err).__name__}); it is truncated or corrupt"
        if not isinstance(index, dict):
            return "index.json is not a JSON object"
        for name, size in (index.get("_files") or {}).items():
            f = folder / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != int(size):
                return f"{name} has {f.stat().st_size} bytes, {int(size)} were written"
        return None

    @staticmethod
    def exists(folder: Path) -> bool:
        """True if an intact entry is at ``folder``; a damaged one is removed with a warning (rebuild it)."""
        folder = Path(folder)
        if not folder.exists():
            return False
        problem = ArrayStore.damage(folder)
        if problem is None:
            return True
        warnings.warn(f"volume cache {folder} is damaged ({problem}); deleting it and rebuilding it from the source",
                      stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        return False

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
        needed = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype, _ in arrays.values())
        with atomic_dir(folder, needed_bytes=needed,
                        hint="free some space there or set MEDSSL_CACHE to a folder on a larger disk, then rerun") as tmp:
            files = {}
            for name, (shape, dtype, fill) in arrays.items():
                mm = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                preallocate(tmp / f"{name}.npy")  # a full disk raises here, not SIGBUS in fill
                fill(mm)
                mm.flush()
                del mm
                files[f"{name}.npy"] = (tmp / f"{name}.npy").stat().st_size
            (tmp / "index.json").write_text(json.dumps({**index, "_files": files}, indent=1, default=str))
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

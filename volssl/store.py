"""A compact on-disk cache of preprocessed volumes (one ``.npy`` per split, memory-mapped) and the split
that reads items from it (:class:`VolumeSplit`; the signal side's is :class:`signalssl.store.SignalSplit`).

Volumes are read and preprocessed once; training then only slices a memory map (no file
parsing per step). The cache folder and key are :mod:`pretext.cache`'s (``$MEDSSL_CACHE/volumes``; the
source files' path, size, mtime and the preprocessing settings), so a changed file or setting makes a new entry. Entries are written
to a temporary folder and renamed into place (:func:`pretext.atomic.atomic_dir`), so a killed
ingest never leaves a half entry, and a full disk says so in words.

``index.json`` records each array file's size at build time; opening an entry compares the
sizes (cheap: no hashing), so a deleted or truncated file is found before any read.
:meth:`ArrayStore.exists` removes such an entry with a warning (the caller rebuilds it from the
source); :class:`ArrayStore` itself refuses it with a :class:`DataError` naming the folder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext import cache as _cache
from pretext.atomic import atomic_dir, preallocate
from pretext.base import SSLSplit
from pretext.cache import file_fingerprint  # noqa: F401 - part of this module's API (volssl.scans)
from pretext.errors import DataError
from volssl.preprocess import centre_crop_pad

STORE_VERSION = 1
CACHE_SUBFOLDER = "volumes"


def default_cache_dir() -> Path:
    """``$MEDSSL_CACHE/volumes`` (default ``~/.cache/medssl/volumes``): :func:`pretext.cache.cache_dir`."""
    return _cache.cache_dir(CACHE_SUBFOLDER)


def resolve_cache(cache: Any) -> Path | None:
    """The volume cache folder of a ``cache`` option (``auto``, a folder, ``none``): :func:`pretext.cache.resolve_cache`."""
    return _cache.resolve_cache(cache, CACHE_SUBFOLDER)


#: ``cache_key(kind, sources, settings) -> "KIND-HASH"`` of this store format (:func:`pretext.cache.cache_key`).
cache_key = functools.partial(_cache.cache_key, version=STORE_VERSION)


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
        return _cache.files_damage(folder, index.get("_files") or {})

    @staticmethod
    def exists(folder: Path) -> bool:
        """True if an intact entry is at ``folder``; a damaged one is removed with a warning (rebuild it)."""
        return _cache.reuse_entry(folder, ArrayStore.damage, "volume cache")

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


class IndexedLazy(LazyArray):
    """Rows ``idx`` of a memory-mapped store, opened lazily (picklable for DataLoader workers)."""

    def __init__(self, path: Path | None, idx: np.ndarray) -> None:
        super().__init__(path)
        self.idx = idx

    @property
    def array(self) -> Any:
        return _Rows(super().array, self.idx)

    def __len__(self) -> int:
        return len(self.idx)


class _Rows:
    def __init__(self, base: np.ndarray, idx: np.ndarray) -> None:
        self.base, self.idx = base, idx
        self.shape = (len(idx), *base.shape[1:])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.base[self.idx[i]]

    def __len__(self) -> int:
        return len(self.idx)


class VolumeSplit(SSLSplit):
    """One split: items ``(C, D, H, W)`` float32 from a ``(N, C, D, H, W)`` store.

    Args:
        store: the stored voxels (lazy memory map or in-memory array).
        labels: ``(N,)`` int (-1 unknown) or ``(N, K)`` multi-hot.
        patients: ``(N,)`` patient index into ``patient_names``.
        patient_names: patient identifiers.
        scale, shift: ``x = stored * scale + shift`` (uint8 stores -> [0, 1]; z-scoring).
        crop_pad: final ``(D, H, W)`` by centre crop/zero pad at load time, or None.
        meta: per-item ``pandas.DataFrame`` (path, spacing_d/h/w, ...).
    """

    def __init__(
        self,
        store: LazyArray,
        labels: np.ndarray,
        patients: np.ndarray,
        patient_names: list[str],
        scale: float = 1.0,
        shift: float = 0.0,
        crop_pad: tuple[int, int, int] | None = None,
        meta: Any = None,
    ) -> None:
        self.store = store
        self.labels = labels
        self.patients = np.asarray(patients, dtype=np.int64)
        self.patient_names = list(patient_names)
        self.scale = float(scale)
        self.shift = float(shift)
        self.crop_pad = crop_pad
        self.meta = meta

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def item_shape(self) -> tuple[int, ...]:
        c, *spatial = self.store.array.shape[1:]
        return (c, *(self.crop_pad or spatial))

    def load(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.store.array[i], dtype=np.float32))
        if self.scale != 1.0 or self.shift != 0.0:
            x = x * self.scale + self.shift
        if self.crop_pad is not None:
            x = centre_crop_pad(x, self.crop_pad)
        return x

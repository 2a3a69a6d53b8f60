"""The dataset side of the volume data kinds: :class:`VolumeSplit` over a compact store, plus the
small helpers the kinds share (centre crop/pad, patient-level splits, option parsing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.base import SSLSplit
from pretext.errors import ConfigError
from volssl.store import LazyArray, default_cache_dir


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


def centre_crop_pad(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Centre crop / zero pad the trailing ``len(size)`` axes of ``x`` to ``size``."""
    spatial = x.shape[-len(size):]
    pads: list[int] = []
    slices = [slice(None)] * (x.ndim - len(size))
    for have, want in zip(spatial, size, strict=False):
        if have >= want:
            start = (have - want) // 2
            slices.append(slice(start, start + want))
        else:
            slices.append(slice(None))
    x = x[tuple(slices)]
    for have, want in reversed(list(zip(x.shape[-len(size):], size, strict=False))):
        extra = max(want - have, 0)
        pads += [extra // 2, extra - extra // 2]
    return torch.nn.functional.pad(x, pads) if any(pads) else x


def patient_split(
    patients: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """Assign each item to train/val/test by patient (seeded shuffle of unique patients)."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"{name}={f!r} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"{val_fraction=} + {test_fraction=} must leave patients for training")
    uniq = np.unique(patients)
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_test = int(round(test_fraction * len(uniq)))
    n_val = int(round(val_fraction * len(uniq)))
    role = np.empty(len(uniq), dtype=object)
    role[order[:n_test]] = "test"
    role[order[n_test:n_test + n_val]] = "val"
    role[order[n_test + n_val:]] = "train"
    lookup = dict(zip(uniq.tolist(), role.tolist(), strict=False))
    return np.array([lookup[p] for p in patients.tolist()], dtype=object)


def resolve_cache(cache: Any) -> Path | None:
    if cache in (None, False, "none", "off", "false", ""):
        return None
    if cache in (True, "auto", "true", "on"):
        return default_cache_dir()
    return Path(str(cache))


def as_size(size: Any, what: str) -> tuple[int, int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, float)):
        return (int(size),) * 3
    if isinstance(size, str):
        size = [s for s in re.split(r"[,x ]", size) if s]
    vals = tuple(int(s) for s in size)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or min(vals) < 1:
        raise ConfigError(f"{what}={size!r} must be one or three positive integers, e.g. 64 or 96,96,64")
    return vals  # type: ignore[return-value]


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

"""Patches of whole scans: random patches for pretraining, a sliding grid (or ROI crops) for downstream.

A :class:`ScanSplit` is a split of volumes of *any* shapes (a ragged store, :mod:`volssl.scans`, or a
``(N, C, D, H, W)`` array such as MedMNIST). Its records are volumes (labels, patients and the harness's
patient-level splits are per volume), but every tensor it hands out is a patch ``(C, d, h, w)``:

* ``load(i)``: the centre patch (or the patch centred on the record's region of interest);
* ``grid(i)`` / ``patch(i, corner)``: the sliding grid of patches covering the volume (or its ROI), which
  :mod:`benchmarks.pooled` encodes and pools (mean / max) into one feature per volume;
* ``patch_stream(seed)``: the pretraining stream (:class:`PatchStream`): item ``j`` is
  ``patches_per_volume`` patches of one volume, a share ``foreground`` of them centred on a stored
  foreground voxel, the rest uniform. Item ``j`` depends only on ``(seed, j)``, and the engine's
  :class:`~pretext.engine.sampler.ResumableBatchSampler` maps ``(seed, step)`` to items, so a resumed run
  sees exactly the patches of an uninterrupted one. :func:`collate_patches` flattens the ``K`` patches of
  each item into the batch: ``batch_size`` volumes give ``batch_size * K`` patches (MONAI's
  ``RandSpatialCropSamplesd(num_samples=K)`` convention).

Volumes smaller than the patch along an axis are centred in the patch and padded with the background
value (one warning names them when the data are loaded).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from pretext.base import Batch, SSLSplit
from pretext.errors import ConfigError
from pretext.grid import axis_starts  # one grid for the harness and exported bundles (GridPooled)

#: Virtual items per pretraining epoch (at least): the sampler's per-epoch permutation is over this many.
STREAM_LENGTH = 1 << 20
#: Foreground voxel positions kept per volume (a uniform sample, as nnU-Net's ``class_locations``).
FG_SAMPLES = 4096


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """How patches are drawn from whole volumes.

    Attributes:
        patch: ``(d, h, w)`` patch size in voxels (after resampling).
        patches_per_volume: patches per volume read (``K``); a batch of ``B`` items holds ``B * K`` patches.
        foreground: share in [0, 1] of pretraining patches centred on a foreground voxel (the rest uniform).
        pool: how grid features become one per volume downstream: "mean" or "max".
        overlap: overlap in [0, 1) of neighbouring grid patches (MONAI ``SlidingWindowInferer`` convention).
        roi_size: ``(D, H, W)`` region tiled by the grid around a manifest's ROI centre (default: one patch).
    """

    patch: tuple[int, int, int]
    patches_per_volume: int = 1
    foreground: float = 0.0
    pool: str = "mean"
    overlap: float = 0.25
    roi_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ConfigError(f"patch={self.patch!r} must be three positive integers, e.g. ?patch=96,96,96")
        if not isinstance(self.patches_per_volume, int) or self.patches_per_volume < 1:
            raise ConfigError(f"patches_per_volume={self.patches_per_volume!r} must be a whole number >= 1 "
                              "(patches drawn per volume read), e.g. ?patches_per_volume=4")
        if not 0.0 <= float(self.foreground) <= 1.0:
            raise ConfigError(f"foreground={self.foreground!r} is a share of patches and must be in [0, 1]: "
                              "0 draws every patch uniformly, 1 centres every patch on foreground, e.g. "
                              "?foreground=0.5")
        if self.pool not in ("mean", "max"):
            raise ConfigError(f"pool={self.pool!r} must be 'mean' or 'max' (how grid patch features are pooled)")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"overlap={self.overlap!r} must be in [0, 1), e.g. ?overlap=0.25")
        if self.roi_size is not None and (len(self.roi_size) != 3 or min(self.roi_size) < 1):
            raise ConfigError(f"roi_size={self.roi_size!r} must be three positive integers, e.g. ?roi_size=64,64,64")


class VolumeSource(Protocol):
    """Where a :class:`ScanSplit` reads voxels: volumes ``0..n-1`` of any shapes."""

    pad_value: float

    def shape(self, i: int) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of volume ``i``."""

    def read(self, i: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """``(C, hi - lo)`` float32 voxels of volume ``i`` (intensity-normalised); only those bytes are read."""

    def foreground(self, i: int) -> np.ndarray:
        """``(K, 3)`` int foreground voxel positions of volume ``i`` (a sample; empty if none)."""


def sample_foreground(mask: np.ndarray, key: int, k: int = FG_SAMPLES, chunk: int = 16) -> np.ndarray:
    """Up to ``k`` uniformly drawn ``(z, y, x)`` positions of ``True`` voxels of ``mask`` ``(D, H, W)``.

    Memory stays at one slab of ``chunk`` slices (no ``argwhere`` over a whole scan). ``key`` seeds the draw.

    Returns:
        ``(min(k, count), 3)`` int32, sorted in C order.
    """
    count = int(np.count_nonzero(mask))
    if count == 0:
        return np.zeros((0, 3), dtype=np.int32)
    ranks = np.sort(np.random.default_rng([int(key), 0xF6]).choice(count, size=min(k, count), replace=False))
    out, offset = [], 0
    for z0 in range(0, mask.shape[0], chunk):
        flat = np.flatnonzero(mask[z0:z0 + chunk])
        mine = ranks[(ranks >= offset) & (ranks < offset + flat.size)] - offset
        if mine.size:
            zyx = np.stack(np.unravel_index(flat[mine], mask[z0:z0 + chunk].shape), 1)
            zyx[:, 0] += z0
            out.append(zyx)
        offset += flat.size
    return np.concatenate(out).astype(np.int32)


class ArraySource:
    """Volumes of one ``(N, C, D, H, W)`` array (e.g. MedMNIST), ``x = stored * scale + shift``.

    Foreground positions are voxels whose channel maximum exceeds ``threshold`` (normalised units), found on
    first use of each volume and kept per process.
    """

    def __init__(self, array: Any, scale: float = 1.0, shift: float = 0.0, threshold: float = 0.0) -> None:
        self.lazy, self.scale, self.shift, self.threshold = array, float(scale), float(shift), float(threshold)
        self.pad_value = self.shift  # stored 0 (background) after scaling
        self._fg: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fg": {}}

    def shape(self, i: int) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.lazy.array.shape[1:])  # type: ignore[return-value]

    def read(self, i: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        box = (int(i), slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        x = np.asarray(self.lazy.array[box], dtype=np.float32)
        return x * self.scale + self.shift if (self.scale != 1.0 or self.shift != 0.0) else x

    def foreground(self, i: int) -> np.ndarray:
        if i not in self._fg:
            vol = self.read(i, (0, 0, 0), self.shape(i)[1:])
            self._fg[i] = sample_foreground(vol.max(0) > self.threshold, i)
        return self._fg[i]


def grid_corners(shape: Sequence[int], patch: Sequence[int], overlap: float,
                 origin: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """``(K, 3)`` int64 corners of the sliding grid over a ``(D, H, W)`` region starting at ``origin``."""
    axes = [[o + s for s in axis_starts(int(n), int(p), overlap)] for n, p, o in zip(shape, patch, origin, strict=True)]
    return np.asarray(list(itertools.product(*axes)), dtype=np.int64).reshape(-1, 3)


def read_patch(source: VolumeSource, i: int, corner: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """``(C, *patch)`` float32 voxels at ``corner`` (may lie partly outside the volume: padded there)."""
    c, *spatial = source.shape(i)
    lo = [min(max(int(s), 0), n) for s, n in zip(corner, spatial, strict=True)]
    hi = [min(max(int(s) + p, 0), n) for s, p, n in zip(corner, patch, spatial, strict=True)]
    if all(b > a for a, b in zip(lo, hi, strict=True)):
        x = source.read(i, lo, hi)
    else:  # entirely outside
        x = np.zeros((c, 0, 0, 0), dtype=np.float32)
        lo = hi = [max(int(s), 0) for s in corner]
    before = [a - int(s) for a, s in zip(lo, corner, strict=True)]
    after = [p - b_ - x.shape[1 + k] for k, (p, b_) in enumerate(zip(patch, before, strict=True))]
    if any(before) or any(after):
        x = np.pad(x, [(0, 0), *zip(before, after, strict=True)], constant_values=source.pad_value)
    return x


class ScanSplit(SSLSplit):
    """A split of whole volumes whose tensors are patches (see the module docstring).

    Args:
        source: the voxels (:class:`ArraySource` or :class:`volssl.scans.ScanSource`).
        rows: ``(N,)`` volume ids in ``source`` of this split's records.
        labels, patients, patient_names, meta: per record, as :class:`pretext.base.SSLSplit`.
        cfg: patch settings.
        roi: ``(N, 3)`` float ROI centres in voxels of the stored volume (NaN rows: none), or None.
    """

    def __init__(self, source: VolumeSource, rows: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                 patient_names: list[str], cfg: PatchConfig, meta: Any = None, roi: np.ndarray | None = None) -> None:
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)
        self.labels, self.patients = labels, np.asarray(patients, dtype=np.int64)
        self.patient_names, self.cfg, self.meta = list(patient_names), cfg, meta
        self.roi = None if roi is None else np.asarray(roi, dtype=np.float64).reshape(len(self.rows), 3)
        self.pool = cfg.pool

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.source.shape(int(self.rows[0]))[0], *self.cfg.patch) if len(self.rows) else (0, *self.cfg.patch)

    def volume_shape(self, i: int) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of record ``i``'s whole volume."""
        return self.source.shape(int(self.rows[i]))

    def _roi(self, i: int) -> np.ndarray | None:
        if self.roi is None or not np.isfinite(self.roi[i]).all():
            return None
        return self.roi[i]

    def patch(self, i: int, corner: Sequence[int]) -> torch.Tensor:
        """``(C, d, h, w)`` float32 patch of record ``i`` at ``corner`` (padded where outside)."""
        return torch.from_numpy(read_patch(self.source, int(self.rows[i]), corner, self.cfg.patch))

    def grid(self, i: int) -> np.ndarray:
        """``(K, 3)`` corners of record ``i``'s sliding grid: over the whole volume, or over ``roi_size``
        centred on its ROI."""
        p = self.cfg.patch
        centre = self._roi(i)
        if centre is None:
            return grid_corners(self.volume_shape(i)[1:], p, self.cfg.overlap)
        size = self.cfg.roi_size or p
        origin = [int(np.floor(c - s / 2.0 + 0.5)) for c, s in zip(centre, size, strict=True)]
        return grid_corners(size, p, self.cfg.overlap, origin)

    def windows(self, i: int) -> torch.Tensor:
        """``(K, C, d, h, w)`` every grid patch of record ``i`` (see :meth:`grid`; mind memory on big scans)."""
        return torch.stack([self.patch(i, c) for c in self.grid(i)])

    def load(self, i: int) -> torch.Tensor:
        """The centre patch of record ``i`` (centred on its ROI when it has one)."""
        spatial, p = self.volume_shape(i)[1:], self.cfg.patch
        centre = self._roi(i)
        if centre is None:
            corner = [(n - q) // 2 for n, q in zip(spatial, p, strict=True)]
        else:
            corner = [int(np.floor(c - q / 2.0 + 0.5)) for c, q in zip(centre, p, strict=True)]
        return self.patch(i, corner)

    def draw(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Corners ``(K, 3)`` and foreground flags ``(K,)`` of ``patches_per_volume`` random patches of record ``i``.

        The draws are made in a fixed order from ``rng`` (whatever the volume), so they are a pure function
        of the generator's seed.
        """
        k, p = self.cfg.patches_per_volume, np.asarray(self.cfg.patch)
        spatial = np.asarray(self.volume_shape(i)[1:])
        room = np.maximum(spatial - p, 0)
        u, uniform, pick = rng.random(k), rng.random((k, 3)), rng.random(k)
        corners = np.where(spatial >= p, np.floor(uniform * (room + 1)), (spatial - p) // 2).astype(np.int64)
        flags = np.zeros(k, dtype=bool)
        if self.cfg.foreground > 0:
            coords = self.source.foreground(int(self.rows[i]))
            if len(coords):
                flags = u < self.cfg.foreground
                centre = coords[np.minimum((pick * len(coords)).astype(np.int64), len(coords) - 1)]
                fg_corner = np.where(spatial >= p, np.clip(centre - p // 2, 0, room), (spatial - p) // 2)
                corners = np.where(flags[:, None], fg_corner, corners)
        return corners, flags

    sampling = "patches"

    def patch_stream(self, seed: int = 0, indices: np.ndarray | None = None, pairing: str = "none") -> PatchStream:
        """The pretraining / fine-tuning stream over records ``indices`` (default: all)."""
        return PatchStream(self, seed, np.arange(len(self)) if indices is None else indices, pairing)

    def stream(self, seed: int = 0, pairing: str = "none") -> Any:
        """The pretraining :class:`pretext.sampling.Stream`: random patches; with ``pairing="patches"`` each
        item adds ``x2``, other random patches of the same scan, and with ``"patient"`` patches of another scan
        of the same patient (the single-scan fallback: the same scan)."""
        return self.patch_stream(seed=seed, pairing=pairing).stream(seed, pairing)


def collate_patches(items: list[Batch]) -> Batch:
    """Concatenate items of ``K`` patches each: ``x`` ``(B * K, C, d, h, w)``, other keys likewise."""
    return {key: torch.cat([it[key] for it in items]) for key in items[0]}


class PatchStream(Dataset):
    """Random patches of a :class:`ScanSplit`'s records; item ``j`` is a pure function of ``(seed, j)``.

    ``len`` is a large multiple of the number of records (each record appears equally often per sampler
    epoch); item ``j`` is record ``indices[j % n]``. Items hold ``K`` patches: ``x`` ``(K, C, d, h, w)``,
    ``label``/``patient``/``index`` repeated ``K`` times, ``corner`` ``(K, 3)`` and ``foreground`` ``(K,)``.
    Use :attr:`collate_fn` (the engine does) to make ``(B * K, C, d, h, w)`` batches.
    """

    sampling = "patches"

    def __init__(self, split: ScanSplit, seed: int, indices: np.ndarray, pairing: str = "none") -> None:
        from pretext.sampling import check_pairing

        self.split, self.seed = split, int(seed)
        self.pairing = check_pairing(pairing, "patch stream")
        self.partners: Any = None
        if pairing == "patient":
            from pretext.pairs import PatientPairs

            self.partners = PatientPairs(split, seed, pair="patient", what="pairing 'patient'")
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size == 0:
            raise ConfigError("no volumes to draw patches from (the split is empty)")
        n = self.indices.size
        self.length = n * max(1, -(-STREAM_LENGTH // n))
        self.meta = None  # per record, not per item: tasks' spacing checks see none

    collate_fn = staticmethod(collate_patches)

    def __len__(self) -> int:
        return self.length

    def stream(self, seed: int = 0, pairing: str = "none") -> Any:
        """This stream as a :class:`pretext.sampling.Stream` (its pairing is fixed when it is built)."""
        from pretext.sampling import Stream

        if pairing not in ("none", "views", self.pairing):
            return self.split.stream(seed, pairing)
        return Stream(self, collate_patches)

    def generator(self, j: int) -> np.random.Generator:
        """The generator of item ``j`` (seeded by ``(seed, j)`` only)."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, int(j), 0x5CA9])

    def _rng2(self, j: int) -> np.random.Generator:
        """The generator of item ``j``'s second patches (pairing ``"patches"``)."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, int(j), 0x5CAA])

    def __getitem__(self, j: int) -> Batch:
        i = int(self.indices[int(j) % self.indices.size])
        corners, flags = self.split.draw(i, self.generator(j))
        k = len(corners)
        x = torch.stack([self.split.patch(i, c) for c in corners])
        label = np.asarray(self.split.labels[i])
        pair: dict[str, torch.Tensor] = {}
        if self.pairing in ("patches", "patient"):
            # the partner's draw depends on (seed, j) only: another scan of the patient, else the same scan
            i2 = i if self.partners is None else self.partners.partner(i + len(self.split) * int(j))
            corners2, _ = self.split.draw(i2, self._rng2(j))
            pair["x2"] = torch.stack([self.split.patch(i2, c) for c in corners2])
        return {**pair,
            "x": x,
            "label": torch.as_tensor(np.repeat(label[None], k, 0),
                                     dtype=torch.float32 if label.ndim else torch.int64),
            "patient": torch.full((k,), int(self.split.patients[i]), dtype=torch.int64),
            "index": torch.full((k,), i, dtype=torch.int64),
            "corner": torch.from_numpy(corners),
            "foreground": torch.from_numpy(flags),
        }


__all__ = ["ArraySource", "PatchConfig", "PatchStream", "ScanSplit", "axis_starts", "collate_patches",
           "grid_corners", "read_patch", "sample_foreground"]

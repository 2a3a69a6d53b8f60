"""Sampling from the volume store: one split class for whole volumes and for patches of them.

A :class:`VolumeSplit` is a split of volumes of *any* shapes in the store (:mod:`volssl.store`). Its
records are volumes (labels, patients and the harness's patient-level splits are per volume); how it is
sampled is declared by ``patches``:

* ``patches=None`` (whole items): ``load(i)`` is the whole volume ``(C, D, H, W)`` (centre-cropped/padded to
  ``crop_pad`` when given), and all volumes of a split must share one shape (fixed shape: MedMNIST, or scans
  brought to one ``?size=``).
* ``patches=PatchConfig(...)``: every tensor handed out is a patch ``(C, d, h, w)``:

  * ``load(i)``: the centre patch (or the patch centred on the record's region of interest);
  * ``grid(i)`` / ``patch(i, corner)``: the sliding grid of patches covering the volume (or its ROI), which
    :mod:`sslbench.pooled` encodes and pools (mean / max) into one feature per volume;
  * ``patch_stream(seed)``: the pretraining stream (:class:`PatchStream`): item ``j`` is
    ``patches_per_volume`` patches of one volume, a share ``foreground`` of them centred on a stored
    foreground voxel, the rest uniform. Item ``j`` depends only on ``(seed, j)``, and the engine's
    :class:`~pretext.engine.sampler.ResumableBatchSampler` maps ``(seed, step)`` to items, so a resumed run
    sees exactly the patches of an uninterrupted one. :func:`collate_patches` flattens the ``K`` patches of
    each item into the batch: ``batch_size`` volumes give ``batch_size * K`` patches (MONAI's
    ``RandSpatialCropSamplesd(num_samples=K)`` convention).

  ``patch_stream``, ``grid`` and ``patch`` are ``None`` on a whole-item split (the harness looks them up); the
  engine asks the split through its declared ``sampling`` and :meth:`VolumeSplit.stream`
  (:mod:`pretext.sampling`).

Volumes smaller than the patch along an axis are centred in the patch and padded with the background
value (one warning names them when the data are loaded).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from pretext.base import Batch, SSLSplit
from pretext.errors import ConfigError
from pretext.grid import axis_starts  # one grid for the harness and exported bundles (GridPooled)
from volssl.preprocess import as_size, centre_crop_pad

#: Virtual items per pretraining epoch (at least): the sampler's per-epoch permutation is over this many.
STREAM_LENGTH = 1 << 20


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
    """Where a :class:`VolumeSplit` reads voxels: volumes ``0..n-1`` of any shapes (:class:`volssl.store.VolumeStore`)."""

    pad_value: float

    def shape(self, i: int) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of volume ``i``."""

    def read(self, i: int, lo: Sequence[int] | None = None, hi: Sequence[int] | None = None) -> np.ndarray:
        """``(C, hi - lo)`` float32 voxels of volume ``i`` (the whole volume without ``lo``/``hi``)."""

    def foreground(self, i: int) -> np.ndarray:
        """``(K, 3)`` int foreground voxel positions of volume ``i`` (a sample; empty if none)."""


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


class VolumeSplit(SSLSplit):
    """A split of whole volumes, sampled whole or as patches (see the module docstring).

    Args:
        source: the voxels (:class:`volssl.store.VolumeStore`).
        rows: ``(N,)`` volume ids in ``source`` of this split's records.
        labels, patients, patient_names, meta: per record, as :class:`pretext.base.SSLSplit`.
        patches: patch settings, or None to hand out whole volumes.
        roi: ``(N, 3)`` float ROI centres in voxels of the stored volume (NaN rows: none), or None.
        crop_pad: whole volumes only: centre crop / zero pad each volume to this ``(D, H, W)`` at load time.
    """

    def __init__(self, source: VolumeSource, rows: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                 patient_names: list[str], patches: PatchConfig | None = None, meta: Any = None,
                 roi: np.ndarray | None = None, crop_pad: tuple[int, int, int] | None = None) -> None:
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)
        self.labels, self.patients = labels, np.asarray(patients, dtype=np.int64)
        self.patient_names, self.patches, self.meta = list(patient_names), patches, meta
        self.crop_pad = crop_pad
        self.roi = None if roi is None else np.asarray(roi, dtype=np.float64).reshape(len(self.rows), 3)
        self.pool = patches.pool if patches is not None else "mean"
        self.sampling = "items" if patches is None else "patches"  # pretext.sampling.SAMPLINGS

    @property
    def cfg(self) -> PatchConfig:
        """The patch settings (a whole-item split has none)."""
        if self.patches is None:
            raise ConfigError("this split hands out whole volumes: give ?patch=D,H,W to sample patches")
        return self.patches

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def item_shape(self) -> tuple[int, ...]:
        if not len(self.rows):
            return (0,)
        c, *spatial = self.source.shape(int(self.rows[0]))
        return (c, *(self.patches.patch if self.patches is not None else self.crop_pad or spatial))

    def volume_shape(self, i: int) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of record ``i``'s whole (stored) volume."""
        return self.source.shape(int(self.rows[i]))

    def volume(self, i: int) -> torch.Tensor:
        """Record ``i``'s whole stored volume ``(C, D, H, W)`` float32, whatever the sampling (mind memory)."""
        return torch.from_numpy(self.source.read(int(self.rows[i])))

    def load(self, i: int) -> torch.Tensor:
        """The whole volume of record ``i`` (whole items), or its centre patch (centred on its ROI when it has one)."""
        if self.patches is None:
            x = self.volume(i)
            return centre_crop_pad(x, self.crop_pad) if self.crop_pad is not None else x
        spatial, p = self.volume_shape(i)[1:], self.patches.patch
        centre = self._roi(i)
        if centre is None:
            corner = [(n - q) // 2 for n, q in zip(spatial, p, strict=True)]
        else:
            corner = [int(np.floor(c - q / 2.0 + 0.5)) for c, q in zip(centre, p, strict=True)]
        return self.patch_at(i, corner)

    def _roi(self, i: int) -> np.ndarray | None:
        if self.roi is None or not np.isfinite(self.roi[i]).all():
            return None
        return self.roi[i]

    # -- patches ---------------------------------------------------------------------------------------------

    @property
    def patch(self) -> Any:
        """``patch(i, corner)``: the ``(C, d, h, w)`` patch of record ``i`` at ``corner`` (None for whole items)."""
        return self.patch_at if self.patches is not None else None

    @property
    def grid(self) -> Any:
        """``grid(i)``: the ``(K, 3)`` corners of record ``i``'s sliding grid (None for whole items)."""
        return self.grid_of if self.patches is not None else None

    @property
    def patch_stream(self) -> Any:
        """``patch_stream(seed, indices)``: the random-patch stream (None for whole items)."""
        return self._patch_stream if self.patches is not None else None

    def patch_at(self, i: int, corner: Sequence[int]) -> torch.Tensor:
        """``(C, d, h, w)`` float32 patch of record ``i`` at ``corner`` (padded where outside)."""
        return torch.from_numpy(read_patch(self.source, int(self.rows[i]), corner, self.cfg.patch))

    def grid_of(self, i: int) -> np.ndarray:
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
        """``(K, C, d, h, w)`` every grid patch of record ``i`` (see :meth:`grid_of`; mind memory on big scans)."""
        return torch.stack([self.patch_at(i, c) for c in self.grid_of(i)])

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

    def _patch_stream(self, seed: int = 0, indices: np.ndarray | None = None, pairing: str = "none") -> PatchStream:
        """The pretraining / fine-tuning stream over records ``indices`` (default: all)."""
        return PatchStream(self, seed, np.arange(len(self)) if indices is None else indices, pairing)

    def stream(self, seed: int = 0, pairing: str = "none") -> Any:
        """The pretraining :class:`pretext.sampling.Stream`. Whole items: the base class's. Patches: random
        patches; with ``pairing="patches"`` each item adds ``x2``, other random patches of the same scan, and
        with ``"patient"`` patches of another scan of the same patient (the single-scan fallback: the same scan)."""
        if self.patches is None:
            return super().stream(seed, pairing)
        return self._patch_stream(seed=seed, pairing=pairing).stream(seed, pairing)


def patch_config(patch: Any, patches_per_volume: Any = 1, foreground: Any = 0.0, pool: Any = "mean",
                 overlap: Any = 0.25, roi_size: Any = None) -> PatchConfig | None:
    """Parse the patch options of a data spec (None when ``patch`` is not given: whole items)."""
    if patch is None or (isinstance(patch, str) and patch.lower() in ("", "none")):
        if roi_size is not None:
            raise ConfigError("roi_size= needs patch=D,H,W (the grid tiles the region with patches)")
        return None
    try:
        k = int(patches_per_volume)
        if float(patches_per_volume) != k:
            raise ValueError
        fg, ov = float(foreground), float(overlap)
    except (TypeError, ValueError):
        raise ConfigError(f"patches_per_volume={patches_per_volume!r}, foreground={foreground!r}, "
                          f"overlap={overlap!r}: give a whole number and two numbers, e.g. "
                          "?patches_per_volume=4&foreground=0.5&overlap=0.25") from None
    return PatchConfig(as_size(patch, "patch"), k, fg, str(pool), ov, as_size(roi_size, "roi_size"))  # type: ignore[arg-type]


def warn_small(shapes: list[tuple[int, ...]], names: list[str], cfg: PatchConfig, what: str = "after resampling") -> None:
    """One warning naming the volumes smaller than the patch along some axis (they are padded)."""
    small = [(n, s) for n, s in zip(names, shapes, strict=True) if any(a < b for a, b in zip(s[1:], cfg.patch, strict=True))]
    if small:
        shown = ", ".join(f"{n} {tuple(s[1:])}" for n, s in small[:3]) + (", ..." if len(small) > 3 else "")
        warnings.warn(f"{len(small)} of {len(shapes)} volume(s) are smaller than patch={cfg.patch} {what} "
                      f"({shown}); they are centred in the patch and zero-padded. Lower ?patch= or resample to "
                      "finer voxels (?spacing=MM) if that is not intended", stacklevel=3)


def collate_patches(items: list[Batch]) -> Batch:
    """Concatenate items of ``K`` patches each: ``x`` ``(B * K, C, d, h, w)``, other keys likewise."""
    return {key: torch.cat([it[key] for it in items]) for key in items[0]}


class PatchStream(Dataset):
    """Random patches of a :class:`VolumeSplit`'s records; item ``j`` is a pure function of ``(seed, j)``.

    ``len`` is a large multiple of the number of records (each record appears equally often per sampler
    epoch); item ``j`` is record ``indices[j % n]``. Items hold ``K`` patches: ``x`` ``(K, C, d, h, w)``,
    ``label``/``patient``/``index`` repeated ``K`` times, ``corner`` ``(K, 3)`` and ``foreground`` ``(K,)``.
    Use :attr:`collate_fn` (the engine does) to make ``(B * K, C, d, h, w)`` batches.
    """

    sampling = "patches"

    def __init__(self, split: VolumeSplit, seed: int, indices: np.ndarray, pairing: str = "none") -> None:
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
        x = torch.stack([self.split.patch_at(i, c) for c in corners])
        label = np.asarray(self.split.labels[i])
        pair: dict[str, torch.Tensor] = {}
        if self.pairing in ("patches", "patient"):
            # the partner's draw depends on (seed, j) only: another scan of the patient, else the same scan
            i2 = i if self.partners is None else self.partners.partner(i + len(self.split) * int(j))
            corners2, _ = self.split.draw(i2, self._rng2(j))
            pair["x2"] = torch.stack([self.split.patch_at(i2, c) for c in corners2])
        return {**pair,
            "x": x,
            "label": torch.as_tensor(np.repeat(label[None], k, 0),
                                     dtype=torch.float32 if label.ndim else torch.int64),
            "patient": torch.full((k,), int(self.split.patients[i]), dtype=torch.int64),
            "index": torch.full((k,), i, dtype=torch.int64),
            "corner": torch.from_numpy(corners),
            "foreground": torch.from_numpy(flags),
        }


__all__ = ["PatchConfig", "PatchStream", "VolumeSource", "VolumeSplit", "axis_starts", "collate_patches",
           "grid_corners", "patch_config", "read_patch", "warn_small"]

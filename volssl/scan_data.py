"""The data-spec side of whole scans: ``?patch=D,H,W`` options, masks and ROI centres from a manifest.

``nifti:``/``manifest3d:`` with ``?patch=`` ingest into the ragged store (:mod:`volssl.scans`) instead of
one common shape; ``medmnist3d:`` with ``?patch=`` draws patches from its cubes. Either way the splits are
:class:`volssl.patches.ScanSplit` and the data's ``input_shape`` is ``(C, *patch)``::

    nifti:/data/ct?spacing=1.5&window=-1000,1000&patch=96,96,96&patches_per_volume=4&foreground=0.5&num_workers=8
    manifest3d:/data/nodules.csv?spacing=1&patch=64,64,32&roi_size=64,64,64&pool=max
    medmnist3d:../shared/data/adrenalmnist3d/adrenalmnist3d_64.npz?size=64&patch=32

Manifest columns besides ``path,label,patient_id[,split]``: ``mask`` (a foreground mask on the image's
grid: foreground patches are centred on its voxels), and a region of interest as ``roi_x,roi_y,roi_z``
(world mm, RAS as in the NIfTI affine; negate x and y of LPS/ITK coordinates such as LUNA16's) or
``roi_i,roi_j,roi_k`` (voxel indices of the source file). Downstream features then pool the grid over
``roi_size`` (default one patch) centred there instead of over the whole volume.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pretext.errors import ConfigError, DataError
from volssl.patches import PatchConfig, ScanSplit
from volssl.preprocess import PreprocessConfig, as_size
from volssl.scans import ScanSource, ingest_scans
from volssl.store import resolve_cache

ROI_WORLD, ROI_VOXEL = ("roi_x", "roi_y", "roi_z"), ("roi_i", "roi_j", "roi_k")


def patch_config(patch: Any, patches_per_volume: Any = 1, foreground: Any = 0.0, pool: Any = "mean",
                 overlap: Any = 0.25, roi_size: Any = None) -> PatchConfig | None:
    """Parse the patch options of a data spec (None when ``patch`` is not given)."""
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


def _resolve_masks(df: Any, source: str) -> list[str | None] | None:
    if "mask" not in df.columns:
        return None
    base = Path(source).resolve().parent if Path(source).is_file() else Path(source).resolve()
    out: list[str | None] = []
    for line, m in enumerate(df["mask"].tolist(), start=2):
        if m is None or (isinstance(m, float) and np.isnan(m)) or not str(m).strip():
            out.append(None)
            continue
        p = Path(str(m).strip())
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise DataError(f"manifest {source!r} line {line}: mask file {str(p)!r} does not exist; fix the mask "
                            "column (paths are relative to the manifest) or leave the cell empty")
        out.append(str(p))
    return out


def roi_centres(df: Any, metas: list[dict[str, Any]], mode: str, source: str) -> np.ndarray | None:
    """``(N, 3)`` ROI centres in voxels of the stored volumes (NaN where a row has none), or None.

    Raises:
        ConfigError: ``mode`` unknown, or its columns missing.
        DataError: a centre outside its (preprocessed) volume, named with the file, the value and the fix.
    """
    mode = str(mode).lower()
    if mode not in ("auto", "none", "world", "voxel"):
        raise ConfigError(f"roi={mode!r} must be auto, none, world (roi_x,roi_y,roi_z in mm) or voxel "
                          "(roi_i,roi_j,roi_k)")
    cols = set(df.columns)
    if mode == "auto":
        mode = "world" if set(ROI_WORLD) <= cols else "voxel" if set(ROI_VOXEL) <= cols else "none"
    if mode == "none":
        return None
    need = ROI_WORLD if mode == "world" else ROI_VOXEL
    if not set(need) <= cols:
        raise ConfigError(f"roi={mode} needs manifest columns {list(need)}; {source!r} has {sorted(cols)}")
    vals = df[list(need)].to_numpy(dtype=np.float64)
    out = np.full((len(df), 3), np.nan)
    for r, (v, meta) in enumerate(zip(vals, metas, strict=True)):
        if not np.isfinite(v).all():
            continue
        world = np.asarray(meta["source_affine"]) @ np.append(v, 1.0) if mode == "voxel" else np.append(v, 1.0)
        vox = np.linalg.solve(np.asarray(meta["affine"]), world)[:3]
        shape = meta["shape"][1:]
        if not all(-0.5 <= c <= n - 0.5 for c, n in zip(vox, shape, strict=True)):
            given = ", ".join(f"{k}={x:g}" for k, x in zip(need, v, strict=True))
            raise DataError(
                f"{meta['path']}: ROI centre ({given}) lies outside the preprocessed volume: voxel "
                f"{tuple(round(float(c), 1) for c in vox)} of shape {tuple(shape)}. Check the coordinates' convention "
                "(roi_x/y/z are world mm in the image's RAS space: negate x and y of LPS/ITK coordinates such as "
                "LUNA16's; roi_i/j/k are voxel indices of the file), or drop ?foreground_crop which may have cut "
                "the region away"
            )
        out[r] = vox
    return out


class Scans:
    """Ingested scans of one data spec: the ragged store, per-volume metadata, skipped files, ROI centres."""

    def __init__(self, source: ScanSource, metas: list[dict[str, Any]], skipped: list[str], cfg: PatchConfig,
                 roi: np.ndarray | None) -> None:
        self.source, self.metas, self.skipped, self.cfg, self.roi = source, metas, skipped, cfg, roi
        self.spacing = np.asarray([m["spacing"] for m in metas], dtype=np.float32)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.metas[0]["shape"][0]), *self.cfg.patch)

    def annotate(self, df: Any) -> Any:
        """Add per-volume shape and foreground columns to the (kept rows of the) manifest table."""
        shapes = np.asarray([m["shape"][1:] for m in self.metas])
        df["shape_d"], df["shape_h"], df["shape_w"] = shapes[:, 0], shapes[:, 1], shapes[:, 2]
        df["foreground_voxels"] = [m["fg_count"] for m in self.metas]
        return df

    def split(self, idx: np.ndarray, labels: np.ndarray, patients: np.ndarray, names: list[str], meta: Any) -> ScanSplit:
        return ScanSplit(self.source, idx, labels, patients, names, self.cfg, meta,
                         None if self.roi is None else self.roi[idx])


def open_scans(df: Any, prep: PreprocessConfig, cache: Any, skip_broken: bool, volume_index: int | None,
               cfg: PatchConfig, num_workers: Any = 0, roi: str = "auto", source: str = "") -> Scans:
    """Ingest the files of manifest table ``df`` into the ragged store and check them for patch sampling."""
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or str(num_workers).strip() not in (str(workers), f"{workers}.0"):
        raise ConfigError(f"num_workers={num_workers!r} must be a whole number >= 0 (ingest processes; 0 = this one)")
    root = resolve_cache(cache)
    if root is None:
        raise ConfigError("patch= streams volumes from the on-disk scan store; give ?cache=auto or a folder, not none")
    masks = _resolve_masks(df, source)
    paths = list(df["path"])
    src, metas, broken = ingest_scans(paths, root, prep, masks=masks, num_workers=workers,
                                      skip_broken=skip_broken, volume_index=volume_index)
    skipped = [p for p, _ in broken]
    kept = df[~df["path"].isin(skipped)].reset_index(drop=True)
    centres = roi_centres(kept, metas, roi, source)
    names = [str(m["path"]) for m in metas]
    warn_small([tuple(m["shape"]) for m in metas], names, cfg)
    empty = [m["path"] for m in metas if m["fg_count"] == 0]
    if empty and cfg.foreground > 0:
        what = "mask voxels" if masks else f"voxel above foreground_threshold={prep.foreground_threshold:g}"
        warnings.warn(f"{len(empty)} of {len(metas)} volume(s) have no {what} (e.g. {empty[0]}): their "
                      f"foreground patches (share {cfg.foreground:g}) are drawn uniformly instead. Lower "
                      "?foreground_threshold (it applies after normalisation), check ?window, or fix the masks",
                      stacklevel=3)
    return Scans(src, metas, skipped, cfg, centres)


__all__ = ["Scans", "open_scans", "patch_config", "roi_centres", "warn_small"]

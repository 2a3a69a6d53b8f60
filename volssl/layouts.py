"""Layouts: how volumes lie on disk -> records (one image file or DICOM series each), masks and ROI centres.

* A folder (``nifti:``) is searched recursively for image files (NIfTI, NRRD, MHA, ...) and DICOM series.
* A DICOM tree (``dicom:`` or inside a ``nifti:`` folder) may nest study/series folders, hold several series
  in one folder (told apart by SeriesInstanceUID), slices in any file order and files without an extension:
  every folder that holds DICOM files (recognised by their ``DICM`` preamble) gives one record per series,
  ``FOLDER#SeriesInstanceUID``; GDCM (through SimpleITK) orders the slices by position and applies each
  series' rescale slope/intercept (vendors differ) when it is read (:func:`volssl.io.read_dicom_series`).
* A manifest (``manifest3d:``) lists ``path,label,patient_id[,split]`` and optionally ``mask`` (a
  foreground mask on the image's grid) and a region of interest, ``roi_x,roi_y,roi_z`` (world mm, RAS as in
  the NIfTI affine; negate x and y of LPS/ITK coordinates such as LUNA16's) or ``roi_i,roi_j,roi_k`` (voxel
  indices of the source file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pretext.errors import ConfigError, DataError
from volssl.io import has_volume_suffix, is_dicom_file

ROI_WORLD, ROI_VOXEL = ("roi_x", "roi_y", "roi_z"), ("roi_i", "roi_j", "roi_k")


def dicom_series(folder: Path) -> list[str]:
    """The series of the DICOM files directly in ``folder``, as ``FOLDER#SeriesInstanceUID`` records (sorted)."""
    import SimpleITK as sitk

    uids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    return [f"{folder}#{uid}" for uid in uids]


def dicom_tag(record: str, tag: str, default: str = "") -> str:
    """A tag (``"0010|0020"``: PatientID) of the first file of a DICOM series record, or ``default``."""
    import SimpleITK as sitk

    folder, _, uid = record.partition("#")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid) if uid else []
    if not files:
        return default
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else default
    except RuntimeError:
        return default


def list_records(folder: str | Path, dicom_only: bool = False) -> list[str]:
    """Image files and DICOM series (``FOLDER#UID``) under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    found: list[str] = []
    dicom_dirs: set[Path] = set()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if not dicom_only and has_volume_suffix(p) and not p.name.lower().endswith(".dcm"):
            found.append(str(p))
        elif p.parent not in dicom_dirs and (p.name.lower().endswith(".dcm") or not p.suffix or p.suffix.lower()
                                             not in (".csv", ".json", ".txt", ".md", ".npz", ".npy")) \
                and is_dicom_file(p):
            dicom_dirs.add(p.parent)
    for d in sorted(dicom_dirs):
        found.extend(dicom_series(d))
    return sorted(found)


def resolve_masks(df: Any, source: str) -> list[str | None] | None:
    """Per row, the absolute path of the ``mask`` column (None where empty), or None without the column."""
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


__all__ = ["ROI_VOXEL", "ROI_WORLD", "dicom_series", "dicom_tag", "is_dicom_file", "list_records", "resolve_masks",
           "roi_centres"]

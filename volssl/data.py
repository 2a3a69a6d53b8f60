"""Volume data kinds: ``medmnist3d``, ``nifti`` (folder or manifest), ``manifest3d`` and ``dicom``.

One data path whatever the kind (``../shared/DESIGN.md``, "One data path per modality"): layouts
(:mod:`volssl.layouts`: files, DICOM series, manifests; MedMNIST ``.npz``) -> the one preprocessing chain
(:mod:`volssl.preprocess`) -> ingest into the one ragged store (:mod:`volssl.ingest`, :mod:`volssl.store`) ->
one split class that declares its sampling, whole volumes or ``?patch=`` patches (:mod:`volssl.sampling`)::

    medmnist3d:../shared/data/adrenalmnist3d?size=64
    nifti:/data/ct_folder?spacing=1.5&window=-1000,1000&size=96,96,96&val_fraction=0.1
    nifti:/data/ct?spacing=1.5&window=-1000,1000&patch=96,96,96&patches_per_volume=4&foreground=0.5&num_workers=8
    manifest3d:/data/manifest.csv?normalize=zscore&size=128,128,64
    dicom:/data/dicom_tree?spacing=1&window=-1000,1000&patch=64,64,32
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pretext.base import SSLData, SSLSplit
from pretext.config import to_dict
from pretext.errors import ConfigError, DataError
from pretext.labels import encode_labels, parse_label
from pretext.options import as_flag
from pretext.registry import register_data
from pretext.splits import patient_split
from volssl.ingest import ingest_files, ingest_medmnist, warn_constant
from volssl.io import read_manifest
from volssl.layouts import dicom_tag, list_records, resolve_masks, roi_centres
from volssl.preprocess import PREP_FIELDS, PreprocessConfig, as_size, prep_config
from volssl.sampling import PatchConfig, VolumeSplit, patch_config, warn_small
from volssl.store import resolve_cache

# Class names from the official MedMNIST ``info.py`` (3D sets).
MEDMNIST3D_CLASSES: dict[str, list[str]] = {
    "organmnist3d": ["liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder",
                     "heart", "lung-right", "lung-left", "spleen", "pancreas"],
    "nodulemnist3d": ["benign", "malignant"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
    "fracturemnist3d": ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"],
    "vesselmnist3d": ["vessel", "aneurysm"],
    "synapsemnist3d": ["inhibitory synapse", "excitatory synapse"],
}


# -- MedMNIST 3D ------------------------------------------------------------------------------------


def store_root(cache: Any) -> Path:
    """The cache folder of a ``cache`` option, or a temporary one (``none``, or a folder that cannot be written).

    A temporary store is removed when the process exits.
    """
    root = resolve_cache(cache)
    if root is not None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{np.random.randint(1 << 30)}"
            probe.touch()
            probe.unlink()
            return root
        except OSError as err:
            warnings.warn(f"cache folder {str(root)!r} is not writable ({err}); using a temporary store removed at "
                          "exit. Set MEDSSL_CACHE or ?cache=FOLDER to a writable place", stacklevel=3)
    tmp = Path(tempfile.mkdtemp(prefix="medssl-volumes-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def _find_medmnist_file(path: Path, size: int | None) -> Path:
    if path.is_file():
        m = re.search(r"_(\d+)\.npz$", path.name)
        file_size = int(m.group(1)) if m else 28
        if size is not None and size != file_size:
            raise ConfigError(
                f"{str(path)!r} holds {file_size}^3 volumes but size={size} was asked; point at the "
                f"folder (then the file is chosen by size) or drop ?size"
            )
        return path
    candidates = sorted(path.glob("*.npz"))
    want = size or 28
    pick = [p for p in candidates if (re.search(r"_(\d+)\.npz$", p.name) is None) == (want == 28)
            and (want == 28 or p.name.endswith(f"_{want}.npz"))]
    if len(pick) != 1:
        raise DataError(
            f"no single MedMNIST file for size={want} in folder {str(path)!r} (found {[p.name for p in candidates]}); "
            "expected NAME.npz for 28^3 or NAME_64.npz for 64^3, or pass the .npz file itself"
        )
    return pick[0]


@register_data("medmnist3d", modality="volume")
def load_medmnist3d(
    path: str,
    size: int | None = None,
    normalize: str = "unit",
    pad_to: Any = None,
    cache: Any = "auto",
    patch: Any = None,
    patches_per_volume: Any = 1,
    foreground: Any = 0.0,
    foreground_threshold: float = 0.0,
    pool: str = "mean",
    overlap: float = 0.25,
) -> SSLData:
    """A MedMNIST 3D ``.npz`` (or a folder holding ``NAME.npz`` / ``NAME_64.npz``) with its official splits.

    Args:
        path: the ``.npz`` file or its folder.
        size: 28 or 64 (picks the file when ``path`` is a folder; checked when it is a file).
        normalize: "unit" (uint8 / 255 -> [0, 1]), "zscore" (train-split mean/std), "none" (0..255).
        pad_to: centre crop / zero pad each volume to this side (e.g. 32 so that 8^3 patches fit).
        cache: "auto" (``$MEDSSL_CACHE`` or ``~/.cache/medssl``), a folder, or "none" (a temporary store); the
            stores go in its ``volumes/`` subfolder (:func:`pretext.cache.resolve_cache`, as signals' in ``signal/``).
        patch, patches_per_volume, foreground, pool, overlap: random ``patch=D,H,W`` patches for pretraining
            and pooled sliding-grid features downstream (see :mod:`volssl.sampling`);
            ``foreground_threshold`` (normalised units) defines foreground voxels there.

    MedMNIST ships no patient ids: every volume is its own pseudo-patient (the official split is
    already patient-level, so no leakage arises across train/val/test); ``meta`` says so.
    """
    if normalize not in ("unit", "zscore", "none"):
        raise ConfigError(f"normalize={normalize!r} must be one of unit, zscore, none")
    file = _find_medmnist_file(Path(path), None if size is None else int(size))
    name = re.sub(r"(_\d+)?\.npz$", "", file.name).lower()
    crop = as_size(pad_to, "pad_to")
    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap)
    stores, labels = ingest_medmnist(file, store_root(cache), normalize, float(foreground_threshold))
    all_labels = np.concatenate([labels[s] for s in ("train", "val", "test")])
    multilabel = all_labels.shape[1] > 1
    num_classes = all_labels.shape[1] if multilabel else int(all_labels.max()) + 1
    class_names = MEDMNIST3D_CLASSES.get(name, [f"class_{i}" for i in range(num_classes)])
    splits: dict[str, SSLSplit] = {}
    import pandas as pd

    for s in ("train", "val", "test"):
        lab = labels[s].astype(np.float32) if multilabel else labels[s][:, 0].astype(np.int64)
        n = len(lab)
        names = [f"{name}-{s}-{i:05d}" for i in range(n)]
        meta = pd.DataFrame({"official_split": s, "official_index": np.arange(n)})
        splits[s] = VolumeSplit(stores[s], np.arange(n), lab, np.arange(n), names, patches, meta,
                                crop_pad=None if patches is not None else crop)
    side = stores["train"].shape(0)[1:]
    shape = (stores["train"].shape(0)[0], *(crop or side))
    if patches is not None:
        warn_small([stores["train"].shape(0)], [str(file)], patches, "")
        shape = (stores["train"].shape(0)[0], *patches.patch)
    mm = 64.0 / side[0]  # MedMNIST 3D: a 64 mm cube resampled to `side`
    return SSLData(
        modality="volume",
        splits=splits,
        input_shape=shape,
        num_classes=num_classes,
        class_names=class_names,
        multilabel=multilabel,
        source=str(file),
        meta={
            "dataset": name,
            "official_split": True,
            "spacing": (mm, mm, mm),
            "normalize": normalize,
            "patients": "pseudo: one per volume (MedMNIST ships no patient ids; its official "
                        "train/val/test split is patient-level)",
        },
    )


# -- NIfTI folders and manifests --------------------------------------------------------------------

def open_scans(df: Any, prep: PreprocessConfig, cache: Any, skip_broken: bool, volume_index: int | None,
               patches: PatchConfig | None, num_workers: Any = 0, roi: str = "auto", source: str = ""
               ) -> tuple[Any, list[dict[str, Any]], list[str], np.ndarray | None]:
    """Ingest the files of manifest table ``df`` into the store; ``(store, metas, skipped paths, ROI centres)``."""
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or str(num_workers).strip() not in (str(workers), f"{workers}.0"):
        raise ConfigError(f"num_workers={num_workers!r} must be a whole number >= 0 (ingest processes; 0 = this one)")
    masks = resolve_masks(df, source)
    store, metas, broken = ingest_files(list(df["path"]), store_root(cache), prep, masks=masks, num_workers=workers,
                                        skip_broken=skip_broken, volume_index=volume_index)
    skipped = [p for p, _ in broken]
    kept = df[~df["path"].isin(skipped)].reset_index(drop=True)
    warn_constant(metas)
    multi = [m for m in metas if len(m["source_shape"]) == 4 and m["source_shape"][0] > 1]
    if multi and volume_index is None:
        shown = ", ".join(f"{m['path']} ({m['source_shape'][0]} volumes)" for m in multi[:3])
        warnings.warn(f"{len(multi)} of {len(metas)} image(s) are 4D; their last axis is read as channels: {shown}. "
                      "If these are time points or separate scans rather than channels, pick one with "
                      "?volume_index=N or split the files (fslsplit, nibabel.funcs.four_to_three)", stacklevel=3)
    if patches is None:
        shapes = sorted({tuple(m["shape"]) for m in metas})
        if len(shapes) > 1:
            raise DataError(
                f"volumes have different shapes after preprocessing {shapes[:4]}; pass ?size=D,H,W to crop/pad "
                "them to one shape (and ?spacing=MM to resample to one voxel size), or ?patch=D,H,W to keep each "
                "scan whole and train on random patches"
            )
        return store, metas, skipped, None
    centres = roi_centres(kept, metas, roi, source)
    warn_small([tuple(m["shape"]) for m in metas], [str(m["path"]) for m in metas], patches)
    empty = [m["path"] for m in metas if m["fg_count"] == 0]
    if empty and patches.foreground > 0:
        what = "mask voxels" if masks else f"voxel above foreground_threshold={prep.foreground_threshold:g}"
        warnings.warn(f"{len(empty)} of {len(metas)} volume(s) have no {what} (e.g. {empty[0]}): their "
                      f"foreground patches (share {patches.foreground:g}) are drawn uniformly instead. Lower "
                      "?foreground_threshold (it applies after normalisation), check ?window, or fix the masks",
                      stacklevel=3)
    return store, metas, skipped, centres


def _build_volume_data(df: Any, prep: PreprocessConfig, cache: Any, skip_broken: bool, source: str,
                       val_fraction: float, test_fraction: float, seed: int,
                       volume_index: int | None = None, patches: Any = None, scan_options: Any = None) -> SSLData:
    missing = list(df.attrs.get("missing", []))
    store, metas, skipped, roi = open_scans(df, prep, cache, skip_broken, volume_index, patches, source=source,
                                            **(scan_options or {}))
    df = df[~df["path"].isin(skipped)].reset_index(drop=True)
    shapes = np.asarray([m["shape"][1:] for m in metas])
    df["shape_d"], df["shape_h"], df["shape_w"] = shapes[:, 0], shapes[:, 1], shapes[:, 2]
    df["foreground_voxels"] = [m["fg_count"] for m in metas]
    spacing = np.asarray([m["spacing"] for m in metas], dtype=np.float32)
    df["spacing_d"], df["spacing_h"], df["spacing_w"] = spacing[:, 0], spacing[:, 1], spacing[:, 2]
    raw = [parse_label(v) for v in df["label"]] if "label" in df.columns else [None] * len(df)
    labels, class_names = encode_labels(raw, indices=True, source=source)
    names = sorted(set(df["patient_id"].astype(str)))
    pid = {n: i for i, n in enumerate(names)}
    patients = np.array([pid[str(p)] for p in df["patient_id"]], dtype=np.int64)
    if "split" in df.columns:
        roles = df["split"].to_numpy(dtype=object)
    else:
        roles = patient_split(patients, val_fraction, test_fraction, seed, strata=[str(v) for v in raw])
    splits: dict[str, SSLSplit] = {}
    for s in ("train", "val", "test"):
        idx = np.flatnonzero(roles == s)
        if len(idx) == 0 and s != "train":
            continue
        splits[s] = VolumeSplit(store, idx, labels[idx], patients[idx], names, patches,
                                df.iloc[idx].reset_index(drop=True), None if roi is None else roi[idx])
    if len(splits["train"]) == 0:
        raise DataError(f"{source}: no volume is in the train split; check the split column / fractions")
    sp = np.unique(np.round(spacing, 3), axis=0)
    chans = int(metas[0]["shape"][0])
    return SSLData(
        modality="volume",
        splits=splits,
        input_shape=(chans, *patches.patch) if patches is not None else tuple(metas[0]["shape"]),
        num_classes=len(class_names) or None,
        class_names=class_names,
        multilabel=labels.ndim == 2,
        source=source,
        meta={"preprocess": to_dict(prep), "spacing": tuple(map(float, sp[0])) if len(sp) == 1 else "mixed",
              "skipped": missing + skipped},
    )


@register_data("manifest3d", modality="volume")
def load_manifest3d(path: str, cache: Any = "auto", skip_broken: bool = False, val_fraction: float = 0.0,
                    test_fraction: float = 0.0, seed: int = 0, volume_index: int | None = None,
                    patch: Any = None, patches_per_volume: Any = 1, foreground: Any = 0.0, pool: str = "mean",
                    overlap: float = 0.25, roi: str = "auto", roi_size: Any = None, num_workers: Any = 0,
                    **preprocess: Any) -> SSLData:
    """Bring-your-own volumes listed in a CSV ``path,label,patient_id[,split]``.

    Args:
        path: the manifest; relative image paths are resolved against its folder.
        cache: "auto", a folder, or "none" (see :func:`load_medmnist3d`).
        skip_broken: leave unreadable or missing files out (named in a warning and in ``meta["skipped"]``)
            instead of stopping with an error that lists them.
        val_fraction, test_fraction, seed: patient-level split when the manifest has no ``split`` column.
        volume_index: keep volume N of each 4D image (time series, multi-scan files); without it a
            4D NIfTI's last axis is read as channels (with a warning) and a 4D time series is refused.
        patch, patches_per_volume, foreground, pool, overlap, roi, roi_size, num_workers: whole scans
            (``patch=D,H,W``): volumes of any shapes are ingested by ``num_workers`` processes into a ragged
            store, pretraining draws random patches (a ``foreground`` share centred on foreground: the
            ``mask`` column, else voxels above ``foreground_threshold``), downstream pools a sliding grid
            (or ``roi_size`` around the ``roi_*`` columns); see :mod:`volssl.sampling`.
        **preprocess: fields of :class:`volssl.preprocess.PreprocessConfig` (orientation, spacing,
            window, normalize, percentiles, foreground_crop, foreground_threshold,
            foreground_margin, size, resize).
    """
    _check_prep_options(preprocess)
    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap, roi_size)
    df = read_manifest(path, skip_missing=as_flag(skip_broken, "skip_broken"))
    return _build_volume_data(df, prep_config(preprocess), cache, as_flag(skip_broken, "skip_broken"), path,
                              float(val_fraction), float(test_fraction), int(seed), _volume_index(volume_index),
                              patches, {"num_workers": num_workers, "roi": roi})


@register_data("nifti", modality="volume")
def load_nifti(path: str, cache: Any = "auto", skip_broken: bool = False, patient_from: str = "file",
               val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0, volume_index: int | None = None,
               patch: Any = None, patches_per_volume: Any = 1, foreground: Any = 0.0, pool: str = "mean",
               overlap: float = 0.25, num_workers: Any = 0, **preprocess: Any) -> SSLData:
    """A folder of images (NIfTI, NRRD, MHA, DICOM series; searched recursively), or a manifest CSV.

    Unlabelled (labels -1) unless a manifest is given. ``patient_from`` = "file" (each file its own
    patient) or "parent" (the parent folder's name is the patient id). Other options as
    :func:`load_manifest3d`.
    """
    import pandas as pd

    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return load_manifest3d(path, cache=cache, skip_broken=skip_broken, val_fraction=val_fraction,
                               test_fraction=test_fraction, seed=seed, volume_index=volume_index, patch=patch,
                               patches_per_volume=patches_per_volume, foreground=foreground, pool=pool,
                               overlap=overlap, num_workers=num_workers, **preprocess)
    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap)
    _check_prep_options(preprocess)
    files = [str(p)] if p.is_file() else list_records(p)
    if not files:
        raise DataError(f"no image files (.nii, .nii.gz, .nrrd, .mha, DICOM) found under {path!r}")
    if patient_from not in ("file", "parent"):
        raise ConfigError(f"patient_from={patient_from!r} must be 'file' or 'parent'")
    pids = [_record_name(f) if patient_from == "file" else Path(f.split("#")[0] if "#" in f else f).parent.name
            for f in files]
    df = pd.DataFrame({"path": files, "patient_id": pids})
    return _build_volume_data(df, prep_config(preprocess), cache, as_flag(skip_broken, "skip_broken"), path,
                              float(val_fraction), float(test_fraction), int(seed), _volume_index(volume_index),
                              patches, {"num_workers": num_workers})


def _record_name(record: str) -> str:
    """A file's name without its image suffix, or a DICOM series' folder name and UID."""
    if "#" in record and not Path(record).exists():
        folder, _, uid = record.partition("#")
        return f"{Path(folder).name}#{uid}"
    return re.sub(r"(\.nii)?(\.gz)?$|\.[a-z]+$", "", Path(record).name)


@register_data("dicom", modality="volume")
def load_dicom(path: str, cache: Any = "auto", skip_broken: bool = False, patient_from: str = "tag",
               val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0, patch: Any = None,
               patches_per_volume: Any = 1, foreground: Any = 0.0, pool: str = "mean", overlap: float = 0.25,
               num_workers: Any = 0, **preprocess: Any) -> SSLData:
    """A folder tree of DICOM files: one record per series (see :mod:`volssl.layouts`), unlabelled.

    Nested study/series folders, several series in one folder (told apart by SeriesInstanceUID), slices in
    any order and files without an extension are read as they come. ``patient_from`` = "tag" (the series'
    PatientID, else its folder), "folder" (the folder above the series' folder) or "series" (each series its
    own patient). ``meta`` holds the SeriesInstanceUID, Modality and SeriesDescription. Other options as
    :func:`load_manifest3d`.
    """
    import pandas as pd

    _check_prep_options(preprocess)
    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap)
    if patient_from not in ("tag", "folder", "series"):
        raise ConfigError(f"patient_from={patient_from!r} must be 'tag', 'folder' or 'series'")
    if not Path(path).is_dir():
        raise DataError(f"dicom:{path!r} is not a folder; give the top folder of a DICOM tree")
    records = list_records(path, dicom_only=True)
    if not records:
        raise DataError(f"no DICOM files (recognised by their DICM preamble, any name) found under {path!r}")
    folders = [Path(r.partition("#")[0]) for r in records]
    if patient_from == "tag":
        pids = [dicom_tag(r, "0010|0020") or f.name for r, f in zip(records, folders, strict=True)]
    else:
        pids = [f.parent.name if patient_from == "folder" else _record_name(r) for r, f in zip(records, folders, strict=True)]
    df = pd.DataFrame({"path": records, "patient_id": pids, "series_uid": [r.partition("#")[2] for r in records],
                       "modality": [dicom_tag(r, "0008|0060") for r in records],
                       "series_description": [dicom_tag(r, "0008|103e") for r in records]})
    return _build_volume_data(df, prep_config(preprocess), cache, as_flag(skip_broken, "skip_broken"), path,
                              float(val_fraction), float(test_fraction), int(seed), None, patches,
                              {"num_workers": num_workers})


def _volume_index(v: Any) -> int | None:
    if v is None or (isinstance(v, str) and v.lower() in ("", "none")):
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or str(v).strip() not in (str(n), f"{n}.0"):
        raise ConfigError(f"volume_index={v!r} must be a whole number >= 0 (the volume of each 4D image to keep)")
    return n


def _check_prep_options(options: dict[str, Any]) -> None:
    bad = sorted(set(options) - set(PREP_FIELDS))
    if bad:
        raise ConfigError(
            f"unknown volume data option(s) {bad}; valid: cache, skip_broken, val_fraction, test_fraction, seed, "
            "volume_index, patch, patches_per_volume, foreground, pool, overlap, roi (manifest), roi_size "
            f"(manifest), num_workers, patient_from (nifti), {', '.join(PREP_FIELDS)}"
        )

"""Volume data kinds: ``medmnist3d``, ``nifti`` (folder or manifest) and ``manifest3d``.

Each returns an :class:`pretext.base.SSLData` whose splits are :class:`VolumeSplit` views of a
compact memory-mapped cache (see :mod:`volssl.store`)::

    medmnist3d:../shared/data/adrenalmnist3d?size=64
    nifti:/data/ct_folder?spacing=1.5&window=-1000,1000&size=96,96,96&val_fraction=0.1
    manifest3d:/data/manifest.csv?normalize=zscore&size=128,128,64
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pretext.base import SSLData, SSLSplit
from pretext.config import build_dataclass, to_dict
from pretext.errors import ConfigError, DataError
from pretext.labels import encode_labels, parse_label
from pretext.options import as_flag
from pretext.registry import register_data
from pretext.splits import patient_split
from volssl.io import list_volume_files, read_manifest, read_medmnist, read_volume
from volssl.preprocess import (  # noqa: F401 - centre_crop_pad is part of this module's API
    PreprocessConfig,
    as_size,
    centre_crop_pad,
    preprocess_volume,
)
from volssl.store import ArrayStore, IndexedLazy, LazyArray, VolumeSplit, cache_key, resolve_cache

log = logging.getLogger(__name__)

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


def _writable(root: Path | None) -> Path | None:
    """``root`` if a cache can be written there, else None (with a warning: data stay in memory)."""
    if root is None:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{np.random.randint(1 << 30)}"
        probe.touch()
        probe.unlink()
        return root
    except OSError as err:
        warnings.warn(f"cache folder {str(root)!r} is not writable ({err}); keeping volumes in memory. "
                      "Set MEDSSL_CACHE or ?cache=FOLDER to a writable place", stacklevel=3)
        return None


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
        normalize: "unit" (uint8 / 255 -> [0, 1]), "zscore" (train-split mean/std), "none" (0..255)
            (``normalise=`` is the deprecated spelling).
        pad_to: centre crop / zero pad each volume to this side (e.g. 32 so that 8^3 patches fit).
        cache: "auto" (``$MEDSSL_CACHE`` or ``~/.cache/medssl``), a folder, or "none" (in memory); the
            stores go in its ``volumes/`` subfolder (:func:`pretext.cache.resolve_cache`, as signals' in ``signal/``).
        patch, patches_per_volume, foreground, pool, overlap: random ``patch=D,H,W`` patches for pretraining
            and pooled sliding-grid features downstream (see :mod:`volssl.scan_data`);
            ``foreground_threshold`` (normalised units) defines foreground voxels there.

    MedMNIST ships no patient ids: every volume is its own pseudo-patient (the official split is
    already patient-level, so no leakage arises across train/val/test); ``meta`` says so.
    """
    if normalize not in ("unit", "zscore", "none"):
        raise ConfigError(f"normalize={normalize!r} must be one of unit, zscore, none")
    file = _find_medmnist_file(Path(path), None if size is None else int(size))
    name = re.sub(r"(_\d+)?\.npz$", "", file.name).lower()
    crop = as_size(pad_to, "pad_to")
    from volssl.scan_data import patch_config

    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap)
    root = resolve_cache(cache)
    key = cache_key("medmnist3d", [file], {})
    if root is not None and ArrayStore.exists(root / key):
        store = ArrayStore(root / key)
        arrays = {s: LazyArray(store.path(f"{s}_images")) for s in ("train", "val", "test")}
        labels = {s: np.asarray(store.open(f"{s}_labels")) for s in ("train", "val", "test")}
    else:
        raw = read_medmnist(file)
        root = _writable(root)
        if root is not None:
            spec = {}
            for s, (img, lab) in raw.items():
                img5 = img if img.ndim == 5 else img[:, None]
                spec[f"{s}_images"] = (img5.shape, str(img5.dtype), lambda mm, a=img5: mm.__setitem__(..., a))
                spec[f"{s}_labels"] = (lab.shape, str(lab.dtype), lambda mm, a=lab: mm.__setitem__(..., a))
            store = ArrayStore.build(root / key, spec, {"source": str(file), "kind": "medmnist3d"})
            arrays = {s: LazyArray(store.path(f"{s}_images")) for s in raw}
        else:
            arrays = {s: LazyArray(array=img if img.ndim == 5 else img[:, None]) for s, (img, _) in raw.items()}
        labels = {s: lab for s, (_, lab) in raw.items()}

    scale, shift = 1.0, 0.0
    if normalize == "unit":
        scale = 1.0 / 255.0
    elif normalize == "zscore":
        tr = arrays["train"].array
        mean = float(np.mean(tr, dtype=np.float64))
        std = float(np.std(tr, dtype=np.float64)) or 1.0
        scale, shift = 1.0 / std, -mean / std
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
        if patches is not None:
            from volssl.patches import ArraySource, ScanSplit

            src = ArraySource(arrays[s], scale, shift, float(foreground_threshold))
            splits[s] = ScanSplit(src, np.arange(n), lab, np.arange(n), names, patches, meta)
            continue
        splits[s] = VolumeSplit(arrays[s], lab, np.arange(n), names, scale, shift, crop, meta)
    side = arrays["train"].array.shape[2:]
    shape = (arrays["train"].array.shape[1], *(crop or side))
    if patches is not None:
        from volssl.scan_data import warn_small

        warn_small([tuple(arrays["train"].array.shape[1:])], [str(file)], patches, "")
        shape = (arrays["train"].array.shape[1], *patches.patch)
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

_PREP_FIELDS = ("orientation", "spacing", "window", "normalize", "percentiles", "foreground_crop",
                "foreground_threshold", "foreground_margin", "size", "resize")


def _prep_config(options: dict[str, Any]) -> PreprocessConfig:
    opts = {k: v for k, v in options.items() if v is not None}
    if "size" in opts:
        opts["size"] = as_size(opts["size"], "size")
    if isinstance(opts.get("orientation"), str) and opts["orientation"].lower() in ("none", "keep"):
        opts["orientation"] = None
    return build_dataclass(PreprocessConfig, opts, what="volume preprocessing")


def _ingest(paths: list[str], prep: PreprocessConfig, cache: Any, skip_broken: bool,
            volume_index: int | None = None) -> tuple[LazyArray, np.ndarray, list[str]]:
    """Read + preprocess every file once into a ``(N, C, D, H, W)`` float16 store.

    ``volume_index`` keeps one volume of each 4D file; without it a 4D NIfTI's last axis is read as
    channels, and a warning names those files.

    Returns:
        (store, spacings (N, 3), skipped paths). A broken file raises a :class:`DataError` naming
        every broken file, unless ``skip_broken`` (then each is named in a warning and in meta).
    """
    root = resolve_cache(cache)
    settings: dict[str, Any] = {"prep": to_dict(prep), "skip_broken": skip_broken}
    if volume_index is not None:
        settings["volume_index"] = int(volume_index)
    key = cache_key("volumes", paths, settings)
    if root is not None and ArrayStore.exists(root / key):
        st = ArrayStore(root / key)
        return LazyArray(st.path("images")), np.asarray(st.open("spacing")), list(st.index.get("skipped", []))
    arrays, spacings, broken, kept, multi = [], [], [], [], []
    for p in paths:
        try:
            vol = read_volume(p, volume_index)
            arr, sp = preprocess_volume(vol, prep)
        except DataError as err:
            broken.append((p, str(err)))
            continue
        if vol.array.shape[0] > 1:
            multi.append((p, vol.array.shape[0]))
        arrays.append(arr)
        spacings.append(sp)
        kept.append(p)
    if broken and not skip_broken:
        lines = "; ".join(msg for _, msg in broken[:10])
        raise DataError(
            f"{len(broken)} of {len(paths)} volume(s) could not be read: {lines}. Fix or remove them, or pass "
            "?skip_broken=true to leave them out (they are then listed in the warning and in data.meta)"
        )
    for p, msg in broken:
        warnings.warn(f"skipping broken volume {p}: {msg}", stacklevel=3)
    if not arrays:
        raise DataError(f"none of the {len(paths)} volume(s) could be read")
    if multi:
        shown = ", ".join(f"{p} ({c} volumes)" for p, c in multi[:3]) + (", ..." if len(multi) > 3 else "")
        warnings.warn(f"{len(multi)} of {len(paths)} image(s) are 4D; their last axis is read as channels: {shown}. "
                      "If these are time points or separate scans rather than channels, pick one with "
                      "?volume_index=N or split the files (fslsplit, nibabel.funcs.four_to_three)", stacklevel=3)
    chans = sorted({a.shape[0] for a in arrays})
    if len(chans) > 1:
        first = {c: kept[[a.shape[0] for a in arrays].index(c)] for c in chans}
        raise DataError(
            f"images have different numbers of channels/volumes {chans} (e.g. "
            + ", ".join(f"{c}: {p}" for c, p in first.items())
            + "); a 4D file's last axis is read as channels: pick one volume of each with ?volume_index=N, "
            "or split the 4D files (fslsplit, nibabel.funcs.four_to_three)"
        )
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(
            f"volumes have different shapes after preprocessing {shapes[:4]}; pass ?size=D,H,W to crop/pad "
            "them to one shape (and ?spacing=MM to resample to one voxel size), or ?patch=D,H,W to keep each "
            "scan whole and train on random patches (volssl.scan_data)"
        )
    stack_shape = (len(arrays), *arrays[0].shape)
    spacing_arr = np.asarray(spacings, dtype=np.float32)

    def fill(mm: np.ndarray) -> None:
        for i, a in enumerate(arrays):
            mm[i] = a.astype(np.float16)

    root = _writable(root)
    if root is None:
        buf = np.empty(stack_shape, dtype=np.float16)
        fill(buf)
        return LazyArray(array=buf), spacing_arr, [p for p, _ in broken]
    st = ArrayStore.build(
        root / key,
        {"images": (stack_shape, "float16", fill),
         "spacing": (spacing_arr.shape, "float32", lambda mm: mm.__setitem__(..., spacing_arr)),
         "order": ((len(kept),), "int64", lambda mm: mm.__setitem__(..., np.array([paths.index(k) for k in kept])))},
        {"kind": "volumes", "paths": kept, "skipped": [p for p, _ in broken], "prep": to_dict(prep)},
    )
    return LazyArray(st.path("images")), spacing_arr, [p for p, _ in broken]


def _build_volume_data(df: Any, prep: PreprocessConfig, cache: Any, skip_broken: bool, source: str,
                       val_fraction: float, test_fraction: float, seed: int,
                       volume_index: int | None = None, patches: Any = None, scan_options: Any = None) -> SSLData:
    missing = list(df.attrs.get("missing", []))
    if patches is not None:  # whole scans: ragged store, patches (volssl.scan_data)
        from volssl.scan_data import open_scans

        scans = open_scans(df, prep, cache, skip_broken, volume_index, patches, source=source, **(scan_options or {}))
        store, spacing, skipped = None, scans.spacing, scans.skipped
    else:
        store, spacing, skipped = _ingest(list(df["path"]), prep, cache, skip_broken, volume_index)
    df = df[~df["path"].isin(skipped)].reset_index(drop=True)
    if patches is not None:
        df = scans.annotate(df)
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
    full = store.array if store is not None and store.path is None else None
    for s in ("train", "val", "test"):
        idx = np.flatnonzero(roles == s)
        if len(idx) == 0 and s != "train":
            continue
        if patches is not None:
            splits[s] = scans.split(idx, labels[idx], patients[idx], names, df.iloc[idx].reset_index(drop=True))
            continue
        sub = LazyArray(array=full[idx]) if full is not None else IndexedLazy(store.path, idx)
        splits[s] = VolumeSplit(sub, labels[idx], patients[idx], names, meta=df.iloc[idx].reset_index(drop=True))
    if len(splits["train"]) == 0:
        raise DataError(f"{source}: no volume is in the train split; check the split column / fractions")
    sp = np.unique(np.round(spacing, 3), axis=0)
    return SSLData(
        modality="volume",
        splits=splits,
        input_shape=scans.input_shape if patches is not None else tuple(store.array.shape[1:]),
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
            (or ``roi_size`` around the ``roi_*`` columns); see :mod:`volssl.scan_data`.
        **preprocess: fields of :class:`volssl.preprocess.PreprocessConfig` (orientation, spacing,
            window, normalize, percentiles, foreground_crop, foreground_threshold,
            foreground_margin, size, resize).
    """
    from volssl.scan_data import patch_config

    _check_prep_options(preprocess)
    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap, roi_size)
    df = read_manifest(path, skip_missing=as_flag(skip_broken, "skip_broken"))
    return _build_volume_data(df, _prep_config(preprocess), cache, as_flag(skip_broken, "skip_broken"), path,
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
    from volssl.scan_data import patch_config

    patches = patch_config(patch, patches_per_volume, foreground, pool, overlap)
    _check_prep_options(preprocess)
    files = [p] if p.is_file() else list_volume_files(p)
    if not files:
        raise DataError(f"no image files (.nii, .nii.gz, .nrrd, .mha, DICOM) found under {path!r}")
    if patient_from not in ("file", "parent"):
        raise ConfigError(f"patient_from={patient_from!r} must be 'file' or 'parent'")
    pids = [re.sub(r"(\.nii)?(\.gz)?$|\.[a-z]+$", "", f.name) if patient_from == "file" else f.parent.name for f in files]
    df = pd.DataFrame({"path": [str(f) for f in files], "patient_id": pids})
    return _build_volume_data(df, _prep_config(preprocess), cache, as_flag(skip_broken, "skip_broken"), path,
                              float(val_fraction), float(test_fraction), int(seed), _volume_index(volume_index),
                              patches, {"num_workers": num_workers})


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
    bad = sorted(set(options) - set(_PREP_FIELDS))
    if bad:
        raise ConfigError(
            f"unknown volume data option(s) {bad}; valid: cache, skip_broken, val_fraction, test_fraction, seed, "
            "volume_index, patch, patches_per_volume, foreground, pool, overlap, roi (manifest), roi_size "
            f"(manifest), num_workers, patient_from (nifti), {', '.join(_PREP_FIELDS)}"
        )

"""Readers: one record -> array + metadata. No preprocessing here (see :mod:`volssl.preprocess`).

* :func:`read_volume` reads NIfTI through nibabel (affine and spacing kept), DICOM series through SimpleITK/GDCM
  (:func:`read_dicom_series`) and everything else torchio reads (NRRD, MHA/MHD, ...), returning
  ``(C, D, H, W)`` float32 (the on-disk dtype, int16 to float64, is kept in ``Volume.dtype``).
* :func:`read_medmnist` reads a MedMNIST ``.npz`` with its official keys and splits.
* :func:`read_manifest` reads a bring-your-own manifest CSV ``path,label,patient_id[,split]``.

Every failure raises :class:`pretext.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pretext.errors import DataError
from pretext.manifest import read_manifest as _read_manifest

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TORCHIO_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".img", ".hdr", ".tif", ".tiff")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + TORCHIO_SUFFIXES
MEDMNIST_SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Volume:
    """One image read from disk.

    Attributes:
        array: ``(C, D, H, W)`` float32 voxels in the file's own axis order.
        affine: ``(4, 4)`` voxel -> world (RAS+, mm) matrix.
        spacing: voxel size in mm along the three array axes.
        path: where it came from.
        dtype: the voxels' type on disk (before rescaling to float32).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: str
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def has_volume_suffix(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(VOLUME_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (``DICM`` at byte 128), whatever its name."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_dir(path: Path) -> bool:
    """True for a folder holding DICOM files (``.dcm`` or recognised by their preamble, any name)."""
    return path.is_dir() and any(p.is_file() and (p.suffix.lower() == ".dcm" or is_dicom_file(p))
                                 for p in path.iterdir())


def read_dicom_series(record: str | Path) -> Volume:
    """Read one DICOM series: ``FOLDER#SeriesInstanceUID``, or a folder holding a single series.

    GDCM (through SimpleITK) orders the slices by their position (any file order, any file names) and
    applies the series' rescale slope and intercept (e.g. to Hounsfield units). The LPS geometry of DICOM
    becomes a RAS affine as nibabel's.

    Raises:
        DataError: no series there, several series in a folder given without a UID, or an unreadable series.
    """
    import SimpleITK as sitk

    folder, _, uid = str(record).partition("#")
    if not Path(folder).is_dir():
        raise DataError(f"DICOM series {str(record)!r}: folder {folder!r} does not exist; check the path")
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    if not uid:
        if len(uids) != 1:
            raise DataError(f"DICOM folder {folder!r} holds {len(uids)} series {uids[:4]}; read it with the dicom: data "
                            "kind (one record per series) or give FOLDER#SeriesInstanceUID")
        uid = uids[0]
    if uid not in uids:
        raise DataError(f"DICOM series {uid!r} is not in {folder!r} (found {uids[:4]}); check the SeriesInstanceUID")
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        img = reader.Execute()
        first = sitk.ImageFileReader()
        first.SetFileName(files[0])
        first.ReadImageInformation()
        tag = lambda k, d: first.GetMetaData(k).strip() if first.HasMetaDataKey(k) else d  # noqa: E731
        dtype = f"{'int' if tag('0028|0103', '1') == '1' else 'uint'}{tag('0028|0100', '16')}"  # stored pixels
    except RuntimeError as err:
        raise DataError(f"cannot read DICOM series {str(record)!r} ({str(err).strip().splitlines()[-1]}); a file of "
                        "the series is damaged or not an image") from err
    if img.GetDimension() != 3 or min(img.GetSize()) < 2:
        raise DataError(f"DICOM series {str(record)!r} has size {img.GetSize()}; the 3D tasks need a volume of "
                        "at least two slices")
    arr = sitk.GetArrayFromImage(img).astype(np.float32).transpose(2, 1, 0)[None]  # (z, y, x) -> (1, i, j, k)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[None, :]
    affine[:3, 3] = img.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return Volume(np.ascontiguousarray(arr), affine, tuple(float(s) for s in spacing), str(record), dtype)  # type: ignore[arg-type]


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the column norms of the affine's 3x3 part."""
    sp = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return (float(sp[0]), float(sp[1]), float(sp[2]))


def _to_channels_first(data: np.ndarray, path: str) -> np.ndarray:
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:  # NIfTI stores channels/time last: (D, H, W, C)
        return np.moveaxis(data, -1, 0)
    if data.ndim == 5 and data.shape[3] == 1:  # (D, H, W, 1, C) NIfTI vector images
        return np.moveaxis(data[:, :, :, 0], -1, 0)
    raise DataError(
        f"{path}: image has shape {data.shape}; a 3D volume needs 3 spatial axes (plus optional channels). "
        "A 2D image cannot be used by the 3D tasks: convert it to a volume or use a 2D pipeline."
    )


_SPLIT_4D = ("split the file into 3D volumes (fslsplit IN.nii.gz OUT_ -t, or nibabel.funcs.four_to_three) "
             "or pick one volume with ?volume_index=N")


def read_nifti(path: str | Path, volume_index: int | None = None) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file with nibabel.

    A 4D file ``(D, H, W, C)`` is read as C channels, except a time series (the header's time unit is
    set, e.g. fMRI) which is refused; ``volume_index`` picks one volume of a 4D file instead (3D files
    are unaffected).

    Raises:
        DataError: the file is missing, corrupt or truncated, complex-valued, a 4D time series
            (without ``volume_index``), or not 3D.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file {str(path)!r} does not exist; check the path")
    try:
        img = nib.load(str(path))
        dtype = np.dtype(img.get_data_dtype())
        if dtype.kind == "c":
            raise DataError(
                f"NIfTI file {str(path)!r} is complex-valued (dtype {dtype}); the tasks need real voxels: "
                "save the magnitude (np.abs) or the real part as a float NIfTI"
            )
        shape = tuple(int(n) for n in img.shape)
        if len(shape) == 4 and shape[3] > 1:
            if volume_index is not None:
                if not 0 <= int(volume_index) < shape[3]:
                    raise DataError(f"NIfTI file {str(path)!r} has {shape[3]} volumes (shape {shape}); "
                                    f"volume_index={volume_index} must be in 0..{shape[3] - 1}")
                img = img.slicer[..., int(volume_index)]
            elif img.header.get_xyzt_units()[1] not in ("unknown", None):
                raise DataError(
                    f"NIfTI file {str(path)!r} is a 4D time series of {shape[3]} volumes (shape {shape}, "
                    f"time unit {img.header.get_xyzt_units()[1]!r}); the 3D tasks need one volume per file: "
                    + _SPLIT_4D
                )
        data = np.asarray(img.dataobj, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        on_disk = np.dtype(img.get_data_dtype()).name
    except DataError:
        raise
    except Exception as err:  # nibabel raises many types for damaged files (EOFError, ImageFileError, zlib)
        raise DataError(
            f"cannot read NIfTI file {str(path)!r} ({type(err).__name__}: {err}); the file is corrupt or "
            "truncated: re-export or re-download it, or remove it from the folder/manifest"
        ) from err
    arr = _to_channels_first(data, str(path))
    zooms = img.header.get_zooms()[:3]
    spacing = tuple(float(z) for z in zooms) if all(z > 0 for z in zooms) else spacing_from_affine(affine)
    return Volume(arr, affine, spacing, str(path), on_disk)  # type: ignore[arg-type]


def read_torchio(path: str | Path) -> Volume:
    """Read anything torchio/SimpleITK reads (NRRD, MHA/MHD, DICOM series folder)."""
    import torchio as tio

    path = Path(path)
    if not path.exists():
        raise DataError(f"image {str(path)!r} does not exist; check the path")
    try:
        img = tio.ScalarImage(path)
        img.load()
        on_disk = img.data.numpy().dtype.name
        data = img.data.numpy().astype(np.float32, copy=False)  # (C, W?, ...): torchio gives (C, I, J, K)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:
        raise DataError(
            f"cannot read image {str(path)!r} with torchio ({type(err).__name__}: {err}); "
            "the file is corrupt or in an unsupported format"
        ) from err
    if data.ndim != 4:
        raise DataError(f"{path}: expected a 3D image, got array of shape {data.shape}")
    if min(data.shape[1:]) == 1:
        raise DataError(
            f"{path}: image of shape {tuple(data.shape[1:])} is 2D; the 3D tasks need a volume"
        )
    return Volume(data, affine, spacing_from_affine(affine), str(path), on_disk)


def read_volume(path: str | Path, volume_index: int | None = None) -> Volume:
    """Read one volume, choosing the reader from the suffix (NIfTI -> nibabel, else torchio).

    ``volume_index`` keeps one volume (channel) of a 4D image; 3D images are unaffected.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        vol = read_nifti(p, volume_index)
    elif ("#" in str(path) and not p.exists()) or is_dicom_dir(p):
        vol = read_dicom_series(path)
    elif name.endswith(TORCHIO_SUFFIXES):
        vol = read_torchio(p)
        if volume_index is not None and vol.array.shape[0] > 1:
            if not 0 <= int(volume_index) < vol.array.shape[0]:
                raise DataError(f"{str(p)!r} has {vol.array.shape[0]} volumes; volume_index={volume_index} "
                                f"must be in 0..{vol.array.shape[0] - 1}")
            vol.array = vol.array[int(volume_index): int(volume_index) + 1]
    else:
        raise DataError(
            f"{str(p)!r}: unknown image format; supported suffixes: {', '.join(VOLUME_SUFFIXES)} "
            "or a folder of DICOM slices"
        )
    if min(vol.array.shape[1:]) < 2:
        raise DataError(f"{str(p)!r}: image of shape {vol.array.shape[1:]} is 2D; the 3D tasks need a volume")
    if not np.isfinite(vol.array).all():
        n_bad = int((~np.isfinite(vol.array)).sum())
        raise DataError(
            f"{str(p)!r}: {n_bad} voxels are NaN or infinite; fix the file or mask them before use"
        )
    return vol


# -- MedMNIST -------------------------------------------------------------------------------------


def read_medmnist(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST 3D ``.npz`` (``{split}_images``, ``{split}_labels`` for train/val/test).

    Returns:
        ``{"train": (images (N, D, H, W) uint8, labels (N, K)), "val": ..., "test": ...}``.

    Raises:
        DataError: file unreadable, keys missing, or images not 3D.
    """
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
        keys = set(npz.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read MedMNIST file {str(path)!r} ({err}); it is corrupt or not an .npz") from err
    need = [f"{s}_{k}" for s in MEDMNIST_SPLITS for k in ("images", "labels")]
    missing = [k for k in need if k not in keys]
    if missing:
        raise DataError(
            f"{str(path)!r} is not a MedMNIST file: missing keys {missing} (found {sorted(keys)}); "
            "a MedMNIST .npz has train_images, train_labels, val_images, val_labels, test_images, test_labels"
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in MEDMNIST_SPLITS:
        for key in (f"{s}_images", f"{s}_labels"):
            dtype = _npz_member_dtype(npz, key)
            if dtype is not None and dtype.kind not in "biuf":
                what = ("an object (pickled) array, which medssl never unpickles (allow_pickle=False: "
                        "unpickling can run code)") if dtype.kind == "O" else f"not numeric (dtype {dtype})"
                raise DataError(
                    f"{str(path)!r}: {key} is {what}; MedMNIST images and labels are numeric arrays: "
                    "re-save them with np.savez(..., " + key + "=np.asarray(x, dtype=np.uint8))"
                )
        try:
            images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(f"{str(path)!r}: cannot read {s}_images/{s}_labels ({err}); the file is truncated") from err
        if images.dtype.kind == "f":
            bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
            if bad.any():
                first = np.flatnonzero(bad)
                i = int(first[0])
                kinds = " and ".join(k for k, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(images[i]).any())
                raise DataError(
                    f"{str(path)!r}: {s}_images[{i}] contains {kinds} ({len(first)} image(s) with non-finite "
                    f"voxels: indices {first[:10].tolist()}); repair or drop those images before use"
                )
        if images.ndim == 5 and images.shape[-1] in (1, 3):  # (N, D, H, W, C) colour variants
            images = np.moveaxis(images, -1, 1)
        elif images.ndim != 4:
            raise DataError(
                f"{str(path)!r}: {s}_images has shape {images.shape}; MedMNIST 3D images are (N, D, H, W). "
                "Is this a 2D MedMNIST file? The 3D tasks need the *3d.npz files"
            )
        if len(labels) != len(images):
            raise DataError(f"{str(path)!r}: {s}_labels has {len(labels)} rows but {s}_images has {len(images)}")
        out[s] = (images, labels.reshape(len(labels), -1))
    return out


def _npz_member_dtype(npz: Any, key: str) -> np.dtype | None:
    """The dtype of array ``key`` of an open ``.npz``, read from its header only (None if unreadable)."""
    try:
        with npz.zip.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return np.dtype(read(fh)[2])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # the full read below reports it


# -- manifest -------------------------------------------------------------------------------------


MANIFEST_COLUMNS = ("path", "label", "patient_id")


def read_manifest(path: str | Path, require_label: bool = True, skip_missing: bool = False) -> Any:
    """Read a manifest CSV with columns ``path,label,patient_id[,split]`` (extra columns kept as meta).

    :func:`pretext.manifest.read_manifest` reads and checks it (the checks of every modality: a file
    listed twice, a patient on two splits, a missing file, an empty path or patient, an unknown split are
    refused by line); with ``skip_missing`` missing files are left out instead (named in a warning and in
    ``df.attrs["missing"]``). ``label`` may be empty (unknown, -1), a class index or a class name
    (:func:`pretext.labels.encode_labels`). An empty ``split`` cell means train.

    Returns:
        A ``pandas.DataFrame`` with an absolute ``path`` column.

    Raises:
        DataError: see :func:`pretext.manifest.read_manifest`.
    """
    df = _read_manifest(path, columns=MANIFEST_COLUMNS if require_label else ("path", "patient_id"),
                        skip_missing=skip_missing, empty_split="train", what="volume")
    return df

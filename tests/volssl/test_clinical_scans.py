"""Real clinical scans as they come, each written by the real library (SimpleITK/GDCM for DICOM, nibabel) in a
temp folder: DICOM trees, mixed on-disk dtypes, strongly anisotropic grids, scans smaller than the patch, 4D files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pretext.data import load_data
from pretext.errors import DataError


def _dicom_series(folder: Path, hu: np.ndarray, slope: int, intercept: int, uid: str, patient: str,
                  names: list[str], spacing=(0.8, 0.8, 2.5)) -> None:
    """One CT series written slice by slice by GDCM, with this vendor's rescale slope/intercept (HU = stored *
    slope + intercept) and file names in ``names`` (slice k is written to ``names[k]``)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # files without an extension
    for k in range(hu.shape[0]):
        sl = sitk.GetImageFromArray(hu[k].astype(np.int16))  # (y, x); GDCM stores (HU - intercept) / slope
        sl.SetSpacing(spacing[:2])
        for tag, val in [("0010|0020", patient), ("0020|000e", uid), ("0020|000d", "1.2.826.0.1.9"),
                         ("0008|0060", "CT"), ("0008|103e", f"series {uid[-1]}"), ("0020|0032", f"0\\0\\{k * spacing[2]}"),
                         ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(spacing[2])), ("0028|1053", str(slope)),
                         ("0028|1052", str(intercept)), ("0020|0013", str(k + 1)), ("0008|0018", f"{uid}.{k + 1}")]:
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / names[k]))
        writer.Execute(sl)


@pytest.fixture
def dicom_tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """study1/ser1 (names without extension, shuffled), study1/mixed (two series, two vendors' rescale),
    study2/s/ (.dcm) for patients P1 (three series) and P2."""
    rng = np.random.default_rng(0)
    root = tmp_path / "dicom"
    vols = {}
    order = [3, 0, 5, 1, 4, 2]
    for uid, sub, slope, icpt, pid, names in [
        ("1.2.826.0.1.1", "study1/ser1", 1, -1024, "P1", [f"IM{j}" for j in order]),
        ("1.2.826.0.1.2", "study1/mixed", 2, -1024, "P1", [f"A{j:03d}" for j in order]),
        ("1.2.826.0.1.3", "study1/mixed", 1, -1000, "P1", [f"B{j:03d}" for j in order]),
        ("1.2.826.0.1.4", "study2/s", 1, 0, "P2", [f"{j}.dcm" for j in order]),
    ]:
        hu = rng.integers(-500, 500, (6, 10, 12)) * 2  # (z, y, x), even: exact through slope 2
        _dicom_series(root / sub, hu, slope, icpt, uid, pid, names)
        vols[uid] = hu.transpose(2, 1, 0).astype(np.float32)  # our (i, j, k) = (x, y, z)
    (root / "study1" / "notes.txt").write_text("not an image")
    return root, vols


def test_dicom_tree_gives_one_record_per_series(dicom_tree, tmp_path: Path) -> None:
    root, vols = dicom_tree
    data = load_data(f"dicom:{root}?orientation=none&normalize=none&cache={tmp_path / 'c'}")
    split = data.splits["train"]
    meta = split.meta
    assert len(split) == 4 and sorted(meta["series_uid"]) == sorted(vols)
    assert sorted(split.patient_names) == ["P1", "P2"]
    assert [split.patient_names[p] for p in split.patients] == ["P1", "P1", "P1", "P2"]
    assert set(meta["modality"]) == {"CT"} and data.input_shape == (1, 12, 10, 6)
    for i, uid in enumerate(meta["series_uid"]):
        # slices in position order whatever the file order; HU whatever the vendor's slope/intercept
        np.testing.assert_array_equal(split.volume(i)[0].numpy(), vols[uid])
    assert data.meta["spacing"] == pytest.approx((0.8, 0.8, 2.5))
    # the same tree through nifti: (every DICOM series is a record there too), resampled and as patches
    nif = load_data(f"nifti:{root}?spacing=1.6&window=-1000,1000&patch=4&cache={tmp_path / 'c'}")
    assert len(nif.splits["train"]) == 4 and nif.splits["train"].volume_shape(0) == (1, 6, 5, 9)


def test_dicom_tree_previewed_one_series_per_item(dicom_tree, tmp_path: Path) -> None:
    """``sslbench preview`` of a DICOM tree: one NIfTI/PNG per series, the summary names folder#SeriesInstanceUID."""
    from sslbench.cli import main

    root, vols = dicom_tree
    out = tmp_path / "preview"
    spec = f"dicom:{root}?orientation=none&normalize=none&cache={tmp_path / 'c'}"
    assert main(["preview", "--data", spec, "--out", str(out), "--n", "4"]) == 0
    spec_line, *lines = (out / "summary.txt").read_text().splitlines()
    assert spec_line.startswith("dicom:") and len(lines) == 4
    for k, line in enumerate(lines):
        uid = line.split("#")[1].split(":")[0]
        assert uid in vols and "before 12x10x6 at 0.8x0.8x2.5 mm (int16" in line
        # the HU of each series whatever its vendor's slope/intercept: what the model is given, voxel for voxel
        np.testing.assert_array_equal(np.asarray(nib.load(str(out / f"item{k:02d}.nii.gz")).dataobj), vols[uid])


def test_dicom_folder_with_several_series_read_directly_is_named(dicom_tree) -> None:
    from volssl.io import read_volume

    root, vols = dicom_tree
    with pytest.raises(DataError, match=r"mixed' holds 2 series .*dicom: data kind"):
        read_volume(root / "study1" / "mixed")
    assert read_volume(root / "study1" / "ser1").dtype == "int16"


def _nifti(path: Path, data: np.ndarray, dtype, zooms=(1.0, 1.0, 1.0), time_unit: str | None = None) -> Path:
    img = nib.Nifti1Image(data.astype(dtype), np.diag([*zooms, 1.0]))
    img.header.set_data_dtype(dtype)
    if time_unit:
        img.header.set_xyzt_units("mm", time_unit)
    nib.save(img, str(path))
    return path


def test_on_disk_dtypes_in_one_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    want = {}
    for dt in (np.int16, np.uint16, np.int32, np.uint8, np.float32, np.float64):
        x = rng.integers(0, 200, (10, 9, 8)).astype(dt)
        _nifti(folder / f"v_{np.dtype(dt).name}.nii.gz", x, dt)
        want[np.dtype(dt).name] = x.astype(np.float32)
    data = load_data(f"nifti:{folder}?orientation=none&normalize=none&cache={tmp_path / 'c'}")
    split = data.splits["train"]
    assert len(split) == 6
    for i in range(6):
        meta = split.source.metas[int(split.rows[i])]
        name = meta["source_dtype"]
        assert Path(meta["path"]).name == f"v_{name}.nii.gz"
        np.testing.assert_array_equal(split.volume(i)[0].numpy(), want[name])


@pytest.mark.parametrize("spacing", [None, 1.5])
def test_strongly_anisotropic_grid_and_a_patch_larger_than_the_slices(tmp_path: Path, spacing) -> None:
    """0.4 mm in-plane, 6.5 mm slices: without ?spacing= 8 slices are smaller than the patch (padded, one
    warning, no crash); with ?spacing=1.5 the volume becomes near-isotropic."""
    folder = tmp_path / "aniso"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        x = rng.normal(0, 1, (100, 90, 8)).astype(np.float32)
        x[30:60, 20:50, 2:5] += 4
        _nifti(folder / f"mr{i}.nii.gz", x, np.float32, zooms=(0.4, 0.4, 6.5))
    spec = f"nifti:{folder}?patch=16,16,16&patches_per_volume=2&foreground=0.5&cache={tmp_path / 'c'}"
    spec += f"&spacing={spacing}" if spacing else ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(spec)
    small = [w for w in caught if "smaller than patch" in str(w.message)]
    split = data.splits["train"]
    if spacing is None:
        assert len(small) == 1 and "2 of 2 volume(s)" in str(small[0].message)
        assert split.volume_shape(0) == (1, 100, 90, 8)
        assert data.meta["spacing"] == pytest.approx((0.4, 0.4, 6.5))
    else:
        assert not small and split.volume_shape(0) == (1, 27, 24, 35)
        assert data.meta["spacing"] == pytest.approx((1.5, 1.5, 1.5), rel=0.05)
    stream = split.patch_stream(seed=0)
    batch = stream.collate_fn([stream[j] for j in range(3)])
    assert batch["x"].shape == (6, 1, 16, 16, 16) and np.isfinite(batch["x"].numpy()).all()
    assert sum(1 for _ in map(split.patch, [0] * len(split.grid(0)), split.grid(0))) == len(split.grid(0))


def test_4d_files_named_or_one_volume_taken(tmp_path: Path) -> None:
    folder = tmp_path / "fmri"
    folder.mkdir()
    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32)
    _nifti(folder / "bold.nii.gz", x, np.float32, time_unit="sec")
    with pytest.raises(DataError, match=r"bold\.nii\.gz' is a 4D time series of 3 volumes \(shape \(8, 8, 8, 3\)"
                                        r".*volume_index"):
        load_data(f"nifti:{folder}?cache={tmp_path / 'c'}")
    data = load_data(f"nifti:{folder}?volume_index=2&orientation=none&normalize=none&cache={tmp_path / 'c'}")
    np.testing.assert_allclose(data.splits["train"].load(0)[0].numpy(), x[..., 2], atol=1e-3)


def test_constant_volume_is_named_once_and_kept(tmp_path: Path) -> None:
    """A constant NIfTI (an empty export): MONAI's anonymous 'Divide by zero' becomes one warning naming it."""
    folder = tmp_path / "c"
    folder.mkdir()
    _nifti(folder / "empty.nii.gz", np.full((8, 8, 8), -1024.0), np.int16)
    _nifti(folder / "ok.nii.gz", np.random.default_rng(0).random((8, 8, 8)) * 100, np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(f"nifti:{folder}?cache={tmp_path / 'cache'}")
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "Divide by zero" in t and "empty.nii.gz" not in t]
    named = [t for t in texts if "constant" in t]
    assert len(named) == 1 and "empty.nii.gz (every voxel -1024)" in named[0] and "ok.nii.gz" not in named[0]
    assert len(data.splits["train"]) == 2 and float(data.splits["train"].load(0).abs().max()) == 0.0
    assert os.path.exists(folder / "empty.nii.gz")

"""volssl.io: readers keep geometry and reject bad files by name."""

from __future__ import annotations

import numpy as np
import pytest
from _volfiles import write_medmnist, write_nifti

from pretext.errors import DataError
from volssl.io import read_manifest, read_medmnist, read_volume


def test_nifti_keeps_affine_and_spacing(tmp_path):
    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    aff[:3, 3] = [10, -5, 3]
    vol = read_volume(write_nifti(tmp_path / "x.nii.gz", data, affine=aff))
    assert vol.array.shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(vol.array[0], data)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5))


def test_nifti_channels_last_becomes_channels_first(tmp_path):
    data = np.random.default_rng(0).random((6, 5, 4, 2)).astype(np.float32)
    vol = read_volume(write_nifti(tmp_path / "c.nii", data))
    assert vol.array.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(vol.array[1], data[..., 1])


def test_torchio_format_nrrd(tmp_path):
    import torch
    import torchio as tio

    t = torch.rand(1, 7, 6, 5)
    tio.ScalarImage(tensor=t, affine=np.diag([1.5, 1.5, 3.0, 1.0])).save(tmp_path / "v.nrrd")
    vol = read_volume(tmp_path / "v.nrrd")
    assert vol.array.shape == (1, 7, 6, 5)
    assert vol.spacing == pytest.approx((1.5, 1.5, 3.0))
    np.testing.assert_allclose(vol.array, t.numpy(), rtol=1e-6)


@pytest.mark.faults
def test_truncated_nifti_names_file(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", np.random.default_rng(0).random((16, 16, 16)))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="broken.nii.gz.*corrupt or truncated"):
        read_volume(bad)


def test_2d_image_is_rejected(tmp_path):
    with pytest.raises(DataError, match="2D"):
        read_volume(write_nifti(tmp_path / "flat.nii.gz", np.ones((16, 16, 1))))


def test_nan_voxels_are_rejected(tmp_path):
    data = np.ones((8, 8, 8), dtype=np.float32)
    data[1, 2, 3] = np.nan
    with pytest.raises(DataError, match=r"nan\.nii\.gz.*1 voxels are NaN"):
        read_volume(write_nifti(tmp_path / "nan.nii.gz", data))


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="unknown image format"):
        read_volume(tmp_path / "x.png")


def test_medmnist_official_keys(tmp_path):
    splits = read_medmnist(write_medmnist(tmp_path / "m.npz", side=8, n=(5, 2, 3)))
    assert {k: v[0].shape for k, v in splits.items()} == {
        "train": (5, 8, 8, 8), "val": (2, 8, 8, 8), "test": (3, 8, 8, 8)}
    assert splits["train"][1].shape == (5, 1)


def test_medmnist_wrong_keys(tmp_path):
    np.savez(tmp_path / "w.npz", images=np.zeros((2, 8, 8, 8)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"w\.npz.*missing keys.*train_images"):
        read_medmnist(tmp_path / "w.npz")


def test_medmnist_2d_file(tmp_path):
    arrays = {f"{s}_{k}": np.zeros((2, 28, 28) if k == "images" else (2, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    with pytest.raises(DataError, match="2D MedMNIST"):
        read_medmnist(tmp_path / "pathmnist.npz")


def test_medmnist_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="x.npz"):
        read_medmnist(tmp_path / "x.npz")


def test_manifest_resolves_relative_paths(tmp_path):
    (tmp_path / "abs").mkdir()
    for f in ("a.nii.gz", "abs/b.nii.gz"):
        (tmp_path / f).touch()  # the manifest refuses missing files
    b = tmp_path / "abs" / "b.nii.gz"
    (tmp_path / "m.csv").write_text(f"path,label,patient_id,split\na.nii.gz,1,p1,train\n{b},,p2,VAL\n")
    df = read_manifest(tmp_path / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "a.nii.gz"), str(b)]
    assert df["split"].tolist() == ["train", "val"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("path,label,patient_id\n", "no rows"),
        ("path,patient_id\na.nii,p1\n", r"lacks column\(s\) \['label'\]"),
        ("path,label,patient_id,split\na.nii,0,p1,train\nb.nii,1,p1,test\n", "more than one split"),
        ("path,label,patient_id,split\na.nii,0,p1,holdout\n", "unknown split"),
        ("path,label,patient_id\na.nii,0,\n", "empty patient_id on line"),
    ],
)
def test_bad_manifests(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_dicom_series_folder(tmp_path):
    import SimpleITK as sitk
    folder = tmp_path / "series"
    folder.mkdir()
    vol = (np.random.default_rng(0).random((5, 8, 7)) * 1000).astype(np.int16)  # (slices, rows, cols)
    for k in range(vol.shape[0]):
        img = sitk.GetImageFromArray(vol[k:k + 1])
        img.SetSpacing((0.5, 0.6, 2.0))
        img.SetOrigin((0.0, 0.0, 2.0 * k))
        for tag, value in (("0020|0013", str(k + 1)), ("0020|0032", f"0\\0\\{2.0 * k}"), ("0020|000e", "1.2.3.4"),
                           ("0008|0060", "CT")):
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"s{k:03d}.dcm"))
        writer.Execute(img)
    v = read_volume(folder)
    assert v.array.shape == (1, 7, 8, 5)  # torchio's (x, y, z) voxel order
    assert v.spacing == pytest.approx((0.5, 0.6, 2.0))
    np.testing.assert_allclose(v.array[0], np.transpose(vol, (2, 1, 0)).astype(np.float32))

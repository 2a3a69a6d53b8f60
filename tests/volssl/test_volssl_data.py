"""Volume data kinds (medmnist3d, nifti, manifest3d), preprocessing and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _volfiles import write_nifti

from pretext.data import load_data
from pretext.errors import ConfigError, DataError
from volssl.io import Volume
from volssl.preprocess import PreprocessConfig, preprocess


def test_medmnist3d_kind(medmnist_file):
    data = load_data(f"medmnist3d:{medmnist_file}")
    assert data.modality == "volume" and data.input_shape == (1, 8, 8, 8)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6, "val": 3, "test": 4}
    tr = data.splits["train"]
    item = tr[1]
    assert item["x"].shape == (1, 8, 8, 8) and item["x"].dtype == torch.float32
    assert set(torch.unique(item["x"]).tolist()) <= {0.0, 1.0}  # uint8 0/255 -> [0, 1]
    assert tr.labels.tolist() == [0, 1, 0, 1, 0, 1] and int(item["label"]) == 1
    assert len(set(tr.patients.tolist())) == len(tr)  # one pseudo-patient per volume
    assert "pseudo" in data.meta["patients"]
    assert data.num_classes == 2


def test_medmnist3d_options(medmnist_file):
    padded = load_data(f"medmnist3d:{medmnist_file}?pad_to=12&normalize=zscore")
    assert padded.input_shape == (1, 12, 12, 12)
    x = torch.stack([padded.splits["train"].load(i) for i in range(6)])
    inner = x[:, :, 2:10, 2:10, 2:10]
    assert abs(float(inner.mean())) < 1e-4 and float(inner.std()) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ConfigError, match=r"option 'normalise' is now called normalize"):
        load_data(f"medmnist3d:{medmnist_file}?pad_to=12&normalise=zscore")  # the 0.1 spelling is refused
    with pytest.raises(ConfigError, match="normalize"):
        load_data(f"medmnist3d:{medmnist_file}?normalize=bogus")
    with pytest.raises(ConfigError, match="holds 28"):
        load_data(f"medmnist3d:{medmnist_file}?size=64")


def test_medmnist3d_cache_is_reused(medmnist_file, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = load_data(f"medmnist3d:{medmnist_file}?cache={cache}")
    entries = list((cache / "volumes").iterdir())  # a given folder holds the volume stores in volumes/
    assert len(entries) == 1 and (entries[0] / "vol" / "train-000000.npy").is_file()
    import volssl.io as vio

    monkeypatch.setattr(vio, "read_medmnist", lambda *_: pytest.fail("cache not used"))
    second = load_data(f"medmnist3d:{medmnist_file}?cache={cache}")
    assert torch.equal(first.splits["val"].load(2), second.splits["val"].load(2))


def test_unwritable_cache_falls_back_to_a_temporary_store(medmnist_file, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(UserWarning, match="not writable"):
        data = load_data(f"medmnist3d:{medmnist_file}?cache={blocker / 'sub'}")
    assert data.splits["test"].load(3).shape == (1, 8, 8, 8)


def test_nifti_folder_preprocessed(nifti_folder):
    data = load_data(f"nifti:{nifti_folder}?spacing=2&size=8&normalize=minmax")
    assert data.input_shape == (1, 8, 8, 8)
    tr = data.splits["train"]
    assert len(tr) == 3 and tr.labels.tolist() == [-1, -1, -1]
    assert sorted(tr.patient_names) == ["a", "b", "c"]
    assert data.meta["spacing"] == pytest.approx((2.0, 2.0, 2.0))
    x = tr.load(0)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-3


def test_nifti_folder_patient_split(nifti_folder):
    data = load_data(f"nifti:{nifti_folder}?size=8&val_fraction=0.34&seed=1")
    names = {s: {v.patient_names[p] for p in v.patients} for s, v in data.splits.items()}
    assert len(names["val"]) == 1 and not names["val"] & names["train"]


@pytest.mark.faults
def test_nifti_broken_file_is_named(nifti_folder):
    (nifti_folder / "zz_broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"1 of 4 volume\(s\).*zz_broken\.nii\.gz"):
        load_data(f"nifti:{nifti_folder}?size=8")
    with pytest.warns(UserWarning, match="zz_broken.nii.gz"):
        data = load_data(f"nifti:{nifti_folder}?size=8&skip_broken=true")
    assert len(data.splits["train"]) == 3
    assert any("zz_broken" in p for p in data.meta["skipped"])


def test_nifti_mixed_shapes_need_size(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", np.ones((8, 8, 8)))
    write_nifti(tmp_path / "b.nii.gz", np.ones((9, 8, 8)))
    with pytest.raises(DataError, match=r"different shapes.*\?size=D,H,W"):
        load_data(f"nifti:{tmp_path}")


def test_nifti_empty_folder_and_unknown_option(tmp_path, nifti_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_data(f"nifti:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="bogus"):
        load_data(f"nifti:{nifti_folder}?bogus=1")
    with pytest.raises(ConfigError, match=r"option 'normalise' is now called normalize"):
        load_data(f"nifti:{nifti_folder}?normalise=zscore")  # the 0.1 spelling is refused, not aliased
    with pytest.raises(ConfigError, match=r"window=.*low < high"):
        load_data(f"nifti:{nifti_folder}?window=1000,-1000")


def test_manifest3d_labels_and_splits(nifti_folder, tmp_path):
    rows = ["path,label,patient_id,split", f"{nifti_folder}/a.nii.gz,tumour,p1,train",
            f"{nifti_folder}/b.nii,normal,p2,train", f"{nifti_folder}/sub/c.nii.gz,tumour,p3,test"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = load_data(f"manifest3d:{tmp_path / 'm.csv'}?size=8")
    assert data.class_names == ["normal", "tumour"] and data.num_classes == 2
    assert data.splits["train"].labels.tolist() == [1, 0]
    assert data.splits["test"].labels.tolist() == [1]
    assert "val" not in data.splits
    # the nifti kind takes a manifest too
    assert load_data(f"nifti:{tmp_path / 'm.csv'}?size=8").class_names == ["normal", "tumour"]


def test_manifest3d_missing_label_column(tmp_path, nifti_folder):
    (tmp_path / "m.csv").write_text(f"path,patient_id\n{nifti_folder}/a.nii.gz,p1\n")
    with pytest.raises(DataError, match="label"):
        load_data(f"manifest3d:{tmp_path / 'm.csv'}")


def test_preprocess_orientation_window_foreground():
    data = np.zeros((10, 10, 10), dtype=np.float32)
    data[2:5, 3:7, 4:6] = 500.0  # a bright box
    data[0, 0, 0] = -2000.0
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS voxel axes
    vol = Volume(data[None], lps, (1.0, 1.0, 1.0), "x")
    out, affine, _ = preprocess(vol, PreprocessConfig(window=(-1000, 1000)))
    # reorienting LPS -> RAS flips the first two axes; the HU window maps to [0, 1] and clips
    np.testing.assert_allclose(out[0], np.clip((data[::-1, ::-1] + 1000) / 2000, 0, 1), atol=1e-6)
    fg, _, _ = preprocess(vol, PreprocessConfig(orientation=None, window=(-1000, 1000), foreground_crop=True,
                                                    foreground_threshold=0.6, foreground_margin=1))
    assert fg.shape == (1, 5, 6, 4)  # box 3x4x2 plus one voxel of margin each side
    z, _, _ = preprocess(vol, PreprocessConfig(orientation=None, normalize="zscore"))
    nz = z[0][data != 0]
    assert abs(nz.mean()) < 1e-4 and nz.std() == pytest.approx(1.0, rel=1e-3)
    assert np.abs(affine[:3, :3]).sum(0) == pytest.approx((1.0, 1.0, 1.0))


def test_preprocess_config_errors():
    with pytest.raises(ConfigError, match="window"):
        PreprocessConfig(window=(5.0, 1.0))
    with pytest.raises(ConfigError, match="normalize"):
        PreprocessConfig(normalize="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="normalise"):
        PreprocessConfig(normalise="zscore")  # type: ignore[call-arg]


@pytest.mark.data
@pytest.mark.parametrize(("size", "side"), [(None, 28), pytest.param(64, 64, marks=pytest.mark.slow)])
def test_real_adrenalmnist3d(shared_data, size, side):
    spec = f"medmnist3d:{shared_data / 'adrenalmnist3d'}" + (f"?size={size}" if size else "")
    data = load_data(spec)
    assert data.input_shape == (1, side, side, side)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 1188, "val": 98, "test": 298}
    assert np.bincount(data.splits["train"].labels).tolist() == [929, 259]
    assert data.class_names == ["normal", "hyperplasia"]
    x = data.splits["test"].load(0)
    assert x.shape == (1, side, side, side) and set(torch.unique(x).tolist()) <= {0.0, 1.0}

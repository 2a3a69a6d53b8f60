"""``sslbench preview``: the same voxels with and without ``patch=``; NIfTI, PNG and a summary; signals too."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sslbench.cli import main


def _ct(folder: Path, n: int = 2) -> Path:
    """CT-like int16 scans, 24x20x10 at 0.8 x 0.8 x 2.5 mm (anisotropic: resampling matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        x = rng.normal(-300, 200, (24, 20, 10)).astype(np.int16)
        x[6:14, 5:12, 3:7] = 900
        img = nib.Nifti1Image(x, np.diag([0.8, 0.8, 2.5, 1.0]))
        img.header.set_data_dtype(np.int16)
        nib.save(img, str(folder / f"ct{i}.nii.gz"))
    return folder


def test_same_voxels_with_and_without_patch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _ct(tmp_path / "ct")
    base = f"nifti:{folder}?spacing=1.5&window=-1000,1000&cache={tmp_path / 'cache'}"
    assert main(["preview", "--data", base, "--out", str(tmp_path / "whole"), "--n", "2"]) == 0
    printed = capsys.readouterr().out
    assert main(["preview", "--data", base + "&patch=8,8,8&patches_per_volume=2", "--out", str(tmp_path / "patch")]) == 0
    for k in range(2):
        a = nib.load(str(tmp_path / "whole" / f"item{k:02d}.nii.gz"))
        b = nib.load(str(tmp_path / "patch" / f"item{k:02d}.nii.gz"))
        assert a.shape == (13, 11, 17)  # round(24 * 0.8 / 1.5), round(20 * 0.8 / 1.5), round(10 * 2.5 / 1.5)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_allclose(a.affine, b.affine)
        assert (tmp_path / "whole" / f"item{k:02d}.png").stat().st_size > 1000
    lines = (tmp_path / "whole" / "summary.txt").read_text().splitlines()
    assert len(lines) == 3 and "ct0.nii.gz" in lines[1]
    assert "before 24x20x10 at 0.8x0.8x2.5 mm (int16" in lines[1] and "after 13x11x17" in lines[1]
    assert "1.48x1.45x1.47 mm" in lines[1] and "range [0" in lines[1]
    lo, hi = (float(v) for v in lines[1].split("(int16, range [")[1].split("]")[0].split(", "))
    assert lo < -300 < 900 == hi  # the source's HU range, before the window
    assert "item00" in printed and "summary.txt" in printed


def test_signal_spec_previews_whole_records(tmp_path: Path) -> None:
    import wfdb

    folder = tmp_path / "ecg"
    folder.mkdir()
    t = np.arange(2000) / 250.0
    for i in range(3):
        sig = np.stack([np.sin(2 * np.pi * (1 + i) * t), np.cos(2 * np.pi * t)], 1) * 0.5
        wfdb.wrsamp(f"r{i}", fs=250, units=["mV", "mV"], sig_name=["I", "II"], p_signal=sig, fmt=["16", "16"],
                    write_dir=str(folder))
    out = tmp_path / "prev"
    assert main(["preview", "--data", f"wfdb:{folder}?window=2&sfreq=100&cache={tmp_path / 'cache'}",
                 "--out", str(out), "--n", "2"]) == 0
    lines = (out / "summary.txt").read_text().splitlines()[1:]
    assert len(lines) == 2 and all("before 250 Hz" in x and "2 channel(s) x 800 samples at 100 Hz (8 s)" in x
                                   for x in lines)
    assert (out / "item00.png").is_file() and not list(out.glob("*.nii.gz"))


def test_bad_preview_options(tmp_path: Path) -> None:
    folder = _ct(tmp_path / "ct", 1)
    assert main(["preview", "--data", f"nifti:{folder}", "--out", str(tmp_path / "o"), "--n", "0"]) == 2
    assert main(["preview", "--data", f"nifti:{folder}", "--out", str(tmp_path / "o"), "--split", "test"]) == 2

"""Fixtures for the volume tests: tiny real-format files written to a temp folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _volfiles import write_medmnist, write_nifti


@pytest.fixture(autouse=True)
def _volume_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the preprocessed-volume cache of every test in its own temp folder (tests that count what a store
    holds must not see another test's volumes)."""
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path_factory.mktemp("medssl_cache")))


@pytest.fixture
def nifti_folder(tmp_path: Path) -> Path:
    """Three 12x10x8 NIfTI volumes with 1 x 1 x 2 mm voxels (one in a subfolder)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "nii"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.nii.gz", "b.nii", "sub/c.nii.gz"]):
        write_nifti(folder / name, rng.random((12, 10, 8)) * 100 + i, spacing=(1.0, 1.0, 2.0))
    return folder


@pytest.fixture
def medmnist_file(tmp_path: Path) -> Path:
    return write_medmnist(tmp_path / "fakemnist3d.npz")

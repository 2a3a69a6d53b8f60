"""Fixtures of the bundle tests: tiny checkpoints in medssl's format, NIfTI files, MONAI CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pretext.engine.checkpoint import save_checkpoint  # noqa: E402
from pretext.registry import create_encoder, create_task  # noqa: E402

SIZE = 16


def needs(module: str, package: str) -> None:
    """Import a dependency a MONAI bundle tool needs: it is in requirements.lock, so a missing or broken one fails
    the test (naming the package), never skips it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{package} cannot be imported ({err}); MONAI bundle configs/CLI need it and it is in "
                    "requirements.lock: make install")


@pytest.fixture(scope="module", autouse=True)
def _test_components() -> object:
    """The tiny test encoders/task/data kinds, registered for each test module of this folder only."""
    from tests.pretext.bundle import plugins

    plugins.register()
    yield
    plugins.unregister()


def pretrain_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint as ``sslbench pretrain`` writes it: task state + run_config."""
    torch.manual_seed(seed)
    enc = create_encoder("bundle_test_cnn3d", in_channels=1, img_size=(SIZE,) * 3)
    task = create_task("bundle_test_denoise", enc, noise=0.1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so buffers are exported too
        task.encoder.body[1].running_mean.uniform_(-0.1, 0.1)
    run_config = {"task": "bundle_test_denoise", "task_cfg": {"noise": 0.1}, "encoder": "bundle_test_cnn3d",
                  "encoder_cfg": {"in_channels": 1, "img_size": [SIZE] * 3}, "data": "bundle_test_random:?n=8",
                  "train": {"steps": 3, "batch_size": 2, "precision": "32", "progress": False}}
    save_checkpoint(path, {"model": task.state_dict(), "run_config": run_config, "step": 3})
    return path


def classifier_checkpoint(path: Path, num_classes: int = 3, seed: int = 1) -> Path:
    """A fine-tuned classifier checkpoint: ``encoder.*`` + ``head.*`` weights, head described in run_config."""
    torch.manual_seed(seed)
    enc = create_encoder("bundle_test_cnn3d", in_channels=1, img_size=(SIZE,) * 3)
    head = torch.nn.Linear(enc.num_features, num_classes)
    state = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    run_config = {"task": "bundle_test_denoise", "encoder": "bundle_test_cnn3d",
                  "encoder_cfg": {"in_channels": 1, "img_size": [SIZE] * 3}, "data": "adrenalmnist3d:x.npz",
                  "head": {"kind": "linear", "num_classes": num_classes},
                  "class_names": [f"c{i}" for i in range(num_classes)], "results": {"test_auroc": 0.5}}
    save_checkpoint(path, {"model": state, "run_config": run_config})
    return path


def write_nifti_folder(folder: Path, n: int = 2, labels: int = 2) -> list[Path]:
    """``n`` random NIfTI volumes (of a size other than the network's) and a MONAI datalist ``dataset.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image((rng.random((20, 18, 17)) * 200).astype(np.float32), np.eye(4)), str(p))
        paths.append(p)
    datalist = {"training": [{"image": p.name, "label": i % labels} for i, p in enumerate(paths * 2)]}
    (folder / "dataset.json").write_text(json.dumps(datalist))
    return paths


def monai_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """Start ``python -m monai.bundle ARGS`` (the repo importable, one thread)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An encoder bundle and a classifier bundle exported from tiny checkpoints, plus a NIfTI folder."""
    from pretext.bundle import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    enc = export_bundle(pretrain_checkpoint(root / "pre.ckpt"), root / "encoder_bundle")
    cls = export_bundle(classifier_checkpoint(root / "cls.ckpt"), root / "classifier_bundle", imaging_modality="CT")
    write_nifti_folder(root / "data")
    return {"root": root, "encoder": enc, "classifier": cls, "data": root / "data"}

"""Bundles of patch-trained encoders (data spec ``?patch=``) on whole scans.

A tiny resnet18_3d is pretrained on random 16^3 patches of three small NIfTI scans, exported (encoder and
classifier), checked with MONAI's own tools, and run with ``python -m monai.bundle run`` on a folder holding a
"full-size" scan of another, non-cubic shape and one smaller than the patch along two axes. Each features.csv
row must equal the harness's pooled grid features of the same file (:func:`sslbench.features.encode` on the
same data spec); the classifier's probabilities must be its head's softmax of those features.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from pretext.bundle.networks import BundleNetwork, GridPooled, build_network
from pretext.errors import ConfigError
from tests.pretext.bundle.conftest import monai_cli, needs

PATCH = 16
#: the scans' voxels are 1.5 x 1.5 x 2 mm with the first axis flipped: orientation and resampling both matter
AFFINE = np.diag([-1.5, 1.5, 2.0, 1.0])


def _scan(path: Path, shape: tuple[int, int, int], rng: np.random.Generator) -> Path:
    """A CT-like scan: noise around 0 HU and a bright block off centre."""
    x = rng.normal(0.0, 250.0, shape).astype(np.float32)
    c = [s // 3 for s in shape]
    x[c[0]:c[0] + 6, c[1]:c[1] + 5, c[2]:c[2] + 4] += 700.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(x, AFFINE), str(path))
    return path


def _options(cache: Path) -> str:
    return f"patch={PATCH},{PATCH},{PATCH}&spacing=2&window=-500,500&overlap=0.25&pool=mean&cache={cache}"


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pretraining on patches, the two exported bundles and the harness's pooled features of the inference files."""
    from pretext.bundle import export_bundle
    from pretext.bundle.source import save_classifier_checkpoint
    from pretext.config import TrainConfig
    from pretext.data import load_data
    from pretext.engine.checkpoint import read_run
    from pretext.pipeline import pretrain
    from sslbench.features import encode
    from sslbench.splits import View

    root = tmp_path_factory.mktemp("scan_bundles")
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(30, 26, 22), (24, 28, 20), (22, 20, 26)]):
        _scan(root / "train" / f"scan{i}.nii.gz", shape, rng)
    # inference: a "full-size" non-cubic scan (30 x 27 x 20 voxels at 2 mm: a 3 x 3 x 2 grid) and one smaller than
    # the patch along two axes (9 x 22 x 10 at 2 mm: centred and zero-padded)
    full = _scan(root / "infer" / "full.nii.gz", (40, 36, 20), rng)
    small = _scan(root / "infer" / "small.nii.gz", (12, 30, 10), rng)
    opts = _options(root / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small volumes, few steps
        task, _ = pretrain("rotation", "resnet18_3d", f"nifti:{root / 'train'}?{opts}", root / "run",
                           TrainConfig(steps=2, batch_size=2, progress=False, precision="32", warmup_steps=1),
                           encoder_cfg={"widen_factor": 0.125})
        ckpt = root / "run" / "checkpoints" / "last.ckpt"
        encoder = task.encoder.eval()
        head = torch.nn.Linear(encoder.num_features, 2)
        torch.nn.init.normal_(head.weight, std=0.5)  # probabilities far from 0.5 (a strict comparison)
        run_config = read_run(ckpt)[0]["run_config"]
        cls_ckpt = save_classifier_checkpoint(root / "cls.ckpt", encoder, head, run_config,
                                              {"kind": "linear", "num_classes": 2}, class_names=["no", "yes"])
        enc_bundle = export_bundle(ckpt, root / "encoder_bundle", imaging_modality="CT")
        cls_bundle = export_bundle(cls_ckpt, root / "classifier_bundle", imaging_modality="CT")
        data = load_data(f"nifti:{root / 'infer'}?{opts}")
    harness: dict[str, np.ndarray] = {}
    for name, split in data.splits.items():
        if len(split):
            feats = encode(encoder, View(split, np.arange(len(split)), name), batch_size=5)
            harness.update({Path(p).name: f for p, f in zip(split.meta["path"], feats, strict=True)})
    assert sorted(harness) == ["full.nii.gz", "small.nii.gz"]
    return {"root": root, "encoder": enc_bundle, "classifier": cls_bundle, "infer": full.parent, "harness": harness,
            "head": head, "full": full, "small": small, "encoder_module": encoder}


@pytest.fixture(scope="module")
def cli(scans: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """``python -m monai.bundle run`` of both bundles' inference.json on the inference folder (in parallel)."""
    needs("fire", "fire")
    needs("ignite", "pytorch-ignite")
    root = scans["root"]
    procs = {
        name: monai_cli("run", "--config_file", str(scans[name] / "configs" / "inference.json"), "--meta_file",
                        str(scans[name] / "configs" / "metadata.json"), "--bundle_root", str(scans[name]),
                        "--dataset_dir", str(scans["infer"]), "--output_dir", str(root / f"out_{name}"), cwd=root)
        for name in ("encoder", "classifier")
    }
    return {name: (p.wait(timeout=300), p.stdout.read() if p.stdout else "") for name, p in procs.items()}


def _rows(path: Path) -> dict[str, np.ndarray]:
    return {Path(r[0]).name: np.asarray([float(v) for v in r[1:]]) for r in csv.reader(path.open())}


def _ok(cli: dict[str, tuple[int, str]], name: str) -> None:
    rc, out = cli[name]
    assert rc == 0, f"python -m monai.bundle run ({name} bundle) failed:\n{out[-3000:]}"


@pytest.mark.slow
def test_encoder_bundle_runs_on_whole_scans_as_the_harness_pools(scans: dict[str, Any], cli: dict[str, Any]) -> None:
    _ok(cli, "encoder")
    rows = _rows(scans["root"] / "out_encoder" / "features.csv")
    assert sorted(rows) == ["full.nii.gz", "small.nii.gz"]
    for name, want in scans["harness"].items():
        got = rows[name]
        assert got.shape == want.shape == (64,)
        # the harness reads float16 voxels from the scan store, the bundle float32 ones: equal to that precision
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max()), err_msg=name)


@pytest.mark.slow
def test_classifier_bundle_applies_its_head_to_the_pooled_features(scans: dict[str, Any], cli: dict[str, Any]) -> None:
    _ok(cli, "classifier")
    rows = _rows(scans["root"] / "out_classifier" / "probabilities.csv")
    assert sorted(rows) == ["full.nii.gz", "small.nii.gz"]
    for name, feats in scans["harness"].items():
        with torch.no_grad():
            want = scans["head"](torch.as_tensor(feats)[None]).softmax(1)[0].numpy()
        assert rows[name].sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(rows[name], want, atol=2e-3, err_msg=name)


@pytest.mark.slow
def test_scan_bundles_pass_monais_checks(scans: dict[str, Any]) -> None:
    from pretext.bundle.verify import verify_bundle

    for name in ("encoder", "classifier"):
        b = scans[name]
        checks = verify_bundle(b)
        assert checks["verify_metadata"].startswith("ok")
        assert checks["verify_net_in_out"] == "ok ('*' dims at 25)"  # a 25^3 volume: a 2 x 2 x 2 grid of patches
        assert checks["config_parser"] == "ok (GridPooled, strict load of models/model.pt)"
        assert not (b / "models" / "model.ts").exists() and "torchscript" not in checks
        readme = (b / "docs" / "README.md").read_text()
        assert "patch grid depends on the input's shape" in readme and "--any 32" in readme
        image = json.loads((b / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
        assert image["spatial_shape"] == ["*", "*", "*"] and image["is_patch_data"] is False
        assert image["patch_grid"] == {"patch_size": [PATCH] * 3, "overlap": 0.25, "pool": "mean"}
        assert "sliding grid of [16, 16, 16] patches" in image["preprocessing"] and "mean-pools" in image["preprocessing"]
        infer = json.loads((b / "configs" / "inference.json").read_text())
        targets = [t["_target_"] for t in infer["preprocessing"]["transforms"]]
        assert targets == ["LoadImaged", "EnsureTyped", "Orientationd", "volssl.preprocess.Resampled",
                           "ScaleIntensityRanged", "EnsureTyped"]  # the scan ingest's steps, no resize to the patch
        assert infer["network_def"]["grid"] == {"patch_size": [PATCH] * 3, "overlap": 0.25, "pool": "mean",
                                                "sw_batch_size": 8}
    from pretext.bundle import encoder_from_bundle

    enc, _, rc = encoder_from_bundle(scans["encoder"])  # the patch encoder comes back as it was trained
    assert rc["encoder"] == "resnet18_3d" and type(enc).__name__ != "GridPooled"
    with torch.no_grad():
        x = torch.rand(2, 1, PATCH, PATCH, PATCH)
        assert torch.allclose(enc.eval().forward_features(x), scans["encoder_module"].forward_features(x), atol=1e-6)


@pytest.mark.slow
def test_bundle_preprocessing_gives_the_scan_store_voxels(scans: dict[str, Any]) -> None:
    """inference.json's transforms reproduce the ingest's voxels (volssl.preprocess.preprocess: what patches are cut from)."""
    from monai.bundle import ConfigParser

    from volssl.io import read_volume
    from volssl.preprocess import PreprocessConfig, preprocess

    parser = ConfigParser()
    parser.read_config(str(scans["encoder"] / "configs" / "inference.json"))
    pre = parser.get_parsed_content("preprocessing")
    cfg = PreprocessConfig(spacing=2.0, window=(-500.0, 500.0))
    for path in (scans["full"], scans["small"]):
        got = pre({"image": str(path)})["image"]
        want, affine, _ = preprocess(read_volume(path), cfg)
        assert tuple(got.shape) == want.shape
        np.testing.assert_allclose(got.as_tensor().numpy(), want, atol=1e-5)
        np.testing.assert_allclose(got.affine.numpy(), affine, atol=1e-6)
    assert tuple(pre({"image": str(scans["full"])})["image"].shape) == (1, 30, 27, 20)


@pytest.mark.slow
def test_train_json_finetunes_on_random_patches(scans: dict[str, Any]) -> None:
    from monai.bundle import run

    needs("ignite", "pytorch-ignite")
    b, data = scans["encoder"], scans["root"] / "train"
    train = json.loads((b / "configs" / "train.json").read_text())
    crop = train["train"]["preprocessing"]["transforms"]
    assert [t["_target_"] for t in crop[-4:-2]] == ["SpatialPadd", "RandSpatialCropd"]
    assert crop[-3]["roi_size"] == [PATCH] * 3
    # 4 items, 2 per batch (a batch of one patch would stop BatchNorm in training)
    datalist = {"training": [{"image": f"scan{i % 3}.nii.gz", "label": i % 2} for i in range(4)]}
    (data / "dataset.json").write_text(json.dumps(datalist))
    run(config_file=str(b / "configs" / "train.json"), meta_file=str(b / "configs" / "metadata.json"),
        bundle_root=str(b), dataset_dir=str(data), output_dir=str(scans["root"] / "ft_out"), max_epochs=1,
        logging_file=False)
    state = torch.load(scans["root"] / "ft_out" / "model.pt", weights_only=True)
    assert "head.weight" in state and any(k.startswith("encoder.") for k in state)


class _Stats(torch.nn.Module):
    """Features: the patch's maximum, mean and the mean of its first voxel row (position-sensitive)."""

    num_features = 3

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1).amax(1), x.flatten(1).mean(1), x[:, :, 0, 0].mean((1, 2))], 1)


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_grid_pooled_equals_the_harness_pooling(tmp_path: Path, pool: str) -> None:
    """The same grid (corners, overlap, centred padding) and pooling as volssl.sampling + sslbench.pooled."""
    from sslbench.pooled import pooled_features
    from sslbench.splits import View
    from volssl.sampling import PatchConfig, VolumeSplit
    from volssl.store import write_arrays

    gen = torch.Generator().manual_seed(0)
    vols = [torch.rand(1, 23, 17, 9, generator=gen), torch.rand(1, 8, 30, 12, generator=gen)]
    cfg = PatchConfig(patch=(10, 12, 8), overlap=0.25, pool=pool)
    net = GridPooled(_Stats(), patch_size=cfg.patch, overlap=0.25, pool=pool, sw_batch_size=4)
    for vol in vols:
        store = write_arrays(tmp_path / f"store{len(vol.flatten())}", [vol.numpy()])
        split = VolumeSplit(store, np.arange(1), np.zeros(1), np.zeros(1), ["v"], cfg)
        want = pooled_features(_Stats(), View(split, np.arange(1), "test"))
        got = net(vol[None])
        assert got.shape == (1, 3)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    both = torch.stack([vols[0], vols[0].flip(1)])  # a batch: each volume pooled on its own
    assert torch.allclose(net(both)[0], net(vols[0][None])[0]) and net(both).shape == (2, 3)


def test_build_network_with_a_grid() -> None:
    net = build_network("resnet18_3d", {"in_channels": 1, "img_size": [8, 8, 8], "widen_factor": 0.125},
                        head="linear", num_classes=3, grid={"patch_size": [8, 8, 8], "pool": "max"})
    assert isinstance(net, GridPooled) and net.pool == "max"
    plain = build_network("resnet18_3d", {"in_channels": 1, "img_size": [8, 8, 8], "widen_factor": 0.125},
                          head="linear", num_classes=3)
    assert type(plain) is BundleNetwork and set(plain.state_dict()) == set(net.state_dict())  # one model.pt for both
    net.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():  # one patch: the plain network's output
        assert torch.allclose(net.eval()(x), plain.eval()(x), atol=1e-6)
        assert net(torch.rand(1, 1, 13, 9, 20)).shape == (1, 3)
    with pytest.raises(ConfigError, match="unknown option"):
        build_network("resnet18_3d", {"in_channels": 1}, grid={"patch_size": [8, 8, 8], "stride": 4})
    with pytest.raises(ConfigError, match="pool='median'"):
        build_network("resnet18_3d", {"in_channels": 1}, grid={"patch_size": [8, 8, 8], "pool": "median"})
    with pytest.raises(ConfigError, match="patch_size"):
        build_network("resnet18_3d", {"in_channels": 1}, grid={"pool": "mean"})
    with pytest.raises(ValueError, match="3 spatial axes"):
        net(torch.rand(1, 8, 8, 8))

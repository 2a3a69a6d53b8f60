"""Export of checkpoints as MONAI bundles, checked in-process with MONAI's own parser, workflow and verifiers."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out

from pretext.bundle import SCHEMA_PATH, export_bundle
from pretext.bundle.source import read_source
from pretext.errors import UserError
from tests.pretext.bundle.conftest import SIZE, classifier_checkpoint, needs, pretrain_checkpoint

FILES = ["configs/metadata.json", "configs/inference.json", "configs/train.json", "models/model.pt",
         "models/model.ts", "docs/README.md", "docs/license.txt", "docs/metadata_schema.json", "LICENSE"]


def _network(bundle: Path, config: str = "inference.json", net_id: str = "network_def") -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    net = parser.get_parsed_content(net_id)
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return net.eval()


def test_bundle_layout_and_metadata(bundles: dict[str, Path]) -> None:
    for kind in ("encoder", "classifier"):
        b = bundles[kind]
        missing = [f for f in FILES if not (b / f).is_file()]
        assert not missing, f"{kind} bundle lacks {missing}"
        meta = json.loads((b / "configs" / "metadata.json").read_text())
        jsonschema.validate(meta, json.loads(SCHEMA_PATH.read_text()))
        verify_metadata(meta_file=str(b / "configs" / "metadata.json"), filepath=str(SCHEMA_PATH))  # offline
        image = meta["network_data_format"]["inputs"]["image"]
        assert image["num_channels"] == 1 and image["spatial_shape"] == [SIZE] * 3
        assert image["intensity_normalization"]["kind"] == "minmax" and image["value_range"] == [0.0, 1.0]
    enc = json.loads((bundles["encoder"] / "configs" / "metadata.json").read_text())
    cls = json.loads((bundles["classifier"] / "configs" / "metadata.json").read_text())
    assert enc["network_data_format"]["outputs"]["pred"]["num_channels"] == 8  # pooled features
    assert enc["pretext_task"]["name"] == "bundle_test_denoise"
    pred = cls["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "c0", "1": "c1", "2": "c2"}
    assert cls["network_data_format"]["inputs"]["image"]["modality"] == "CT"
    assert cls["eval_metrics"] == {"test_auroc": 0.5}
    readme = (bundles["encoder"] / "docs" / "README.md").read_text()
    assert "bundle_test_denoise" in readme and "bundle_test_random" in readme and "monai.bundle run" in readme
    assert "test_auroc" in (bundles["classifier"] / "docs" / "README.md").read_text()


def test_schema_rejects_incomplete_metadata(bundles: dict[str, Path]) -> None:
    meta = json.loads((bundles["encoder"] / "configs" / "metadata.json").read_text())
    schema = json.loads(SCHEMA_PATH.read_text())
    for broken in ({k: v for k, v in meta.items() if k != "network_data_format"},
                   {**meta, "network_data_format": {"inputs": {"image": {"type": "image"}}, "outputs": {}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_parsed_networks_match_checkpoint_and_verify_in_out(bundles: dict[str, Path]) -> None:
    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    for kind, ckpt, k in (("encoder", "pre.ckpt", 8), ("classifier", "cls.ckpt", 3)):
        b = bundles[kind]
        src = read_source(bundles["root"] / ckpt)
        net = _network(b)
        with torch.no_grad():
            ref = net.encoder.forward_features(x)
            y = net(x)
        assert y.shape == (2, k)
        # the bundle's weights are the checkpoint's, bit for bit
        for name, value in src.encoder_state.items():
            assert torch.equal(net.encoder.state_dict()[name], value), name
        if kind == "classifier":
            assert torch.allclose(y, ref @ src.head_state["weight"].T + src.head_state["bias"], atol=1e-6)
        verify_net_in_out(net_id="network_def", meta_file=str(b / "configs" / "metadata.json"),
                          config_file=str(b / "configs" / "inference.json"), device="cpu")
        # train.json builds the same network (encoder bundles gain a fresh head of num_classes outputs)
        parser = ConfigParser()
        parser.read_config(str(b / "configs" / "train.json"))
        train_net = parser.get_parsed_content("network_def")
        assert train_net(x).shape == (2, 3 if kind == "classifier" else 2)


def test_standard_workflow_properties(bundles: dict[str, Path]) -> None:
    needs("ignite", "pytorch-ignite")
    for kind in ("encoder", "classifier"):
        b = bundles[kind]
        meta = str(b / "configs" / "metadata.json")
        train = ConfigWorkflow(config_file=str(b / "configs" / "train.json"), meta_file=meta, workflow_type="train",
                               logging_file=False, bundle_root=str(b), dataset_dir=str(bundles["data"]))
        train.initialize()
        assert train.check_properties() == []
        infer = ConfigWorkflow(config_file=str(b / "configs" / "inference.json"), meta_file=meta,
                               workflow_type="infer", logging_file=False, bundle_root=str(b),
                               dataset_dir=str(bundles["data"]))
        infer.initialize()
        assert infer.check_properties() == []
        assert train.parser["train"]["trainer"]["_target_"] == "SupervisedTrainer"


def test_torchscript_reloads_with_equal_outputs(bundles: dict[str, Path]) -> None:
    from monai.data import load_net_with_metadata

    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    for kind in ("encoder", "classifier"):
        b = bundles[kind]
        ts, meta, _ = load_net_with_metadata(str(b / "models" / "model.ts"))
        with torch.no_grad():
            assert torch.allclose(ts(x), _network(b)(x), atol=1e-5)
        assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [SIZE] * 3
        assert "traced" in (b / "docs" / "README.md").read_text()


def test_export_refuses_existing_folder(bundles: dict[str, Path]) -> None:
    before = sorted(p.name for p in bundles["encoder"].rglob("*"))
    with pytest.raises(UserError, match="already exists"):
        export_bundle(bundles["root"] / "pre.ckpt", bundles["encoder"])
    assert sorted(p.name for p in bundles["encoder"].rglob("*")) == before


def test_checkpoint_without_config_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {"encoder.w": torch.zeros(1)}}, tmp_path / "bare.ckpt")
    with pytest.raises(UserError, match="no run_config"):
        export_bundle(tmp_path / "bare.ckpt", tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        export_bundle(tmp_path / "missing.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_network_monai_cannot_build_is_refused(tmp_path: Path) -> None:
    ckpt = pretrain_checkpoint(tmp_path / "pre.ckpt")
    with pytest.raises(UserError, match="ConfigParser cannot instantiate .*build_network.*negative dimension"):
        export_bundle(ckpt, tmp_path / "out", encoder_overrides={"width": -3})
    with pytest.raises(UserError, match="unknown option.*'depth'"):
        export_bundle(ckpt, tmp_path / "out", encoder_overrides={"depth": 3})
    with pytest.raises(UserError, match="weights do not fit"):
        export_bundle(ckpt, tmp_path / "out", encoder_overrides={"width": 6})
    state = torch.load(ckpt, weights_only=True)
    state["run_config"]["encoder"] = "no_such_net"
    torch.save(state, tmp_path / "unknown.ckpt")
    with pytest.raises(UserError, match="unknown encoder 'no_such_net'; valid encoders: .*bundle_test_cnn3d"):
        export_bundle(tmp_path / "unknown.ckpt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.ckpt", "unknown.ckpt"]


def test_interrupted_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pretext.bundle.export as export_mod

    def crash(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt("simulated kill while writing docs")

    monkeypatch.setattr(export_mod, "build_readme", crash)
    ckpt = classifier_checkpoint(tmp_path / "cls.ckpt")
    with pytest.raises(KeyboardInterrupt):
        export_bundle(ckpt, tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.ckpt"]  # no bundle, no partial folder


@pytest.mark.parametrize("spec, expect", [
    ("medmnist3d:a.npz", ["ScaleIntensityRanged", "Resized"]),
    ("medmnist3d:a.npz?normalize=none", ["Resized"]),
    ("nifti:/ct?window=-1000,1000&spacing=1.5&size=16,16,16", ["Orientationd", "volssl.preprocess.Resampled", "ScaleIntensityRanged",
                                                                                "ResizeWithPadOrCropd"]),
    ("nifti:/mr?normalize=zscore&resize=true&foreground_crop=true", ["Orientationd", "NormalizeIntensityd",
                                                                     "CropForegroundd", "Resized"]),
    ("manifest3d:/m.csv", ["Orientationd", "ScaleIntensityRangePercentilesd", "ResizeWithPadOrCropd"]),
    ("synthetic_phantom3d:/tmp/p", ["ScaleIntensityd", "Resized"]),
])
def test_volume_preprocessing_follows_the_data_spec(tmp_path: Path, spec: str, expect: list[str]) -> None:
    import nibabel as nib
    import numpy as np
    from monai.transforms import Compose

    from volssl.bundle import volume_transforms

    src = read_source(pretrain_checkpoint(tmp_path / "p.ckpt"))
    src.run_config["data"] = spec
    xforms, desc = volume_transforms(src)
    assert [t["_target_"] for t in xforms[2:]] == expect
    if "window=-1000,1000" in spec:
        assert xforms[4]["a_min"] == -1000.0 and xforms[4]["clip"] is True and desc["normalization"]["kind"] == "range"
    # MONAI builds and runs the chain on a NIfTI file
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(50, 30, (20, 18, 17)).astype(np.float32), np.eye(4)),
             str(tmp_path / "v.nii.gz"))
    parser = ConfigParser({"pre": {"_target_": "Compose", "transforms": xforms}})
    out = parser.get_parsed_content("pre")({"image": str(tmp_path / "v.nii.gz")})["image"]
    assert isinstance(parser.get_parsed_content("pre"), Compose) and tuple(out.shape) == (1, SIZE, SIZE, SIZE)


def test_classifier_saved_by_helper_exports_equal_outputs(tmp_path: Path) -> None:
    from pretext.bundle.source import save_classifier_checkpoint
    from pretext.heads import LinearHead
    from pretext.registry import create_encoder

    enc = create_encoder("bundle_test_cnn3d", in_channels=1, img_size=(SIZE,) * 3)
    head = LinearHead(enc.num_features, 4, batch_norm=True)
    with torch.no_grad():
        head.norm.running_mean.uniform_(-1, 1)
        head.fc.weight.normal_()
    rc = read_source(pretrain_checkpoint(tmp_path / "p.ckpt")).run_config
    save_classifier_checkpoint(tmp_path / "cls.ckpt", enc, head, rc, {"kind": "linear_head", "num_classes": 4,
                               "batch_norm": True}, class_names=list("abcd"), results={"test_acc": 0.25})
    bundle = export_bundle(tmp_path / "cls.ckpt", tmp_path / "b", torchscript=False)
    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(_network(bundle)(x), head.eval()(enc.eval().forward_features(x)), atol=1e-6)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["3"] == "d"
    assert json.loads((bundle / "configs" / "train.json").read_text())["network_def"]["head_kwargs"] == {"batch_norm": True}
    assert not (bundle / "configs" / "pretrain.json").exists()  # a classifier is not re-pretrained


def test_cli_run_folder_with_summary_and_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sslbench.cli import main

    run = tmp_path / "run"
    pretrain_checkpoint(run / "checkpoints" / "last.ckpt")
    (run / "summary.json").write_text(json.dumps({"steps": 3, "elapsed_s": 1.5, "final": {"step": 3, "loss": 0.125}}))
    (tmp_path / "res.json").write_text(json.dumps({"test_auroc": 0.71, "test_auroc_ci": [0.6, 0.8]}))
    argv = ["export-bundle", "--checkpoint", str(run), "--out", str(tmp_path / "b"), "--no-verify", "--no-torchscript"]
    assert main([*argv, "--results", str(tmp_path / "missing.json")]) == 2
    assert "--results" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*argv, "--results", str(tmp_path / "res.json")]) == 0
    readme = (tmp_path / "b" / "docs" / "README.md").read_text()
    assert "| final_loss | 0.125 |" in readme and "| test_auroc | 0.71 |" in readme
    meta = json.loads((tmp_path / "b" / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["test_auroc"] == 0.71 and meta["training"]["pretext_summary"]["final_loss"] == 0.125
    assert not (tmp_path / "b" / "models" / "model.ts").exists()

"""Import of MONAI bundle weights as encoders: model-zoo style bundles, our own bundles, the key report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import ResNet

from pretext.bundle.importer import encoder_from_bundle, import_bundle
from pretext.errors import UserError
from pretext.registry import create_encoder
from sslbench.cli import main
from tests.pretext.bundle.conftest import SIZE

NET = {"_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
       "block_inplanes": [4, 8, 16, 32], "spatial_dims": 3, "n_input_channels": 1, "num_classes": 3}


def zoo_bundle(root: Path, nested: bool = False, prefix: str = "") -> tuple[Path, dict[str, torch.Tensor]]:
    """A model-zoo style bundle: configs/inference.json (network_def by _target_), metadata, models/model.pt."""
    torch.manual_seed(0)
    net = ResNet(**{k: v for k, v in NET.items() if k != "_target_"})
    state = {prefix + k: v for k, v in net.state_dict().items()}
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": NET, "network": "$@network_def"}))
    meta = {"version": "0.2.0", "network_data_format": {"inputs": {"image": {"num_channels": 1, "spatial_shape": [SIZE] * 3}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save({"model": state} if nested else state, root / "models" / "model.pt")
    return root, net.state_dict()


def test_model_zoo_bundle_loads_as_monai_net_encoder(tmp_path: Path) -> None:
    bundle, ref = zoo_bundle(tmp_path / "zoo", nested=True, prefix="module.")
    enc, report, rc = encoder_from_bundle(bundle)
    assert rc["encoder"] == "monai_net" and rc["encoder_cfg"]["net"] == "ResNet"
    assert report.strip == "module." and report.add == "net."
    assert sorted(report.unexpected) == ["module.fc.bias", "module.fc.weight"]  # the classifier layer is dropped
    assert report.missing == [] and report.shape_mismatch == []
    assert len(report.matched) == len(ref) - 2
    assert torch.equal(enc.state_dict()["net.conv1.weight"], ref["conv1.weight"])
    # the encoder's features are the bundle network's penultimate activations
    net = ResNet(**{k: v for k, v in NET.items() if k != "_target_"})
    net.load_state_dict(ref)
    net.fc = torch.nn.Identity()
    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(enc.eval().forward_features(x), net.eval()(x), atol=1e-5)


def test_report_lists_missing_and_mismatched_keys(tmp_path: Path) -> None:
    bundle, _ = zoo_bundle(tmp_path / "zoo")
    enc, report, _ = encoder_from_bundle(bundle, encoder_kwargs={"block_inplanes": [4, 8, 16, 64], "layers": [1, 1, 1, 2]})
    assert any(k.startswith("net.layer4.1.") for k in report.missing)  # a block the bundle lacks
    assert ("net.layer4.0.conv1.weight", [32, 16, 3, 3, 3], [64, 16, 3, 3, 3]) in [tuple(m) for m in report.shape_mismatch]
    assert "net.conv1.weight" in report.matched
    assert "missing" in report.summary() and "shape mismatch" in report.summary()
    with pytest.raises(UserError, match="no weight of bundle .* fits encoder 'bundle_test_cnn3d'"):
        encoder_from_bundle(bundle, encoder="bundle_test_cnn3d", encoder_kwargs={"width": 3})


def test_own_bundle_round_trip_and_cli(bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "imported.ckpt"
    rc = main(["import-bundle", "--bundle", str(bundles["encoder"]), "--out", str(out), "--report", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    assert "matched" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["missing"] == [] and report["unexpected"] == [] and report["strip"] == "encoder."
    # the harness reads it like a pretraining checkpoint, and the features are the exported encoder's
    from sslbench.pretrained import read_checkpoint

    state, run_config, _ = read_checkpoint(out)
    enc = create_encoder(run_config["encoder"], **{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in run_config["encoder_cfg"].items()})
    enc.load_state_dict(state, strict=True)
    bundle_state = torch.load(bundles["encoder"] / "models" / "model.pt", weights_only=True)
    ref = create_encoder("bundle_test_cnn3d", in_channels=1, img_size=(SIZE,) * 3)
    ref.load_state_dict({k[len("encoder."):]: v for k, v in bundle_state.items()})
    x = torch.rand(2, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(enc.eval().forward_features(x), ref.eval().forward_features(x))
    assert (tmp_path / "encoder.safetensors").is_file()
    assert main(["import-bundle", "--bundle", str(bundles["encoder"]), "--out", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_unreadable_bundles_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        import_bundle(tmp_path / "nope", tmp_path / "x.ckpt")
    bundle, _ = zoo_bundle(tmp_path / "zoo")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(UserError, match="no models/model.pt"):
        import_bundle(bundle, tmp_path / "x.ckpt")
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "my.custom.Net"}}))
    torch.save({}, bundle / "models" / "model.pt")
    with pytest.raises(UserError, match="cannot map bundle network 'my.custom.Net'.*--encoder"):
        import_bundle(bundle, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()

"""Signal models as MONAI bundles: series metadata (channels, rate, window), .npy inference, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import run

from pretext.bundle.verify import verify_bundle
from pretext.engine.checkpoint import save_checkpoint
from pretext.registry import create_encoder
from sslbench.cli import main
from tests.pretext.bundle.conftest import needs


def signal_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    enc = create_encoder("bundle_test_cnn1d", n_chans=2, n_times=256, sfreq=100.0)
    head = torch.nn.Linear(enc.num_features, 2)
    state = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    rc = {"task": "cpc", "encoder": "bundle_test_cnn1d", "encoder_cfg": {"n_chans": 2, "n_times": 256, "sfreq": 100.0},
          "data": "cinc2017:/data/cinc?normalize=zscore&bandpass=0.5,40", "channel_names": ["I", "II"],
          "head": {"num_classes": 2}, "class_names": ["normal", "AF"]}  # kind detected from the keys
    save_checkpoint(path, {"model": state, "run_config": rc})
    return path


def test_signal_bundle_metadata_and_npy_inference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    needs("ignite", "pytorch-ignite")
    ckpt = signal_checkpoint(tmp_path / "sig.ckpt")
    assert main(["export-bundle", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "check verify_metadata: ok" in printed and "check verify_net_in_out: ok" in printed
    assert "check torchscript: ok" in printed
    bundle = tmp_path / "b"
    image = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    assert (image["type"], image["format"], image["modality"]) == ("series", "sequence", "EKG")
    assert image["num_channels"] == 2 and image["spatial_shape"] == [256]
    assert image["sampling_rate_hz"] == 100.0 and image["window_length_s"] == pytest.approx(2.56)
    assert image["channel_def"] == {"0": "I", "1": "II"} and image["intensity_normalization"]["kind"] == "zscore"
    assert "0.5,40" in image["preprocessing"]
    # inference on .npy windows of another length (cropped to 256 samples), z-scored per channel
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(2):
        np.save(tmp_path / "data" / f"rec{i}.npy", (rng.standard_normal((2, 300)) * 5 + 3).astype(np.float32))
    run(config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle), dataset_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), logging_file=False)
    rows = list(csv.reader((tmp_path / "out" / "probabilities.csv").open()))
    probs = torch.tensor([[float(v) for v in r[1:]] for r in rows])
    net = torch.jit.load(str(bundle / "models" / "model.ts"))
    x = torch.from_numpy(np.load(tmp_path / "data" / "rec0.npy"))[:, 22:278]  # MONAI's centre crop 300 -> 256
    x = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)
    with torch.no_grad():
        expect = net(x[None]).softmax(1)[0]
    assert torch.allclose(probs[0], expect, atol=1e-4)
    assert verify_bundle(bundle)["config_parser"].startswith("ok")


def test_export_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"model": {}}, tmp_path / "bare.ckpt")
    assert main(["export-bundle", "--checkpoint", str(tmp_path / "bare.ckpt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sslbench: error:") and "run_config" in err and err.count("\n") == 1
    ckpt = signal_checkpoint(tmp_path / "sig.ckpt")
    assert main(["export-bundle", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--encoder.n_chans", "3",
                 "--no-verify"]) == 2
    assert "weights do not fit" in capsys.readouterr().err
    assert main(["export-bundle", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--bogus", "1"]) == 2
    assert "unrecognized argument '--bogus'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.ckpt", "sig.ckpt"]

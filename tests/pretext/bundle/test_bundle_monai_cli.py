"""The exported bundles through MONAI's command line: ``python -m monai.bundle verify_metadata``
(offline, shipped schema) and ``run`` (inference on NIfTI files, pretraining from pretrain.json), and
fine-tuning from train.json through ``monai.bundle.run`` (the function behind the command line).

The subprocesses start together (each spends ~5-10 s importing torch and MONAI); the fine-tune runs
in this process meanwhile. ``verify_net_in_out`` runs in-process in test_bundle_export.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.transforms import Compose

from pretext.bundle import SCHEMA_PATH
from tests.pretext.bundle.conftest import SIZE, monai_cli, needs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli(bundles: dict[str, Path]) -> dict[str, tuple[int, str]]:
    needs("fire", "fire")  # python -m monai.bundle
    needs("ignite", "pytorch-ignite")  # MONAI engines and handlers
    root, enc, cls, data = bundles["root"], bundles["encoder"], bundles["classifier"], bundles["data"]
    meta = lambda b: str(b / "configs" / "metadata.json")  # noqa: E731
    procs: dict[str, subprocess.Popen] = {
        "verify_metadata": monai_cli("verify_metadata", "--meta_file", meta(cls), "--filepath", str(SCHEMA_PATH),
                                     cwd=root),
        "inference": monai_cli("run", "--config_file", str(cls / "configs" / "inference.json"), "--meta_file", meta(cls),
                               "--bundle_root", str(cls), "--dataset_dir", str(data), "--output_dir",
                               str(root / "infer_out"), cwd=root),
        "pretrain": monai_cli("run", "--config_file", str(enc / "configs" / "pretrain.json"), "--bundle_root", str(enc),
                              "--output_dir", str(root / "pre_out"), "--steps", "2", cwd=root),
    }
    # meanwhile, in this process: the function behind `python -m monai.bundle run`, on train.json;
    # lr 0, so the fine-tuned weights must equal the pretrained ones, proving the encoder was loaded
    run(config_file=str(enc / "configs" / "train.json"), meta_file=meta(enc), bundle_root=str(enc),
        dataset_dir=str(data), output_dir=str(root / "ft_out"), max_epochs=1, learning_rate=0.0, logging_file=False)
    return {name: (p.wait(timeout=300), p.stdout.read() if p.stdout else "") for name, p in procs.items()}


def _ok(cli: dict[str, tuple[int, str]], name: str) -> str:
    rc, out = cli[name]
    assert rc == 0, f"python -m monai.bundle {name} failed:\n{out[-3000:]}"
    return out


def test_verify_metadata_cli_offline(cli: dict[str, tuple[int, str]]) -> None:
    out = _ok(cli, "verify_metadata")
    assert "skipped downloading" in out and "metadata is verified with no error" in out


def test_inference_run_on_nifti(cli: dict[str, tuple[int, str]], bundles: dict[str, Path]) -> None:
    _ok(cli, "inference")
    rows = list(csv.reader((bundles["root"] / "infer_out" / "probabilities.csv").open()))
    assert [Path(r[0]).name for r in rows] == ["case0.nii.gz", "case1.nii.gz"]
    probs = torch.tensor([[float(v) for v in r[1:]] for r in rows])
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    # the same numbers in-process: the bundle's preprocessing, network and softmax
    b = bundles["classifier"]
    parser = ConfigParser()
    parser.read_config(str(b / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(b / "models" / "model.pt", weights_only=True))
    pre = Compose([parser.get_parsed_content(f"preprocessing#transforms#{i}") for i in range(len(parser["preprocessing"]["transforms"]))])
    x = torch.stack([pre({"image": str(bundles["data"] / r[0].split("/")[-1])})["image"] for r in rows])
    assert x.shape == (2, 1, SIZE, SIZE, SIZE) and float(x.min()) >= 0 and float(x.max()) <= 1
    with torch.no_grad():
        expect = net.eval()(x.as_tensor() if hasattr(x, "as_tensor") else x).softmax(1)
    assert torch.allclose(probs, expect, atol=1e-4)


def test_finetune_run_from_train_json(cli: dict[str, tuple[int, str]], bundles: dict[str, Path]) -> None:
    tuned = torch.load(bundles["root"] / "ft_out" / "model.pt", weights_only=True)
    pretrained = torch.load(bundles["encoder"] / "models" / "model.pt", weights_only=True)
    assert {k for k in tuned if k.startswith("head.")} == {"head.weight", "head.bias"}
    for name in ("encoder.body.0.weight", "encoder.body.3.weight", "encoder.body.1.weight"):
        assert torch.equal(tuned[name], pretrained[name]), f"{name} was not loaded from models/model.pt"


def test_pretrain_run_from_pretrain_json(cli: dict[str, tuple[int, str]], bundles: dict[str, Path]) -> None:
    _ok(cli, "pretrain")
    out = bundles["root"] / "pre_out"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "encoder.safetensors").is_file()
    from pretext.engine.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert state["run_config"]["task"] == "bundle_test_denoise" and state["run_config"]["input_shape"] == [1, SIZE, SIZE, SIZE]
    assert int(state["step"]) == 2 and state["run_config"]["modality"] == "volume"
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    assert summary.get("steps", 2) == 2

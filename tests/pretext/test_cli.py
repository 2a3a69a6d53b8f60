"""``sslbench list`` / ``sslbench pretrain`` end to end, and their one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pretext.engine import load_checkpoint
from sslbench.cli import main

PHANTOM = "synthetic_phantom3d:?n_patients=12&size=16"
ECG = "synthetic_ecg:?n_patients=12&recordings_per_patient=2&seconds=2.56"
FAST = ["--steps", "4", "--batch-size", "4", "--log-every", "2", "--warmup-steps", "1", "--progress", "false"]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    return err


def test_list_prints_tasks_encoders_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ("rotation", "mae3d", "cpc", "pclr", "resnet18_3d", "medmnist3d", "synthetic_ecg", "options: "):
        assert name in out


def test_pretrain_writes_resolved_config_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["pretrain", "--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--out", str(out),
               "--encoder.widen_factor", "0.25", "--task.num_rotations", "10", *FAST])
    assert rc == 0, capsys.readouterr().err
    assert "pretrained rotation / resnet18_3d for 4 steps" in capsys.readouterr().out
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["task"] == "rotation" and cfg["encoder"] == "resnet18_3d" and cfg["data"] == PHANTOM
    assert cfg["encoder_cfg"]["widen_factor"] == 0.25 and cfg["encoder_cfg"]["img_size"] == [16, 16, 16]
    assert cfg["train"]["steps"] == 4 and cfg["train"]["precision"] == "32"
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 4
    # continue the same run to 6 steps from its saved config alone
    assert main(["pretrain", "--out", str(out), "--resume", "--steps", "6", "--progress", "false"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 6
    # a checkpoint from another task is refused with the fix
    assert main(["pretrain", "--out", str(out), "--resume", "--task", "slice_order", "--steps", "8"]) == 2
    assert "task: 'rotation' -> 'slice_order'" in _err(capsys)


def test_pretrain_signal_task_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["pretrain", "--task", "pclr", "--encoder", "xresnet1d18", "--data", ECG, "--out", str(tmp_path / "r"), *FAST])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "encoder.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope", "--encoder", "resnet18_3d", "--data", PHANTOM], "unknown task 'nope'; valid tasks: "),
        (["--task", "rotation", "--encoder", "nope", "--data", PHANTOM], "unknown encoder 'nope'; valid encoders: "),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", "dicomz:/x"], "unknown data 'dicomz'; valid datas: "),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", "medmnist3d:/no/such.npz"], "'/no/such.npz'"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", "medmnist3d"], "must read KIND:PATH"),
        (["--task", "cpc", "--encoder", "resnet18_3d", "--data", PHANTOM], "task 'cpc' is for signal data"),
        (["--task", "rotation", "--encoder", "xresnet1d18", "--data", PHANTOM], "is a signal encoder but the data is volume"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--precision", "16-mixed"], "needs a CUDA GPU"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--task.nope", "1"], "unknown option 'nope'"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--task.num_rotation", "24"],
         "task 'rotation': unknown option 'num_rotation'; did you mean 'num_rotations'?"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--task.num_rotations", "12"],
         "task 'rotation' num_rotations=12 must be one of 10 or 24"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--lr", "fast"], "--lr (train.lr)='fast' must be a number, e.g. --lr 0.001"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--compile", "maybe"],
         "--compile (train.compile)='maybe' must be true or false, e.g. --compile false"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--encoder.widen_factor", "wide"],
         "encoder 'resnet18_3d' widen_factor='wide' must be a number"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM + "&val_frac=0.2"],
         "option 'val_frac' is now called val_fraction"),
        (["--task", "rotation", "--encoder", "resnet18_3d", "--data", PHANTOM, "--steps", "0"], "--steps (train.steps)=0 must be >= 1, e.g. --steps 1000"),
    ],
)
def test_pretrain_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    if "16-mixed" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("fp16 is valid on this GPU")
    assert main(["pretrain", *args, "--out", str(tmp_path / "o"), "--steps", "1"] if "--steps" not in args
                else ["pretrain", *args, "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert err.startswith("sslbench: error: ") and message in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_config_yaml_written_by_0_1_still_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder's config.yaml from before the pydantic configs replays as it is."""
    old = Path(__file__).parent / "data" / "config_0.1_rotation.yaml"
    rc = main(["pretrain", "--config", str(old), "--out", str(tmp_path / "r"), "--steps", "1", "--progress", "false"])
    assert rc == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["task_cfg"]["num_rotations"] == 10


def test_config_yaml_0_1_with_old_names_is_refused_saying_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 0.1 config.yaml that used an option name since renamed is refused with the name to write."""
    old = Path(__file__).parent / "data" / "config_0.1_cpc.yaml"
    assert main(["pretrain", "--config", str(old), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = _err(capsys)
    assert "option 'val_frac' is now called val_fraction; write that instead" in err
    assert not (tmp_path / "r" / "checkpoints").exists()
    fixed = tmp_path / "config.yaml"  # the data spec converted: next, CPC's steps (its horizon) is named
    fixed.write_text(old.read_text().replace("val_frac=", "val_fraction="))
    assert main(["pretrain", "--config", str(fixed), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "task 'cpc': option 'steps' is now called horizon; write that instead" in _err(capsys)


def test_unwritable_out_and_no_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "sslbench.cli", "pretrain", "--task", "rotation", "--encoder",
                           "resnet18_3d", "--data", PHANTOM, "--out", str(blocker / "run"), "--steps", "1"],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "is not writable" in proc.stderr

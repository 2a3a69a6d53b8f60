"""pretext.engine.checkpoint.read_run: the one checkpoint reader of the harness and the bundle export."""

from __future__ import annotations

import pytest
import torch

from pretext.engine.checkpoint import encoder_state, read_run, save_checkpoint, save_safetensors
from pretext.errors import DataError

RC = {"encoder": "enc", "encoder_cfg": {}}


def test_ckpt_folder_and_safetensors(tmp_path):
    model = {"encoder.w": torch.ones(2), "head.b": torch.zeros(1)}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", {"model": model, "run_config": RC, "step": 3})
    state, path = read_run(tmp_path / "run")  # a run folder: its last.ckpt
    assert path.name == "last.ckpt" and state["run_config"] == RC and state["step"] == 3
    assert list(encoder_state(state["model"])) == ["w"]
    import json

    save_safetensors(tmp_path / "w" / "encoder.safetensors", {"w": torch.ones(2)}, {"run_config": json.dumps(RC)})
    state, path = read_run(tmp_path / "w")  # a finished run folder with only the encoder weights
    assert path.suffix == ".safetensors" and state["run_config"] == RC and list(state["model"]) == ["encoder.w"]
    save_safetensors(tmp_path / "bare.safetensors", {"w": torch.ones(2)})
    assert read_run(tmp_path / "bare.safetensors")[0]["run_config"] is None


def test_bad_paths_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has neither checkpoints/last.ckpt nor encoder.safetensors"):
        read_run(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_run(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot be read safely"):
        read_run(tmp_path / "junk.ckpt")

"""Every registered signal task trains through the shared engine on an ingested store (the tasks are found in the
registry and run with their default encoder and the tiny options of tests/components.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretext.config import TrainConfig
from pretext.data import encoder_for_data, load_data
from pretext.registry import TASKS, create_task
from tests.components import TASK_OPTIONS, encoder_options, shipped, task_encoder


@pytest.mark.parametrize("name", shipped(TASKS, "signal"))
def test_task_runs_through_engine(name: str, eegmat_like: Path, cache: str, tmp_path: Path) -> None:
    from pretext.engine import fit

    enc_name = task_encoder(name)
    data = load_data(f"eegmat:{eegmat_like}?cache={cache}&window=2.56&stride=1&split=none")
    task = create_task(name, encoder_for_data(enc_name, data, **encoder_options(enc_name)), **TASK_OPTIONS.get(name, {}))
    task.check_input(task.cfg, data.input_shape)
    cfg = TrainConfig(steps=3, batch_size=4, precision="32", accelerator="cpu", devices="1", progress=False,
                      log_every=1, warmup_steps=1, num_workers=0)
    result = fit(task, data.splits["train"], cfg, out_dir=tmp_path / name)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and all(v == v for v in losses)
    assert (tmp_path / name / "encoder.safetensors").exists()

"""Every registered signal task trains through the shared engine on an ingested store; coverage check."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretext.config import TrainConfig
from pretext.data import encoder_for_data, load_data
from pretext.registry import create_task, list_tasks

TESTS = Path(__file__).resolve().parents[1]
TASK_CASES = {
    "cpc": ("cpc_encoder", {"dim": 16, "context_dim": 16}, {"steps": 3}),
    "pclr": ("xresnet1d18", {"widths": (8, 8, 16, 16)}, {"proj_dim": 8, "proj_hidden": 16, "augment": ("noise",)}),
}


def test_every_signal_task_is_covered() -> None:
    assert set(list_tasks("signal")) == set(TASK_CASES), "add new signal tasks to TASK_CASES and a test file"
    for name in TASK_CASES:
        assert (TESTS / "pretext" / f"test_signal_{name}.py").exists()


@pytest.mark.parametrize("name", sorted(TASK_CASES))
def test_task_runs_through_engine(name: str, eegmat_like: Path, cache: str, tmp_path: Path) -> None:
    from pretext.engine import fit

    enc_name, enc_kw, task_kw = TASK_CASES[name]
    data = load_data(f"eegmat:{eegmat_like}?cache={cache}&window=2.56&stride=1&split=none")
    task = create_task(name, encoder_for_data(enc_name, data, **enc_kw), **task_kw)
    task.check_input(task.cfg, data.input_shape)
    cfg = TrainConfig(steps=3, batch_size=4, precision="32", accelerator="cpu", devices="1", progress=False,
                      log_every=1, warmup_steps=1, num_workers=0)
    result = fit(task, data.splits["train"], cfg, out_dir=tmp_path / name)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and all(v == v for v in losses)
    assert (tmp_path / name / "encoder.safetensors").exists()

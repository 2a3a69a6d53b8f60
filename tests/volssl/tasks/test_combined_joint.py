"""``combined`` with a joint-embedding task plus a generative one (VoCo / Swin UNETR style), with weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretext.config import TrainConfig
from pretext.engine import fit, load_checkpoint
from pretext.engine.hooks import HasTeacher
from pretext.errors import ConfigError
from pretext.sampling import pretrain_stream
from tests.components import TASK_OPTIONS, TinySplit, tiny_batch, tiny_task

SHUFFLE = {"max_block": (3, 3, 3), "num_blocks": 300}


def test_simclr_plus_pixel_shuffle_is_the_weighted_sum() -> None:
    task = tiny_task("combined", tasks=("simclr", "pixel_shuffle"), weights=(1.0, 0.5),
                     options={"pixel_shuffle": SHUFFLE, "simclr": {"pairing": "patient"}})
    assert task.pairing() == "patient"
    batch = tiny_batch(task, (1, 16, 16, 16))
    assert "x2" in batch
    out = task(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["simclr_loss"] + 0.5 * out["pixel_shuffle_loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in task.parts["simclr"].head.parameters())
    assert all(p.grad is not None for p in task.parts["pixel_shuffle"].parameters() if p.requires_grad)


def test_dino_plus_mae3d_on_a_vit() -> None:
    """DINO + MAE on one ViT (Swin UNETR / VoCo style): local crops resampled to the ViT's input size."""
    task = tiny_task("combined", encoder="vit_3d", tasks=("dino", "mae3d"), weights=(1.0, 0.5),
                     options={"dino": {"local_crops": 2, "out_dim": 64, "local_size": 1.0},
                              "mae3d": TASK_OPTIONS["mae3d"]})
    assert task.pairing() == "views" and len(task.teacher_pairs()) == 2
    out = task(tiny_batch(task, (1, 16, 16, 16)), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"], out["dino_loss"] + 0.5 * out["mae3d_loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in task.parts["dino"].head.parameters() if p.requires_grad)
    assert any(p.grad is not None for p in task.parts["mae3d"].parameters() if p.requires_grad)
    assert any(p.grad is not None for p in task.encoder.parameters())


def test_two_pairing_parts_are_refused() -> None:
    with pytest.raises(ConfigError, match="at most one"):
        tiny_task("combined", tasks=("simclr", "vicreg"), options={})


def test_dino_plus_pixel_shuffle_trains_with_the_engine_teacher(tmp_path: Path) -> None:
    task = tiny_task("combined", tasks=("dino", "pixel_shuffle"), weights=(1.0, 1.0),
                     options={"pixel_shuffle": SHUFFLE, "dino": {"local_crops": 2, "out_dim": 64}})
    assert isinstance(task, HasTeacher) and len(task.teacher_pairs()) == 2
    assert tiny_task("combined", tasks=("rotation",), options={}).teacher_pairs() == []  # no EMA hook then
    split = TinySplit((1, 16, 16, 16), n=8)
    assert pretrain_stream(split, task).dataset is split
    before = task.parts["dino"].teacher_head.mlp[0].weight.detach().clone()
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1, progress=False, accelerator="cpu",
                      precision="32", monitor_every=1, monitor_items=8)
    fit(task, split, cfg, out_dir=tmp_path)
    assert not torch.equal(before, task.parts["dino"].teacher_head.mlp[0].weight)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["hooks"]["ema_teacher"] == {"updates": 2}
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "dino_loss" in header and "pixel_shuffle_loss" in header and "monitor/eff_rank" in header

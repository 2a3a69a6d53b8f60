"""Engine hooks: the EMA teacher (updated after each step, checkpointed, resumed bit for bit) and the online
representation monitor (rank, std, kNN into metrics.csv for a few-step pretrain of every joint-embedding task on
synthetic ECG and synthetic 3D phantoms)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from pretext.config import TrainConfig
from pretext.engine import fit, load_checkpoint
from pretext.engine.hooks import (
    COLLAPSE_STD_RATIO,
    EMATeacher,
    HasTeacher,
    RepresentationMonitor,
    cosine_momentum,
    embedding_stats,
    knn_top1,
)
from tests.components import TinySplit, tiny_task


def _cfg(**kw: object) -> TrainConfig:
    base = {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "log_every": 1, "ckpt_every": 2,
            "progress": False, "accelerator": "cpu", "precision": "32", "monitor_every": 2, "monitor_items": 8}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _state(task: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


def test_embedding_stats_see_collapse_and_spread() -> None:
    g = torch.Generator().manual_seed(0)
    spread = embedding_stats(torch.randn(256, 32, generator=g))
    assert spread["monitor/eff_rank"] > 25 and spread["monitor/std_ratio"] > 0.9
    collapsed = embedding_stats(torch.ones(256, 32) + 1e-6 * torch.randn(256, 32, generator=g))
    assert collapsed["monitor/std_ratio"] < COLLAPSE_STD_RATIO
    line = embedding_stats(torch.randn(256, 1, generator=g) * torch.ones(1, 32))  # rank one
    assert line["monitor/eff_rank"] < 1.5


def test_knn_top1_on_separable_classes() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    f = torch.randn(40, 8, generator=g) * 0.1 + torch.stack([y.float() * 2 - 1] * 8, 1)
    assert knn_top1(f[:20], y[:20], f[20:], y[20:]) == 1.0


def test_monitor_warns_once_on_collapse() -> None:
    class Constant(torch.nn.Module):
        num_features = 8

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(8))

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.w.expand(x.shape[0], 8)

    mon = RepresentationMonitor(TinySplit((1, 16, 16, 16), n=8), every=1, items=8, total_steps=3)
    with pytest.warns(UserWarning, match="representation collapse"):
        out = mon.measure(Constant())
    assert out["monitor/collapse"] == 1.0 and "monitor/knn_top1" in out
    assert mon.state_dict() == {"warned": True}


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 10, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_momentum(10, 10, 0.99, 1.0) == pytest.approx(1.0)
    assert 0.99 < cosine_momentum(5, 10, 0.99, 1.0) < 1.0


def test_ema_hook_moves_the_teacher_towards_the_student() -> None:
    task = tiny_task("dino@volume")
    assert isinstance(task, HasTeacher)
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in task.teacher_encoder.parameters()]
    out = EMATeacher(10).after_step(1, task)
    assert out["teacher_momentum"] == pytest.approx(0.996)
    for b, t, s in zip(before, task.teacher_encoder.parameters(), task.encoder.parameters(), strict=True):
        torch.testing.assert_close(t, 0.996 * b + 0.004 * s)


@pytest.mark.faults
def test_dino_teacher_is_checkpointed_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    from pretext.tasks.dino import DINO

    split = TinySplit((1, 16, 16, 16), n=8)
    straight = tiny_task("dino@volume", local_crops=2)
    fit(straight, split, _cfg(), out_dir=tmp_path / "a")

    class Interrupted(DINO):
        calls = 0

        def forward(self, batch, generator=None):  # type: ignore[no-untyped-def]
            type(self).calls += 1
            if type(self).calls == 4:
                raise KeyboardInterrupt
            return super().forward(batch, generator)

    first = tiny_task("dino@volume", local_crops=2)
    it = Interrupted(first.encoder, first.cfg)
    it.load_state_dict(first.state_dict())
    with pytest.raises(KeyboardInterrupt):
        fit(it, split, _cfg(), out_dir=tmp_path / "b")
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert ckpt["step"] == 3 and ckpt["hooks"]["ema_teacher"] == {"updates": 3}
    assert any(k.startswith("teacher_encoder.") for k in ckpt["model"]) and "center" in ckpt["model"]

    resumed = tiny_task("dino@volume", local_crops=2, seed=11)  # other init: all must come from the checkpoint
    fit(resumed, split, _cfg(), out_dir=tmp_path / "b", resume=True)
    a, b = _state(straight), _state(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # the teacher did move, and is not the student
    assert not torch.equal(a["teacher_head.mlp.0.weight"], _state(tiny_task("dino@volume", local_crops=2))[
        "teacher_head.mlp.0.weight"])
    assert not torch.equal(a["teacher_head.mlp.0.weight"], a["head.mlp.0.weight"])


DATA = {
    "volume": "synthetic_phantom3d:?n_patients=12&size=16",
    "signal": "synthetic_ecg:?n_patients=12&recordings_per_patient=2&seconds=2.56",
}


@pytest.mark.parametrize("task", ["simclr", "vicreg", "dino"])
@pytest.mark.parametrize("modality", ["volume", "signal"])
def test_few_step_pretrain_writes_monitor_columns(task: str, modality: str, tmp_path: Path) -> None:
    from pretext.pipeline import pretrain

    enc = {"widen_factor": 0.125} if modality == "volume" else {}
    opts = {"local_crops": 2} if task == "dino" else {}
    _, res = pretrain(task, None, DATA[modality], tmp_path, _cfg(steps=3, monitor_every=2, monitor_items=24),
                      task_cfg=opts, encoder_cfg=enc)
    assert res.steps == 3
    with (tmp_path / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = set(rows[0])
    assert {"monitor/eff_rank", "monitor/std", "monitor/std_ratio", "monitor/knn_top1", "monitor/collapse"} <= cols
    measured = [r for r in rows if r.get("monitor/eff_rank")]
    assert [int(float(r["step"])) for r in measured] == [2, 3]  # every 2 steps and at the last
    for r in measured:
        assert float(r["monitor/eff_rank"]) > 0 and 0 <= float(r["monitor/knn_top1"]) <= 1
    if task == "dino":
        assert "teacher_momentum" in cols
    assert any(p.name.startswith("events") for p in (tmp_path / "tensorboard").iterdir())


def test_monitor_runs_for_existing_tasks_too(tmp_path: Path) -> None:
    from pretext.pipeline import pretrain

    pretrain("rotation", None, DATA["volume"], tmp_path, _cfg(steps=2, monitor_every=2, monitor_items=16),
             encoder_cfg={"widen_factor": 0.125})
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "monitor/eff_rank" in header and "monitor/knn_top1" in header


def test_monitor_can_be_switched_off(tmp_path: Path) -> None:
    split = TinySplit((1, 16, 16, 16), n=8)
    fit(tiny_task("simclr@volume"), split, _cfg(steps=2, monitor_every=0), out_dir=tmp_path)
    assert "monitor/" not in (tmp_path / "metrics.csv").read_text()

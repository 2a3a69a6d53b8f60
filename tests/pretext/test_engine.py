"""The training engine: resume equivalence, guards, precision policy, accumulation, EMA, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretext.config import TrainConfig
from pretext.engine import fit, load_checkpoint
from pretext.engine.sampler import ResumableBatchSampler
from pretext.engine.schedule import WarmupCosine
from pretext.errors import ConfigError, NonFiniteLossError, UserError
from pretext.testing import RandomSplit, TinyEncoder, ToyTask


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, progress=False, log_every=2, ckpt_every=6, precision="32")
    base.update(kw)
    return TrainConfig(**base)


def _task(seed: int = 0, **cfg) -> ToyTask:
    torch.manual_seed(seed)
    return ToyTask(TinyEncoder(), ToyTask.Config(**cfg))


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k != "calls"}


def test_fit_writes_run_folder_and_loss_falls(tmp_path: Path) -> None:
    task = _task(noise=0.1)
    res = fit(task, RandomSplit(n=32, shape=(4, 4)), _cfg(steps=60, lr=1e-2, log_every=10), out_dir=tmp_path,
              run_config={"task": "toy", "encoder": "tiny"})
    assert res.history[-1]["loss"] < 0.7 * res.history[0]["loss"]
    for name in ("config.yaml", "metrics.csv", "summary.json", "encoder.safetensors", "checkpoints/last.ckpt"):
        assert (tmp_path / name).is_file(), name
    assert list(tmp_path.glob("tensorboard/events.*"))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 1 + 6
    for col in ("loss", "samples_per_s", "data_wait_frac", "lr"):
        assert col in rows[0]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # weights_only=True inside
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "step", "run_config"} <= set(ckpt)
    assert ckpt["step"] == 60 and ckpt["run_config"]["task"] == "toy"
    assert ckpt["run_config"]["train"]["precision"] == "32"
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 60


@pytest.mark.faults
def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    straight = _task()
    fit(straight, RandomSplit(), _cfg(), out_dir=tmp_path / "a")

    crashed = _task(fail_at=9)  # dies during step 9; the step-6 checkpoint survives
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashed, RandomSplit(), _cfg(), out_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["step"] == 6

    resumed = _task(seed=123)  # different init: everything must come from the checkpoint
    res = fit(resumed, RandomSplit(), _cfg(), out_dir=tmp_path / "b", resume=True)
    assert res.steps == 12
    a, b = _params(straight), _params(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [2, 4, 6, 8, 10, 12]


@pytest.mark.faults
def test_a_failed_run_stops_its_tensorboard_writer(tmp_path: Path) -> None:
    """A run that dies (here: in step 9) used to leave TensorBoard's writer thread running; at exit it could print
    'Exception in thread Thread-1' and a traceback after the CLI's one-line error (seen in CI under ulimit -f)."""
    import threading

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]

    before = set(writers())
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(_task(fail_at=9), RandomSplit(), _cfg(), out_dir=tmp_path)
    assert list(tmp_path.glob("tensorboard/events.*")), "the run did log to TensorBoard"
    assert set(writers()) <= before


@pytest.mark.faults
def test_keyboard_interrupt_checkpoints_then_resumes(tmp_path: Path) -> None:
    class Interrupting(ToyTask):
        def forward(self, batch, generator=None):
            if int(self.calls) == 5 and self.cfg.fail_at == -2:
                raise KeyboardInterrupt
            return super().forward(batch, generator)

    straight = _task()
    fit(straight, RandomSplit(), _cfg(ckpt_every=100), out_dir=tmp_path / "a")
    torch.manual_seed(0)
    it = Interrupting(TinyEncoder(), ToyTask.Config(fail_at=-2))
    with pytest.raises(KeyboardInterrupt):
        fit(it, RandomSplit(), _cfg(ckpt_every=100), out_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["step"] == 5
    resumed = _task(seed=7)
    fit(resumed, RandomSplit(), _cfg(ckpt_every=100), out_dir=tmp_path / "b", resume=True)
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    task = _task(nan_steps=(2, 3))
    before = _params(task)
    res = fit(task, RandomSplit(), _cfg(steps=8, log_every=8), out_dir=None)
    assert res.nonfinite_skipped == 2
    assert res.history[-1]["nonfinite_skipped"] == 2
    after = _params(task)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())


def test_nonfinite_guard_stops_after_n_in_a_row() -> None:
    task = _task(nan_steps=tuple(range(100)))
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        fit(task, RandomSplit(), _cfg(max_nonfinite=3), out_dir=None)


def test_gradient_accumulation_matches_large_batch() -> None:
    big, acc = _task(noise=0.0), _task(noise=0.0)
    big.encoder.net[3].p = acc.encoder.net[3].p = 0.0  # no dropout: the two must agree
    fit(big, RandomSplit(), _cfg(steps=1, batch_size=16, clip_grad=0), out_dir=None)
    fit(acc, RandomSplit(), _cfg(steps=1, batch_size=8, accumulate=2, clip_grad=0), out_dir=None)
    a, b = _params(big), _params(acc)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_ema_weights_are_saved_and_differ(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    task = _task()
    fit(task, RandomSplit(), _cfg(steps=10, ema=0.9), out_dir=tmp_path)
    live = load_file(tmp_path / "encoder.safetensors")
    ema = load_file(tmp_path / "encoder_ema.safetensors")
    assert live.keys() == ema.keys()
    assert any(not torch.equal(live[k], ema[k]) for k in live)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["ema"] is not None


def test_bf16_autocast_runs_on_cpu() -> None:
    res = fit(_task(), RandomSplit(), _cfg(steps=4, precision="bf16-mixed"), out_dir=None)
    assert res.steps == 4 and all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fp16_refused_on_cpu_with_fix() -> None:
    with pytest.raises(ConfigError, match="16-mixed.*needs a CUDA GPU.*--precision 32"):
        fit(_task(), RandomSplit(), _cfg(precision="16-mixed"), out_dir=None)


def test_output_folder_guards(tmp_path: Path) -> None:
    fit(_task(), RandomSplit(), _cfg(steps=2), out_dir=tmp_path / "run", run_config={"task": "toy", "encoder": "tiny"})
    with pytest.raises(UserError, match="already holds a run.*--resume"):
        fit(_task(), RandomSplit(), _cfg(steps=2), out_dir=tmp_path / "run")
    with pytest.raises(UserError, match="does not exist; drop --resume"):
        fit(_task(), RandomSplit(), _cfg(steps=2), out_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="task: 'toy' -> 'other'"):
        fit(_task(), RandomSplit(), _cfg(steps=4), out_dir=tmp_path / "run", resume=True,
            run_config={"task": "other", "encoder": "tiny"})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        fit(_task(), RandomSplit(), _cfg(steps=2), out_dir=blocker / "sub")


def test_sampler_is_deterministic_and_resumable() -> None:
    s = ResumableBatchSampler(10, 3, seed=1)
    it = iter(s)
    stream = [next(it) for _ in range(9)]
    epoch0 = sum(stream[:3], [])
    assert len(set(epoch0)) == 9  # no repeats within an epoch (drop_last)
    it5 = iter(ResumableBatchSampler(10, 3, seed=1, start=5))
    assert [next(it5) for _ in range(4)] == stream[5:9]
    r0 = next(iter(ResumableBatchSampler(10, 2, seed=1, rank=0, world_size=2)))
    r1 = next(iter(ResumableBatchSampler(10, 2, seed=1, rank=1, world_size=2)))
    assert not set(r0) & set(r1)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 4)


def test_warmup_cosine_shape() -> None:
    f = WarmupCosine(warmup=10, total=110, floor=0.01)
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)

"""The GPU benchmark command and the device code paths it relies on, exercised on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.gpu import build_items, main
from benchmarks.gpu.flops import count_step_flops
from pretext.config import TrainConfig
from pretext.engine import fit
from pretext.registry import create_encoder, create_task
from pretext.testing import RandomSplit, TinyEncoder, ToyTask


def test_cpu_quick_tiny_run_measures_every_part(tmp_path) -> None:
    out = tmp_path / "gpu"
    assert main(["--device", "cpu", "--quick", "--tiny", "--out", str(out), "--workers", "2"]) == 0
    res = json.loads((out / "cpu_quick.json").read_text())
    assert res["partial"] is False and res["scale"] == "tiny"
    names = {r["name"] for r in res["items"]}
    assert {i.name for i in build_items("tiny")} == names
    assert {r["task"] for r in res["items"]} == {"cpc", "pclr", "rotation", "pixel_shuffle", "mae3d"}
    for r in res["items"]:
        assert "error" not in r, r
        for prec in ("bf16", "fp32"):
            assert r[prec]["items_per_s"] > 0 and r[prec]["timed_steps"] >= 1
        assert r["expected"]["flops_per_step"] > 0
        assert r["bf16"]["achieved_tflops"] > 0 and r["bf16"]["measured_over_expected_40pct"] > 0
        per_item = 4 * math.prod(r["shape"]) * (2 if r["task"] == "pclr" else 1)  # float32 (+ x2 for pairs)
        assert r["h2d"]["bytes_per_item"] >= per_item and r["h2d"]["pinned"] is False
    chain = res["chain"]
    assert chain["tensor_path"]["cubes_per_s"] > 0 and chain["cpu_numba"]["cubes_per_s"] > 0
    (wait,) = res["data_wait"]
    if "skipped" in wait:  # no ../shared/data here
        assert "no shipped data" in wait["skipped"]
    else:
        assert wait["workers"] == 2 and 0.0 <= wait["data_wait_frac"] <= 1.0 and wait["samples_per_s"] > 0
        assert "sslbench pretrain" in wait["command"] and "--num-workers 2" in wait["command"]
    (comp,) = res["compile"]
    assert comp["backend"] == "eager" and comp["speedup"] > 0
    md = (out / "cpu_quick.md").read_text()
    assert "## Models Genesis chain" in md and "## Data wait" in md and "## torch.compile" in md


def test_refuses_cuda_without_a_gpu(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "--device cpu --quick" in err
    assert not any(tmp_path.iterdir())


def test_cpu_full_size_is_refused_with_the_fix(tmp_path, capsys) -> None:
    assert main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "--quick" in capsys.readouterr().err
    assert main(["--device", "cpu", "--quick", "--workers", "two", "--out", str(tmp_path)]) == 2
    assert "--workers 'two'" in capsys.readouterr().err


def test_shape_only_flop_count_equals_the_real_count() -> None:
    for task_name, enc, kw in (("pixel_shuffle", "resnet18_3d", {"widen_factor": 0.125}),
                               ("mae3d", "vit_3d", {"embed_dim": 24, "depth": 1, "num_heads": 2, "patch_size": 4})):
        counts = []
        for shape_only in (True, False):
            torch.manual_seed(0)
            task = create_task(task_name, create_encoder(enc, img_size=(12, 12, 12), **kw))
            x = torch.rand(2, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
            counts.append(count_step_flops(task, {"x": x}, shape_only=shape_only))
        assert counts[0] == counts[1] > 0, (task_name, counts)


def test_genesis_chain_tensor_path_equals_numba_path() -> None:
    from volssl.tasks.pixel_shuffle import PixelShuffle, genesis_corrupt

    cfg = PixelShuffle.Config(local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, num_blocks=300)
    x = torch.rand(2, 1, 16, 16, 8, generator=torch.Generator().manual_seed(1))
    a, ta = genesis_corrupt(x, torch.Generator().manual_seed(0), cfg, backend="torch")
    b, tb = genesis_corrupt(x, torch.Generator().manual_seed(0), cfg, backend="numba")
    assert torch.equal(ta, tb) and not torch.equal(a, ta)
    torch.testing.assert_close(a, b)


def test_compile_option_reaches_torch_compile(monkeypatch) -> None:
    """``TrainConfig.compile`` (CLI ``--compile true``) wraps the task; inductor is too slow on this CPU, so the
    call is redirected to ``backend="eager"`` (dynamo still traces the task)."""
    real, calls = torch.compile, []

    def eager_compile(model, **kw):  # noqa: ANN001, ANN202
        calls.append((model, kw))
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch.manual_seed(0)
    task = ToyTask(TinyEncoder())
    res = fit(task, RandomSplit(n=32), TrainConfig(steps=3, batch_size=8, compile=True, precision="bf16-mixed",
                                                   progress=False, log_every=1, warmup_steps=1), out_dir=None)
    # the engine's call, then Fabric's setup re-applying it to the unwrapped module: always the task itself
    assert calls and all(m is task for m, _ in calls)
    assert res.steps == 3 and all(math.isfinite(h["loss"]) for h in res.history)


def test_worker_loader_with_bf16_autocast_on_cpu() -> None:
    """The GPU loader path (worker processes, batches moved by Fabric with ``non_blocking`` where it applies)
    with bf16 autocast; the engine pins memory only on CUDA."""
    torch.manual_seed(0)
    res = fit(ToyTask(TinyEncoder()), RandomSplit(n=32), TrainConfig(
        steps=4, batch_size=8, num_workers=2, precision="bf16-mixed", progress=False, log_every=2, warmup_steps=1),
        out_dir=None)
    assert res.steps == 4
    assert all(0.0 <= h["data_wait_frac"] <= 1.0 and h["samples_per_s"] > 0 for h in res.history)


def test_non_blocking_copy_keeps_values() -> None:
    from benchmarks.gpu.measure import _pin, _to_device

    item = build_items("tiny")[1]  # a PCLR pair batch
    host = item.make_batch()
    moved = _to_device(_pin(host, torch.device("cpu")), torch.device("cpu"))
    assert set(moved) == {"x", "x2", "patient"}
    assert all(torch.equal(moved[k], host[k]) for k in host)


def test_flops_extended_from_small_batches_equal_the_count_at_the_batch() -> None:
    import dataclasses

    from benchmarks.gpu.flops import flops_at_batch

    pclr = dataclasses.replace(next(i for i in build_items("tiny") if i.task == "pclr"), batch=12)
    assert (flops_at_batch(pclr.make_task, pclr.make_batch, 12, (2, 4, 8))["flops"]
            == flops_at_batch(pclr.make_task, pclr.make_batch, 12)["flops"] > 0)

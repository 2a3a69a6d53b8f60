"""CPC: vectorised loss equals the per-step loop; shapes; the task trains; bad input."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_signal import cpc_loss_loop
from pretext.errors import UserError
from pretext.registry import create_encoder, create_task
from signalssl.tasks.cpc import NEGATIVES, cpc_loss


@pytest.mark.parametrize("negatives", NEGATIVES)
def test_vectorised_loss_equals_loop(negatives: str) -> None:
    g = torch.Generator().manual_seed(1)
    z, pred = torch.randn(3, 9, 16, generator=g), torch.randn(3, 9, 4, 16, generator=g)
    loss, acc = cpc_loss(z, pred, negatives, temperature=0.7)
    ref = cpc_loss_loop(z, pred, negatives, temperature=0.7)
    ref_steps = cpc_loss_loop(z, pred, negatives, temperature=0.7, per_position=False)
    assert torch.allclose(loss, ref, atol=1e-5, rtol=0) and torch.allclose(loss, ref_steps, atol=1e-5, rtol=0)
    assert 0.0 <= float(acc) <= 1.0


def test_loss_gradients_match_loop() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 7, 8, generator=g, requires_grad=True)
    pred = torch.randn(2, 7, 3, 8, generator=g, requires_grad=True)
    ga = torch.autograd.grad(cpc_loss(z, pred, "both")[0], [z, pred])
    gb = torch.autograd.grad(cpc_loss_loop(z, pred, "both"), [z, pred])
    for a, b in zip(ga, gb, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_perfect_predictions_give_low_loss() -> None:
    z = torch.zeros(2, 12, 24)
    z[0, torch.arange(12), torch.arange(12)] = 20.0  # every latent is distinct
    z[1, torch.arange(12), 12 + torch.arange(12)] = 20.0
    pred = torch.stack([z.roll(-k, dims=1) for k in range(1, 4)], dim=2)
    loss, acc = cpc_loss(z, pred, "all")
    assert float(loss) < 1e-3 and float(acc) == 1.0


def test_steps_beyond_sequence_are_ignored() -> None:
    z, pred = torch.randn(2, 3, 4), torch.randn(2, 3, 5, 4)  # steps 3..5 have no valid position
    loss, _ = cpc_loss(z, pred, "batch")
    assert torch.isfinite(loss) and torch.allclose(loss, cpc_loss_loop(z, pred, "batch"), atol=1e-6)


@pytest.mark.parametrize("encoder,kw", [("cpc_encoder", {"dim": 16, "context_dim": 24}),
                                        ("cpc_encoder", {"dim": 16, "context_dim": 16, "context": "transformer"}),
                                        ("xresnet1d18", {"widths": (8, 8, 16, 16)})])
def test_task_forward_backward(encoder: str, kw: dict) -> None:
    enc = create_encoder(encoder, n_chans=2, n_times=256 if encoder == "cpc_encoder" else 1024, **kw)
    task = create_task("cpc", enc, horizon=3)
    x = torch.randn(2, 2, enc.n_times)
    out = task({"x": x})
    assert out["loss"].dtype == torch.float32 and out["loss"].ndim == 0 and "cpc_acc" in out
    out["loss"].backward()
    assert task.predictor.weight.grad is not None and task.predictor.weight.grad.abs().sum() > 0
    assert task.own_context == (encoder != "cpc_encoder")


def test_task_learns_predictable_signal() -> None:
    torch.manual_seed(0)
    t = torch.arange(256) / 64.0
    freqs = torch.tensor([1.0, 2.5, 4.0, 6.0])
    x = torch.sin(2 * torch.pi * freqs[:, None] * t)[:, None, :]  # (4, 1, 256)
    enc = create_encoder("cpc_encoder", n_chans=1, n_times=256, dim=16, context_dim=16)
    task = create_task("cpc", enc, horizon=2)
    opt = torch.optim.Adam(task.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = task({"x": x})["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first


def test_bad_config_and_input() -> None:
    enc = create_encoder("cpc_encoder", n_chans=1, n_times=128, dim=8, context_dim=8)
    with pytest.raises(UserError, match="negatives"):
        create_task("cpc", enc, negatives="random")
    with pytest.raises(UserError, match=r"task 'cpc' horizon=0 must be >= 1"):
        create_task("cpc", enc, horizon=0)
    with pytest.raises(UserError, match=r"task 'cpc': option 'steps' is now called horizon"):  # its 0.1 name
        create_task("cpc", enc, steps=3)
    task = create_task("cpc", enc, horizon=12)
    with pytest.raises(UserError, match=r"N=4 latent steps.*--task.horizon 3"):
        task({"x": torch.randn(2, 1, 128)})
    big = create_task("cpc", enc, horizon=2, negatives="all", max_score_gb=1e-8)
    with pytest.raises(UserError, match=r"score tensor would take .* GB.*negatives=both"):
        big({"x": torch.randn(2, 1, 128)})
    with pytest.raises(UserError, match="signals"):
        type(task).check_input(task.cfg, (1, 16, 16, 16))

    class NoTokens(torch.nn.Module):
        num_features = 4

    with pytest.raises(UserError, match="forward_tokens"):
        create_task("cpc", NoTokens())


def test_autocast_loss_is_fp32() -> None:
    enc = create_encoder("cpc_encoder", n_chans=1, n_times=256, dim=8, context_dim=8)
    task = create_task("cpc", enc, horizon=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task({"x": torch.randn(2, 1, 256)})
    assert out["loss"].dtype == torch.float32

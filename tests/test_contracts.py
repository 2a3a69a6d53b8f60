"""The shared contracts, run for every task and encoder the modality packages register (found in the registries:
a new file is tested without editing a test).

Tasks: a finite fp32 scalar loss and gradients; same generator seed, same loss; a few steps overfit one batch;
bad config values are refused with a :class:`~pretext.errors.UserError`; views drawn from a CPU generator are the
same on CPU and GPU. Encoders: ``forward_features`` is ``(B, num_features)``; every capability Protocol an
encoder declares (:mod:`pretext.capabilities`) works; eval mode is deterministic. Both: buildable with defaults.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch

from pretext import capabilities
from pretext.config import config_fields, config_types
from pretext.errors import ConfigError, UserError
from pretext.registry import ENCODERS, TASKS, create_encoder, create_task
from tests.components import (
    ENCODER_OPTIONS,
    SHAPES,
    TASK_OPTIONS,
    input_shape,
    modality_of,
    shipped,
    split_case,
    task_cases,
    task_encoder,
    tiny_batch,
    tiny_encoder,
    tiny_task,
)

ALL_TASKS = task_cases()  # a modality-agnostic task once per modality: "simclr@volume", "simclr@signal"
ALL_ENCODERS = shipped(ENCODERS)
PROTOCOLS = [capabilities.PooledFeatures, capabilities.TokenFeatures, capabilities.Latents,
             capabilities.MultiScaleMaps, capabilities.MaskedTokens]


def _task_and_batch(name: str, n: int = 4, **overrides: object) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    task = tiny_task(name, **overrides)
    return task, tiny_batch(task, input_shape(task_encoder(name)), n=n)


def test_every_modality_ships_tasks_and_encoders() -> None:
    """The parametrisations below are not silently empty, and the option tables name registered components."""
    for modality in SHAPES:
        assert shipped(TASKS, modality) and shipped(ENCODERS, modality), modality
    assert set(SHAPES) >= {split_case(c)[1] for c in ALL_TASKS} | {modality_of(ENCODERS, n) for n in ALL_ENCODERS}
    assert set(TASK_OPTIONS) <= {split_case(c)[0] for c in ALL_TASKS} and set(ENCODER_OPTIONS) <= set(ALL_ENCODERS)
    for name in shipped(TASKS, "any"):  # modality-agnostic tasks run on every modality
        assert {f"{name}@{m}" for m in SHAPES} <= set(ALL_TASKS)


# -- tasks -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_builds_with_defaults(name: str) -> None:
    """Default config on the default encoder (built with its own defaults): fails, never skips, when it cannot."""
    task = create_task(split_case(name)[0], create_encoder(task_encoder(name)))
    assert task.cfg == type(task).Config()
    assert isinstance(task.encoder, capabilities.PooledFeatures)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_loss_gradients_and_seeded_determinism(name: str) -> None:
    task, batch = _task_and_batch(name)
    type(task).check_input(task.cfg, input_shape(task_encoder(name)))
    out = task(batch, generator=torch.Generator().manual_seed(1))
    loss = out["loss"]
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss), out
    assert all(v.ndim == 0 for v in out.values()), {k: tuple(v.shape) for k, v in out.items()}
    loss.backward()
    grads = [p.grad for p in task.encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "an encoder parameter gets no gradient"
    assert any(float(g.abs().sum()) > 0 for g in grads)

    task.eval()  # same seed, same views, same loss; a task that draws from the generator varies with the seed
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        before = g.get_state()
        a = task(batch, generator=g)["loss"]
        draws = not torch.equal(before, g.get_state())
        b = task(batch, generator=torch.Generator().manual_seed(5))["loss"]
        c = task(batch, generator=torch.Generator().manual_seed(6))["loss"]
    assert torch.equal(a, b)
    if draws:
        assert not torch.equal(a, c), "the generator is drawn from but another seed gives the same loss"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_overfits_a_fixed_batch(name: str) -> None:
    """Views fixed (the same generator seed every step): a few Adam steps lower the loss."""
    task, batch = _task_and_batch(name)
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = task(batch, generator=torch.Generator().manual_seed(0))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.9 * losses[0], losses


def _bad_values(default: object) -> list[object]:
    if isinstance(default, bool):
        return []
    if isinstance(default, int | float):
        return [-1]
    if isinstance(default, str):
        return ["__not_an_option__"]
    if isinstance(default, tuple):
        return [("__not_an_option__",)] if not default or isinstance(default[0], str) else [(-1,) * len(default)]
    return []


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_rejects_bad_config(name: str) -> None:
    """Unknown options and wrongly typed values are ConfigErrors naming them; an out-of-range value (a negative
    number, an unknown choice) of every field is refused with a UserError."""
    enc = tiny_encoder(task_encoder(name))
    name = split_case(name)[0]
    base = TASK_OPTIONS.get(name, {})
    with pytest.raises(ConfigError, match="not_a_field"):
        create_task(name, enc, **base, not_a_field=1)
    cfg_cls = TASKS.get(name).Config
    hints = config_types(cfg_cls)
    numeric = [f for f in hints if hints[f] in (int, float)]
    if numeric:
        with pytest.raises(ConfigError, match=numeric[0]):
            create_task(name, enc, **{**base, numeric[0]: "not a number"})
    not_refused = []
    for field, default in config_fields(cfg_cls).items():
        for value in _bad_values(default):
            try:
                create_task(name, enc, **{**base, field: value})
                not_refused.append(f"{field}={value!r} accepted")
            except UserError:
                pass
            except (RuntimeError, ValueError, TypeError) as err:  # refused, but not with a message saying what to fix
                not_refused.append(f"{field}={value!r}: {type(err).__name__}")
    assert not not_refused, f"task {name!r}: out-of-range values not refused with a UserError: {not_refused}"


@pytest.mark.gpu
@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_views_are_the_same_on_cpu_and_gpu(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random view parameters come from the CPU generator: the encoder sees the same inputs on either device."""
    task, batch = _task_and_batch(name)
    task.eval()
    seen: list[torch.Tensor] = []
    for method in ("forward_features", "forward_tokens", "forward_latents", "forward_maps", "forward_masked"):
        fn = getattr(task.encoder, method, None)
        if callable(fn):
            def spy(x: torch.Tensor, *a: object, _fn: typing.Any = fn, **k: object) -> typing.Any:
                seen.append(x.detach().float().cpu())
                return _fn(x, *a, **k)

            monkeypatch.setattr(task.encoder, method, spy)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with torch.no_grad():
        cpu_loss = task(batch, generator=torch.Generator().manual_seed(3))["loss"]
        cpu_views, seen[:] = list(seen), []
        task.cuda()
        gpu_loss = task({k: v.cuda() for k, v in batch.items()}, generator=torch.Generator().manual_seed(3))["loss"]
    assert len(seen) == len(cpu_views) > 0
    for a, b in zip(cpu_views, seen, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-3, atol=1e-4)


# -- encoders ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_ENCODERS)
def test_encoder_builds_with_defaults(name: str) -> None:
    enc = create_encoder(name)
    assert isinstance(enc, capabilities.PooledFeatures) and int(enc.num_features) > 0


@pytest.mark.parametrize("name", ALL_ENCODERS)
def test_encoder_rejects_bad_options(name: str) -> None:
    """A negative size or width, or an unknown choice, of every keyword with a default is refused with a
    UserError that names the encoder and the value (not a tensor-shape RuntimeError from deep inside)."""
    import inspect

    not_refused = []
    for p in inspect.signature(ENCODERS.get(name)).parameters.values():
        if p.default is inspect.Parameter.empty or p.default is None:
            continue
        for value in _bad_values(p.default):
            try:
                create_encoder(name, **{p.name: value})
                not_refused.append(f"{p.name}={value!r} accepted")
            except UserError as err:
                assert name in str(err) or p.name in str(err), err
            except (RuntimeError, ValueError, TypeError) as err:
                not_refused.append(f"{p.name}={value!r}: {type(err).__name__}")
    assert not not_refused, f"encoder {name!r}: bad options not refused with a UserError: {not_refused}"


@pytest.mark.parametrize("name", ALL_ENCODERS)
def test_encoder_features_gradients_and_eval_determinism(name: str) -> None:
    enc = tiny_encoder(name)
    x = torch.randn(2, *input_shape(name), generator=torch.Generator().manual_seed(0))
    f = enc.forward_features(x)
    assert f.shape == (2, enc.num_features) and f.dtype == torch.float32 and torch.isfinite(f).all()
    f.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc.forward_features(x), enc.forward_features(x))


def _check_protocol(enc: typing.Any, proto: type, x: torch.Tensor) -> None:
    n, spatial = x.shape[0], x.shape[2:]
    if proto is capabilities.PooledFeatures:
        assert enc.forward_features(x).shape == (n, enc.num_features)
    elif proto is capabilities.TokenFeatures:
        tok = enc.forward_tokens(x)
        assert tok.ndim == 3 and tok.shape[0] == n and tok.shape[2] == enc.num_features, tuple(tok.shape)
    elif proto is capabilities.Latents:
        z = enc.forward_latents(x)
        assert z.ndim == 3 and z.shape[0] == n
        c = enc.forward_context(z)
        assert c.ndim == 3 and c.shape[:2] == z.shape[:2]
    elif proto is capabilities.MultiScaleMaps:
        maps = enc.forward_maps(x)
        assert [m.shape[1] for m in maps] == list(enc.feature_channels)
        assert len(maps) == len(enc.feature_strides)
        for m, s in zip(maps, enc.feature_strides, strict=True):
            assert m.shape[0] == n and all(abs(a - b / s) <= 1 for a, b in zip(m.shape[2:], spatial, strict=True)), (
                tuple(m.shape), s)
    elif proto is capabilities.MaskedTokens:
        assert enc.num_patches == math.prod(enc.grid_size)
        keep = torch.stack([torch.randperm(enc.num_patches, generator=torch.Generator().manual_seed(i))[:3]
                            for i in range(n)])
        out = enc.forward_masked(x, keep)
        assert out.ndim == 3 and out.shape[0] == n and out.shape[1] in (3, 4) and out.shape[2] == enc.embed_dim
    else:  # a Protocol added to pretext.capabilities needs a check here
        raise AssertionError(f"no contract check for {proto.__name__}")


@pytest.mark.parametrize("name", ALL_ENCODERS)
def test_encoder_declared_capabilities_work(name: str) -> None:
    """A capability an encoder declares (its class has the methods) is real: the instance satisfies the
    Protocol (attributes too) and the calls give the documented shapes."""
    enc = tiny_encoder(name).eval()
    x = torch.randn(2, *input_shape(name), generator=torch.Generator().manual_seed(0))
    declared = [p for p in PROTOCOLS if name in capabilities.encoders_with(p, modality_of(ENCODERS, name))]
    assert capabilities.PooledFeatures in declared
    with torch.no_grad():
        for proto in PROTOCOLS:
            if proto in declared or isinstance(enc, proto):
                assert isinstance(enc, proto), f"{name} declares {proto.__name__} but lacks part of it"
                _check_protocol(enc, proto, x)


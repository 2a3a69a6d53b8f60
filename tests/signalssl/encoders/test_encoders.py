"""Signal encoders: widths, tokens, backward, bad sizes; the tsai adapter.

Features, capabilities and buildability of every registered encoder: tests/test_contracts.py.
"""

from __future__ import annotations

import pytest
import torch

from pretext.base import SSLData
from pretext.data import encoder_for_data
from pretext.errors import ConfigError
from pretext.registry import ENCODERS, create_encoder
from tests.components import input_shape, shipped, tiny_encoder

# num_features of the tiny builds (tests/components.py), where known
WIDTH = {"xresnet1d18": 512, "xresnet1d34": 64, "xresnet1d50": 256, "xresnet1d101": 256, "cpc_encoder": 128,
         "ribeiro_resnet": 320, "tsai_InceptionTimePlus": 64, "tsai_XResNet1dPlus": 256, "tsai_TSTPlus": 32,
         "tsai_ResNetPlus": 128}


@pytest.mark.parametrize("name", shipped(ENCODERS, "signal"))
def test_encoder_forward_backward(name: str) -> None:
    enc = tiny_encoder(name)
    c, t = input_shape(name)
    if name in WIDTH:
        assert enc.num_features == WIDTH[name]
    x = torch.randn(2, c, t)
    f = enc.forward_features(x)
    assert f.shape == (2, enc.num_features) and torch.isfinite(f).all()
    tok = enc.forward_tokens(x)
    assert tok.ndim == 3 and tok.shape[0] == 2 and tok.shape[2] == enc.num_features
    f.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_xresnet_maps_and_sizes() -> None:
    enc = create_encoder("xresnet1d18", n_chans=1, n_times=300)
    maps = enc.forward_maps(torch.randn(2, 1, 300))
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512]
    assert [m.shape[2] for m in maps] == [75, 38, 19, 10]
    assert enc.feature_channels == [64, 128, 256, 512] and enc.feature_strides == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="n_times=16 is too short"):
        create_encoder("xresnet1d18", n_chans=1, n_times=16)


@pytest.mark.parametrize("context", ["gru", "lstm", "transformer"])
def test_cpc_encoder_contexts_are_causal(context: str) -> None:
    enc = create_encoder("cpc_encoder", n_chans=2, n_times=256, context=context, dim=16, context_dim=16).eval()
    x = torch.randn(1, 2, 256)
    z = enc.forward_latents(x)
    assert z.shape == (1, 8, 16) and enc.forward_context(z).shape == (1, 8, 16)
    z2 = z.clone()
    z2[:, 5:] += 1.0  # change the future: the context up to step 4 must not move
    c1, c2 = enc.forward_context(z), enc.forward_context(z2)
    assert torch.allclose(c1[:, :5], c2[:, :5], atol=1e-5) and not torch.allclose(c1[:, 5:], c2[:, 5:])
    with pytest.raises(ValueError, match="context"):
        create_encoder("cpc_encoder", context="mamba")
    with pytest.raises(ValueError, match="latent steps"):
        create_encoder("cpc_encoder", n_times=40)


def test_ribeiro_needs_long_input() -> None:
    with pytest.raises(ValueError, match="downsampling"):
        create_encoder("ribeiro_resnet", n_chans=12, n_times=100)


def test_encoder_sized_from_data() -> None:
    data = SSLData("signal", {}, (3, 512), sfreq=250.0)
    enc = encoder_for_data("xresnet1d18", data)
    assert enc.n_chans == 3 and enc.n_times == 512 and enc.sfreq == 250.0


def test_tsai_adapter_is_lazy_and_hints_install(monkeypatch: pytest.MonkeyPatch) -> None:

    import signalssl.encoders.tsai as adapter

    assert "tsai" not in adapter.__dict__ and "_import" in adapter.__dict__
    def no_tsai(name: str, *a: object, **k: object) -> object:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])

    monkeypatch.setattr(adapter.importlib, "import_module", no_tsai)
    with pytest.raises(ImportError, match="pip install tsai"):
        create_encoder("tsai_InceptionTimePlus", n_chans=2, n_times=64)


def test_tsai_bad_option() -> None:
    with pytest.raises(ConfigError, match="tsai InceptionTimePlus"):
        create_encoder("tsai_InceptionTimePlus", n_chans=2, n_times=64, not_an_option=3)

"""Every registered signal encoder: feature/token shapes, backward, bad sizes; the tsai adapter."""

from __future__ import annotations

import pytest
import torch

from pretext.base import SSLData
from pretext.data import encoder_for_data
from pretext.errors import ConfigError
from pretext.registry import create_encoder, list_encoders

# name -> (n_chans, n_times, expected num_features, extra kwargs); tiny sizes
ENCODER_CASES = {
    "xresnet1d18": (2, 256, 512, {}),
    "xresnet1d34": (2, 256, 64, {"widths": (8, 16, 32, 64)}),  # narrow: same depth, fast on CPU
    "xresnet1d50": (2, 256, 256, {"widths": (8, 16, 32, 64)}),
    "xresnet1d101": (2, 256, 256, {"widths": (8, 16, 32, 64)}),
    "cpc_encoder": (2, 256, 128, {}),
    "ribeiro_resnet": (2, 512, 320, {}),
    "tsai_InceptionTimePlus": (2, 256, 64, {"nf": 16}),
    "tsai_XResNet1dPlus": (2, 256, 256, {"block_szs_base": (8, 16, 32, 64)}),
    "tsai_TSTPlus": (2, 256, 32, {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1}),
    "tsai_ResNetPlus": (2, 256, 128, {}),
    "tsai_XceptionTimePlus": (2, 256, None, {"nf": 4}),
}


def test_every_signal_encoder_has_a_case() -> None:
    assert set(list_encoders("signal")) <= set(ENCODER_CASES), "add new signal encoders to ENCODER_CASES"


@pytest.mark.parametrize("name", sorted(ENCODER_CASES))
def test_encoder_forward_backward(name: str) -> None:
    c, t, nf, kw = ENCODER_CASES[name]
    enc = create_encoder(name, n_chans=c, n_times=t, sfreq=100.0, **kw)
    if nf is not None:
        assert enc.num_features == nf
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

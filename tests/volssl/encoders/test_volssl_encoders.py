"""Volume encoders: two input channels, maps for the U-Net decoder, MAE hooks, bad arguments.

Features, capabilities and buildability of every registered encoder: tests/test_contracts.py.
"""

from __future__ import annotations

import pytest
import torch

from pretext.capabilities import MultiScaleMaps
from pretext.errors import ConfigError
from pretext.registry import ENCODERS, create_encoder
from tests.components import shipped, tiny_encoder
from volssl.encoders import UNetDecoder, sincos_pos_embed_3d

# num_features of the tiny builds (tests/components.py), where known
WIDTH = {"resnet18_3d": 64, "resnet50_3d": 256, "vit_3d": 48, "monai_net": 8}


@pytest.mark.parametrize("name", shipped(ENCODERS, "volume"))
def test_interface_and_maps(name):
    enc = tiny_encoder(name, in_channels=2)
    x = torch.rand(2, 2, 16, 16, 16)
    feats = enc.forward_features(x)
    assert feats.shape == (2, WIDTH.get(name, enc.num_features)) == (2, enc.num_features)
    if not isinstance(enc, MultiScaleMaps):
        return
    maps = enc.forward_maps(x)
    assert [m.shape[1] for m in maps] == list(enc.feature_channels)
    for m, s in zip(maps, enc.feature_strides, strict=False):
        assert m.shape[2:] == torch.Size([16 // s] * 3)
    out = UNetDecoder(enc.feature_channels, enc.feature_strides, out_channels=2)(maps, x.shape[2:])
    assert out.shape == x.shape
    out.mean().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


def test_resnet18_width_follows_widen_factor():
    assert create_encoder("resnet18_3d", img_size=16, widen_factor=0.25).num_features == 128


def test_resnet_small_and_large_stems():
    small = create_encoder("resnet18_3d", img_size=28, widen_factor=0.25)
    large = create_encoder("resnet18_3d", img_size=64, widen_factor=0.25)
    assert small.conv1.stride == (1, 1, 1) and large.conv1.stride == (2, 2, 2)
    assert small.feature_strides == [1, 2, 4, 8, 16] and large.feature_strides == [2, 4, 8, 16, 32]


def test_resnet_state_dict_is_monai_resnet():
    from monai.networks.nets import ResNet

    ours = create_encoder("resnet18_3d", img_size=32, widen_factor=0.25, stem="large")
    ref = ResNet("basic", [2, 2, 2, 2], [64, 128, 256, 512], n_input_channels=1, conv1_t_size=7, conv1_t_stride=2,
                 widen_factor=0.25, feed_forward=False)
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(2, 1, 32, 32, 32)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours.forward_features(x), ref(x))


def test_vit_tokens_masked_and_auto_patch():
    vit = create_encoder("vit_3d", img_size=(28, 28, 28), embed_dim=48, depth=1, num_heads=2)
    assert vit.patch_size == (4, 4, 4) and vit.num_patches == 343
    x = torch.rand(2, 1, 28, 28, 28)
    assert vit.forward_tokens(x).shape == (2, 343, 48)
    keep = torch.tensor([[0, 5, 9], [1, 2, 3]])
    assert vit.forward_masked(x, keep).shape == (2, 4, 48)
    assert create_encoder("vit_3d", img_size=64, embed_dim=48, depth=1, num_heads=2).patch_size == (16, 16, 16)


def test_sincos_pos_embed():
    pe = sincos_pos_embed_3d(48, (2, 3, 4))
    assert pe.shape == (24, 48)
    assert len({tuple(r) for r in pe.round(decimals=5).tolist()}) == 24  # every position distinct
    # the first third encodes depth only: tokens of the same depth share it
    torch.testing.assert_close(pe[0, :16], pe[11, :16])
    assert not torch.allclose(pe[0, :16], pe[12, :16])


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("vit_3d", {"img_size": (28, 28, 28), "patch_size": 16}, "not divisible by patch_size"),
        ("vit_3d", {"embed_dim": 50, "num_heads": 5}, "divisible by 6"),
        ("resnet18_3d", {"stem": "huge"}, "stem"),
        ("resnet18_3d", {"img_size": (16, 16)}, "three|3 positive"),
        ("monai_net", {"net": "NoSuchNet"}, "not a network in monai.networks.nets"),
        ("monai_net", {"net": "UNet", "out_channels": 4, "channels": (4, 8), "strides": (2,), "bogus": 1},
         "unknown argument"),
        ("monai_net", {"net": "DenseNet121", "img_size": 8}, "cannot run on img_size"),
    ],
)
def test_bad_encoder_arguments(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_encoder(name, **kwargs)


def test_vit_rejects_wrong_input_size():
    vit = create_encoder("vit_3d", img_size=16, embed_dim=48, depth=1, num_heads=2)
    with pytest.raises(ConfigError, match="built for img_size"):
        vit.forward_features(torch.rand(1, 1, 32, 32, 32))


def test_vit_linear_patch_embedding_equals_the_conv():
    from einops import rearrange

    vit = create_encoder("vit_3d", in_channels=2, img_size=(16, 16, 8), patch_size=(8, 8, 4), embed_dim=48,
                         depth=1, num_heads=2)
    x = torch.rand(2, 2, 16, 16, 8)
    conv = rearrange(vit.patch_embed(x), "b e d h w -> b (d h w) e") + vit.pos_embed
    torch.testing.assert_close(vit.embed(x), conv, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([[0, 3, 7], [1, 2, 6]])
    full = vit._run(vit.embed(x).gather(1, ids[..., None].expand(-1, -1, 48)))
    torch.testing.assert_close(vit.forward_masked(x, ids), full, rtol=1e-5, atol=1e-5)

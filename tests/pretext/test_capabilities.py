"""Encoder capabilities are declared Protocols; a task that needs one names the encoders that have it."""

from __future__ import annotations

import pytest
import torch

from pretext.capabilities import MaskedTokens, MultiScaleMaps, PooledFeatures, TokenFeatures, encoders_with
from pretext.errors import ConfigError
from pretext.registry import ENCODERS, create_encoder, create_task


def test_every_registered_encoder_has_pooled_features() -> None:
    missing = [n for n in ENCODERS.names() if n not in encoders_with(PooledFeatures)]
    assert not missing, f"encoders without forward_features/num_features: {missing}"


def test_declared_capabilities_of_the_builtin_encoders() -> None:
    assert "vit_3d" in encoders_with(MaskedTokens) and "resnet18_3d" not in encoders_with(MaskedTokens)
    assert {"resnet18_3d", "resnet50_3d", "vit_3d"} <= set(encoders_with(MultiScaleMaps))
    assert "cpc_encoder" in encoders_with(TokenFeatures, modality="signal")
    vit = create_encoder("vit_3d", in_channels=1, img_size=(16, 16, 16), patch_size=8, embed_dim=48, depth=1,
                         num_heads=2)
    assert isinstance(vit, MaskedTokens) and isinstance(vit, PooledFeatures)


def test_task_names_the_encoders_that_have_what_it_needs() -> None:
    enc = create_encoder("resnet18_3d", in_channels=1, img_size=(16, 16, 16), widen_factor=0.25)
    with pytest.raises(ConfigError, match=r"task 'mae3d' needs an encoder with MaskedTokens .*encoders that have it: .*vit_3d"):
        create_task("mae3d", enc)
    class Plain(torch.nn.Module):
        num_features = 4

        def forward_features(self, x):
            return x.flatten(1)[:, :4]

    with pytest.raises(ConfigError, match=r"needs an encoder with TokenFeatures \(forward_tokens missing on Plain\)"):
        create_task("cpc", Plain())

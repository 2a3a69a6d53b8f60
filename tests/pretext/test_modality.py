"""Modality adapters: found through entry points (or MEDSSL_MODALITIES), asked instead of modality branches."""

from __future__ import annotations

import pytest
import torch

import pretext.modality as modality
from pretext.errors import ConfigError


def test_both_built_in_modalities_are_registered_through_entry_points() -> None:
    found = modality.modalities()
    assert {"volume", "signal"} <= set(found)
    assert found["volume"].packages["task"] == ("volssl.tasks",)
    assert found["signal"].encoder_kwargs((12, 1000), 100.0) == {"n_chans": 12, "n_times": 1000, "sfreq": 100.0}
    assert found["volume"].encoder_kwargs((1, 28, 28, 28)) == {"in_channels": 1, "img_size": (28, 28, 28)}


def test_the_environment_variable_registers_modalities_without_an_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modality, "_ADAPTERS", {})
    monkeypatch.setattr(modality, "_LOADED", False)
    monkeypatch.setattr(modality, "entry_points", lambda group: [])
    monkeypatch.setenv("MEDSSL_MODALITIES", "volssl.modality")
    assert list(modality.modalities()) == ["volume"]
    monkeypatch.setattr(modality, "_ADAPTERS", {})
    monkeypatch.setattr(modality, "_LOADED", False)
    monkeypatch.delenv("MEDSSL_MODALITIES")
    with pytest.raises(ConfigError, match="MEDSSL_MODALITIES"):
        modality.modalities()


def test_unknown_modality_and_item_rank_name_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="registered modalities: signal, volume"):
        modality.get_modality("audio")
    assert modality.modality_of_shape((1, 8, 8, 8)) == "volume"
    assert modality.modality_of_shape((2, 100)) == "signal"
    with pytest.raises(ConfigError, match="no registered modality"):
        modality.modality_of_shape((1, 8, 8))
    assert modality.modality_of_kwargs({"n_chans": 2}) == "signal"
    assert modality.modality_of_kwargs({"foo": 1}) is None


@pytest.mark.parametrize("name", ["volume", "signal"])
def test_perturbation_is_seeded_small_and_shape_preserving(name: str) -> None:
    adapter = modality.get_modality(name)
    shape = (2, 1, 8, 8, 8) if name == "volume" else (2, 3, 200)
    x = torch.randn(shape)
    a = adapter.perturb(x, torch.Generator().manual_seed(1), sfreq=100.0)
    b = adapter.perturb(x, torch.Generator().manual_seed(1), sfreq=100.0)
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0 < (a - x).abs().mean() < 0.5 * x.abs().mean()

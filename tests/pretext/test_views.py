"""The modality adapters' default view policies: shapes, seeded determinism, overrides, device independence."""

from __future__ import annotations

import pytest
import torch

from pretext.errors import ConfigError
from pretext.modality import get_modality


def _vol(b: int = 4, side: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(b, 1, side, side, side)
    x[:, :, 3:9, 2:8, 4:10] = 1.0
    return x + 0.05 * torch.rand(x.shape, generator=g)


def _sig(b: int = 4, c: int = 3, t: int = 200) -> torch.Tensor:
    return torch.randn(b, c, t, generator=torch.Generator().manual_seed(0))


CASES = [("volume", _vol), ("signal", _sig)]


@pytest.mark.parametrize("modality,make", CASES)
def test_views_keep_shape_and_are_seeded(modality: str, make: object) -> None:
    x = make()  # type: ignore[operator]
    views = get_modality(modality).views()
    a = views(x, torch.Generator().manual_seed(1))
    b = views(x, torch.Generator().manual_seed(1))
    c = views(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)
    # samples of one batch get different parameters
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("modality,make", CASES)
def test_views_with_everything_off_are_the_identity(modality: str, make: object) -> None:
    x = make()  # type: ignore[operator]
    off = ({"crop_scale": (1.0, 1.0), "aspect": (1.0, 1.0), "flip_p": 0, "rotate_deg": 0, "intensity_p": 0,
            "gamma_p": 0, "blur_p": 0, "noise_p": 0} if modality == "volume" else
           {"crop_scale": (1.0, 1.0), "scale_p": 0, "wander_p": 0, "noise_p": 0, "dropout_p": 0, "mask_p": 0})
    y = get_modality(modality).views(**off)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4)


def test_volume_views_local_size_and_flip() -> None:
    x = _vol()
    views = get_modality("volume").views()
    small = views.replace(size=(6, 6, 6), crop_scale=(0.1, 0.3))(x, torch.Generator().manual_seed(0))
    assert small.shape == (4, 1, 6, 6, 6)
    flip_only = get_modality("volume").views(crop_scale=(1.0, 1.0), aspect=(1.0, 1.0), flip_p=1.0, rotate_deg=0,
                                             intensity_p=0, gamma_p=0, blur_p=0, noise_p=0)
    y = flip_only(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x.flip(2, 3, 4), rtol=1e-5, atol=1e-5)


def test_signal_views_crop_length_and_sfreq_from_sizing() -> None:
    x = _sig()
    views = get_modality("signal").views({"sfreq": 250.0}, noise_std=0.1)
    assert views.sfreq == 250.0 and views.noise_std == 0.1
    assert views.replace(size=50)(x, torch.Generator().manual_seed(0)).shape == (4, 3, 50)


@pytest.mark.parametrize("modality,bad", [
    ("volume", {"crop_scale": (0.9, 0.5)}), ("volume", {"flip_p": 2}), ("volume", {"not_a_param": 1}),
    ("volume", {"size": (0, 4, 4)}), ("signal", {"crop_scale": (0, 2)}), ("signal", {"noise_std": -1}),
    ("signal", {"not_a_param": 1}),
])
def test_bad_view_parameters_are_refused(modality: str, bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        get_modality(modality).views(**bad)


@pytest.mark.gpu
@pytest.mark.parametrize("modality,make", CASES)
def test_views_are_the_same_on_cpu_and_gpu(modality: str, make: object) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = make()  # type: ignore[operator]
    views = get_modality(modality).views()
    cpu = views(x, torch.Generator().manual_seed(3))
    gpu = views(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)

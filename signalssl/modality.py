"""The signal modality's adapter: what the core asks of ECG/EEG windows (see :mod:`pretext.modality`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pretext.errors import ConfigError
from pretext.modality import Modality


class SignalModality(Modality):
    """ECG/EEG windows ``(C, T)``; encoders sized by ``n_chans``, ``n_times``, ``sfreq`` (braindecode's names)."""

    name = "signal"
    packages = {"task": ("signalssl.tasks",), "encoder": ("signalssl.encoders",),
            "data": ("signalssl.data", "signalssl.synthetic")}
    size_keys = ("n_chans", "n_times", "sfreq")
    bundle_file_patterns = ("*.npy",)
    bundle_data_type = "numpy"
    spatial_dims = 1
    hooks = {"bundle_transforms": "signalssl.bundle:signal_transforms",
             "bundle_input_spec": "signalssl.bundle:signal_input_spec", "views": "signalssl.views:adapter_views"}
    bundle_augment = {"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.5, "std": 0.01}
    audit_perturbation = "baseline wander (0.05-0.5 Hz) plus white noise"

    def encoder_kwargs(self, input_shape: Sequence[int], sfreq: float | None = None) -> dict[str, Any]:
        return {"n_chans": int(input_shape[0]), "n_times": int(input_shape[-1]), "sfreq": sfreq}

    def input_shape(self, kwargs: dict[str, Any], where: str) -> tuple[int, ...]:
        missing = [k for k in ("n_chans", "n_times") if k not in kwargs]
        if missing:
            raise ConfigError(f"{where} config has no {missing} and no input_shape; the bundle needs the window: "
                              "pass --encoder.n_chans/--encoder.n_times when exporting")
        return (int(kwargs["n_chans"]), int(kwargs["n_times"]))

    def perturb(self, x: torch.Tensor, generator: torch.Generator, sfreq: float | None = None) -> torch.Tensor:
        from signalssl.transforms import perturb_signal

        return perturb_signal(x, generator, sfreq=float(sfreq or 100.0))


ADAPTER = SignalModality()

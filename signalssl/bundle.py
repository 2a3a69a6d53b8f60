"""MONAI bundles of signal (ECG/EEG) models: what differs from volumes.

MONAI's Bundle Specification has a tensor type for signals (``"type": "series"``, ``"format":
"sequence"``, shape ``[C, N]``): the input ``image`` of a signal bundle is a window of ``C``
channels by ``N = n_times`` samples at ``sfreq`` Hz, and the metadata records the sampling rate,
the window length in seconds and the channel (lead) names. Inference reads ``.npy`` files of shape
``(C, T)`` with MONAI's ``NumpyReader``, applies the recorded normalisation (z-score per channel
where the data spec asked ``normalize=zscore``) and crops/pads to ``n_times`` samples. Filtering
and resampling (``bandpass``, ``notch``, ``sfreq`` options of the data spec) have no MONAI
transform: inputs must already be at ``sfreq`` and filtered alike; the metadata says so.

Export itself is :func:`pretext.bundle.export_bundle`, which calls into this module for signal
encoders; :func:`export_signal_bundle` is the same function under a signal name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["export_signal_bundle", "signal_input_spec", "signal_preprocessing", "signal_transforms"]


def signal_preprocessing(src: Any) -> dict[str, Any]:
    """What the data spec did to the windows: ``{"normalize", "sfreq", "bandpass", "notch", ...}``."""
    from pretext.data import parse_spec

    options: dict[str, Any] = {}
    spec = str(src.run_config.get("data") or "")
    if ":" in spec:
        try:
            options = parse_spec(spec)[2]
        except Exception:  # noqa: BLE001 - an odd spec only loses the description
            options = {}
    return {
        "normalize": str(options.get("normalize", "none")),
        "sfreq": src.sfreq or src.run_config.get("sfreq"),
        **{k: options[k] for k in ("bandpass", "notch", "window", "stride") if k in options},
    }


def signal_transforms(src: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``.npy`` ``(C, T)`` -> float32 ``(C, n_times)``, normalised as in training.

    Returns:
        ``(MONAI transform configs for key "image", description for the metadata)``.
    """
    pre = signal_preprocessing(src)
    n_times = int(src.input_shape[-1])
    xforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NumpyReader", "image_only": True,
         "ensure_channel_first": True, "channel_dim": 0},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]
    # crop/pad to the window first, then normalise it, as the training windows were
    xforms.append({"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": [n_times]})
    if pre["normalize"] == "zscore":
        xforms.append({"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True})
    norm = {"kind": "zscore", "per": "window and channel"} if pre["normalize"] == "zscore" else {"kind": "none"}
    return xforms, {"normalization": norm, "preprocessing": pre, "crop_or_pad_to": n_times}


def signal_input_spec(src: Any, imaging_modality: str, description: dict[str, Any]) -> dict[str, Any]:
    """``network_data_format.inputs.image`` of a signal bundle (MONAI type "series", format "sequence")."""
    c, n_times = int(src.input_shape[0]), int(src.input_shape[-1])
    sfreq = description["preprocessing"].get("sfreq")
    names = [str(n) for n in (src.run_config.get("channel_names") or [])]
    names = names if len(names) == c else [f"channel {i}" for i in range(c)]
    pre = description["preprocessing"]
    spec = {
        "type": "series", "format": "sequence", "modality": imaging_modality, "num_channels": c,
        "spatial_shape": [n_times], "dtype": "float32", "value_range": [], "is_patch_data": False,
        "channel_def": {str(i): n for i, n in enumerate(names)},
        "channel_names": names,
        "sampling_rate_hz": float(sfreq) if sfreq else None,
        "window_length_s": (n_times / float(sfreq)) if sfreq else None,
        "window_samples": n_times,
        "intensity_normalization": description["normalization"],
        "preprocessing": (
            f"NumpyReader .npy (C, T) -> EnsureTyped(float32) -> ResizeWithPadOrCropd({n_times})"
            + (" -> NormalizeIntensityd(channel_wise)" if pre["normalize"] == "zscore" else "")
            + f"; inputs must already be sampled at {sfreq} Hz"
            + (f", band-pass {pre['bandpass']} Hz" if pre.get("bandpass") else "")
            + (f", notch {pre['notch']} Hz" if pre.get("notch") else "")
            + " (no MONAI transform resamples or filters)"
        ),
    }
    return {k: v for k, v in spec.items() if v is not None}


def export_signal_bundle(checkpoint: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Export a signal encoder/classifier checkpoint as a MONAI bundle (see :func:`pretext.bundle.export_bundle`)."""
    from pretext.bundle import export_bundle

    return export_bundle(checkpoint, out, **kwargs)

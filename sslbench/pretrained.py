"""A pretraining run's encoder, rebuilt for labelled data: the weights and run config of a checkpoint
(``last.ckpt``, ``encoder.safetensors`` or the run folder), and the encoder re-sized to the data they are
evaluated on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretext.base import SSLData
from pretext.data import encoder_for_data
from pretext.errors import ConfigError, DataError
from sslbench.features import weights_id

_SIZE_KEYS = ("img_size", "n_times", "sfreq", "spatial_dims")
_CHANNEL_KEYS = ("in_channels", "n_chans")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Encoder weights and run config of a pretraining run.

    ``path`` is a ``.ckpt`` (loaded with ``weights_only=True``), an ``encoder.safetensors`` (config from its
    metadata), or a run folder (its ``checkpoints/last.ckpt``).

    Returns:
        ``(encoder state dict, run_config, resolved file path)``.
    """
    from pretext.engine.checkpoint import encoder_state, read_run

    state, p = read_run(path)
    run_config = state.get("run_config") or {}
    if not run_config.get("encoder"):
        what = "no run_config metadata" if p.suffix == ".safetensors" else "no run_config naming its encoder"
        raise DataError(f"checkpoint {str(p)!r} has {what}; it was not written by sslbench pretrain (pass the "
                        "run's checkpoints/last.ckpt or its encoder.safetensors)")
    model = state["model"]
    return (encoder_state(model) or model), run_config, p


def encoder_from_checkpoint(path: str | Path, data: SSLData) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the pretrained encoder for ``data`` and load its weights.

    The encoder is re-sized to the data (image size / length / rate) where its weights allow; the channel
    count must match.

    Raises:
        ConfigError: modality or channel count differs from the data's, or the weights do not fit.
    """
    state, rc, p = read_checkpoint(path)
    name = rc["encoder"]
    cfg = dict(rc.get("encoder_cfg") or {})
    if rc.get("modality") and rc["modality"] != data.modality:
        raise ConfigError(f"checkpoint {str(p)!r} holds a {rc['modality']} encoder but data {data.source!r} is "
                          f"{data.modality}; use a {data.modality} checkpoint")
    want = data.encoder_kwargs()
    for key in _CHANNEL_KEYS:
        if key in cfg and key in want and int(cfg[key]) != int(want[key]):
            raise ConfigError(
                f"checkpoint {str(p)!r} encoder {name!r} was pretrained with {key}={cfg[key]} but data "
                f"{data.source!r} has {want[key]} channel(s) (input shape {tuple(data.input_shape)}); select "
                f"{cfg[key]} channel(s) in the data spec or pretrain on data with {want[key]} channel(s)"
            )
    for key in _SIZE_KEYS + _CHANNEL_KEYS:
        cfg.pop(key, None)
    encoder = encoder_for_data(name, data, **cfg)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"the weights in {str(p)!r} do not fit encoder {name!r} built for {data.source!r} "
                          f"(input shape {tuple(data.input_shape)}): {str(err).splitlines()[0]}") from err
    return encoder, {"task": rc.get("task", "?"), "encoder": name, "encoder_cfg": cfg,
                     "weights": weights_id(p), "checkpoint": str(p)}


__all__ = ["encoder_from_checkpoint", "read_checkpoint"]

"""Choosing and checking the numeric precision for a device."""

from __future__ import annotations

import torch

from pretext.errors import ConfigError


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("accelerator='cuda' but no CUDA GPU is visible; use --accelerator cpu (or auto)")
    if accelerator not in ("cpu", "cuda", "mps", "gpu"):
        raise ConfigError(f"accelerator={accelerator!r} is not one of auto, cpu, cuda, mps")
    return "cuda" if accelerator == "gpu" else accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """Turn ``"auto"`` into a concrete precision and refuse what the device cannot do.

    ``auto``: ``bf16-mixed`` on GPUs that support bf16, ``16-mixed`` (with loss scaling) on older
    GPUs, ``32`` on CPU (CPU bf16 autocast is allowed when asked for, but is slower than fp32 on
    most CPUs).

    Raises:
        ConfigError: e.g. ``16-mixed`` on CPU, or ``bf16-mixed`` on a GPU without bf16.
    """
    accelerator = resolve_accelerator(accelerator)
    if precision == "auto":
        if accelerator == "cuda":
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32"
    if precision == "16-mixed" and accelerator != "cuda":
        raise ConfigError(f"precision='16-mixed' needs a CUDA GPU (device here: {accelerator}); use --precision 32 or bf16-mixed")
    if precision == "bf16-mixed" and accelerator == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision='bf16-mixed' is not supported by this GPU; use --precision 16-mixed (fp16 with loss scaling)")
    if precision not in ("bf16-mixed", "16-mixed", "32"):
        raise ConfigError(f"precision={precision!r} is not one of auto, bf16-mixed, 16-mixed, 32")
    return precision

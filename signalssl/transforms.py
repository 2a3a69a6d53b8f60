"""Signal augmentations as pure batched tensor functions, plus a thin sampler of their parameters.

Each ``apply_*`` function is deterministic given its parameters; :class:`SignalAugment` draws
the parameters from a CPU ``torch.Generator`` and moves them to the batch's device, so one seed
gives the same views on CPU and GPU (as in torchio: RandomNoise -> Noise -> get_noise).
Amplitudes are relative to each channel's standard deviation, so they are unit-free.

>>> aug = SignalAugment(("noise", "wander", "scale", "mask", "dropout"), sfreq=100.0)
>>> y = aug(x, torch.Generator().manual_seed(0))        # x: (B, C, T)
"""

from __future__ import annotations

import dataclasses
import math

import torch

from pretext.errors import ConfigError

__all__ = [
    "apply_baseline_wander", "apply_noise", "apply_scale", "apply_time_mask", "apply_lead_dropout",
    "AugmentParams", "SignalAugment", "AUGMENTATIONS",
]

AUGMENTATIONS = ("wander", "noise", "scale", "mask", "dropout")


def apply_baseline_wander(x: torch.Tensor, amplitude: torch.Tensor, freq_hz: torch.Tensor, phase: torch.Tensor,
                          sfreq: float) -> torch.Tensor:
    """Add a slow sinusoid per sample (respiration-like baseline wander).

    Args:
        x: ``(B, C, T)``.
        amplitude: ``(B, C)`` in the units of ``x``.
        freq_hz: ``(B,)`` frequency in Hz.
        phase: ``(B,)`` phase in radians.
        sfreq: sampling rate.
    """
    t = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) / sfreq
    wave = torch.sin(2 * math.pi * freq_hz[:, None] * t[None, :] + phase[:, None])  # (B, T)
    return x + amplitude[:, :, None] * wave[:, None, :]


def apply_noise(x: torch.Tensor, noise: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``x + std * noise`` with ``noise (B, C, T)`` standard normal and ``std (B, C)``."""
    return x + std[:, :, None] * noise


def apply_scale(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply each sample (``factor (B,)``) or channel (``factor (B, C)``) by a gain."""
    return x * (factor[:, None, None] if factor.ndim == 1 else factor[:, :, None])


def apply_time_mask(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Zero ``[start, start + length)`` of every channel of each sample (``start, length (B,)`` in samples)."""
    t = torch.arange(x.shape[-1], device=x.device)[None, :]
    keep = (t < start[:, None]) | (t >= (start + length)[:, None])  # (B, T)
    return x * keep[:, None, :].to(x.dtype)


def apply_lead_dropout(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero whole channels where ``keep (B, C)`` is false."""
    return x * keep[:, :, None].to(x.dtype)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Strengths of :class:`SignalAugment`.

    Attributes:
        p: probability that each chosen augmentation is applied to a sample.
        noise_std: Gaussian noise std, relative to each channel's std.
        wander_amp: baseline-wander amplitude, relative to each channel's std.
        wander_hz: range of the wander frequency in Hz.
        scale: range of the gain.
        mask_frac: maximum fraction of the window masked in time.
        dropout_p: probability of zeroing each channel (at least one channel is kept).
    """

    p: float = 0.5
    noise_std: float = 0.05
    wander_amp: float = 0.2
    wander_hz: tuple[float, float] = (0.05, 0.5)
    scale: tuple[float, float] = (0.8, 1.2)
    mask_frac: float = 0.1
    dropout_p: float = 0.2


class SignalAugment:
    """Apply the named augmentations, in the order of ``AUGMENTATIONS``, with random parameters.

    Args:
        names: subset of ("wander", "noise", "scale", "mask", "dropout").
        sfreq: sampling rate (for the wander frequency).
        params: strengths.
    """

    def __init__(self, names: tuple[str, ...] | list[str], sfreq: float = 100.0,
                 params: AugmentParams | None = None) -> None:
        bad = sorted(set(names) - set(AUGMENTATIONS))
        if bad:
            raise ConfigError(f"unknown augmentation(s) {bad}; choose from {AUGMENTATIONS}")
        self.names = tuple(n for n in AUGMENTATIONS if n in names)
        self.sfreq, self.params = float(sfreq), params or AugmentParams()

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, C, T) -> (B, C, T)``; parameters drawn on the CPU from ``generator``."""
        if not self.names:
            return x
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        b, c, t = x.shape
        q = self.params
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g)

        def on(v: torch.Tensor) -> torch.Tensor:
            return v.to(dev)

        std = x.detach().float().std(-1).clamp(min=1e-6).to(x.dtype)  # (B, C)
        for name in self.names:
            apply = on(rand(b) < q.p)  # (B,)
            if name == "wander":
                lo, hi = q.wander_hz
                amp = on(rand(b, 1)) * q.wander_amp * std * apply[:, None]
                y = apply_baseline_wander(x, amp, on(lo + (hi - lo) * rand(b)), on(2 * math.pi * rand(b)), self.sfreq)
            elif name == "noise":
                noise = on(torch.randn(b, c, t, generator=g)).to(x.dtype)
                y = apply_noise(x, noise, q.noise_std * std * apply[:, None])
            elif name == "scale":
                lo, hi = q.scale
                f = on(lo + (hi - lo) * rand(b)).to(x.dtype)
                y = apply_scale(x, torch.where(apply, f, torch.ones_like(f)))
            elif name == "mask":
                length = (on(rand(b)) * q.mask_frac * t).long() * apply
                start = (on(rand(b)) * (t - length).clamp(min=1)).long()
                y = apply_time_mask(x, start, length)
            else:  # dropout
                keep = on(rand(b, c) >= q.dropout_p)
                keep[torch.arange(b, device=dev), on(torch.randint(c, (b,), generator=g))] = True
                y = apply_lead_dropout(x, keep | ~apply[:, None])
            x = y
        return x


def perturb_signal(x: torch.Tensor, generator: torch.Generator, sfreq: float = 100.0, wander: float = 0.1,
                   noise: float = 0.03) -> torch.Tensor:
    """Baseline wander (0.05-0.5 Hz) and white noise, relative to each channel's standard deviation.

    Args:
        x: ``(B, C, T)`` signals.
        generator: CPU generator for the random parameters.
        sfreq: sampling rate in Hz.
        wander: wander amplitude as a fraction of the channel's std.
        noise: noise std as a fraction of the channel's std.

    Returns:
        ``(B, C, T)`` perturbed signals (same dtype and device).
    """
    b, c, t = x.shape
    std = x.float().std(dim=-1, keepdim=True).clamp_min(1e-6)
    freq = 0.05 + 0.45 * torch.rand(b, c, 1, generator=generator)
    phase = 2 * torch.pi * torch.rand(b, c, 1, generator=generator)
    time = torch.arange(t, dtype=torch.float32) / sfreq
    drift = torch.sin(2 * torch.pi * freq * time + phase).to(x.device)
    white = torch.randn(b, c, t, generator=generator).to(x.device)
    return (x.float() + std * (wander * drift + noise * white)).to(x.dtype)

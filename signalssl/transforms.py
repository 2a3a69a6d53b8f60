"""Signal augmentations in the three layers of :mod:`pretext.transforms`, batched over ``(B, C, T)``.

Each ``Random*`` class draws its parameters from a CPU ``torch.Generator`` (``get_params(batch_shape,
generator)``) and returns the deterministic transform holding them; its ``apply(x)`` moves them to the
batch's device and calls the pure function (``apply_*``). One seed gives the same views on CPU and GPU.
Amplitudes are relative to each channel's standard deviation (measured on the transform's input), so
they are unit-free.

* baseline wander: :class:`RandomBaselineWander` -> :class:`BaselineWander` -> :func:`apply_baseline_wander`;
* Gaussian noise: :class:`RandomNoise` -> :class:`Noise` -> :func:`apply_noise`;
* gain: :class:`RandomScale` -> :class:`Scale` -> :func:`apply_scale`;
* time mask: :class:`RandomTimeMask` -> :class:`TimeMask` -> :func:`apply_time_mask`;
* lead dropout: :class:`RandomLeadDropout` -> :class:`LeadDropout` -> :func:`apply_lead_dropout`;
* :class:`SignalAugment` composes the named ones (PCLR's views); :func:`perturb_signal` is the embedding
  audit's wander + noise.

>>> aug = SignalAugment(("noise", "wander", "scale", "mask", "dropout"), sfreq=100.0)
>>> y = aug(x, torch.Generator().manual_seed(0))        # x: (B, C, T)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from pretext.errors import ConfigError
from pretext.transforms import Chain, Compose, RandomTransform, Transform, check_probability

__all__ = [
    "AUGMENTATIONS", "AugmentParams", "BaselineWander", "LeadDropout", "Noise", "RandomBaselineWander",
    "RandomLeadDropout", "RandomNoise", "RandomPerturbation", "RandomScale", "RandomTimeMask", "Scale",
    "SignalAugment", "TimeMask",
    "apply_baseline_wander", "apply_lead_dropout", "apply_noise", "apply_scale", "apply_time_mask", "channel_std",
    "perturb_signal",
]

AUGMENTATIONS = ("wander", "noise", "scale", "mask", "dropout")


# -- pure functions ----------------------------------------------------------------------------------


def channel_std(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each channel over time, at least 1e-6: ``(B, C, T) -> (B, C)`` in ``x``'s dtype."""
    return x.detach().float().std(-1).clamp(min=1e-6).to(x.dtype)


def apply_baseline_wander(x: torch.Tensor, amplitude: torch.Tensor, freq_hz: torch.Tensor, phase: torch.Tensor,
                          sfreq: float) -> torch.Tensor:
    """Add a slow sinusoid (respiration-like baseline wander).

    Args:
        x: ``(B, C, T)``.
        amplitude: ``(B, C)`` in the units of ``x``.
        freq_hz: ``(B,)`` frequency in Hz per sample, or ``(B, C)`` per channel.
        phase: ``(B,)`` or ``(B, C)`` phase in radians (same shape as ``freq_hz``).
        sfreq: sampling rate.
    """
    t = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) / sfreq
    if freq_hz.ndim == 1:
        freq_hz, phase = freq_hz[:, None], phase[:, None]  # one wave for all channels
    wave = torch.sin(2 * math.pi * freq_hz[..., None] * t + phase[..., None])  # (B, 1 or C, T)
    return x + amplitude[:, :, None] * wave


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


# -- deterministic transforms ----------------------------------------------------------------------------


@dataclasses.dataclass
class BaselineWander(Transform):
    """Fixed wander: ``amplitude (B, 1 or C)`` relative to the channel std, ``freq_hz``/``phase`` ``(B,)`` or
    ``(B, C)``, at ``sfreq`` Hz."""

    amplitude: torch.Tensor
    freq_hz: torch.Tensor
    phase: torch.Tensor
    sfreq: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        amp = self.amplitude.to(dev, x.dtype) * channel_std(x)
        return apply_baseline_wander(x, amp, self.freq_hz.to(dev), self.phase.to(dev), self.sfreq)


@dataclasses.dataclass
class Noise(Transform):
    """Fixed Gaussian noise: ``noise (B, C, T)`` standard normal, ``std (B, 1 or C)`` relative to the channel std."""

    noise: torch.Tensor
    std: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        std = self.std.to(x.device, x.dtype) * channel_std(x)
        return apply_noise(x, self.noise.to(x.device, x.dtype), std)


@dataclasses.dataclass
class Scale(Transform):
    """Fixed gains: ``factor (B,)`` or ``(B, C)``."""

    factor: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return apply_scale(x, self.factor.to(x.device, x.dtype))


@dataclasses.dataclass
class TimeMask(Transform):
    """Fixed time masks: ``start, length (B,)`` in samples."""

    start: torch.Tensor
    length: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return apply_time_mask(x, self.start.to(x.device), self.length.to(x.device))


@dataclasses.dataclass
class LeadDropout(Transform):
    """Fixed channel dropout: ``keep (B, C)`` bool."""

    keep: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return apply_lead_dropout(x, self.keep.to(x.device))


# -- random transforms (each draws "apply or not" per sample first, then its parameters) -------------------


def _chosen(b: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(b, generator=generator) < p


class RandomBaselineWander(RandomTransform):
    """With probability ``p`` per sample: a sinusoid of amplitude ``U(0, amplitude)`` channel stds, frequency
    ``U(freq_hz)`` and a random phase (one wave for all channels)."""

    def __init__(self, p: float = 0.5, amplitude: float = 0.2, freq_hz: tuple[float, float] = (0.05, 0.5),
                 sfreq: float = 100.0) -> None:
        check_probability(p=p)
        self.p, self.amplitude, self.freq_hz, self.sfreq = float(p), float(amplitude), tuple(freq_hz), float(sfreq)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> BaselineWander:
        """Draws ``(B,)`` apply, ``(B, 1)`` amplitude, ``(B,)`` frequency, ``(B,)`` phase uniforms."""
        b = int(batch_shape[0])
        chosen = _chosen(b, self.p, generator)
        amp = torch.rand(b, 1, generator=generator) * self.amplitude * chosen[:, None]
        lo, hi = self.freq_hz
        freq = lo + (hi - lo) * torch.rand(b, generator=generator)
        return BaselineWander(amp, freq, 2 * math.pi * torch.rand(b, generator=generator), self.sfreq)


class RandomNoise(RandomTransform):
    """With probability ``p`` per sample: white Gaussian noise of ``std`` channel stds."""

    def __init__(self, p: float = 0.5, std: float = 0.05) -> None:
        check_probability(p=p)
        self.p, self.std = float(p), float(std)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Noise:
        """Draws ``(B,)`` apply uniforms, then ``batch_shape`` standard normals."""
        b = int(batch_shape[0])
        chosen = _chosen(b, self.p, generator)
        noise = torch.randn(tuple(batch_shape), generator=generator)
        return Noise(noise, self.std * chosen[:, None].float())


class RandomScale(RandomTransform):
    """With probability ``p`` per sample: a gain ``U(factor)``."""

    def __init__(self, p: float = 0.5, factor: tuple[float, float] = (0.8, 1.2)) -> None:
        check_probability(p=p)
        self.p, self.factor = float(p), tuple(factor)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Scale:
        """Draws ``(B,)`` apply, then ``(B,)`` gain uniforms."""
        b = int(batch_shape[0])
        chosen = _chosen(b, self.p, generator)
        lo, hi = self.factor
        f = lo + (hi - lo) * torch.rand(b, generator=generator)
        return Scale(torch.where(chosen, f, torch.ones_like(f)))


class RandomTimeMask(RandomTransform):
    """With probability ``p`` per sample: zero a window of up to ``max_frac`` of the signal."""

    def __init__(self, p: float = 0.5, max_frac: float = 0.1) -> None:
        check_probability(p=p, max_frac=max_frac)
        self.p, self.max_frac = float(p), float(max_frac)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> TimeMask:
        """Draws ``(B,)`` apply, ``(B,)`` length and ``(B,)`` start uniforms."""
        b, t = int(batch_shape[0]), int(batch_shape[-1])
        chosen = _chosen(b, self.p, generator)
        length = (torch.rand(b, generator=generator) * self.max_frac * t).long() * chosen
        start = (torch.rand(b, generator=generator) * (t - length).clamp(min=1)).long()
        return TimeMask(start, length)


class RandomLeadDropout(RandomTransform):
    """With probability ``p`` per sample: zero each channel with probability ``drop_p`` (one channel is kept)."""

    def __init__(self, p: float = 0.5, drop_p: float = 0.2) -> None:
        check_probability(p=p, drop_p=drop_p)
        self.p, self.drop_p = float(p), float(drop_p)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> LeadDropout:
        """Draws ``(B,)`` apply, ``(B, C)`` drop uniforms, then ``(B,)`` the channel always kept."""
        b, c = int(batch_shape[0]), int(batch_shape[1])
        chosen = _chosen(b, self.p, generator)
        keep = torch.rand(b, c, generator=generator) >= self.drop_p
        keep[torch.arange(b), torch.randint(c, (b,), generator=generator)] = True
        return LeadDropout(keep | ~chosen[:, None])


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


class SignalAugment(Compose):
    """The named augmentations, in the order of ``AUGMENTATIONS``, with random parameters.

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
        q = self.params
        make = {
            "wander": lambda: RandomBaselineWander(q.p, q.wander_amp, q.wander_hz, self.sfreq),
            "noise": lambda: RandomNoise(q.p, q.noise_std),
            "scale": lambda: RandomScale(q.p, q.scale),
            "mask": lambda: RandomTimeMask(q.p, q.mask_frac),
            "dropout": lambda: RandomLeadDropout(q.p, q.dropout_p),
        }
        super().__init__([make[n]() for n in self.names])


# -- the embedding audit's perturbation ------------------------------------------------------------------


class RandomPerturbation(RandomTransform):
    """Baseline wander (``U(0.05, 0.5)`` Hz, random phase, per channel) of ``wander`` channel stds, then white
    noise of ``noise`` channel stds; always applied."""

    def __init__(self, sfreq: float = 100.0, wander: float = 0.1, noise: float = 0.03) -> None:
        self.sfreq, self.wander, self.noise = float(sfreq), float(wander), float(noise)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> Chain:
        """Draws ``(B, C)`` frequency and ``(B, C)`` phase uniforms, then ``batch_shape`` standard normals."""
        b, c = int(batch_shape[0]), int(batch_shape[1])
        freq = 0.05 + 0.45 * torch.rand(b, c, generator=generator)
        phase = 2 * math.pi * torch.rand(b, c, generator=generator)
        white = torch.randn(tuple(batch_shape), generator=generator)
        return Chain((BaselineWander(torch.full((b, c), self.wander), freq, phase, self.sfreq),
                      Noise(white, torch.full((b, c), self.noise))))


def perturb_signal(x: torch.Tensor, generator: torch.Generator, sfreq: float = 100.0, wander: float = 0.1,
                   noise: float = 0.03) -> torch.Tensor:
    """The embedding audit's perturbation: ``RandomPerturbation(sfreq, wander, noise)`` computed in float32.

    Args:
        x: ``(B, C, T)`` signals.
        generator: CPU generator for the random parameters.
        sfreq: sampling rate in Hz.
        wander: wander amplitude as a fraction of the channel's std.
        noise: noise std as a fraction of the channel's std.

    Returns:
        ``(B, C, T)`` perturbed signals (same dtype and device).
    """
    return RandomPerturbation(sfreq, wander, noise)(x.float(), generator).to(x.dtype)

"""Preprocessing of one signal record, run once at ingest: channel selection and order, notch and band-pass
filters (zero-phase, at the native rate), then resampling (the volume side's is :mod:`volssl.preprocess`).

>>> rec = preprocess(read_record("validation/A00001"), sfreq=100, bandpass_hz=(0.5, 40), channels=["I"])
>>> rec.signal.shape                                   # (C, T)

Per-window normalisation (``normalize=zscore``) happens at load time, in :class:`signalssl.sampling.SignalSplit`.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from pretext.errors import DataError, UserError
from signalssl.io import Record

__all__ = ["preprocess", "resample", "bandpass", "notch", "select_channels", "match_channels", "zscore"]


def _norm_name(name: str) -> str:
    n = name.strip().lower()
    for prefix in ("eeg ", "ecg ", "eog ", "emg ", "ekg "):
        if n.startswith(prefix):
            n = n[len(prefix):]
    for suffix in ("-ref", "-le", "-ar"):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    return n.replace(" ", "")


def match_channels(available: list[str], wanted: list[str], where: str = "") -> list[int]:
    """Indices of ``wanted`` channels in ``available``: exact, then case/prefix-insensitive.

    ``"F3"`` matches ``"EEG F3"`` and ``"avr"`` matches ``"aVR"``.

    Raises:
        DataError: a wanted channel is absent or ambiguous (the message lists what is there).
    """
    out = []
    norm = [_norm_name(a) for a in available]
    for w in wanted:
        if w in available:
            out.append(available.index(w))
            continue
        hits = [i for i, n in enumerate(norm) if n == _norm_name(w)]
        if len(hits) != 1:
            what = "is missing" if not hits else f"is ambiguous ({[available[i] for i in hits]})"
            raise DataError(f"{where or 'record'}: channel {w!r} {what}; available channels: {available}; "
                            "fix the channel list (option channels=...)")
        out.append(hits[0])
    return out


def select_channels(rec: Record, channels: list[str]) -> Record:
    """Keep ``channels`` in the given order (names matched by :func:`match_channels`)."""
    idx = match_channels(rec.channels, list(channels), rec.path)
    return dataclasses.replace(rec, signal=rec.signal[idx], channels=[rec.channels[i] for i in idx],
                               units=[rec.units[i] for i in idx])


def resample(x: np.ndarray, sfreq: float, target: float) -> np.ndarray:
    """Polyphase resampling of ``(C, T)`` from ``sfreq`` to ``target`` Hz (anti-aliased)."""
    from scipy.signal import resample_poly

    if math.isclose(sfreq, target):
        return x
    frac = Fraction(target / sfreq).limit_denominator(1000)
    return resample_poly(x, frac.numerator, frac.denominator, axis=-1).astype(np.float32)


def bandpass(x: np.ndarray, sfreq: float, low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or high/low-pass when one edge is ``None``) of ``(C, T)``."""
    from scipy.signal import butter, sosfiltfilt

    nyq = sfreq / 2
    if high is not None and high >= nyq:
        raise UserError(f"band-pass high edge {high} Hz must be below Nyquist ({nyq:g} Hz at {sfreq:g} Hz)")
    if low is not None and high is not None and low >= high:
        raise UserError(f"band-pass edges must satisfy low < high, got ({low}, {high})")
    if low is None and high is None:
        return x
    if low is None:
        sos = butter(order, high, "lowpass", fs=sfreq, output="sos")
    elif high is None:
        sos = butter(order, low, "highpass", fs=sfreq, output="sos")
    else:
        sos = butter(order, [low, high], "bandpass", fs=sfreq, output="sos")
    return sosfiltfilt(sos, x, axis=-1).astype(np.float32)


def notch(x: np.ndarray, sfreq: float, freq: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase IIR notch at ``freq`` Hz (mains: 50 or 60) of ``(C, T)``."""
    from scipy.signal import filtfilt, iirnotch

    if not 0 < freq < sfreq / 2:
        raise UserError(f"notch frequency {freq} Hz must lie in (0, {sfreq / 2:g}) at {sfreq:g} Hz")
    b, a = iirnotch(freq, quality, fs=sfreq)
    return filtfilt(b, a, x, axis=-1).astype(np.float32)


def preprocess(
    rec: Record,
    sfreq: float | None = None,
    channels: list[str] | None = None,
    bandpass_hz: tuple[float | None, float | None] | None = None,
    notch_hz: float | None = None,
) -> Record:
    """Channel order, filters (at the native rate), then resampling to ``sfreq``.

    Args:
        rec: the record.
        sfreq: target rate in Hz (``None`` keeps the native one).
        channels: explicit channel order (names; see :func:`match_channels`).
        bandpass_hz: ``(low, high)`` edges in Hz, either may be ``None``.
        notch_hz: mains frequency to notch out.
    """
    if channels:
        rec = select_channels(rec, channels)
    x = rec.signal
    min_len = 3 * 9  # filtfilt padding needs a few samples
    if (bandpass_hz or notch_hz) and x.shape[1] <= min_len:
        raise DataError(f"{rec.path}: {x.shape[1]} samples are too few to filter")
    if notch_hz:
        x = notch(x, rec.sfreq, float(notch_hz))
    if bandpass_hz:
        x = bandpass(x, rec.sfreq, *bandpass_hz)
    new_rate = rec.sfreq
    if sfreq is not None and not math.isclose(float(sfreq), rec.sfreq):
        x = resample(x, rec.sfreq, float(sfreq))
        new_rate = float(sfreq)
    return dataclasses.replace(rec, signal=np.ascontiguousarray(x, dtype=np.float32), sfreq=new_rate)


def zscore(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-channel z-score of ``(C, T)`` samples (``normalize=zscore``)."""
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + eps)

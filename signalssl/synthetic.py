"""Synthetic 12-lead ECGs with patient-specific morphology and four rhythm classes.

Data kind ``synthetic_ecg`` (spec ``synthetic_ecg:[CACHE_DIR]?n_patients=400&seed=0``) made for the
demo and the tests: it needs no download and generates a few thousand recordings in seconds.

The model is a cardiac-dipole sum of Gaussian waves (P, Q, R, S, T and, for bundle-branch block,
a terminal R'), in the spirit of ECGSYN (McSharry et al. 2003, also behind ``neurokit2.ecg_simulate``)
but vectorised and projected on 12 lead vectors so the leads stay physiologically consistent
(Einthoven's law ``III = II - I`` holds exactly before noise)::

    lead_l(t) = sum_w <L_l, R_p d_w> * sum_b a_wb * exp(-(t - t_b - mu_w)^2 / (2 sigma_w^2))

with ``L`` the (12, 3) lead vectors, ``d_w`` a wave's dipole direction, ``R_p`` a patient rotation
(electrical axis) and ``t_b`` the beat times. Each patient has their own heart rate, amplitude, axis,
PR/QT intervals and QRS width, a sex, an age and a recording site; each recording adds electrode
jitter, baseline wander, muscle noise, powerline hum (where the sampling rate resolves it) and gain.

Classes (one per patient, all their recordings):
    0 ``normal_sinus``: 50-95 bpm, respiratory sinus arrhythmia, P waves.
    1 ``af_like``: irregular RR (log-normal, CV ~0.2), no P waves, 4-8 Hz fibrillatory waves.
    2 ``sinus_tachycardia``: 105-160 bpm, regular, P waves, shortened PR/QT.
    3 ``wide_qrs_bbb``: bundle-branch-like QRS of 130-170 ms with a terminal R' (RSR' in V1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pretext.base import SSLData, repeated_patient_splits
from pretext.data import cached_generated
from pretext.errors import ConfigError
from pretext.registry import register_data

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CLASSES = ["normal_sinus", "af_like", "sinus_tachycardia", "wide_qrs_bbb"]
SITES = ["site_a", "site_b", "site_c"]
# per site: gain, muscle-noise std (mV), mains frequency (Hz), mains amplitude (mV)
_SITE_PROFILE = {0: (1.0, 0.010, 50.0, 0.02), 1: (1.15, 0.020, 60.0, 0.04), 2: (0.9, 0.015, 50.0, 0.0)}
_WAVES = ["P", "Q", "R", "S", "T", "Rp"]


def lead_vectors() -> np.ndarray:
    """Lead directions in heart coordinates (x: patient's left, y: inferior, z: anterior).

    Returns:
        ``(12, 3)`` array in :data:`LEADS` order; limb leads obey Einthoven/Goldberger exactly.
    """
    lead_i = np.array([1.0, 0.0, 0.0])
    lead_ii = np.array([np.cos(np.pi / 3), np.sin(np.pi / 3), 0.0])
    lead_iii = lead_ii - lead_i
    limb = [lead_i, lead_ii, lead_iii, -(lead_i + lead_ii) / 2, (lead_i - lead_iii) / 2, (lead_ii + lead_iii) / 2]
    angles = np.deg2rad([115.0, 90.0, 70.0, 50.0, 25.0, 0.0])  # horizontal plane, from left towards anterior
    scale = np.array([0.9, 1.3, 1.4, 1.3, 1.1, 0.9])
    chest = [s * np.array([np.cos(a), 0.15, np.sin(a)]) for a, s in zip(angles, scale, strict=True)]
    return np.stack(limb + chest)


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def _rotation(frontal: float, horizontal: float) -> np.ndarray:
    """Rotation by ``frontal`` radians in the x-y plane, then ``horizontal`` in the x-z plane."""
    cf, sf, ch, sh = np.cos(frontal), np.sin(frontal), np.cos(horizontal), np.sin(horizontal)
    rf = np.array([[cf, -sf, 0.0], [sf, cf, 0.0], [0.0, 0.0, 1.0]])
    rh = np.array([[ch, 0.0, -sh], [0.0, 1.0, 0.0], [sh, 0.0, ch]])
    return rh @ rf


def patient_table(n_patients: int, seed: int) -> pd.DataFrame:
    """Per-patient class, demographics and morphology parameters (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0xEC6])
    classes = rng.permutation(np.arange(n_patients) % len(CLASSES))
    sex = rng.choice(np.array(["F", "M"]), size=n_patients)
    age = np.clip(rng.normal(55, 15, n_patients) + 8 * (classes == 1), 18, 95).round().astype(int)
    site = rng.integers(0, len(SITES), n_patients)
    male = sex == "M"
    hr = np.where(classes == 2, rng.uniform(105, 160, n_patients), rng.uniform(52, 92, n_patients) + 3 * ~male)
    hr = np.where(classes == 1, rng.uniform(75, 130, n_patients), hr)
    return pd.DataFrame(
        {
            "patient": [f"ecg{p:05d}" for p in range(n_patients)],
            "label": classes,
            "sex": sex,
            "age": age,
            "site": np.array(SITES)[site],
            "site_id": site,
            "hr": hr,
            "amp": rng.lognormal(0.0, 0.2, n_patients) * np.where(male, 1.1, 0.9),
            "axis": np.deg2rad(rng.normal(50, 20, n_patients) - 0.2 * (age - 55)),
            "horiz": np.deg2rad(rng.normal(0, 12, n_patients)),
            "pr": rng.uniform(0.13, 0.20, n_patients),
            "qtc": rng.uniform(0.36, 0.44, n_patients) + 0.015 * ~male,
            "qrs": np.where(classes == 3, rng.uniform(1.7, 2.3, n_patients), rng.uniform(0.85, 1.15, n_patients)),
            "t_amp": rng.uniform(0.2, 0.45, n_patients),
            "p_amp": rng.uniform(0.08, 0.2, n_patients),
            "t_rot": np.deg2rad(rng.normal(0, 15, n_patients)),
        }
    )


def beat_times(label: int, hr: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """R-peak times (s) covering ``[-1, seconds + 1]`` for a rhythm class."""
    rr0 = 60.0 / (hr * rng.uniform(0.95, 1.05))
    n = int(np.ceil((seconds + 2.0) / (0.6 * rr0))) + 2
    if label == 1:  # AF: irregularly irregular
        rr = rr0 * rng.lognormal(-0.02, 0.2, n)
    else:
        k = np.arange(n)
        resp = (0.04 if label != 2 else 0.01) * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * k * rr0 + rng.uniform(0, 6.3))
        rr = rr0 * (1 + resp + rng.normal(0, 0.01, n))
    rr = np.maximum(rr, 0.27)
    return -1.0 + rng.uniform(0, rr0) + np.concatenate([[0.0], np.cumsum(rr[:-1])])


def _wave_params(pt: Any, rr: float, label: int) -> dict[str, tuple[float, float, float, np.ndarray]]:
    """Per wave: (offset from R s, width s, amplitude mV, dipole direction (3,))."""
    w = pt.qrs
    axis_r = _unit([np.cos(pt.axis), np.sin(pt.axis), -0.45])
    t_dir = _rotation(pt.t_rot, 0.0) @ _unit([np.cos(pt.axis), np.sin(pt.axis), 0.05])
    qt = pt.qtc * np.sqrt(rr)
    params = {
        "P": (-min(pt.pr, 0.35 * rr), 0.022, pt.p_amp, _unit([0.55, 0.8, 0.15])),
        "Q": (-0.022 * w, 0.007 * w, 0.12, _unit([-0.6, -0.15, 0.75])),
        "R": (0.0, 0.0095 * w, 1.2, axis_r),
        "S": (0.028 * w, 0.009 * w, 0.35, _unit([-0.4, -0.6, -0.5])),
        "T": (qt - 0.09, 0.045 + 0.02 * np.sqrt(rr), pt.t_amp, t_dir),
        "Rp": (0.0, 1.0, 0.0, np.zeros(3)),
    }
    if label == 3:  # terminal rightward-anterior slow depolarisation; discordant T in V1
        params["Rp"] = (0.05 * w, 0.012 * w, 0.55, _unit([-0.55, 0.05, 0.85]))
        params["T"] = (qt - 0.08, 0.05, pt.t_amp, _rotation(0.0, -0.6) @ t_dir)
    if label == 1:
        params["P"] = (0.0, 1.0, 0.0, np.zeros(3))
    return params


def simulate_recording(pt: Any, rec: int, n_times: int, sfreq: float, seed: int, noise: float = 1.0) -> np.ndarray:
    """One 12-lead recording of patient ``pt`` (a row of :func:`patient_table`).

    Args:
        pt: patient parameters (``itertuples`` row).
        rec: recording number of this patient (seeds electrode jitter, noise, beats).
        n_times: samples per lead.
        sfreq: sampling rate in Hz.
        seed: dataset seed.
        noise: multiplier of every noise source (0 gives the clean signal).

    Returns:
        ``(12, n_times)`` float32 array in mV.
    """
    rng = np.random.default_rng([seed, int(pt.Index), rec, 0x5EC])
    label = int(pt.label)
    t = np.arange(n_times) / sfreq
    beats = beat_times(label, pt.hr, n_times / sfreq, rng)
    rr = float(np.median(np.diff(beats)))
    rot = _rotation(rng.normal(0, np.deg2rad(4)), pt.horiz + rng.normal(0, np.deg2rad(4)))  # axis is in the dipoles
    leads = lead_vectors() + rng.normal(0, 0.04, (12, 3))  # electrode placement jitter
    beat_amp = 1 + rng.normal(0, 0.03, beats.size)  # beat-to-beat (respiration) amplitude
    params = _wave_params(pt, rr, label)
    courses, dirs = [], []
    for name in _WAVES:
        mu, sigma, amp, direction = params[name]
        if amp == 0:
            continue
        centre = beats[:, None] + mu
        courses.append(((amp * beat_amp)[:, None] * np.exp(-0.5 * ((t[None, :] - centre) / sigma) ** 2)).sum(0))
        dirs.append(rot @ direction)
    sig = pt.amp * (leads @ np.stack(dirs, 1)) @ np.stack(courses)  # (12, W) @ (W, T)
    if label == 1:  # fibrillatory waves, strongest in V1 and the inferior leads
        f = rng.uniform(4.0, 8.0) + np.cumsum(rng.normal(0, 0.02, n_times))
        fwave = rng.uniform(0.03, 0.1) * np.sin(2 * np.pi * np.cumsum(f) / sfreq + rng.uniform(0, 6.3))
        sig = sig + np.outer(leads @ _unit([-0.2, 0.5, 0.85]), fwave)
    gain, emg, mains_hz, mains_amp = _SITE_PROFILE[int(pt.site_id)]
    if noise > 0:
        wander = sum(
            rng.uniform(0.02, 0.15, (12, 1)) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3, (12, 1)))
            for _ in range(2)
        )
        sig = sig + noise * (wander + rng.normal(0, emg, sig.shape) * rng.uniform(0.5, 2.0))
        if sfreq > 2.5 * mains_hz and mains_amp > 0:
            sig = sig + noise * mains_amp * np.sin(2 * np.pi * mains_hz * t + rng.uniform(0, 6.3, (12, 1)))
    return (gain * rng.uniform(0.95, 1.05) * sig).astype(np.float32)


def generate(n_patients: int, recordings_per_patient: int, sfreq: float, seconds: float, seed: int,
             noise: float = 1.0) -> np.ndarray:
    """All recordings, patient-major: ``(n_patients * recordings_per_patient, 12, T)`` float32 in mV."""
    table = patient_table(n_patients, seed)
    n_times = int(round(sfreq * seconds))
    x = np.empty((n_patients * recordings_per_patient, len(LEADS), n_times), dtype=np.float32)
    for pt in table.itertuples():
        for r in range(recordings_per_patient):
            x[pt.Index * recordings_per_patient + r] = simulate_recording(pt, r, n_times, sfreq, seed, noise)
    return x


@register_data("synthetic_ecg", modality="signal", virtual=True)
def load_synthetic_ecg(path: str = "", n_patients: int = 400, recordings_per_patient: int = 3, sfreq: float = 100.0,
                       seconds: float = 10.0, seed: int = 0, noise: float = 1.0, val_fraction: float = 0.2,
                       test_fraction: float = 0.2) -> SSLData:
    """Generate (or read from the cache folder ``path``) the synthetic 12-lead ECG data set.

    Args:
        path: cache folder ("" keeps everything in memory); the signals are stored there as ``.npy``.
        n_patients: patients (classes are balanced over patients).
        recordings_per_patient: recordings of each patient (same class, new beats/noise/electrodes).
        sfreq: sampling rate in Hz.
        seconds: length of each recording.
        seed: everything is a deterministic function of the options.
        noise: multiplier of the noise sources (0 = clean).
        val_fraction: fraction of patients in "val" (patient-wise, stratified by class).
        test_fraction: fraction of patients in "test".

    Returns:
        SSLData with "train", "val", "test" splits; labels are rhythm classes (:data:`CLASSES`),
        ``meta`` has patient, recording, sex, age and site.
    """
    n_times = int(round(float(sfreq) * float(seconds)))
    if int(n_patients) < 2 * len(CLASSES) or int(recordings_per_patient) < 1:
        raise ConfigError(f"{n_patients=} must be >= {2 * len(CLASSES)} and {recordings_per_patient=} >= 1")
    if float(sfreq) < 50 or n_times < float(sfreq):
        raise ConfigError(f"{sfreq=} must be >= 50 Hz and {seconds=} >= 1 s")
    opts = dict(n_patients=int(n_patients), recordings_per_patient=int(recordings_per_patient), sfreq=float(sfreq),
                seconds=float(seconds), seed=int(seed), noise=float(noise))
    x = _cached(path, opts)
    table = patient_table(opts["n_patients"], opts["seed"])
    splits = repeated_patient_splits(x, table, opts["recordings_per_patient"], float(val_fraction), float(test_fraction), opts["seed"], "recording")
    return SSLData(
        modality="signal", splits=splits, input_shape=(len(LEADS), n_times), num_classes=len(CLASSES),
        class_names=list(CLASSES), sfreq=float(sfreq), channel_names=list(LEADS),
        meta={"generator": "signalssl.synthetic", "units": "mV", **opts},
    )


def _cached(path: str, opts: dict[str, Any]) -> np.ndarray:
    """Data for ``opts``, read from / written to the cache folder ``path`` when one is given."""
    return cached_generated(path, "synthetic_ecg", opts, generate, opts["n_patients"] * opts["recordings_per_patient"])

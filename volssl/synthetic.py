"""Synthetic 3D abdominal phantoms with three lesion classes.

Data kind ``synthetic_phantom3d`` (spec ``synthetic_phantom3d:[CACHE_DIR]?n_patients=300&size=32``) made
for the demo and the tests: no download, a few hundred volumes in seconds, deterministic in the seed.

Each volume is an axial stack through a CT-like abdomen in ``[0, 1]`` intensities: a body ellipse with
a subcutaneous fat ring, liver, spleen, two kidneys, aorta and spine, each an ellipsoid with soft
(partial-volume) edges, smooth organ texture and white noise. Patients differ in body size (by sex),
organ sizes, positions and contrasts, and the liver's orientation; each of their scans adds a small
pose change, scanner gain/offset and noise (site-dependent). The lesion, when present, sits in the
liver at a patient-fixed position:

    0 ``no_lesion``
    1 ``small_hypodense``: radius 2-3 voxels at 32^3, 0.12-0.18 darker than the liver.
    2 ``large_hyperdense``: radius 4-5 voxels at 32^3, 0.15-0.25 brighter than the liver.

Axes are ``(D, H, W)`` = (z: feet -> head, y: anterior -> posterior, x: patient right -> left).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from pretext.base import SSLData, repeated_patient_splits
from pretext.data import cached_generated
from pretext.errors import ConfigError
from pretext.registry import register_data

CLASSES = ["no_lesion", "small_hypodense", "large_hyperdense"]
SITES = ["site_a", "site_b"]
_SITE_NOISE = (0.025, 0.045)
_SITE_GAIN = (1.0, 0.92)


def patient_table(n_patients: int, seed: int) -> pd.DataFrame:
    """Per-patient class, demographics and anatomy parameters (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0x3D])
    classes = rng.permutation(np.arange(n_patients) % len(CLASSES))
    sex = rng.choice(np.array(["F", "M"]), size=n_patients)
    male = sex == "M"
    age = np.clip(rng.normal(58, 14, n_patients), 18, 95).round().astype(int)
    site = rng.integers(0, len(SITES), n_patients)
    u = lambda lo, hi: rng.uniform(lo, hi, n_patients)  # noqa: E731
    lesion_r = np.where(classes == 2, u(0.26, 0.32), u(0.13, 0.19))
    return pd.DataFrame(
        {
            "patient": [f"ph{p:05d}" for p in range(n_patients)],
            "label": classes, "sex": sex, "age": age, "site": np.array(SITES)[site], "site_id": site,
            "body_x": u(0.78, 0.9) + 0.05 * male, "body_y": u(0.55, 0.68) + 0.04 * male,
            "fat": u(0.06, 0.14) - 0.03 * male,
            "liver_x": u(-0.45, -0.3), "liver_y": u(-0.15, 0.05), "liver_z": u(-0.1, 0.25),
            "liver_rx": u(0.32, 0.42), "liver_ry": u(0.3, 0.4), "liver_rz": u(0.45, 0.65), "liver_rot": u(-0.4, 0.4),
            "liver_int": u(0.52, 0.6) - 0.0006 * (age - 58),
            "spleen_x": u(0.35, 0.5), "spleen_r": u(0.12, 0.2),
            "kidney_y": u(0.2, 0.3), "kidney_x": u(0.22, 0.32), "kidney_z": u(-0.35, -0.05),
            "spine_r": u(0.1, 0.14), "aorta_r": u(0.05, 0.08),
            # lesion centre as a fraction of the liver radii, radius and contrast
            "les_u": u(-0.4, 0.4), "les_v": u(-0.4, 0.4), "les_w": u(-0.4, 0.4), "les_r": lesion_r,
            "les_c": np.select([classes == 1, classes == 2], [-u(0.12, 0.18), u(0.15, 0.25)], 0.0),
        }
    )


def _soft(q: np.ndarray, edge: float) -> np.ndarray:
    """Partial-volume membership of an ellipsoid from its normalised radius ``q`` (1 at the surface)."""
    return 1.0 / (1.0 + np.exp(np.minimum((q - 1.0) / edge, 50.0)))


def _ellipsoid(z: np.ndarray, y: np.ndarray, x: np.ndarray, centre: tuple[float, float, float],
               radii: tuple[float, float, float], edge: float) -> np.ndarray:
    q = np.sqrt(((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2)
    return _soft(q, edge)


def simulate_scan(pt: Any, scan: int, size: int, seed: int, noise: float = 1.0,
                  return_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One phantom volume of patient ``pt`` (a row of :func:`patient_table`).

    Args:
        pt: patient parameters (``itertuples`` row).
        scan: scan number of this patient (seeds pose, scanner and noise).
        size: edge length in voxels.
        seed: dataset seed.
        noise: multiplier of texture and white noise (0 = clean phantom).
        return_mask: also return the lesion membership ``(size, size, size)`` in ``[0, 1]``.

    Returns:
        ``(1, size, size, size)`` float32 volume (and the lesion mask when asked).
    """
    rng = np.random.default_rng([seed, int(pt.Index), scan, 0x3D5])
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    angle = rng.normal(0, 0.06)  # small in-plane rotation and shift between scans
    shift = rng.normal(0, 0.05, 3)
    z = z - shift[0]
    y, x = y - shift[1], x - shift[2]
    y, x = np.cos(angle) * y - np.sin(angle) * x, np.sin(angle) * y + np.cos(angle) * x
    edge = 0.04 * 32 / size
    body = _ellipsoid(z, y, x, (0, 0, 0), (1.6, pt.body_y, pt.body_x), edge)
    inner = _ellipsoid(z, y, x, (0, 0, 0), (1.6, pt.body_y - pt.fat, pt.body_x - pt.fat), edge)
    vol = 0.02 + 0.22 * body + 0.22 * inner  # air, fat ring, soft tissue
    cr, sr = np.cos(pt.liver_rot), np.sin(pt.liver_rot)
    ly, lx = y - pt.liver_y, x - pt.liver_x
    ly, lx = cr * ly - sr * lx, sr * ly + cr * lx  # liver orientation in the axial plane
    liver = _ellipsoid(z, ly, lx, (pt.liver_z, 0, 0), (pt.liver_rz, pt.liver_ry, pt.liver_rx), edge)
    organs = [
        (liver, pt.liver_int + 0.04),
        (_ellipsoid(z, y, x, (0.25, 0.1, pt.spleen_x), (pt.spleen_r * 1.6, pt.spleen_r, pt.spleen_r), edge), 0.5),
        (_ellipsoid(z, y, x, (pt.kidney_z, pt.kidney_y, -pt.kidney_x), (0.25, 0.1, 0.08), edge), 0.62),
        (_ellipsoid(z, y, x, (pt.kidney_z, pt.kidney_y, pt.kidney_x), (0.25, 0.1, 0.08), edge), 0.62),
        (_ellipsoid(z, y, x, (0, 0.1, 0.05), (5.0, pt.aorta_r, pt.aorta_r), edge), 0.7),
        (_ellipsoid(z, y, x, (0, pt.body_y - 0.22, 0), (5.0, pt.spine_r, pt.spine_r * 1.2), edge), 0.95),
    ]
    for mask, value in organs:
        vol = vol + mask * inner * (value - vol)
    centre = (pt.liver_z + pt.les_w * pt.liver_rz, pt.les_v * pt.liver_ry, pt.les_u * pt.liver_rx)
    lesion = _ellipsoid(z, ly, lx, centre, (pt.les_r,) * 3, edge * 1.5) * liver
    lesion = lesion * (pt.les_c != 0)
    vol = vol + pt.les_c * lesion
    if noise > 0:
        texture = gaussian_filter(rng.standard_normal(vol.shape), sigma=1.2 * size / 32)
        vol = vol + noise * (0.12 * texture * inner + rng.normal(0, _SITE_NOISE[int(pt.site_id)], vol.shape))
    vol = _SITE_GAIN[int(pt.site_id)] * rng.uniform(0.95, 1.05) * vol + rng.normal(0, 0.02)
    out = np.clip(vol, 0.0, 1.0).astype(np.float32)[None]
    return (out, lesion.astype(np.float32)) if return_mask else out


def generate(n_patients: int, scans_per_patient: int, size: int, seed: int, noise: float = 1.0) -> np.ndarray:
    """All volumes, patient-major: ``(n_patients * scans_per_patient, 1, size, size, size)`` float32."""
    table = patient_table(n_patients, seed)
    x = np.empty((n_patients * scans_per_patient, 1, size, size, size), dtype=np.float32)
    for pt in table.itertuples():
        for s in range(scans_per_patient):
            x[pt.Index * scans_per_patient + s] = simulate_scan(pt, s, size, seed, noise)
    return x


@register_data("synthetic_phantom3d", modality="volume", virtual=True)
def load_synthetic_phantom3d(path: str = "", n_patients: int = 300, scans_per_patient: int = 2, size: int = 32,
                             seed: int = 0, noise: float = 1.0, val_fraction: float = 0.2,
                             test_fraction: float = 0.2) -> SSLData:
    """Generate (or read from the cache folder ``path``) the synthetic 3D phantom data set.

    Args:
        path: cache folder ("" keeps everything in memory); volumes are stored there as ``.npy``.
        n_patients: patients (classes are balanced over patients).
        scans_per_patient: scans of each patient (same anatomy and lesion, new pose/scanner/noise).
        size: edge length of the cubic volumes in voxels (>= 16).
        seed: everything is a deterministic function of the options.
        noise: multiplier of texture and white noise (0 = clean).
        val_fraction: fraction of patients in "val" (patient-wise, stratified by class).
        test_fraction: fraction of patients in "test".

    Returns:
        SSLData with "train", "val", "test" splits; labels are lesion classes (:data:`CLASSES`),
        ``meta`` has patient, scan, sex, age and site.
    """
    if int(n_patients) < 2 * len(CLASSES) or int(scans_per_patient) < 1:
        raise ConfigError(f"{n_patients=} must be >= {2 * len(CLASSES)} and {scans_per_patient=} >= 1")
    if int(size) < 16:
        raise ConfigError(f"{size=} must be >= 16 voxels (the small lesion would vanish below that)")
    opts = dict(n_patients=int(n_patients), scans_per_patient=int(scans_per_patient), size=int(size),
                seed=int(seed), noise=float(noise))
    x = _cached(path, opts)
    table = patient_table(opts["n_patients"], opts["seed"])
    splits = repeated_patient_splits(x, table, opts["scans_per_patient"], float(val_fraction), float(test_fraction), opts["seed"], "scan")
    s = opts["size"]
    return SSLData(
        modality="volume", splits=splits, input_shape=(1, s, s, s), num_classes=len(CLASSES),
        class_names=list(CLASSES), channel_names=["ct"], meta={"generator": "volssl.synthetic", **opts},
    )


def _cached(path: str, opts: dict[str, Any]) -> np.ndarray:
    """Data for ``opts``, read from / written to the cache folder ``path`` when one is given."""
    return cached_generated(path, "synthetic_phantom3d", opts, generate, opts["n_patients"] * opts["scans_per_patient"])

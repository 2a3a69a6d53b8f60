"""Whole-scan benchmark: ingest of full-size CTs, patch loading against MONAI, data wait of patch pretraining.

All ratios are measured side by side in one run on the same files and settings.

1. Ingest: synthetic full-size CTs (512x512xZ int16, Z in 100..300, 0.7x0.7x2.5 mm, uncompressed NIfTI;
   body, lungs and noise in HU) resampled to 1.5 mm with the CT window (-1000, 1000): volumes/minute with 1
   and 2 worker processes (wall time including worker start-up), and peak RSS of an in-process ingest of
   ``N_small`` and ``N_large`` volumes (each in a fresh subprocess; flat in N is the requirement).
2. Patch loading: patches/s at 96^3 and 64x64x32 with 2 DataLoader workers, K patches per volume read:
   ours (:class:`volssl.sampling.PatchStream` over the ragged store) against MONAI ``PersistentDataset`` (the
   same preprocessing cached as ``.pt``) + ``RandSpatialCropSamplesd(num_samples=K)``; caches are built
   before timing.
3. Data wait: ``pixel_shuffle`` pretraining (resnet18_3d) on 64x64x32 patches from the store with 2 loader
   workers: the engine's ``data_wait_frac`` (time blocked on the next batch / wall time) after warm-up.

Usage: ``python -m benchmarks.bench_scans [--quick] [--out benchmarks/results/scans] [--work DIR]``
(``--quick``: fewer volumes, for a small shared machine; the JSON says which mode ran).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PREP = {"spacing": 1.5, "window": (-1000, 1000)}


def synthetic_ct(depth: int, seed: int, side: int = 512) -> np.ndarray:
    """``(side, side, depth)`` int16 HU: air, an elliptic body (40 HU), two lungs (-800 HU), noise."""
    rng = np.random.default_rng(seed)
    i, j = np.ogrid[:side, :side]
    body = ((i - side / 2) / (side * 0.42)) ** 2 + ((j - side / 2) / (side * 0.32)) ** 2 < 1
    plane = np.where(body, 40, -1000).astype(np.int16)
    for cx in (-0.45, 0.45):
        lung = ((i - side / 2) / (side * 0.25)) ** 2 + ((j - side / 2 - cx * side * 0.32) / (side * 0.12)) ** 2 < 1
        plane[lung] = -800
    vol = np.repeat(plane[:, :, None], depth, axis=2)
    vol += rng.integers(-20, 20, size=vol.shape, dtype=np.int16)
    return vol


def write_cts(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct CTs; depths spread over 100..300."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        depth = int(100 + (200 * k) // max(n - 1, 1))
        path = folder / f"ct{k:03d}_z{depth}.nii"
        if not path.exists():
            img = nib.Nifti1Image(synthetic_ct(depth, seed + k), np.diag([0.7, 0.7, 2.5, 1.0]))
            img.header.set_data_dtype(np.int16)
            nib.save(img, str(path))
        out.append(str(path))
    return out


def linked(paths: list[str], folder: Path, n: int) -> list[str]:
    """``n`` hard links cycling over ``paths``: distinct files to the store (each is ingested), no extra disk."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        dst = folder / f"v{k:04d}.nii"
        if not dst.exists():
            os.link(paths[k % len(paths)], dst)
        out.append(str(dst))
    return out


def ingest_rate(paths: list[str], cache: Path, workers: int) -> dict[str, float]:
    from volssl.ingest import ingest_files as ingest_scans
    from volssl.preprocess import PreprocessConfig

    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    ingest_scans(paths, cache, PreprocessConfig(**PREP), num_workers=workers, progress=False)
    wall = time.perf_counter() - t0
    return {"volumes": len(paths), "workers": workers, "wall_s": round(wall, 1),
            "volumes_per_min": round(60 * len(paths) / wall, 2)}


def peak_rss(paths: list[str], cache: Path) -> dict[str, float]:
    """Peak RSS (MB) of a fresh process that ingests ``paths`` in-process (no workers)."""
    shutil.rmtree(cache, ignore_errors=True)
    code = (f"import sys, resource, time; sys.path.insert(0, {str(REPO)!r}); import torch; torch.set_num_threads(1)\n"
            "from volssl.preprocess import PreprocessConfig; from volssl.ingest import ingest_files as ingest_scans\n"
            f"t = time.perf_counter(); ingest_scans({paths!r}, {str(cache)!r}, PreprocessConfig(**{PREP!r}), progress=False)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    rss, wall = map(float, out.stdout.split()[-2:])
    return {"volumes": len(paths), "peak_rss_mb": round(rss), "wall_s": round(wall, 1)}


def _time_loader(loader: Any, batches: int, warmup: int = 2) -> float:
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        x = b["x"] if isinstance(b, dict) else b[0]["image"]
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def loading(paths: list[str], work: Path, patch: tuple[int, int, int], k: int, batches: int) -> dict[str, Any]:
    """Patches/s of ours and of MONAI PersistentDataset + RandSpatialCropSamplesd, 2 loader workers each."""
    from monai.data import DataLoader as MonaiLoader
    from monai.data import PersistentDataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        RandSpatialCropSamplesd,
        ScaleIntensityRanged,
        Spacingd,
    )
    from torch.utils.data import DataLoader

    from pretext.data import load_data

    spec = (f"nifti:{work / 'load_in'}?spacing=1.5&window=-1000,1000&patch={','.join(map(str, patch))}"
            f"&patches_per_volume={k}&cache={work / 'cache_load'}")
    folder = work / "load_in"
    folder.mkdir(exist_ok=True)
    for p in paths:
        if not (folder / Path(p).name).exists():
            os.link(p, folder / Path(p).name)
    stream = load_data(spec).splits["train"].patch_stream(seed=0)
    ours = DataLoader(stream, batch_size=2, num_workers=2, collate_fn=stream.collate_fn, persistent_workers=True,
                      sampler=torch.utils.data.RandomSampler(stream, generator=torch.Generator().manual_seed(0)))
    deterministic = [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                     Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
                     ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True)]
    cache_dir = work / "monai_cache"
    files = [{"image": str(folder / Path(p).name)} for p in paths]
    warm = PersistentDataset(files, Compose(deterministic), cache_dir=cache_dir)
    t0 = time.perf_counter()
    for i in range(len(warm)):
        warm[i]  # builds the .pt cache
    build = time.perf_counter() - t0
    ds = PersistentDataset(files, Compose([*deterministic, RandSpatialCropSamplesd(
        "image", roi_size=patch, num_samples=k, random_size=False)]), cache_dir=cache_dir)
    monai = MonaiLoader(ds, batch_size=2, num_workers=2, shuffle=True, persistent_workers=True)
    # MONAI's loader yields lists of K dicts per item; count patches the same way
    ours_ps = _time_loader(ours, batches)
    m_ps = _time_monai(monai, batches)
    return {"patch": list(patch), "patches_per_volume": k, "batch_volumes": 2, "loader_workers": 2,
            "ours_patches_per_s": round(ours_ps, 1), "monai_patches_per_s": round(m_ps, 1),
            "ratio": round(ours_ps / m_ps, 1), "monai_cache_build_s": round(build, 1)}


def _time_monai(loader: Any, batches: int, warmup: int = 1) -> float:
    def count(b: Any) -> int:
        return sum(int(s["image"].shape[0]) for s in b) if isinstance(b, list) else int(b["image"].shape[0])

    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += count(b)
    return n / (time.perf_counter() - t0)


def data_wait(work: Path, steps: int) -> dict[str, Any]:
    from pretext.pipeline import pretrain

    spec = (f"nifti:{work / 'load_in'}?spacing=1.5&window=-1000,1000&patch=64,64,32&patches_per_volume=2"
            f"&foreground=0.5&cache={work / 'cache_load'}")
    half = steps // 2
    _, res = pretrain("pixel_shuffle", "resnet18_3d", spec, None,
                      {"steps": steps, "batch_size": 2, "num_workers": 2, "progress": False, "precision": "32",
                       "log_every": half, "warmup_steps": 1})
    last = res.history[-1]
    return {"task": "pixel_shuffle", "encoder": "resnet18_3d", "patch": [64, 64, 32], "batch_patches": 4,
            "loader_workers": 2, "steps_timed": steps - half, "data_wait_frac": round(last["data_wait_frac"], 4),
            "samples_per_s": round(last["samples_per_s"], 2), "first_window_data_wait_frac":
            round(res.history[0]["data_wait_frac"], 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer volumes (small shared machine)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scans"))
    ap.add_argument("--work", default="/tmp/medssl_bench_scans", help="scratch folder for the CTs and stores")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rate,rss,load,wait")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    n_base, n_rate, n_small, n_large = (4, 4, 4, 16) if args.quick else (10, 20, 20, 200)
    base = write_cts(work / "base", n_base)
    res: dict[str, Any] = {"mode": "quick" if args.quick else "full", "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "note": "2 CPU cores shared with other jobs" if (os.cpu_count() or 0) <= 2 else ""},
        "volumes": "512x512xZ int16, Z in 100..300, 0.7x0.7x2.5 mm -> 1.5 mm, window (-1000, 1000)",
        "load_average": {}}
    if "rate" not in skip:
        paths = linked(base, work / "rate", n_rate)
        res["ingest_rate"] = [ingest_rate(paths, work / f"cache_rate{w}", w) for w in (1, 2)]
        res["load_average"]["rate"] = os.getloadavg()[0]
        print(json.dumps(res["ingest_rate"]), flush=True)
    if "rss" not in skip:
        paths = linked(base, work / "rss", n_large)
        res["ingest_rss"] = [peak_rss(paths[:n], work / f"cache_rss{n}") for n in (n_small, n_large)]
        res["load_average"]["rss"] = os.getloadavg()[0]
        print(json.dumps(res["ingest_rss"]), flush=True)
    if "load" not in skip:
        res["loading"] = [loading(base, work, p, 4, 10 if args.quick else 40) for p in ((96, 96, 96), (64, 64, 32))]
        res["load_average"]["load"] = os.getloadavg()[0]
        print(json.dumps(res["loading"]), flush=True)
    if "wait" not in skip:
        res["data_wait"] = data_wait(work, 16 if args.quick else 60)
        res["load_average"]["wait"] = os.getloadavg()[0]
        print(json.dumps(res["data_wait"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / ("bench_scans_quick.json" if args.quick else "bench_scans.json")
    if skip and target.exists():  # a partial run (--skip) updates the parts it ran, keeps the others
        old = json.loads(target.read_text())
        res = {**old, **res, "load_average": {**old.get("load_average", {}), **res["load_average"]}}
    target.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()

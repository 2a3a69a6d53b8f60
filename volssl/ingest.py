"""Ingest into the volume store (:mod:`volssl.store`): files in parallel workers, MedMNIST arrays in process.

:func:`ingest_files` reads, preprocesses (:func:`volssl.preprocess.preprocess`, the one chain) and writes every
file once, in ``num_workers`` processes: each worker reads, preprocesses and writes its own volume, so the parent
never holds voxels and peak memory is a few volumes whatever their number. An interrupted ingest continues
with the volumes not yet written; a damaged item found when the set is opened is ingested again.
:func:`ingest_medmnist` writes MedMNIST cubes (uint8 as in the file) as items of the same store.

A constant-valued volume (every voxel the same, e.g. an empty export) holds nothing to learn from and makes
MONAI's intensity scaling divide by zero: it is kept (normalised to 0) and one warning names every such file,
so that it can be removed from the folder or manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.atomic import atomic_write_text
from pretext.cache import file_fingerprint
from pretext.config import to_dict
from pretext.errors import DataError
from volssl.io import Volume, read_volume, spacing_from_affine
from volssl.preprocess import PreprocessConfig, preprocess
from volssl.store import (
    HINT,
    VolumeStore,
    box,
    check_items,
    finished,
    item_id,
    pool_folder,
    read_json,
    sample_foreground,
    write_item,
)


@dataclasses.dataclass(frozen=True)
class ScanJob:
    """One file to ingest into ``folder`` (pickled to a worker)."""

    path: str
    mask: str | None
    fid: str
    folder: str
    prep: PreprocessConfig
    volume_index: int | None


def check_mask(vol: Volume, mask: Volume) -> None:
    """Refuse a mask whose grid (shape or affine) differs from its image's."""
    same_shape = tuple(mask.array.shape[1:]) == tuple(vol.array.shape[1:])
    diff = float(np.abs(np.asarray(mask.affine) - np.asarray(vol.affine)).max())
    if not same_shape or diff > 1e-3 * max(1.0, float(np.abs(vol.affine[:3, :3]).max())):
        raise DataError(
            f"mask {mask.path!r} does not match image {vol.path!r}: mask shape {tuple(mask.array.shape[1:])} vs "
            f"image {tuple(vol.array.shape[1:])}, affines differ by up to {diff:.3g} mm; resample the mask onto the "
            "image grid (e.g. torchio.Resample(image) or SimpleITK ResampleImageFilter with nearest neighbour) or "
            "fix the manifest's mask column"
        )


def ingest_one(job: ScanJob) -> dict[str, Any]:
    """Read, preprocess and write one scan (in a worker). Returns its metadata, or ``{"error": ...}``."""
    folder = Path(job.folder)
    try:
        vol = read_volume(job.path, job.volume_index)
        mask = None
        if job.mask:
            mask = read_volume(job.mask)
            check_mask(vol, mask)
        lo, hi = float(vol.array.min()), float(vol.array.max())
        arr, affine, mk = preprocess(vol, job.prep, mask)
        fg = mk if mk is not None else arr.max(0) > job.prep.foreground_threshold
        coords = sample_foreground(fg, int(job.fid[:8], 16))
        meta = {"path": job.path, "mask": job.mask, "spacing": list(spacing_from_affine(affine)),
                "affine": affine.tolist(), "source_affine": np.asarray(vol.affine).tolist(),
                "source_shape": list(vol.array.shape), "source_spacing": list(vol.spacing),
                "source_dtype": vol.dtype, "source_range": [lo, hi], "range": [float(arr.min()), float(arr.max())],
                "fg_box": box(fg), "fg_count": int(np.count_nonzero(fg)), "constant": lo == hi}
        del fg, mk, vol
        data = arr.astype(np.float16)
        del arr
        meta = write_item(folder, job.fid, data, coords, meta)
        del data
        release_memory()
        return meta
    except DataError as err:
        if "no space left" in str(err):
            raise
        msg = str(err)
    except Exception as err:  # noqa: BLE001 - one unreadable scan of thousands is named, not fatal
        msg = f"{job.path}: {type(err).__name__}: {err}"
    atomic_write_text(folder / "broken" / f"{job.fid}.json", json.dumps({"path": job.path, "error": msg}))
    return {"fid": job.fid, "path": job.path, "error": msg}


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Volumes under glibc's dynamic mmap threshold (up to 32 MB) are allocated on the heap, and a freed
    heap is kept by the process: without this, RSS creeps up over the first volumes of an ingest.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _worker_init() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_jobs(jobs: Sequence[ScanJob], num_workers: int, progress: bool = True, desc: str = "ingest"
             ) -> list[dict[str, Any]]:
    """Run :func:`ingest_one` over ``jobs`` in ``num_workers`` processes (0 or 1: in this process).

    At most ``2 * num_workers`` volumes are in flight; a tqdm bar shows volumes done, rate and ETA.
    """
    from tqdm.auto import tqdm

    out: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc=desc, unit="vol", disable=not progress or not jobs, dynamic_ncols=True)
    try:
        if num_workers <= 1:
            for job in jobs:
                out.append(ingest_one(job))
                bar.update(1)
            return out
        # forkserver: workers fork from a clean server that imported MONAI once (no fork of a process holding
        # torch / OpenMP threads, and no MONAI import per worker as with spawn)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["volssl.ingest", "monai.transforms", "monai.data", "monai.bundle"])
        with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init) as ex:
            todo, pending = iter(jobs), set()
            try:
                for job in todo:
                    pending.add(ex.submit(ingest_one, job))
                    if len(pending) >= 2 * num_workers:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        out.append(fut.result())
                        bar.update(1)
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.add(ex.submit(ingest_one, nxt))
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
        return out
    finally:
        bar.close()


def scans_folder(root: Path, prep: PreprocessConfig, volume_index: int | None) -> Path:
    """The pool of scans preprocessed with ``prep`` under cache ``root``."""
    return pool_folder(root, "scans", {"prep": to_dict(prep), "volume_index": volume_index})


def ingest_files(paths: Sequence[str], root: Path, prep: PreprocessConfig, *, masks: Sequence[str | None] | None = None,
                 num_workers: int = 0, skip_broken: bool = False, volume_index: int | None = None,
                 progress: bool = True) -> tuple[VolumeStore, list[dict[str, Any]], list[tuple[str, str]]]:
    """Ingest ``paths`` (resuming any earlier, interrupted ingest) and open the finished store.

    Args:
        paths: image files / DICOM series (folders, or ``folder#SeriesInstanceUID``).
        root: the cache folder (a pool per preprocessing setting is made under it).
        prep: preprocessing settings.
        masks: per path, a foreground mask file on the image's grid (or None).
        num_workers: ingest processes (0: this process).
        skip_broken: leave unreadable files out (returned and warned) instead of raising.
        volume_index: keep volume N of 4D files.
        progress: show a progress bar.

    Returns:
        ``(store over the kept volumes in path order, their metadata, [(broken path, reason)])``.

    Raises:
        DataError: broken files without ``skip_broken`` (every one named; the volumes read are kept, so a rerun
            continues), mixed channel counts, or nothing readable.
    """
    masks = list(masks) if masks is not None else [None] * len(paths)
    folder = scans_folder(root, prep, volume_index)
    fids = [item_id(p, m) for p, m in zip(paths, masks, strict=True)]
    set_file = folder / "sets" / (hashlib.sha1(json.dumps([fids, bool(skip_broken)]).encode()).hexdigest()[:16] + ".json")
    index = read_json(set_file)
    if isinstance(index, dict) and index.get("complete"):
        done = [finished(folder, v["fid"]) for v in index["volumes"]]
        metas = [m for m in done if m is not None]
        if len(metas) == len(done):
            if not check_items(folder, metas):
                return VolumeStore(folder, metas), metas, [(str(b[0]), str(b[1])) for b in index["skipped"]]
        else:
            warnings.warn(f"volume cache {folder} lost some volume files; ingesting those volumes again", stacklevel=2)
    (folder / "vol").mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "settings.json", json.dumps({"prep": to_dict(prep), "volume_index": volume_index},
                                                           default=str, indent=1))
    known_broken = {}
    for fid in set(fids):
        b = read_json(folder / "broken" / f"{fid}.json")
        if isinstance(b, dict) and finished(folder, fid) is None:
            known_broken[fid] = b["error"]
    jobs = [ScanJob(p, m, fid, str(folder), prep, volume_index) for p, m, fid in zip(paths, masks, fids, strict=True)
            if fid not in known_broken and finished(folder, fid) is None]
    jobs = list({j.fid: j for j in jobs}.values())
    if len(jobs) < len(paths):
        print(f"volume cache {folder}: {len(paths) - len(jobs)} of {len(paths)} volume(s) already done, "
              f"{len(jobs)} to ingest")
    for res in run_jobs(jobs, num_workers, progress):
        if "error" in res:
            known_broken[res["fid"]] = res["error"]
    broken = [(p, known_broken[f]) for p, f in zip(paths, fids, strict=True) if f in known_broken]
    if broken and not skip_broken:
        lines = "; ".join(msg for _, msg in broken[:10])
        raise DataError(
            f"{len(broken)} of {len(paths)} volume(s) could not be read: {lines}. Fix or remove them, or pass "
            "?skip_broken=true to leave them out (they are then listed in the warning and in data.meta); the "
            f"{len(paths) - len(broken)} volume(s) read are kept in {folder}, so a rerun only reads the rest"
        )
    for p, msg in broken:
        warnings.warn(f"skipping broken volume {p}: {msg}", stacklevel=2)
    keep = [(p, f) for p, f in zip(paths, fids, strict=True) if f not in known_broken]
    found = [finished(folder, f) for _, f in keep]
    lost = [p for (p, _), m in zip(keep, found, strict=True) if m is None]
    if lost:
        raise DataError(f"volume(s) {lost[:3]} were ingested but their files in {folder} are gone (another process "
                        "cleaned the cache?); rerun")
    metas = [m for m in found if m is not None]
    if not metas:
        raise DataError(f"none of the {len(paths)} volume(s) could be read")
    chans = sorted({m["shape"][0] for m in metas})
    if len(chans) > 1:
        first = {c: next(m["path"] for m in metas if m["shape"][0] == c) for c in chans}
        raise DataError(f"images have different numbers of channels {chans} (e.g. "
                        + ", ".join(f"{c}: {p}" for c, p in first.items())
                        + "); pick one volume of each 4D file with ?volume_index=N or split the 4D files")
    index = {"complete": True, "volumes": [{"fid": m["fid"], "path": m["path"]} for m in metas],
             "skipped": [list(b) for b in broken]}
    atomic_write_text(set_file, json.dumps(index, indent=1), hint=HINT)  # the completion marker, written last
    return VolumeStore(folder, metas), metas, broken


def warn_constant(metas: Sequence[dict[str, Any]]) -> None:
    """One warning naming the volumes whose every voxel had the same value (kept, normalised to 0)."""
    const = [m for m in metas if m.get("constant")]
    if const:
        shown = ", ".join(f"{m['path']} (every voxel {m['source_range'][0]:g})" for m in const[:5])
        warnings.warn(f"{len(const)} of {len(metas)} volume(s) are constant: {shown}{', ...' if len(const) > 5 else ''}. "
                      "They hold nothing to learn from and are kept as they are after normalisation (the intensity "
                      "scaling of a constant volume divides by zero: MONAI's 'Divide by zero (a_min == a_max)'); "
                      "remove them from the folder or manifest if they are empty exports", stacklevel=3)


def ingest_medmnist(file: Path, root: Path, normalize: str, foreground_threshold: float
                    ) -> tuple[dict[str, VolumeStore], dict[str, np.ndarray]]:
    """MedMNIST cubes as items of the store (uint8 kept; ``normalize`` becomes the store's scale/shift).

    Returns:
        ``({split: store over its cubes}, {split: labels (N, K)})``.
    """
    from volssl.io import read_medmnist

    folder = pool_folder(root, "medmnist3d", {"file": file_fingerprint([file]), "normalize": normalize,
                                              "foreground_threshold": float(foreground_threshold)})
    index = read_json(folder / "sets" / "all.json")
    if isinstance(index, dict) and index.get("complete"):
        metas = {s: [finished(folder, fid) for fid in index["items"][s]] for s in index["items"]}
        lost = [fid for s in metas for fid, m in zip(index["items"][s], metas[s], strict=True) if m is None]
        if lost:
            warnings.warn(f"volume cache {folder} is damaged ({lost[0]}.npy and {len(lost) - 1} other item(s) missing "
                          "or not at the size written); rebuilding it from the source", stacklevel=3)
        else:
            lost = check_items(folder, [m for s in metas for m in metas[s]])  # type: ignore[misc]
        if not lost:
            labels = {s: np.asarray(index["labels"][s], dtype=np.int64).reshape(len(metas[s]), -1) for s in metas}
            return {s: VolumeStore(folder, metas[s], index["scale"], index["shift"]) for s in metas}, labels  # type: ignore[arg-type]
    raw = read_medmnist(file)
    scale, shift = 1.0, 0.0
    if normalize == "unit":
        scale = 1.0 / 255.0
    elif normalize == "zscore":
        tr = raw["train"][0]
        mean, std = float(np.mean(tr, dtype=np.float64)), float(np.std(tr, dtype=np.float64)) or 1.0
        scale, shift = 1.0 / std, -mean / std
    items: dict[str, list[str]] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    mm = 64.0 / raw["train"][0].shape[-1]  # MedMNIST 3D: a 64 mm cube resampled to the side
    for s, (images, _) in raw.items():
        images = images if images.ndim == 5 else images[:, None]
        items[s], out[s] = [], []
        for i in range(len(images)):
            fid = f"{s}-{i:06d}"
            items[s].append(fid)
            meta = finished(folder, fid)
            if meta is None:
                x = np.ascontiguousarray(images[i])
                fg = x.astype(np.float32).max(0) * scale + shift > foreground_threshold
                meta = write_item(folder, fid, x, sample_foreground(fg, i), {
                    "path": f"{file}#{s}[{i}]", "spacing": [mm] * 3, "source_shape": list(x.shape),
                    "source_spacing": [mm] * 3, "source_dtype": str(x.dtype),
                    "source_range": [float(x.min()), float(x.max())], "fg_count": int(np.count_nonzero(fg)),
                    "fg_box": box(fg), "constant": bool(x.min() == x.max())}, durable=False)
            out[s].append(meta)
    labels = {s: lab for s, (_, lab) in raw.items()}
    index = {"complete": True, "items": items, "labels": {s: labels[s].tolist() for s in labels}, "scale": scale,
             "shift": shift}
    atomic_write_text(folder / "sets" / "all.json", json.dumps(index), hint=HINT)
    return {s: VolumeStore(folder, out[s], scale, shift) for s in out}, labels


__all__ = ["ScanJob", "check_mask", "ingest_files", "ingest_medmnist", "ingest_one", "release_memory", "run_jobs",
           "scans_folder", "warn_constant"]

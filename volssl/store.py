"""The one store of preprocessed volumes: ragged by design (each volume at its own shape), read in place.

A fixed-shape data set (MedMNIST cubes, or scans cropped to one ``?size=``) is the special case where every
item has the same shape. Each item is one ``.npy`` file (``(C, D, H, W)``: float16 for scans, the source's
uint8 for MedMNIST, with a per-set ``scale``/``shift``), opened with ``np.load(mmap_mode="r")``: a patch read
touches only the pages that hold its rows, DataLoader workers share the OS page cache, and no common shape is
needed. Layout::

    $MEDSSL_CACHE/volumes/<kind>-<settings hash>/   one pool per source kind and preprocessing setting
        vol/<id>.npy        (C, D, H, W) voxels                    } written atomically, in this order;
        vol/<id>.fg.npy     (K, 3) int32 foreground positions      } the .json marks the item done
        vol/<id>.json       shape, spacing, affines, foreground box and count, source, size and CRC-32
        broken/<id>.json    a file that could not be read, and why
        sets/<list hash>.json   the index table of one list of items: written last (completion marker)

``<id>`` hashes a file's path, size and modification time (and its mask's), so a changed, added or removed
file only (re)does that file. Every item records its byte size and a CRC-32 of its voxels, computed at
ingest. Opening a set checks every size (a stat per item); the checksums are verified for every item when
the set holds at most :data:`VERIFY_BYTES` (all MedMNIST sets, small folders), and otherwise on each item's
first whole read and whenever a read returns non-finite voxels. A damaged item is deleted with a warning
naming the cache file, and the load ingests it again from its source (:mod:`volssl.ingest`); damage found
while training stops with a :class:`DataError` naming the cache file (deleted, so a rerun rebuilds it).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext import cache as cache_paths
from pretext.atomic import atomic_write, atomic_write_text, is_no_space, no_space_error
from pretext.config import to_dict
from pretext.errors import DataError

STORE_VERSION = 2
CACHE_SUBFOLDER = "volumes"
#: A set whose items hold at most this many bytes has every checksum verified when it is opened.
VERIFY_BYTES = 1 << 30
#: Foreground voxel positions kept per volume (a uniform sample, as nnU-Net's ``class_locations``).
FG_SAMPLES = 4096
HINT = "free some space there or set MEDSSL_CACHE / ?cache=FOLDER to a larger disk, then rerun (finished volumes are kept)"


def default_cache_dir() -> Path:
    """``$MEDSSL_CACHE/volumes`` (default ``~/.cache/medssl/volumes``): :func:`pretext.cache.cache_dir`."""
    return cache_paths.cache_dir(CACHE_SUBFOLDER)


def resolve_cache(cache: Any) -> Path | None:
    """The volume cache folder of a ``cache`` option (``auto``, a folder, ``none``): :func:`pretext.cache.resolve_cache`."""
    return cache_paths.resolve_cache(cache, CACHE_SUBFOLDER)


def pool_folder(root: Path, kind: str, settings: Any) -> Path:
    """The pool of items of ``kind`` made with ``settings`` (a dataclass or JSON-able) under cache ``root``."""
    blob = json.dumps({"v": STORE_VERSION, "kind": kind, "settings": to_dict(settings)}, sort_keys=True, default=str)
    return Path(root) / f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def item_id(path: str, mask: str | None = None, extra: str = "") -> str:
    """Identifier of a source file (and its mask) that changes when either file does."""
    base = path.partition("#")[0] if "#" in path and not Path(path).exists() else path  # DICOM FOLDER#UID
    srcs = [base] + ([mask] if mask else [])
    return hashlib.sha1(json.dumps([cache_paths.file_fingerprint(srcs), path, extra]).encode()).hexdigest()[:20]


def checksum(data: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(data)).cast("B"))


def sample_foreground(mask: np.ndarray, key: int, k: int = FG_SAMPLES, chunk: int = 16) -> np.ndarray:
    """Up to ``k`` uniformly drawn ``(z, y, x)`` positions of ``True`` voxels of ``mask`` ``(D, H, W)``.

    Memory stays at one slab of ``chunk`` slices (no ``argwhere`` over a whole scan). ``key`` seeds the draw.

    Returns:
        ``(min(k, count), 3)`` int32, sorted in C order.
    """
    count = int(np.count_nonzero(mask))
    if count == 0:
        return np.zeros((0, 3), dtype=np.int32)
    ranks = np.sort(np.random.default_rng([int(key), 0xF6]).choice(count, size=min(k, count), replace=False))
    out, offset = [], 0
    for z0 in range(0, mask.shape[0], chunk):
        flat = np.flatnonzero(mask[z0:z0 + chunk])
        mine = ranks[(ranks >= offset) & (ranks < offset + flat.size)] - offset
        if mine.size:
            zyx = np.stack(np.unravel_index(flat[mine], mask[z0:z0 + chunk].shape), 1)
            zyx[:, 0] += z0
            out.append(zyx)
        offset += flat.size
    return np.concatenate(out).astype(np.int32)


def box(mask: np.ndarray) -> list[list[int]] | None:
    """``[[z0, y0, x0], [z1, y1, x1]]`` (end exclusive) of the True voxels, or None."""
    if not mask.any():
        return None
    lo, hi = [], []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return [lo, hi]


def write_item(folder: Path, fid: str, data: np.ndarray, foreground: np.ndarray, meta: dict[str, Any],
               durable: bool = True) -> dict[str, Any]:
    """Write one item (voxels, foreground positions, then its metadata: the done marker) and return the metadata.

    ``durable=False`` skips the fsync of each file (many small items written in one process: MedMNIST); the
    recorded size and checksum still find a torn write.
    """
    vol = Path(folder) / "vol"
    if durable:
        atomic_write(vol / f"{fid}.npy", lambda fh: np.save(fh, data), needed_bytes=data.nbytes, hint=HINT)
        atomic_write(vol / f"{fid}.fg.npy", lambda fh: np.save(fh, foreground), hint=HINT)
    else:
        vol.mkdir(parents=True, exist_ok=True)
        for name, arr in ((f"{fid}.npy", data), (f"{fid}.fg.npy", foreground)):
            tmp = vol / f".{name}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
                tmp.replace(vol / name)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                if is_no_space(err):
                    raise no_space_error(vol / name, data.nbytes, HINT) from err
                raise
    meta = {**meta, "fid": fid, "shape": list(data.shape), "dtype": str(data.dtype),
            "nbytes": (vol / f"{fid}.npy").stat().st_size, "crc32": checksum(data)}
    text = json.dumps(meta)
    if durable:
        atomic_write_text(vol / f"{fid}.json", text, hint=HINT)
    else:
        (vol / f".{fid}.json.tmp").write_text(text)
        (vol / f".{fid}.json.tmp").replace(vol / f"{fid}.json")
    return meta


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished(folder: Path, fid: str) -> dict[str, Any] | None:
    """The metadata of a finished item whose files are present at their recorded sizes, else None."""
    meta = read_json(Path(folder) / "vol" / f"{fid}.json")
    f = Path(folder) / "vol" / f"{fid}.npy"
    if not isinstance(meta, dict) or not f.is_file() or f.stat().st_size != int(meta.get("nbytes", -1)):
        return None
    if not (Path(folder) / "vol" / f"{fid}.fg.npy").is_file():
        return None
    return meta


def verify_item(folder: Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with a finished item's voxels (a checksum that differs from the ingest's), or None."""
    path = Path(folder) / "vol" / f"{meta['fid']}.npy"
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"{path} cannot be read ({err})"
    if list(data.shape) != list(meta["shape"]):
        return f"{path} holds shape {list(data.shape)}, {meta['shape']} was written"
    if "crc32" in meta and checksum(data) != int(meta["crc32"]):
        return f"{path} does not match the checksum written at ingest (its bytes changed after it was written)"
    return None


def discard_item(folder: Path, fid: str) -> None:
    """Delete an item's done marker and files, so that the next load ingests it again."""
    for name in (f"{fid}.json", f"{fid}.npy", f"{fid}.fg.npy"):
        (Path(folder) / "vol" / name).unlink(missing_ok=True)


def check_items(folder: Path, metas: list[dict[str, Any]], verify: bool | None = None) -> list[str]:
    """Verify the checksums of ``metas`` (``verify=None``: when they hold at most :data:`VERIFY_BYTES`).

    Damaged items are discarded with a warning naming the cache file and the source; returns their ids.
    """
    if verify is None:
        verify = sum(int(m.get("nbytes", 0)) for m in metas) <= VERIFY_BYTES
    bad = []
    for m in metas if verify else []:
        problem = verify_item(folder, m)
        if problem:
            warnings.warn(f"volume cache {folder}: {problem}; deleting it and ingesting {m.get('path')} again",
                          stacklevel=3)
            discard_item(folder, m["fid"])
            bad.append(m["fid"])
    return bad


class VolumeStore:
    """Read access to items of a pool (picklable: each DataLoader worker opens its own memory maps).

    ``read`` returns ``stored * scale + shift`` as float32 (MedMNIST keeps uint8 on disk; scans are
    stored normalised, scale 1). Reads are cheap: a memory map per item (the ``max_open`` most recent kept).

    Args:
        folder: the pool folder.
        metas: per item, its metadata (``fid``, ``shape``, ``crc32``, ``path``), in record order.
        scale, shift: the affine map from stored to returned values.
        max_open: memory maps kept open per process (least recently used are closed).
    """

    def __init__(self, folder: Path, metas: Sequence[dict[str, Any]], scale: float = 1.0, shift: float = 0.0,
                 max_open: int = 64) -> None:
        self.folder = Path(folder)
        self.metas = list(metas)
        self.fids = [m["fid"] for m in metas]
        self.shapes = [tuple(int(s) for s in m["shape"]) for m in metas]
        self.crcs = [m.get("crc32") for m in metas]
        self.sources = [str(m.get("path", "")) for m in metas]
        self.scale, self.shift, self.max_open = float(scale), float(shift), max_open
        self.pad_value = self.shift  # stored 0 (background), mapped as the voxels are
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._fg: dict[int, np.ndarray] = {}
        self._verified: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict(), "_fg": {}, "_verified": set()}

    def __len__(self) -> int:
        return len(self.fids)

    def shape(self, i: int) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of item ``i``."""
        return self.shapes[i]  # type: ignore[return-value]

    def file(self, i: int) -> Path:
        return self.folder / "vol" / f"{self.fids[i]}.npy"

    def volume(self, i: int) -> np.ndarray:
        """The memory map ``(C, D, H, W)`` of item ``i`` as stored (nothing is read until sliced)."""
        mm = self._maps.get(i)
        if mm is None:
            try:
                mm = np.load(self.file(i), mmap_mode="r")
            except (OSError, ValueError) as err:
                self.damaged(i, f"it cannot be read ({err})")
            self._maps[i] = mm
            if len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(i)
        return mm

    def damaged(self, i: int, problem: str) -> None:
        """Discard item ``i`` and raise a :class:`DataError` naming the cache file and its source."""
        discard_item(self.folder, self.fids[i])
        raise DataError(f"volume cache file {str(self.file(i))!r} (from {self.sources[i]}) is damaged: {problem}. "
                        "It was deleted; rerun and it is ingested again from its source")

    def verify(self, i: int, again: bool = False) -> None:
        """Check item ``i``'s checksum once per process, or ``again`` (raises via :meth:`damaged` on a mismatch)."""
        if (i in self._verified and not again) or self.crcs[i] is None:
            return
        if checksum(self.volume(i)) != int(self.crcs[i]):  # type: ignore[arg-type]
            self.damaged(i, "its bytes no longer match the checksum written at ingest")
        self._verified.add(i)

    def read(self, i: int, lo: Sequence[int] | None = None, hi: Sequence[int] | None = None) -> np.ndarray:
        """``(C, *(hi - lo))`` float32 voxels of item ``i`` (the whole item without ``lo``/``hi``)."""
        whole = lo is None
        if whole:
            self.verify(i)
            lo, hi = (0, 0, 0), self.shapes[i][1:]
        assert hi is not None
        sl = (slice(None), *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
        # torch converts float16 -> float32 with the CPU's half instructions: 2x (96^3) to 8x (64x64x32)
        # faster than numpy's astype, which dominated a patch read
        x = torch.from_numpy(np.array(self.volume(i)[sl], order="C")).float()  # a copy: the map is read-only
        if self.scale != 1.0 or self.shift != 0.0:
            x = x * self.scale + self.shift
        # NaN bytes: find which item, name it (one reduction per read: a few % of a 64x64x32 patch read)
        if not whole and x.numel() and not math.isfinite(float(x.sum())):
            self.verify(i, again=True)
        return x.numpy()

    def foreground(self, i: int) -> np.ndarray:
        """``(K, 3)`` int foreground voxel positions of item ``i`` (a sample; empty if none)."""
        if i not in self._fg:
            self._fg[i] = np.load(self.folder / "vol" / f"{self.fids[i]}.fg.npy")
        return self._fg[i]


def write_arrays(folder: Path, volumes: Sequence[np.ndarray], threshold: float = 0.0) -> VolumeStore:
    """A store at ``folder`` holding ``volumes`` (each ``(C, D, H, W)``, any shapes, kept in their dtype).

    Foreground positions are voxels whose channel maximum exceeds ``threshold``. For arrays made in memory
    (tests, tools); data kinds ingest through :mod:`volssl.ingest`.
    """
    metas = []
    for i, v in enumerate(volumes):
        v = np.ascontiguousarray(v)
        fg = v.max(0) > threshold
        metas.append(write_item(Path(folder), f"array-{i:06d}", v, sample_foreground(fg, i),
                                {"path": f"array[{i}]", "fg_count": int(np.count_nonzero(fg)), "fg_box": box(fg)},
                                durable=False))
    return VolumeStore(Path(folder), metas)


__all__ = ["CACHE_SUBFOLDER", "FG_SAMPLES", "VERIFY_BYTES", "VolumeStore", "box", "check_items", "checksum",
           "default_cache_dir", "discard_item", "finished", "item_id", "pool_folder", "read_json",
           "resolve_cache", "sample_foreground", "verify_item", "write_arrays", "write_item"]

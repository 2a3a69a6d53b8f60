"""Ingest once: records -> one compact memmap + an index table, cached on disk; and the split that reads
windows from it (:class:`SignalSplit`; the volume side's is :class:`volssl.store.VolumeSplit`).

A store is a folder::

    signals.bin   all samples, time-major (T_total, C), float16 or float32
    index.csv     record, path, patient, label (JSON), split, offset, length, native_sfreq, meta (JSON)
    events.csv    labelled epochs (record, start sample, label), e.g. Sleep-EDF stages; may be empty
    meta.json     channels, sfreq, dtype, options, source signature, skipped records

The folder is ``$MEDSSL_CACHE/signal/KIND-HASH`` (:mod:`pretext.cache`: a hash of the source files' paths,
sizes and mtimes, the records and every option that changes the samples), so a second load with the same
options reads only the index. Windows are then index arithmetic on the memmap (:mod:`signalssl.windows`).
The memmap is opened lazily in each process, so the store is safe in DataLoader workers.

A store is built in a temporary folder and renamed into place (:func:`pretext.atomic.atomic_dir`);
a full disk says so in words and leaves nothing behind. ``meta.json`` records each file's size
at build time; opening compares them (cheap: no hashing), so a deleted or truncated file is
found before any read: :func:`ingest` then deletes the store with a warning and rebuilds it
from the source, and :class:`SignalStore` alone refuses it with a :class:`DataError` naming
the folder.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pretext import cache as _cache
from pretext.atomic import atomic_dir
from pretext.base import SSLSplit
from pretext.errors import DataError, UserError
from pretext.options import as_flag
from signalssl.io import Record, read_record
from signalssl.layouts import RecordSpec
from signalssl.preprocess import match_channels, preprocess, zscore

__all__ = ["SignalStore", "SignalSplit", "ingest", "default_cache_dir", "store_damage", "STORE_VERSION"]

STORE_VERSION = 1
CACHE_SUBFOLDER = "signal"
DTYPES = ("float16", "float32")
NORMALIZE = ("none", "zscore")
EventsFn = Callable[[RecordSpec, Record], "list[tuple[float, str]] | None"]


def default_cache_dir() -> Path:
    """``$MEDSSL_CACHE/signal`` (default ``~/.cache/medssl/signal``): :func:`pretext.cache.cache_dir`."""
    return _cache.cache_dir(CACHE_SUBFOLDER)


def select_units(rec: Record, channels: list[str]) -> list[str]:
    """Units of ``channels`` (by name) in ``rec``."""
    return [rec.units[i] for i in match_channels(rec.channels, channels, rec.path)]


def _source_files(specs: list[RecordSpec]) -> list[Path]:
    """The files the records are read from (a WFDB record: its ``.hea`` and signal files) and event files."""
    files: list[Path] = []
    for s in specs:
        base = Path(s.path)
        files += [base] if base.exists() else sorted(base.parent.glob(base.name + ".*"))
        if s.events_path:
            files.append(Path(s.events_path))
    return files


def _temporary_root() -> Path:
    """A folder for stores of ``cache=none``: deleted when the process ends."""
    root = Path(tempfile.mkdtemp(prefix="medssl-signal-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _source_bytes(specs: list[RecordSpec]) -> int:
    """Total size of the source files: about what the store needs on disk."""
    total = 0
    for f in _source_files(specs):
        try:
            total += f.stat().st_size if f.is_file() else sum(g.stat().st_size for g in f.rglob("*") if g.is_file())
        except OSError:
            pass
    return total


def store_damage(root: str | Path) -> str | None:
    """What is wrong with the store at ``root`` (missing, unreadable or wrong-sized files), or ``None``.

    Cheap: reads ``meta.json`` and stats the other files against the sizes it recorded.
    """
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        return "meta.json is missing"
    try:
        meta = json.loads(meta_path.read_text())
        expected = int(meta["total_samples"]) * len(meta["channels"]) * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"meta.json cannot be read ({type(err).__name__}); it is truncated or corrupt"
    if meta.get("version") != STORE_VERSION:
        return f"store version {meta.get('version')} != {STORE_VERSION}"
    sizes = {"signals.bin": expected, **(meta.get("files") or {})}
    return _cache.files_damage(root, {name: sizes.get(name) for name in ("signals.bin", "index.csv", "events.csv")})


class SignalStore:
    """A read-only ingested dataset: ``read(record, start, length) -> (C, length)`` float32.

    Attributes:
        root: the store folder.
        index: one row per record (see module docstring).
        events: labelled epochs (may be empty).
        channels: channel names in order.
        sfreq: sampling rate of the stored samples (Hz).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{self.root}: not a signal store (no meta.json); delete it and load the data again")
        problem = store_damage(self.root)
        if problem:
            raise DataError(f"signal store {str(self.root)!r} is damaged ({problem}); delete {self.root} and rerun "
                            "(it is rebuilt from the source records)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.index = pd.read_csv(self.root / "index.csv", dtype={"record": str, "patient": str, "split": str},
                                 keep_default_na=False)
        ev = self.root / "events.csv"
        self.events = pd.read_csv(ev, dtype={"label": str}) if ev.stat().st_size > 0 else pd.DataFrame(
            columns=["record", "start", "label"])
        self.channels: list[str] = list(self.meta["channels"])
        self.sfreq = float(self.meta["sfreq"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.offsets = self.index["offset"].to_numpy(np.int64)
        self.lengths = self.index["length"].to_numpy(np.int64)
        self._mm: np.memmap | None = None
        self._pid: int | None = None

    @property
    def n_chans(self) -> int:
        return len(self.channels)

    @property
    def data(self) -> np.memmap:
        """The ``(T_total, C)`` memmap, opened once per process (fork/spawn safe)."""
        if self._mm is None or self._pid != os.getpid():
            total = int(self.meta["total_samples"])
            self._mm = np.memmap(self.root / "signals.bin", dtype=self.dtype, mode="r", shape=(total, self.n_chans))
            self._pid = os.getpid()
        return self._mm

    def read(self, rec: int, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` of record ``rec`` as ``(C, length)`` float32, zero-padded past its end."""
        n = int(self.lengths[rec])
        lo, hi = max(0, start), min(n, start + length)
        out = np.zeros((self.n_chans, length), dtype=np.float32)
        if hi > lo:
            off = int(self.offsets[rec])
            out[:, lo - start: hi - start] = self.data[off + lo: off + hi].T
        return out

    def record(self, rec: int) -> np.ndarray:
        """The whole record ``rec`` as ``(C, T)`` float32."""
        return self.read(rec, 0, int(self.lengths[rec]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mm"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.index)


class SignalSplit(SSLSplit):
    """Windows over a :class:`SignalStore`; item ``i`` is ``store.read(records[i], starts[i], window)``.

    Attributes:
        store: the ingested store (memmap opened lazily per worker).
        records: ``(N,)`` store record index of each window.
        starts: ``(N,)`` first sample of each window.
        window: window length in samples.
        normalize: "none" or "zscore" (per window and channel).
    """

    def __init__(self, store: SignalStore, records: np.ndarray, starts: np.ndarray, window: int,
                 labels: np.ndarray, patients: np.ndarray, patient_names: list[str], normalize: str = "none",
                 meta: Any = None) -> None:
        self.store, self.records, self.starts, self.window = store, records, starts, int(window)
        self.labels, self.patients, self.patient_names = labels, patients, patient_names
        self.normalize, self.meta = normalize, meta

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> torch.Tensor:
        """``(C, window)`` float32."""
        x = self.store.read(int(self.records[i]), int(self.starts[i]), self.window)
        if self.normalize == "zscore":
            x = zscore(x)
        return torch.from_numpy(x)


def ingest(
    specs: list[RecordSpec],
    kind: str,
    *,
    sfreq: float | None = None,
    channels: list[str] | None = None,
    bandpass: tuple[float | None, float | None] | None = None,
    notch: float | None = None,
    dtype: str = "float16",
    skip_broken: bool = False,
    cache: Any = "auto",
    events_fn: EventsFn | None = None,
    extra_key: dict[str, Any] | None = None,
) -> SignalStore:
    """Read every record once, preprocess, and write a :class:`SignalStore` (or reuse a cached one).

    Args:
        specs: the records (from :mod:`signalssl.layouts`).
        kind: data kind name (part of the cache key).
        sfreq: resample every record to this rate; ``None`` requires one common native rate.
        channels: explicit channel order; ``None`` requires the same channels in every record.
        bandpass: ``(low, high)`` Hz edges (either may be ``None``), applied at the native rate.
        notch: mains frequency to remove.
        dtype: "float16" (half the disk and page cache) or "float32".
        skip_broken: False (default): any broken record stops ingest, all broken ones named;
            True: broken records are left out, named in a warning and in ``meta["skipped"]``.
        cache: "auto" (:func:`default_cache_dir`), a folder (its ``signal`` subfolder is used) or "none"
            (a temporary folder, deleted when the process ends): :func:`pretext.cache.resolve_cache`.
        events_fn: ``(spec, record) -> [(onset_s, label), ...]`` labelled epochs, or ``None``.
        extra_key: other options that change the content (part of the cache key).

    Raises:
        DataError: broken records (all named), inconsistent rates/channels, float16 overflow.
    """
    if dtype not in DTYPES:
        raise UserError(f"{dtype=} must be one of {DTYPES}")
    skip_broken = as_flag(skip_broken, "skip_broken")
    if not specs:
        raise DataError(f"{kind}: no records to ingest")
    opts = {"sfreq": sfreq, "channels": list(channels) if channels else None,
            "bandpass": list(bandpass) if bandpass else None, "notch": notch, "dtype": dtype,
            "skip_broken": skip_broken, **(extra_key or {})}
    records = [[s.name, s.path, s.patient, s.label, s.split, s.sfreq, s.events_path] for s in specs]
    sig = _cache.cache_key(kind, _source_files(specs), {"records": records, **opts}, STORE_VERSION, length=20)
    root = _cache.resolve_cache(cache, CACHE_SUBFOLDER) or _temporary_root()
    final = root / sig
    if _cache.reuse_entry(final, store_damage, "signal store"):
        return SignalStore(final)
    with atomic_dir(final, needed_bytes=_source_bytes(specs),
                    hint="free some space there or set MEDSSL_CACHE to a folder on a larger disk, then rerun") as tmp:
        _write_store(tmp, specs, kind, opts, sig, events_fn)
    return SignalStore(final)


def _write_store(tmp: Path, specs: list[RecordSpec], kind: str, opts: dict[str, Any], sig: str,
                 events_fn: EventsFn | None) -> None:
    dt = np.dtype(opts["dtype"])
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    ref_chans: list[str] | None = opts["channels"]
    ref_rate: float | None = opts["sfreq"]
    units: list[str] = []
    offset = 0
    bp = tuple(opts["bandpass"]) if opts["bandpass"] else None
    with open(tmp / "signals.bin", "wb") as fh:
        for s in specs:
            try:
                rec = read_record(s.path, sfreq=s.sfreq, channels=opts["channels"])  # names .npy channels
                if ref_rate is None:
                    ref_rate = rec.sfreq
                elif opts["sfreq"] is None and not math.isclose(rec.sfreq, ref_rate):
                    raise DataError(f"{s.path}: sampling-rate mismatch: {rec.sfreq:g} Hz but earlier records have "
                                    f"{ref_rate:g} Hz; pass sfreq={ref_rate:g} (or another rate) to resample all")
                if not units and ref_chans is not None:
                    units = list(select_units(rec, ref_chans))
                if opts["channels"] is None and ref_chans is not None and sorted(rec.channels) != sorted(ref_chans):
                    raise DataError(f"{s.path}: channels {rec.channels} differ from the first record's {ref_chans}; "
                                    "pass channels=... to pick one common set in one order")
                out = preprocess(rec, sfreq=opts["sfreq"], channels=ref_chans, bandpass_hz=bp, notch_hz=opts["notch"])
                if ref_chans is None:
                    ref_chans, units = list(out.channels), list(out.units)
                x = out.signal
                if dt == np.float16 and float(np.abs(x).max(initial=0.0)) > 6.0e4:
                    raise DataError(f"{s.path}: |sample| up to {float(np.abs(x).max()):.3g} overflows float16; "
                                    "pass dtype=float32")
                ev = events_fn(s, rec) if events_fn else None
            except DataError as err:
                errors.append((s.name, str(err)))
                continue
            except Exception as err:  # any reader failure names the record
                errors.append((s.name, f"{s.path}: {type(err).__name__}: {err}"))
                continue
            fh.write(np.ascontiguousarray(x.T, dtype=dt).tobytes())
            ri = len(rows)
            rows.append({"record": s.name, "path": s.path, "patient": s.patient,
                         "label": json.dumps(s.label), "split": s.split or "", "offset": offset,
                         "length": x.shape[1], "native_sfreq": rec.sfreq, "meta": json.dumps(s.meta, default=str)})
            for onset, lab in ev or []:
                start = int(round(onset * out.sfreq))
                events.append({"record": ri, "start": start, "label": lab})
            offset += x.shape[1]
    if errors:
        listing = "\n".join(f"  {n}: {m}" for n, m in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        if not opts["skip_broken"] or not rows:
            raise DataError(f"{kind}: {len(errors)} of {len(specs)} record(s) could not be ingested:\n{listing}{more}\n"
                            "fix or remove them, or pass skip_broken=true to leave them out (they stay listed)")
        warnings.warn(f"{kind}: skipped {len(errors)} broken record(s):\n{listing}{more}", stacklevel=3)
    assert ref_chans is not None and ref_rate is not None
    pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    ev_df = pd.DataFrame(events, columns=["record", "start", "label"])
    (tmp / "events.csv").write_text(ev_df.to_csv(index=False) if len(ev_df) else "")
    meta = {"version": STORE_VERSION, "kind": kind, "channels": ref_chans, "sfreq": float(ref_rate),
            "dtype": dt.name, "units": units, "total_samples": offset, "options": opts, "source_signature": sig,
            "skipped": [{"record": n, "error": m} for n, m in errors],
            "files": {n: (tmp / n).stat().st_size for n in ("signals.bin", "index.csv", "events.csv")}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))

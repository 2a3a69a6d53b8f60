"""Ingest into the signal store (:mod:`signalssl.store`): every record read once, preprocessed, appended.

:func:`ingest` reads each record (:mod:`signalssl.io`), runs the one preprocessing chain
(:func:`signalssl.preprocess.preprocess`: channels, notch, band-pass, resampling) and appends it to the
store's memmap, or reuses the cached store of the same records and options. A store is built in a temporary
folder and renamed into place (:func:`pretext.atomic.atomic_dir`); a full disk says so in words and leaves
nothing behind. A damaged store found at load is deleted with a warning and rebuilt from the source.
Broken records are all named at once (or, with ``skip_broken``, left out and named in a warning).
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretext import cache as cache_paths
from pretext.atomic import atomic_dir
from pretext.errors import DataError, UserError
from pretext.options import as_flag
from signalssl.io import Record, read_record
from signalssl.layouts import RecordSpec
from signalssl.preprocess import match_channels, preprocess
from signalssl.store import CACHE_SUBFOLDER, DTYPES, STORE_VERSION, SignalStore, store_damage

__all__ = ["EventsFn", "ingest", "select_units", "source_files"]

EventsFn = Callable[[RecordSpec, Record], "list[tuple[float, str]] | None"]


def select_units(rec: Record, channels: list[str]) -> list[str]:
    """Units of ``channels`` (by name) in ``rec``."""
    return [rec.units[i] for i in match_channels(rec.channels, channels, rec.path)]


def source_files(specs: list[RecordSpec]) -> list[Path]:
    """The files the records are read from (a WFDB record: its ``.hea`` and signal files) and event files."""
    files: list[Path] = []
    for s in specs:
        base = Path(s.path)
        files += [base] if base.exists() else sorted(base.parent.glob(base.name + ".*"))
        if s.events_path:
            files.append(Path(s.events_path))
    return files


def temporary_root() -> Path:
    """A folder for stores of ``cache=none``: deleted when the process ends."""
    root = Path(tempfile.mkdtemp(prefix="medssl-signal-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def source_bytes(specs: list[RecordSpec]) -> int:
    """Total size of the source files: about what the store needs on disk."""
    total = 0
    for f in source_files(specs):
        try:
            total += f.stat().st_size if f.is_file() else sum(g.stat().st_size for g in f.rglob("*") if g.is_file())
        except OSError:
            pass
    return total


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
    sig = cache_paths.cache_key(kind, source_files(specs), {"records": records, **opts}, STORE_VERSION, length=20)
    root = cache_paths.resolve_cache(cache, CACHE_SUBFOLDER) or temporary_root()
    final = root / sig
    if cache_paths.reuse_entry(final, store_damage, "signal store"):
        return SignalStore(final)
    with atomic_dir(final, needed_bytes=source_bytes(specs),
                    hint="free some space there or set MEDSSL_CACHE to a folder on a larger disk, then rerun") as tmp:
        write_store(tmp, specs, kind, opts, sig, events_fn)
    return SignalStore(final)


def write_store(tmp: Path, specs: list[RecordSpec], kind: str, opts: dict[str, Any], sig: str,
                events_fn: EventsFn | None) -> None:
    """Read, preprocess and append every record to ``tmp/signals.bin``, then write the index, events and meta.

    Raises:
        DataError: broken records (all named; with ``skip_broken`` they are left out and named in a warning),
            mismatched rates or channels, float16 overflow.
    """
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

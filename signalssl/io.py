"""Readers for one signal record (WFDB, EDF/BDF/FIF, ``.npy``); preprocessing is :mod:`signalssl.preprocess`.

Every reader returns a :class:`Record`: a ``(C, T)`` float32 array in physical units with its
rate, channel names and units. WFDB signals are converted to millivolts; EDF/BDF/FIF voltage
channels to microvolts (EEG scale); other units are kept as stored.

>>> rec = read_record("validation/A00001")            # WFDB (.hea + .dat or .mat)
>>> rec.signal.shape                                   # (C, T)
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pretext.errors import ConfigError, DataError

__all__ = ["Record", "read_record", "check_rate", "read_wfdb", "read_edf", "read_npy", "check_wfdb_size", "check_edf_size"]

WFDB_EXTS = (".hea", ".dat", ".mat")
MNE_EXTS = (".edf", ".bdf", ".fif", ".fif.gz")
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
# bits per sample of the WFDB storage formats (310/311 pack 3 samples in 32 bits)
_WFDB_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12,
              "310": 32 / 3, "311": 32 / 3}


@dataclasses.dataclass
class Record:
    """One recording.

    Attributes:
        signal: ``(C, T)`` float32 samples in physical units.
        sfreq: sampling rate in Hz.
        channels: channel (lead) names, length C.
        units: unit of each channel ("mV", "uV", ...).
        path: the file it was read from.
        meta: header comments, annotations ``[(onset_s, duration_s, description), ...]``, etc.
    """

    signal: np.ndarray
    sfreq: float
    channels: list[str]
    units: list[str]
    path: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return int(self.signal.shape[1])


def check_rate(value: Any, what: str = "sfreq") -> float | None:
    """``value`` as a sampling rate in Hz (``None``/empty stays ``None``).

    Raises:
        ConfigError: not a finite number > 0 (the message names the value).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"{what} must be a number > 0, got {str(value)!r}; give the sampling rate in Hz, e.g. {what}=250")
    return rate


def _check_file_rate(path: str, rate: float, where: str) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"{path}: the sampling rate in the {where} is {rate:g} Hz but must be > 0; fix it "
                        "or leave the record out")


def _strip_ext(path: str | Path) -> str:
    p = str(path)
    for ext in WFDB_EXTS:
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


def read_record(path: str | Path, sfreq: float | None = None, channels: list[str] | None = None) -> Record:
    """Read a record by extension: WFDB (``.hea``/``.dat``/``.mat`` or no extension), EDF/BDF/FIF, ``.npy``.

    Args:
        path: the file (for WFDB the record path with or without extension).
        sfreq: sampling rate, required for ``.npy`` (which stores none); for other formats it is
            checked against the header (a mismatch raises).
        channels: channel names for ``.npy`` arrays (default ``ch0, ch1, ...``).

    Raises:
        DataError: unknown extension, missing/truncated file, NaN samples, rate mismatch.
    """
    p = str(path)
    low = p.lower()
    sfreq = check_rate(sfreq)
    if low.endswith(".npy"):
        if sfreq is None:
            raise DataError(f"{p}: a .npy array stores no sampling rate; give it (manifest column 'sfreq' or option sfreq=)")
        return read_npy(p, sfreq, channels)
    if low.endswith(MNE_EXTS):
        rec = read_edf(p)
    elif low.endswith(WFDB_EXTS) or Path(p + ".hea").exists():
        rec = read_wfdb(p)
    else:
        raise DataError(f"{p}: unknown signal format; use WFDB (.hea/.dat/.mat), EDF/BDF/FIF or .npy (channels, samples)")
    if sfreq is not None and not math.isclose(float(sfreq), rec.sfreq, rel_tol=1e-6):
        raise DataError(
            f"{p}: sampling-rate mismatch: the file says {rec.sfreq:g} Hz but {sfreq=:g} was declared; "
            "fix the declared rate (manifest column 'sfreq') or leave it empty"
        )
    return rec


# --------------------------------------------------------------------------------------- WFDB
def check_wfdb_size(record: str | Path, header: Any) -> None:
    """Raise :class:`DataError` when a WFDB signal file is shorter than its header implies."""
    if header.sig_len is None or header.file_name is None:
        return
    folder = Path(record).parent
    per_file: dict[str, list[int]] = {}
    for i, fname in enumerate(header.file_name):
        per_file.setdefault(fname, []).append(i)
    for fname, idx in per_file.items():
        fmt = str(header.fmt[idx[0]])
        if fmt not in _WFDB_BITS:
            continue  # compressed formats (FLAC 508/516/524): size not implied
        spf = sum(int((header.samps_per_frame or [1] * len(header.file_name))[i] or 1) for i in idx)
        offset = int((header.byte_offset or [0] * len(idx))[idx[0]] or 0)
        need = offset + math.ceil(header.sig_len * spf * _WFDB_BITS[fmt] / 8)
        f = folder / fname
        if not f.exists():
            raise DataError(f"{f}: signal file named in header {record}.hea is missing; restore it or drop the record")
        have = f.stat().st_size
        if have < need:
            raise DataError(
                f"{f}: truncated WFDB signal file: {have} bytes but header {record}.hea implies {need} "
                f"({header.sig_len} samples x {spf} signals, format {fmt}); re-download the record"
            )


def _rdheader(record: str) -> tuple[Any, str | None]:
    """``wfdb.rdheader`` that also accepts headers whose base date/time wfdb cannot parse.

    Returns the header and, when the header had to be repaired, a temporary folder holding a
    repaired copy (with the signal files linked) that the caller reads from and removes.
    """
    import wfdb

    try:
        return wfdb.rdheader(record), None
    except FileNotFoundError as err:
        raise DataError(f"{record}.hea: WFDB header not found; check the record path") from err
    except ValueError:
        # e.g. the CinC 2017 headers write "date time" where WFDB expects "time date":
        # keep the first four fields of the record line (name, n_sig, fs, sig_len).
        text = Path(record + ".hea").read_text(errors="replace").splitlines()
        text[0] = " ".join(text[0].split()[:4])
        tmp = tempfile.mkdtemp(prefix="medssl_wfdb_")
        name = Path(record).name
        Path(tmp, name + ".hea").write_text("\n".join(text) + "\n")
        for f in Path(record).parent.glob(name + ".*"):
            if f.suffix != ".hea":
                os.symlink(f.resolve(), Path(tmp, f.name))
        try:
            return wfdb.rdheader(os.path.join(tmp, name)), tmp
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{record}.hea: unreadable WFDB header ({err}); fix or remove the record") from err


def _check_header_rate(record: str) -> None:
    """Refuse a WFDB header whose record line gives a sampling rate that is not > 0.

    wfdb itself silently falls back to its default 250 Hz for a rate it cannot parse (e.g. ``-100``).
    """
    import re

    try:
        lines = Path(record + ".hea").read_text(errors="replace").splitlines()
    except OSError:
        return  # _rdheader names the missing header
    line = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    fields = line.split()
    if len(fields) < 3:
        return  # no rate given: the WFDB default (250 Hz) is the documented one
    m = re.match(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", fields[2])
    rate = float(m.group(0)) if m else float("nan")
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"{record}.hea: sampling rate {fields[2]!r} on the record line (third field) must be > 0; "
                        "fix the header or leave the record out")


def read_wfdb(path: str | Path) -> Record:
    """Read a WFDB record (``.dat`` or ``.mat`` signal files); samples in mV, leads named.

    Raises:
        DataError: missing header, truncated signal file, unknown units, NaN samples.
    """
    import wfdb

    record = _strip_ext(path)
    _check_header_rate(record)
    header, tmp = _rdheader(record)
    try:
        check_wfdb_size(record, header)
        src = os.path.join(tmp, Path(record).name) if tmp else record
        try:
            rec = wfdb.rdrecord(src, physical=True)
        except Exception as err:
            raise DataError(f"{record}: WFDB could not read the signal ({type(err).__name__}: {err})") from err
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if rec.p_signal is None:
        raise DataError(f"{record}: multi-frequency/segmented WFDB records are not supported; convert it to one rate")
    _check_file_rate(f"{record}.hea", float(rec.fs), "WFDB header's record line (third field)")
    sig = np.asarray(rec.p_signal, dtype=np.float64).T
    units = [str(u or "mV") for u in (rec.units or ["mV"] * sig.shape[0])]
    for i, u in enumerate(units):
        scale = _TO_MV.get(u.strip().lower())
        if scale is None:
            continue  # not a voltage: keep as stored
        sig[i] *= scale
        units[i] = "mV"
    names = [str(n) for n in (rec.sig_name or [f"ch{i}" for i in range(sig.shape[0])])]
    out = Record(sig.astype(np.float32), float(rec.fs), names, units, str(record),
                 {"comments": list(rec.comments or [])})
    _check_finite(out)
    return out


# ------------------------------------------------------------------------------ EDF / BDF / FIF
def check_edf_size(path: str | Path) -> None:
    """Raise :class:`DataError` when an EDF/BDF file's size differs from what its header implies.

    EDF stores 2 bytes per sample, BDF 3. Files cut short (aborted copies) or altered (line-ending
    conversion in git) are caught here instead of yielding garbage samples.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(256)
            if len(head) < 256:
                raise DataError(f"{p}: {len(head)} bytes, shorter than an EDF header (256 bytes); the file is truncated")
            ns = int(head[252:256].decode("ascii").strip())
            n_rec = int(head[236:244].decode("ascii").strip())
            duration = float(head[244:252].decode("ascii").strip())
            sig_head = f.read(256 * ns)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{p}: not a valid EDF/BDF header ({err}); check the file") from err
    if not duration > 0:
        raise DataError(f"{p}: the header's record duration is {duration:g} s, so its sampling rate is not > 0 "
                        "(rate = samples per record / duration); the rate must be > 0: fix the header "
                        "(bytes 244-252) or re-export the file")
    if len(sig_head) < 256 * ns:
        raise DataError(f"{p}: header declares {ns} signals but the file ends inside the header; the file is truncated")
    if n_rec == 0:
        raise DataError(f"{p}: the file holds no data records (its header's number of data records, bytes 236-244, "
                        "is 0), so it has no samples; re-export the recording, or leave the file out")
    _check_edf_units(p, sig_head, ns)
    if n_rec < 0:
        return  # unknown number of records (allowed while recording): nothing implied
    start = 216 * ns
    per_rec = sum(int(sig_head[start + 8 * i: start + 8 * i + 8].decode("ascii").strip()) for i in range(ns))
    bps = 3 if head[:1] == b"\xff" else 2
    need = 256 * (ns + 1) + n_rec * per_rec * bps
    have = p.stat().st_size
    if have != need:
        what = "truncated" if have < need else "longer than its header implies (altered, e.g. by line-ending conversion)"
        raise DataError(
            f"{p}: {have} bytes but the header implies {need} ({n_rec} records x {per_rec} samples x {bps} bytes "
            f"+ {256 * (ns + 1)} header bytes): the file is {what}; re-download it (and mark *.edf binary in .gitattributes)"
        )


def _check_edf_units(p: Path, sig_head: bytes, ns: int) -> None:
    """Every data signal must state its physical unit: without one, readers take the values as volts, so EEG in
    microvolts comes out a million times too large (and no storage dtype makes that right)."""
    labels = [sig_head[16 * i: 16 * i + 16].decode("latin-1").strip() for i in range(ns)]
    units = [sig_head[96 * ns + 8 * i: 96 * ns + 8 * i + 8].decode("latin-1").strip() for i in range(ns)]
    blank = [lab or f"#{i + 1}" for i, (lab, unit) in enumerate(zip(labels, units, strict=True))
             if not unit and not lab.endswith("Annotations")]
    if blank:
        raise DataError(
            f"{p}: signal(s) {blank} have no physical unit (the header's 8-byte 'physical dimension' field of each "
            "signal is blank), so their scale is unknown; state the unit in the file: write it into that field "
            "(e.g. 'uV' for EEG, 'mV' for ECG) with an EDF editor, or re-export the recording with its units")


def read_edf(path: str | Path) -> Record:
    """Read EDF/EDF+/BDF/FIF through mne; voltage channels in µV, annotations in ``meta``.

    Raises:
        DataError: truncated or altered file, unreadable file, NaN samples.
    """
    import mne

    p = str(path)
    low = p.lower()
    if not Path(p).exists():
        raise DataError(f"{p}: file not found")
    if low.endswith((".edf", ".bdf")):
        check_edf_size(p)
    reader = {".edf": mne.io.read_raw_edf, ".bdf": mne.io.read_raw_bdf}.get(Path(low).suffix, mne.io.read_raw_fif)
    try:
        raw = reader(p, preload=True, verbose="error")
    except Exception as err:
        if not (low.endswith((".edf", ".bdf")) and "latin1" in str(err)):
            raise DataError(f"{p}: mne could not read it ({type(err).__name__}: {err})") from err
        try:  # EDF+ annotations written in latin-1 (many European systems): read them as such
            raw = reader(p, preload=True, verbose="error", encoding="latin1")
        except Exception as err2:
            raise DataError(f"{p}: mne could not read it ({type(err2).__name__}: {err2})") from err2
    _check_file_rate(p, float(raw.info["sfreq"]), "EDF header (record duration)")
    data = raw.get_data().astype(np.float64)
    units = []
    for i, ch in enumerate(raw.info["chs"]):
        if int(ch["unit"]) == 107:  # FIFF_UNIT_V
            data[i] *= 1e6
            units.append("uV")
        else:
            units.append(str(ch["unit"]).split()[-1].strip("()").lower().replace("fiff_unit_", ""))
    ann = [(float(a["onset"]), float(a["duration"]), str(a["description"])) for a in raw.annotations]
    out = Record(data.astype(np.float32), float(raw.info["sfreq"]), list(raw.ch_names), units, p,
                 {"annotations": ann, "channel_types": raw.get_channel_types()})
    _check_finite(out)
    return out


def read_wfdb_events(path: str | Path, sfreq: float) -> list[tuple[float, str]]:
    """Events of a WFDB annotation file (e.g. ``S001R04.edf.event`` beside ``S001R04.edf``): ``[(onset_s, label)]``.

    The label is an event's auxiliary note (e.g. ``T0``/``T1``/``T2`` of PhysioNet's motor imagery EDFs) or
    else its symbol; ``sfreq`` (the signal's rate) places the samples when the file states none.

    Raises:
        DataError: the file cannot be read as a WFDB annotation file, or holds no events.
    """
    import wfdb

    p = Path(path)
    try:
        ann = wfdb.rdann(str(p)[: -len(p.suffix)], p.suffix[1:])
    except Exception as err:  # wfdb raises ValueError/IndexError/struct errors on damaged files
        raise DataError(f"{p}: not a readable WFDB annotation file ({type(err).__name__}: {err}); fix or remove it, "
                        "or pass ?events=none to ignore it") from err
    fs = float(ann.fs) if ann.fs else float(sfreq)
    notes = list(ann.aux_note or [""] * len(ann.sample))
    out = [(float(smp) / fs, (note or "").strip("\x00 ") or str(sym))
           for smp, sym, note in zip(ann.sample, ann.symbol, notes, strict=True)]
    if not out:
        raise DataError(f"{p}: the annotation file holds no events; remove it or pass ?events=none")
    return out


def read_npy(path: str | Path, sfreq: float, channels: list[str] | None = None) -> Record:
    """Read a ``.npy`` array of shape ``(channels, samples)``.

    Raises:
        DataError: wrong number of dimensions, channel names that do not match, NaN samples.
    """
    p = str(path)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{p}: cannot read the .npy array ({err}); it may be truncated") from err
    if arr.ndim != 2:
        raise DataError(f"{p}: a .npy signal must be (channels, samples), got shape {arr.shape}")
    if arr.shape[0] > arr.shape[1]:
        raise DataError(f"{p}: shape {arr.shape} has more channels than samples; save it as (channels, samples) (transpose it)")
    names = list(channels) if channels else [f"ch{i}" for i in range(arr.shape[0])]
    if len(names) != arr.shape[0]:
        raise DataError(f"{p}: {arr.shape[0]} channels but {len(names)} channel names were given")
    out = Record(np.asarray(arr, dtype=np.float32), float(sfreq), names, [""] * len(names), p)
    _check_finite(out)
    return out


def _check_finite(rec: Record) -> None:
    bad = ~np.isfinite(rec.signal)
    if bad.any():
        chans = [rec.channels[i] for i in np.flatnonzero(bad.any(1))]
        raise DataError(
            f"{rec.path}: {int(bad.sum())} NaN/inf samples in channel(s) {chans}; repair the file or "
            "exclude it (a manifest row, or on_error='skip' to skip and report broken records)"
        )

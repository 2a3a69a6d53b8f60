"""Dataset layouts -> lists of :class:`RecordSpec` (what to read, whose it is, its label).

Scanning reads only small tables and headers; the signals are read once at ingest
(:mod:`signalssl.ingest`). Layouts: a WFDB folder, PTB-XL, PhysioNet/CinC 2017 and 2020/2021,
an EDF/BDF/FIF folder (EEGMAT preset), Sleep-EDF (hypnograms -> 30 s epochs) and a manifest CSV.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretext.errors import DataError
from pretext.labels import parse_label
from pretext.manifest import read_manifest
from pretext.options import as_flag

__all__ = [
    "RecordSpec", "scan_wfdb", "scan_ptbxl", "scan_cinc2017", "scan_cinc2021", "scan_edf", "scan_sleepedf",
    "scan_manifest", "ptbxl_labels", "PTBXL_LABEL_SETS", "SLEEP_STAGES", "sleep_events",
]

PTBXL_LABEL_SETS = ("all", "diagnostic", "subclass", "superclass", "form", "rhythm")
SLEEP_STAGES = {"Sleep stage W": "W", "Sleep stage 1": "N1", "Sleep stage 2": "N2", "Sleep stage 3": "N3",
                "Sleep stage 4": "N3", "Sleep stage R": "REM"}
SLEEP_CLASSES = ["W", "N1", "N2", "N3", "REM"]


@dataclasses.dataclass
class RecordSpec:
    """One record to ingest.

    Attributes:
        name: unique record id within the dataset.
        path: file to read (WFDB: record path without extension).
        patient: patient/subject id.
        label: class name, list of class names (multi-label), or ``None`` (unlabelled).
        split: official split ("train"/"val"/"test") or ``None``.
        sfreq: declared rate (manifest), checked against the file.
        meta: per-record metadata (age, sex, fold, ...), JSON-serialisable.
        events_path: sidecar annotation file (Sleep-EDF hypnogram), read at ingest.
    """

    name: str
    path: str
    patient: str
    label: Any = None
    split: str | None = None
    sfreq: float | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    events_path: str | None = None


def _need_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: {what} must be a folder; check the path")
    return p


def _wfdb_records(folder: Path) -> list[Path]:
    """Record paths (no extension) from a RECORDS file, else from every ``.hea`` below ``folder``."""
    rec_file = folder / "RECORDS"
    if rec_file.exists():
        names = [ln.strip() for ln in rec_file.read_text().splitlines() if ln.strip()]
        recs = [folder / n for n in names]
        missing = [str(r) for r in recs if not r.with_name(r.name + ".hea").exists()]
        if missing:
            raise DataError(f"{rec_file} lists {len(missing)} record(s) with no .hea file, e.g. {missing[:5]}; "
                            "restore them or fix RECORDS")
        return recs
    return sorted(p.with_suffix("") for p in folder.rglob("*.hea"))


def _header_comments(record: Path) -> dict[str, str]:
    out = {}
    for line in record.with_name(record.name + ".hea").read_text(errors="replace").splitlines():
        if line.startswith("#") and ":" in line:
            key, _, val = line.lstrip("#").partition(":")
            out[key.strip().lower()] = val.strip()
    return out


def scan_wfdb(folder: str | Path, patient_pattern: str | None = None) -> list[RecordSpec]:
    """Every WFDB record in ``folder`` (RECORDS file or ``*.hea``), unlabelled.

    Args:
        folder: the folder.
        patient_pattern: regex with a group ``patient`` applied to the record name; by default
            each record is its own patient.
    """
    root = _need_dir(folder, "a WFDB data folder")
    recs = _wfdb_records(root)
    if not recs:
        raise DataError(f"{root}: no WFDB records (*.hea) found")
    out = []
    for r in recs:
        name = str(r.relative_to(root))
        out.append(RecordSpec(name, str(r), _patient(name, patient_pattern, root)))
    return out


def _patient(name: str, pattern: str | None, where: Path) -> str:
    if not pattern:
        return name
    m = re.search(pattern, name)
    if not m or "patient" not in m.groupdict():
        raise DataError(f"{where}: patient_pattern {pattern!r} does not match {name!r} or has no (?P<patient>...) group")
    return m.group("patient")


def scan_cinc2017(folder: str | Path) -> list[RecordSpec]:
    """PhysioNet/CinC 2017: WFDB ``.mat`` records + ``REFERENCE.csv`` (record,label: N/A/O/~)."""
    root = _need_dir(folder, "a CinC 2017 folder")
    ref = root / "REFERENCE.csv"
    if not ref.exists():
        raise DataError(f"{root}: REFERENCE.csv (record,label) not found; is this a CinC 2017 folder?")
    table = pd.read_csv(ref, header=None, names=["record", "label"], dtype=str)
    bad = sorted(set(table["label"]) - {"N", "A", "O", "~"})
    if bad:
        raise DataError(f"{ref}: unknown label(s) {bad}; CinC 2017 labels are N, A, O, ~")
    out = []
    for rec, lab in zip(table["record"], table["label"], strict=True):
        p = root / rec
        if not p.with_name(p.name + ".hea").exists():
            raise DataError(f"{ref}: record {rec!r} has no header {p}.hea; restore it or remove the line")
        out.append(RecordSpec(rec, str(p), rec, lab))  # no patient ids: one recording per patient
    return out


def scan_cinc2021(folder: str | Path) -> list[RecordSpec]:
    """PhysioNet/CinC 2020/2021: WFDB records whose headers carry ``# Dx:`` SNOMED codes (multi-label)."""
    root = _need_dir(folder, "a CinC 2020/2021 folder")
    recs = _wfdb_records(root)
    if not recs:
        raise DataError(f"{root}: no WFDB records (*.hea) found")
    out = []
    for r in recs:
        c = _header_comments(r)
        if "dx" not in c:
            raise DataError(f"{r}.hea: no '# Dx:' line; CinC 2020/2021 headers list SNOMED codes there")
        codes = [x.strip() for x in c["dx"].split(",") if x.strip()]
        name = str(r.relative_to(root))
        meta = {"age": c.get("age"), "sex": c.get("sex")}
        out.append(RecordSpec(name, str(r), name, codes, meta=meta))
    return out


# ------------------------------------------------------------------------------------ PTB-XL
def ptbxl_labels(scp_codes: pd.Series, statements: pd.DataFrame, label_set: str) -> list[list[str]]:
    """Map PTB-XL ``scp_codes`` dicts to one of the standard label sets (Strodthoff et al. 2021).

    Args:
        scp_codes: per record a dict (or its string form) ``{code: likelihood}``.
        statements: ``scp_statements.csv`` indexed by code.
        label_set: all, diagnostic, subclass, superclass, form or rhythm.
    """
    if label_set not in PTBXL_LABEL_SETS:
        raise DataError(f"PTB-XL {label_set=} is not one of {PTBXL_LABEL_SETS}")
    st = statements
    diag = set(st.index[st.get("diagnostic", pd.Series(dtype=float)).fillna(0) == 1])
    out = []
    for codes in scp_codes:
        d = ast.literal_eval(codes) if isinstance(codes, str) else dict(codes)
        keys = list(d)
        if label_set == "all":
            labs = [k for k in keys if k in st.index]
        elif label_set == "diagnostic":
            labs = [k for k in keys if k in diag]
        elif label_set in ("subclass", "superclass"):
            col = "diagnostic_subclass" if label_set == "subclass" else "diagnostic_class"
            labs = [str(st.at[k, col]) for k in keys if k in diag and pd.notna(st.at[k, col])]
        else:
            labs = [k for k in keys if k in st.index and st.at[k, label_set] == 1]
        out.append(sorted(set(labs)))
    return out


def scan_ptbxl(folder: str | Path, rate: int = 100, label_set: str = "superclass") -> list[RecordSpec]:
    """PTB-XL native layout: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``, ``records500/``.

    Official split: ``strat_fold`` 1-8 train, 9 val, 10 test.
    """
    root = _need_dir(folder, "a PTB-XL folder")
    db_path, st_path = root / "ptbxl_database.csv", root / "scp_statements.csv"
    for p in (db_path, st_path):
        if not p.exists():
            raise DataError(f"{root}: {p.name} not found; point ptbxl: at the folder holding ptbxl_database.csv")
    if rate not in (100, 500):
        raise DataError(f"PTB-XL {rate=} must be 100 or 500 (records100/ or records500/)")
    db = pd.read_csv(db_path)
    need = {"ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"}
    if missing := sorted(need - set(db.columns)):
        raise DataError(f"{db_path}: missing column(s) {missing}; is this the PhysioNet ptbxl_database.csv?")
    st = pd.read_csv(st_path, index_col=0)
    labels = ptbxl_labels(db["scp_codes"], st, label_set)
    col = "filename_lr" if rate == 100 else "filename_hr"
    out = []
    for row, lab in zip(db.itertuples(index=False), labels, strict=True):
        fold = int(row.strat_fold)
        split = "test" if fold == 10 else "val" if fold == 9 else "train"
        meta = {"strat_fold": fold, "age": _num(getattr(row, "age", None)), "sex": _num(getattr(row, "sex", None))}
        out.append(RecordSpec(f"{int(row.ecg_id):05d}", str(root / getattr(row, col)),
                              str(int(float(row.patient_id))), lab, split, float(rate), meta))
    return out


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


# --------------------------------------------------------------------------------- EDF / EEG
EDF_EXTS = (".edf", ".bdf", ".fif")
#: suffixes of WFDB annotation files kept beside an EDF (``S001R04.edf.event`` in PhysioNet's eegmmidb)
EVENT_EXTS = (".event", ".atr", ".ann", ".evt")


def event_file(edf: Path) -> Path | None:
    """The WFDB annotation file beside ``edf`` (``NAME.edf.event``, ``NAME.event``, ``.atr``, ...), or None."""
    for ext in EVENT_EXTS:
        for cand in (edf.parent / (edf.name + ext), edf.with_suffix(ext)):
            if cand.is_file():
                return cand
    return None


def scan_edf(folder: str | Path, pattern: str | None = None, label_map: dict[str, str] | None = None,
             subject_info: str | None = None) -> list[RecordSpec]:
    """Every EDF/BDF/FIF file in ``folder``; patient (and label) from the file name.

    Args:
        folder: the folder (searched recursively).
        pattern: regex on the file stem with group ``patient`` and optionally ``label``; by
            default the stem is the patient and files are unlabelled.
        label_map: maps the ``label`` group to class names (``{"1": "rest", "2": "task"}``).
        subject_info: CSV whose first column holds the patient id; its other columns go to ``meta``.
    """
    root = _need_dir(folder, "an EDF folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EDF_EXTS)
    if not files:
        raise DataError(f"{root}: no .edf/.bdf/.fif files found")
    info: dict[str, dict[str, Any]] = {}
    if subject_info:
        sp = Path(subject_info) if Path(subject_info).is_absolute() else root / subject_info
        if not sp.exists():
            raise DataError(f"subject_info {sp} not found; give a CSV whose first column is the subject id")
        t = pd.read_csv(sp)
        info = {str(k): {c: _jsonable(v) for c, v in r.items()} for k, r in zip(t.iloc[:, 0], t.iloc[:, 1:].to_dict("records"), strict=True)}
    out = []
    for f in files:
        stem = f.name[: -len(f.suffix)]
        patient, label = stem, None
        if pattern:
            m = re.search(pattern, stem)
            if not m or "patient" not in m.groupdict():
                raise DataError(f"{f}: file name does not match pattern {pattern!r} (needs a (?P<patient>...) group); "
                                "rename the file or fix the pattern")
            patient, label = m.group("patient"), m.groupdict().get("label")
            if label is not None and label_map is not None:
                if label not in label_map:
                    raise DataError(f"{f}: label {label!r} from the file name is not in label_map {label_map}")
                label = label_map[label]
        if info and patient not in info:
            raise DataError(f"{f}: subject {patient!r} is not in subject_info ({len(info)} subjects); add a row for it")
        ev = event_file(f)
        out.append(RecordSpec(str(f.relative_to(root)), str(f), patient, label, meta=info.get(patient, {}),
                              events_path=None if ev is None else str(ev)))
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def scan_sleepedf(folder: str | Path) -> list[RecordSpec]:
    """Sleep-EDF (expanded): ``*-PSG.edf`` paired with ``*-Hypnogram.edf`` by their first 7 characters.

    Subject = the first 5 characters (``SC400`` for ``SC4001E0``). A PSG file without a
    hypnogram sidecar uses its own EDF+ annotations.
    """
    root = _need_dir(folder, "a Sleep-EDF folder")
    psgs = sorted(root.rglob("*-PSG.edf"))
    if not psgs:
        raise DataError(f"{root}: no *-PSG.edf files; is this a Sleep-EDF folder?")
    hyps = {p.name[:7]: p for p in root.rglob("*-Hypnogram.edf")}
    return [RecordSpec(p.name[:8], str(p), p.name[:5], None, events_path=str(hyps[p.name[:7]]) if p.name[:7] in hyps else None)
            for p in psgs]


def sleep_events(annotations: list[tuple[float, float, str]], epoch_s: float = 30.0,
                 trim_wake_min: float | None = 30.0) -> list[tuple[float, str]]:
    """Hypnogram annotations -> ``[(onset_s, stage), ...]`` of 30 s epochs (AASM: N3 = stages 3+4).

    Epochs of unscored stages ("?", movement) are dropped. With ``trim_wake_min`` only that much
    wake before the first and after the last sleep epoch is kept (the usual Sleep-EDF protocol).
    """
    epochs = []
    for onset, dur, desc in annotations:
        stage = SLEEP_STAGES.get(desc)
        if stage is None:
            continue
        for k in range(int(round(dur / epoch_s))):
            epochs.append((onset + k * epoch_s, stage))
    epochs.sort()
    if trim_wake_min is not None and epochs:
        sleep = [t for t, s in epochs if s != "W"]
        if sleep:
            lo, hi = sleep[0] - 60 * trim_wake_min, sleep[-1] + 60 * trim_wake_min
            epochs = [(t, s) for t, s in epochs if lo <= t <= hi]
    return epochs


# ---------------------------------------------------------------------------------- manifest
def scan_manifest(csv: str | Path, skip_broken: bool = False,
                  skipped: list[dict[str, str]] | None = None) -> list[RecordSpec]:
    """Bring-your-own data: CSV ``path,label,patient_id[,sfreq][,split]``.

    ``path`` is relative to the CSV's folder or absolute: WFDB, EDF/BDF/FIF or ``.npy``
    ``(channels, samples)``. Multi-label rows separate labels with ``;``; an empty label is unknown.
    :func:`pretext.manifest.read_manifest` reads and checks it (the checks of every modality: a file listed
    twice, a patient on two splits, a missing file, an empty path or patient, an unknown split are refused
    by line); with ``skip_broken`` missing files are left out instead (named in a warning, and appended to
    ``skipped`` as ``{"record", "error"}`` like the store's).
    """
    p = Path(csv)
    t = read_manifest(p, text_columns=("sfreq",), skip_missing=as_flag(skip_broken, "skip_broken"),
                      file_key=lambda f: re.sub(r"\.(hea|dat|mat)$", "", f), what="recording",
                      exists=lambda f: f.exists() or f.with_name(f.name + ".hea").exists())
    if skipped is not None:
        skipped += [{"record": given, "error": f"manifest {p} line {line}: {file} does not exist"}
                    for given, file, line in t.attrs["missing_rows"]]
    out = []
    for k, row in enumerate(t.to_dict("records")):
        sf = row.get("sfreq", "")
        rate = None
        if sf:
            try:
                rate = float(sf)
            except ValueError:
                rate = float("nan")
            if not rate > 0 or not np.isfinite(rate):
                raise DataError(f"manifest {p} line {t.attrs['lines'][k]}: sfreq must be a number > 0, got {sf!r}; "
                                "write the sampling rate in Hz (e.g. 250) or leave it empty to use the file's")
        out.append(RecordSpec(t.attrs["given"][k], row["path"], row["patient_id"], parse_label(row["label"]),
                              row.get("split") or None, rate))
    return out

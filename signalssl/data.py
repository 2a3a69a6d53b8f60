"""Signal data kinds: ``wfdb``, ``ptbxl``, ``cinc2017``, ``cinc2021``, ``edf``, ``eegmat``, ``sleepedf``, ``manifest``.

One data path whatever the kind, the same shape as the volume side's (:mod:`volssl.data`): layouts
(:mod:`signalssl.layouts`: WFDB, EDF, manifests) -> the one preprocessing chain (:mod:`signalssl.preprocess`)
-> ingest into the one store (:mod:`signalssl.ingest`, :mod:`signalssl.store`) -> one split class that
declares its sampling, windows of the stored records (:mod:`signalssl.sampling`) -> :class:`SSLData`.

Registered kinds (``KIND:PATH?option=value&...``):

* ``wfdb:FOLDER``      any WFDB records (``.dat``/``.mat``), unlabelled; ``patient_pattern=`` regex.
* ``ptbxl:FOLDER``     PTB-XL; ``rate=100|500``, ``labels=superclass|subclass|diagnostic|form|rhythm|all``;
  official split strat_fold 1-8 / 9 / 10.
* ``cinc2017:FOLDER``  CinC 2017 (REFERENCE.csv); ``classes=4`` (N, A, O, ~) or ``af`` (AF vs rest).
* ``cinc2021:FOLDER``  CinC 2020/2021 (``# Dx:`` SNOMED codes, multi-label); resampled to 500 Hz.
* ``edf:FOLDER``       EDF/BDF/FIF files; ``pattern=`` regex with ``(?P<patient>)`` and ``(?P<label>)``,
  ``label_map=1:rest,2:task``, ``subject_info=subject-info.csv``.
* ``eegmat:FOLDER``    ``edf`` preset for EEGMAT: rest (``_1``) vs task (``_2``), subject = patient.
* ``sleepedf:FOLDER``  Sleep-EDF PSG + hypnograms -> 30 s epochs labelled W/N1/N2/N3/REM.
* ``manifest:CSV``     ``path,label,patient_id[,sfreq][,split]``.

Options common to all: ``sfreq`` (resample), ``channels`` (explicit order), ``bandpass=low,high``,
``notch``, ``window``/``stride`` (seconds), ``normalize=none|zscore``, ``dtype=float16|float32``,
``cache=auto|none|FOLDER`` (:mod:`pretext.cache`), ``skip_broken`` (leave broken records out, named),
``pad_short`` (zero-pad records shorter than one window instead of refusing them),
``split=auto|official|patient|none``, ``val_fraction``, ``test_fraction``, ``seed`` (the patient split:
:func:`pretext.splits.patient_split`, stratified by label). The names 0.1 spelt otherwise (``val_frac``,
``test_frac``, ``on_error``) are refused with the name to write now (:mod:`pretext.options`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from pretext.base import SSLData, SSLSplit
from pretext.errors import DataError, UserError
from pretext.labels import encode_labels
from pretext.options import as_flag
from pretext.registry import register_data
from pretext.splits import patient_split
from signalssl import layouts
from signalssl.ingest import ingest
from signalssl.io import Record, check_rate
from signalssl.layouts import RecordSpec
from signalssl.sampling import NORMALIZE, SignalSplit, seconds_to_samples, sliding_windows

__all__ = ["SignalSplit", "build_signal_data"]


def _list(v: Any) -> list[Any] | None:
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _label_map(v: Any) -> dict[str, str] | None:
    if v is None or isinstance(v, dict):
        return None if v is None else {str(k): str(x) for k, x in v.items()}
    out = {}
    for part in str(v).split(","):
        k, sep, x = part.partition(":")
        if not sep:
            raise UserError(f"label_map={v!r}: write it as key:name,key:name (e.g. 1:rest,2:task)")
        out[k.strip()] = x.strip()
    return out


def build_signal_data(
    kind: str, path: str, specs: list[RecordSpec], *, classes: list[str] | None = None, multilabel: bool = False,
    min_count: int = 0, drop_empty: bool = False, window: float | None = 10.0, stride: float | None = None,
    sfreq: float | None = None, channels: Any = None, bandpass: Any = None, notch: float | None = None,
    normalize: str = "none", dtype: str = "float16", cache: Any = "auto", skip_broken: bool = False,
    pad_short: bool = False, split: str = "auto", val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
    events_fn: Callable[[RecordSpec, Record], Any] | None = None, extra_key: dict[str, Any] | None = None,
) -> SSLData:
    """Ingest ``specs`` (cached), cut windows, map labels and patients, split by patient.

    ``window=None`` uses whole records (all must have one length). With ``events_fn`` the
    windows are the labelled epochs instead of a sliding grid. A record shorter than one window
    is refused by name; ``pad_short=True`` zero-pads it to one window, ``skip_broken=True`` leaves it
    out (named in a warning and in ``meta["skipped"]``). See the module docstring for the other options.
    """
    sfreq = check_rate(sfreq)
    pad_short = as_flag(pad_short, "pad_short")
    skip_broken = as_flag(skip_broken, "skip_broken")
    if normalize not in NORMALIZE:
        raise UserError(f"{normalize=} must be one of {NORMALIZE}")
    if split not in ("auto", "official", "patient", "none"):
        raise UserError(f"{split=} must be auto, official, patient or none")
    bp = _list(bandpass)
    if bp is not None and len(bp) != 2:
        raise UserError(f"bandpass={bandpass!r} needs two edges low,high in Hz (use none for an open edge)")
    bp_t = None if bp is None else tuple(None if str(b).lower() in ("none", "null") else float(b) for b in bp)
    store = ingest(specs, kind, sfreq=sfreq, channels=_list(channels), bandpass=bp_t, notch=notch, dtype=dtype,
                   skip_broken=skip_broken, cache=cache, events_fn=events_fn, extra_key=extra_key)
    idx = store.index
    rec_labels = [json.loads(s) for s in idx["label"]]
    lengths = store.lengths
    if events_fn is not None:
        win = seconds_to_samples(window or 30.0, store.sfreq)
        ev = store.events
        ev = ev[ev["start"].to_numpy() + win <= lengths[ev["record"].to_numpy()]]
        recs, starts = ev["record"].to_numpy(np.int64), ev["start"].to_numpy(np.int64)
        item_labels: list[Any] = list(ev["label"])
        n_padded = 0
        short_skipped = []
    else:
        short_skipped = []
        if window is None:
            if len(set(lengths.tolist())) != 1:
                raise UserError(f"{kind}:{path}: records have {len(set(lengths.tolist()))} different lengths "
                                f"({lengths.min()}-{lengths.max()} samples); pass window=SECONDS")
            win = int(lengths[0])
        else:
            win = seconds_to_samples(window, store.sfreq)
        hop = seconds_to_samples(stride, store.sfreq, "stride") if stride else win
        short = np.flatnonzero(lengths < win)
        if len(short) and not pad_short:
            listing = ", ".join(f"{idx['record'].iloc[r]} ({lengths[r]} samples)" for r in short[:10])
            more = f" and {len(short) - 10} more" if len(short) > 10 else ""
            what = (f"{kind}:{path}: {len(short)} record(s) are shorter than one window of {win} samples "
                    f"({win / store.sfreq:g} s): {listing}{more}")
            if not skip_broken:
                raise DataError(f"{what}; pass pad_short=true to zero-pad each to one window, skip_broken=true to "
                                "leave them out, or a shorter window=SECONDS")
            warnings.warn(f"{what}; leaving them out (skip_broken=true; pad_short=true would zero-pad them)",
                          stacklevel=3)
            short_skipped = [{"record": str(idx["record"].iloc[r]),
                              "error": f"{lengths[r]} samples, shorter than one window of {win}"} for r in short]
        recs, starts = sliding_windows(lengths, win, hop, pad_short=pad_short)
        item_labels = [rec_labels[r] for r in recs]
        n_padded = int(len(short)) if pad_short else 0
    # classes: multi-label ones counted over records (min_count), single-label ones over the windows kept
    _, class_names = encode_labels(rec_labels if multilabel else item_labels, classes=classes, multilabel=multilabel,
                                   min_count=min_count, source=f"{kind}:{path}")
    labels, _ = encode_labels(item_labels, classes=class_names, multilabel=multilabel, source=f"{kind}:{path}")
    keep = labels.any(1) if multilabel and drop_empty else np.ones(len(recs), bool)
    # patients and splits (by record, so all windows of a patient stay together)
    rec_patients = idx["patient"].astype(str).to_numpy()
    patient_names = sorted(set(rec_patients.tolist()))
    pid = {p: k for k, p in enumerate(patient_names)}
    rec_pid = np.array([pid[p] for p in rec_patients], dtype=np.int64)
    official = idx["split"].astype(str).to_numpy()
    has_official = bool((official != "").all())
    mode = ("official" if has_official else "patient") if split == "auto" else split
    if mode == "official":
        if not has_official:
            raise DataError(f"{kind}:{path}: split=official but {int((official == '').sum())} record(s) have no split")
        rec_split = official
    elif mode == "patient":
        strata = [json.dumps(lab) for lab in rec_labels]
        rec_split = patient_split(rec_pid, val_fraction, test_fraction, seed, strata=strata)
    else:
        rec_split = np.array(["train"] * len(idx))
    item_split = rec_split[recs]
    splits: dict[str, SSLSplit] = {}
    for name in ("train", "val", "test"):
        sel = np.flatnonzero((item_split == name) & keep)
        if len(sel):
            splits[name] = SignalSplit(store, recs[sel], starts[sel], win, labels[sel], rec_pid[recs[sel]],
                                       patient_names, normalize)
    if "train" not in splits:
        raise DataError(f"{kind}:{path}: the train split is empty; check split/val_fraction/test_fraction")
    n_rec_per_patient = np.bincount(rec_pid, minlength=len(patient_names))
    meta = {
        "store": str(store.root), "window": win, "window_s": win / store.sfreq, "n_records": len(idx),
        "n_patients": len(patient_names), "n_padded_records": n_padded, "split_mode": mode,
        "skipped": store.meta.get("skipped", []) + short_skipped, "n_items": {k: len(v) for k, v in splits.items()},
        "patients_with_one_record": int((n_rec_per_patient == 1).sum()),
        "channel_units": store.meta.get("units", []),
    }
    return SSLData("signal", splits, (store.n_chans, win), num_classes=len(class_names) or None,
                   class_names=class_names, multilabel=multilabel, sfreq=store.sfreq,
                   channel_names=store.channels, source=f"{kind}:{path}", meta=meta)


# ------------------------------------------------------------------------------ data kinds
@register_data("wfdb", modality="signal")
def load_wfdb(path: str, patient_pattern: str | None = None, **options: Any) -> SSLData:
    """A folder of WFDB records (unlabelled); one patient per record unless ``patient_pattern``."""
    return build_signal_data("wfdb", path, layouts.scan_wfdb(path, patient_pattern), extra_key={"pp": patient_pattern},
                             **options)


@register_data("ptbxl", modality="signal")
def load_ptbxl(path: str, rate: int = 100, labels: str = "superclass", min_count: int = 0, drop_empty: bool = True,
               window: float | None = None, **options: Any) -> SSLData:
    """PTB-XL (native layout), 12 leads at ``rate`` Hz, multi-hot ``labels``; official folds."""
    specs = layouts.scan_ptbxl(path, int(rate), labels)
    return build_signal_data("ptbxl", path, specs, multilabel=True, min_count=min_count, drop_empty=drop_empty,
                             window=window, extra_key={"rate": rate, "labels": labels}, **options)


@register_data("cinc2017", modality="signal")
def load_cinc2017(path: str, classes: str = "4", **options: Any) -> SSLData:
    """PhysioNet/CinC 2017 single-lead ECG (300 Hz): ``classes=4`` (N, A, O, ~) or ``af`` (non-AF, AF)."""
    specs = layouts.scan_cinc2017(path)
    if str(classes) == "af":
        for s in specs:
            s.label = "AF" if s.label == "A" else "non-AF"
        names = ["non-AF", "AF"]
    elif str(classes) == "4":
        names = ["N", "A", "O", "~"]
    else:
        raise UserError(f"cinc2017 classes={classes!r} must be 4 or af")
    return build_signal_data("cinc2017", path, specs, classes=names, extra_key={"classes": str(classes)}, **options)


@register_data("cinc2021", modality="signal")
def load_cinc2021(path: str, classes: Any = None, min_count: int = 1, sfreq: float = 500.0, **options: Any) -> SSLData:
    """PhysioNet/CinC 2020/2021 12-lead ECG, multi-hot SNOMED codes from ``# Dx:`` (resampled to ``sfreq``)."""
    return build_signal_data("cinc2021", path, layouts.scan_cinc2021(path), classes=_list(classes), multilabel=True,
                             min_count=min_count, sfreq=sfreq, **options)


@register_data("edf", modality="signal")
def load_edf(path: str, pattern: str | None = None, label_map: Any = None, subject_info: str | None = None,
             classes: Any = None, events: str = "auto", **options: Any) -> SSLData:
    """A folder of EDF/BDF/FIF recordings; patient and label parsed from file names by ``pattern``.

    ``events``: "auto" (default) labels windows by the trial events of a WFDB annotation file beside each EDF
    (``NAME.edf.event``, ``NAME.event``, ``.atr``: one window of ``?window=`` seconds from each event's onset,
    labelled by its note, e.g. T0/T1/T2) when every file has one; "none" ignores such files (sliding windows).
    """
    from signalssl.io import read_wfdb_events

    lm = _label_map(label_map)
    specs = layouts.scan_edf(path, pattern, lm, subject_info)
    if events not in ("auto", "none"):
        raise UserError(f"events={events!r} must be auto (WFDB annotation files beside the EDFs) or none")
    with_ev = [s for s in specs if s.events_path] if events == "auto" else []
    if with_ev and len(with_ev) < len(specs):
        without = next(s.path for s in specs if not s.events_path)
        raise DataError(f"{len(with_ev)} of {len(specs)} EDF files have a WFDB annotation file beside them (e.g. "
                        f"{with_ev[0].events_path}) but {without} has none: give every file its events as "
                        "NAME.edf.event (or NAME.event / .atr), or pass ?events=none for sliding windows without "
                        "event labels")

    def events_fn(spec: RecordSpec, rec: Record) -> list[tuple[float, str]]:
        ev = read_wfdb_events(str(spec.events_path), rec.sfreq)
        return [(t, lm.get(lab, lab) if lm else lab) for t, lab in ev]

    return build_signal_data("edf", path, specs, classes=_list(classes), events_fn=events_fn if with_ev else None,
                             extra_key={"pattern": pattern, "lm": lm, "events": bool(with_ev)}, **options)


@register_data("eegmat", modality="signal")
def load_eegmat(path: str, **options: Any) -> SSLData:
    """EEG during mental arithmetic (PhysioNet eegmat): 36 subjects x (rest ``_1``, task ``_2``), 8 EEG leads."""
    data = load_edf(path, pattern=r"(?P<patient>Subject\d+)_(?P<label>\d)", label_map={"1": "rest", "2": "task"},
                    subject_info="subject-info.csv", classes=["rest", "task"], **options)
    data.source = f"eegmat:{path}"
    return data


@register_data("sleepedf", modality="signal")
def load_sleepedf(path: str, channels: Any = "EEG Fpz-Cz", trim_wake_min: float | None = 30.0,
                  **options: Any) -> SSLData:
    """Sleep-EDF: 30 s epochs labelled W, N1, N2, N3 (stages 3+4), REM from the hypnograms."""
    if options.get("window", 30.0) != 30.0:
        raise UserError("sleepedf windows are the 30 s scored epochs; drop the window option")
    options.pop("window", None)

    def events(spec: RecordSpec, rec: Record) -> list[tuple[float, str]]:
        import mne

        ann = rec.meta.get("annotations", [])
        if spec.events_path:
            a = mne.read_annotations(spec.events_path)
            ann = [(float(o), float(d), str(s)) for o, d, s in zip(a.onset, a.duration, a.description, strict=True)]
        ev = layouts.sleep_events(ann, 30.0, trim_wake_min)
        if not ev:
            raise DataError(f"{spec.events_path or spec.path}: no scored sleep stages found in the annotations")
        return ev

    return build_signal_data("sleepedf", path, layouts.scan_sleepedf(path), classes=layouts.SLEEP_CLASSES,
                             channels=channels, window=30.0, events_fn=events, extra_key={"trim": trim_wake_min},
                             **options)


@register_data("manifest", modality="signal")
def load_manifest(path: str, multilabel: bool = False, **options: Any) -> SSLData:
    """Bring-your-own signals from a CSV ``path,label,patient_id[,sfreq][,split]``."""
    missing: list[dict[str, str]] = []
    specs = layouts.scan_manifest(path, skip_broken=options.get("skip_broken", False), skipped=missing)
    multi = multilabel or any(isinstance(s.label, list) for s in specs)
    if multi:
        for s in specs:
            s.label = [s.label] if isinstance(s.label, str) else s.label
    data = build_signal_data("manifest", path, specs, multilabel=multi, **options)
    data.meta["skipped"] = missing + list(data.meta["skipped"])
    return data

"""Patient-level evaluation splits, label fractions and the leakage guard.

Every split the harness uses is by patient, never by record:

* **official** splits where the data kind ships them (``SSLData.splits`` has ``train``/``val``/``test``:
  MedMNIST's, PTB-XL folds 1-8 / 9 / 10);
* otherwise **patient-wise k-fold** (``k`` folds, fold ``fold`` is the test set) or a **holdout**, both
  stratified by label with :class:`sklearn.model_selection.StratifiedGroupKFold`; a validation set is carved
  from the training patients the same way when the data has none.

Label fractions (1 %, 10 %, 100 % ...) are drawn from the training patients, stratified by each patient's
rarest label, seeded. **Documented fallback**: when the fraction would leave a class with no labelled
example, one random patient carrying that class is added (the cell records ``fallback_classes`` and a
:class:`FractionFallbackWarning` names the classes on the console); with
``strict=True`` this is an error instead. A class that has no example in the whole training split is always
an error.

:func:`check_no_leakage` refuses any split where a patient is on two sides and names the patients.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from pretext.base import SSLData, SSLSplit
from pretext.errors import ConfigError, DataError


class LeakageError(DataError):
    """A patient appears in more than one side of a split."""


class FractionError(DataError):
    """A label fraction leaves a class with no labelled example (``strict=True``)."""


class FractionFallbackWarning(UserWarning):
    """A label fraction left a class empty and one patient of that class was added (the documented fallback)."""


@dataclasses.dataclass
class View:
    """A subset of one :class:`SSLSplit`: the records ``indices`` of ``split``.

    Attributes:
        split: the underlying data split.
        indices: ``(N,)`` int64 record indices into ``split``.
        name: "train", "val" or "test" (for messages).
    """

    split: SSLSplit
    indices: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` class indices or ``(N, K)`` multi-hot labels."""
        return np.asarray(self.split.labels)[self.indices]

    @property
    def patient_ids(self) -> np.ndarray:
        """``(N,)`` patient identifiers (strings), comparable across splits."""
        names = np.asarray(self.split.patient_names, dtype=object)
        return names[np.asarray(self.split.patients)[self.indices]].astype(str)

    @property
    def meta(self) -> Any:
        """Per-record metadata rows (``pandas.DataFrame``) or ``None``."""
        if self.split.meta is None:
            return None
        return self.split.meta.iloc[self.indices].reset_index(drop=True)

    def subset(self, positions: np.ndarray) -> View:
        """The records at ``positions`` (positions within this view)."""
        return View(self.split, self.indices[np.asarray(positions, dtype=np.int64)], self.name)

    def dataset(self) -> Dataset:
        """A torch dataset over this view whose items are the split's dicts."""
        return _ViewDataset(self)


class _ViewDataset(Dataset):
    def __init__(self, view: View) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.view.split[int(self.view.indices[i])]


@dataclasses.dataclass
class EvalSplits:
    """Train / validation / test views of one dataset, disjoint by patient.

    Attributes:
        train, val, test: the three views.
        kind: "official", "official+val" (val carved from official train), "kfold" or "holdout".
        fold: the test fold for "kfold".
    """

    train: View
    val: View
    test: View
    kind: str
    fold: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "split": self.kind,
            "fold": self.fold,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "n_train_patients": len(np.unique(self.train.patient_ids)),
            "n_test_patients": len(np.unique(self.test.patient_ids)),
        }


# -- leakage guard ------------------------------------------------------------------------------------------
def check_no_leakage(sides: Mapping[str, Sequence[str] | np.ndarray], what: str = "split") -> None:
    """Refuse a split where a patient is on two sides.

    Args:
        sides: side name -> patient identifiers of its records (repeats allowed).
        what: names the split in the message (e.g. the data spec).

    Raises:
        LeakageError: naming the shared patients and the sides they are on.
    """
    sets = {name: set(map(str, ids)) for name, ids in sides.items()}
    names = list(sets)
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = sorted(sets[a] & sets[b])
            if both:
                shown = ", ".join(both[:10]) + (f", ... ({len(both)} in total)" if len(both) > 10 else "")
                problems.append(f"{len(both)} patient(s) on both {a!r} and {b!r}: {shown}")
    if problems:
        raise LeakageError(
            f"{what}: patient leakage, " + "; ".join(problems)
            + ". Every patient must be on one side only: fix the patient ids or the split"
        )


# -- labels -------------------------------------------------------------------------------------------------
def is_multilabel(labels: np.ndarray) -> bool:
    return np.ndim(labels) == 2


def labelled_mask(labels: np.ndarray) -> np.ndarray:
    """``(N,)`` True where the record has a label (not ``-1``; multi-hot rows without any ``-1``)."""
    labels = np.asarray(labels)
    if is_multilabel(labels):
        return ~(labels < 0).any(axis=1)
    return labels >= 0


def check_labels(view: View, source: str = "") -> None:
    """Raise a :class:`DataError` naming the records of ``view`` that have no label."""
    missing = np.flatnonzero(~labelled_mask(view.labels))
    if len(missing):
        recs = view.indices[missing[:10]].tolist()
        pats = sorted(set(view.patient_ids[missing].tolist()))[:10]
        raise DataError(
            f"{source or 'data'}: {len(missing)} record(s) of split {view.name!r} "
            f"have no label (-1), e.g. records {recs} of patients {pats}; add their labels, or set "
            "drop_unlabelled=true (recipe) / --drop-unlabelled to leave them out of the evaluation"
        )


def strata(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``(N,)`` one stratum per record: the class, or for multi-hot labels the rarest positive class.

    Records of a multi-hot label with no positive class get stratum ``K`` ("none").
    """
    labels = np.asarray(labels)
    if not is_multilabel(labels):
        return labels.astype(np.int64)
    freq = labels.sum(axis=0)
    order = np.argsort(freq, kind="stable")  # rarest first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    k = labels.shape[1]
    out = np.full(len(labels), k, dtype=np.int64)
    for i, row in enumerate(labels):
        pos = np.flatnonzero(row > 0.5)
        if len(pos):
            out[i] = pos[np.argmin(rank[pos])]
    return out


def classes_of(labels: np.ndarray) -> list[int]:
    """Classes that the labels contain (multi-hot: columns with a positive)."""
    labels = np.asarray(labels)
    if is_multilabel(labels):
        return np.flatnonzero(labels.sum(axis=0) > 0).tolist()
    return np.unique(labels[labels >= 0]).astype(int).tolist()


# -- patient-wise folds ---------------------------------------------------------------------------------------
def patient_strata(labels: np.ndarray, patient_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique patients, each record's patient position, and each patient's stratum.

    A patient's stratum is the rarest record stratum (see :func:`strata`) among its records, so a
    patient with a rare class counts for that class.

    Returns:
        ``(patients (P,), inverse (N,), stratum (P,))``.
    """
    pids = np.asarray(patient_ids).astype(str)
    patients, inverse = np.unique(pids, return_inverse=True)
    rec = strata(labels)
    counts = np.bincount(rec)
    pat = np.full(len(patients), -1, dtype=np.int64)
    for r, p in enumerate(inverse):
        s = rec[r]
        if pat[p] < 0 or counts[s] < counts[pat[p]]:
            pat[p] = s
    return patients, inverse, pat


def patient_folds(labels: np.ndarray, patient_ids: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``(N,)`` fold number (0..k-1) of each record: patient-wise, stratified by label, seeded.

    Patients are shuffled within their stratum and dealt to the folds in turn (one deal continues
    across strata), so folds differ by at most one patient per stratum.

    Raises:
        ConfigError: fewer patients than folds.
    """
    patients, inverse, pat_stratum = patient_strata(labels, patient_ids)
    if k < 2 or len(patients) < k:
        raise ConfigError(
            f"patient-wise k-fold needs 2 <= k <= number of patients; got k={k}, {len(patients)} patients"
        )
    rng = np.random.default_rng(seed)
    pat_fold = np.empty(len(patients), dtype=np.int64)
    turn = int(rng.integers(k))
    for s in np.unique(pat_stratum):
        members = rng.permutation(np.flatnonzero(pat_stratum == s))
        pat_fold[members] = (turn + np.arange(len(members))) % k
        turn = (turn + len(members)) % k
    return pat_fold[inverse]


def _carve(view: View, fraction: float, seed: int, name: str) -> tuple[View, View]:
    """Split ``view`` by patient into (rest, carved) with about ``fraction`` of the records in ``carved``."""
    k = max(2, int(round(1.0 / fraction)))
    k = min(k, len(np.unique(view.patient_ids)))
    folds = patient_folds(view.labels, view.patient_ids, k, seed)
    rest = view.subset(np.flatnonzero(folds != 0))
    carved = view.subset(np.flatnonzero(folds == 0))
    carved.name = name
    return rest, carved


def make_eval_splits(
    data: SSLData,
    *,
    k: int | None = None,
    fold: int = 0,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    drop_unlabelled: bool = False,
) -> EvalSplits:
    """Patient-level train / val / test views of ``data``.

    Official ``train``/``val``/``test`` splits are used as they are (a missing ``val`` is carved from
    ``train`` by patient). Without an official ``test`` split, the records of all splits are pooled and
    split patient-wise: k-fold with ``fold`` as test when ``k`` is given, else a holdout of about
    ``test_fraction``. Folds are seeded by ``seed`` (keep it fixed across label seeds: the folds then
    stay put while the label draws change).

    Raises:
        LeakageError: a patient is on two sides (the official split of the data is then wrong).
        DataError: records without labels (unless ``drop_unlabelled``).
    """
    src = data.source or "data"
    if "train" not in data.splits:
        raise DataError(f"{src}: the data has no 'train' split (splits: {sorted(data.splits)})")
    views = {name: View(split, np.arange(len(split)), name) for name, split in data.splits.items()}
    if drop_unlabelled:
        views = {n: v.subset(np.flatnonzero(labelled_mask(v.labels))) for n, v in views.items()}
    else:
        for v in views.values():
            check_labels(v, src)
    if k is not None and (fold < 0 or fold >= k):
        raise ConfigError(f"fold={fold} must be in 0..{k - 1} for k={k} folds")

    if "test" in views and k is None:
        test = views["test"]
        if "val" in views:
            train, val, kind = views["train"], views["val"], "official"
        else:
            train, val = _carve(views["train"], val_fraction, seed, "val")
            kind = "official+val"
    else:
        pooled = _pool(list(views.values()))
        if k is not None:
            folds = patient_folds(pooled.labels, pooled.patient_ids, k, seed)
            test = pooled.subset(np.flatnonzero(folds == fold))
            rest = pooled.subset(np.flatnonzero(folds != fold))
            kind = "kfold"
        else:
            rest, test = _carve(pooled, test_fraction, seed, "test")
            kind = "holdout"
        test.name = "test"
        train, val = _carve(rest, val_fraction / max(1e-9, 1.0 - test_fraction), seed + 1, "val")
        train.name = "train"
    splits = EvalSplits(train, val, test, kind, fold if k is not None else 0)
    check_no_leakage(
        {"train": splits.train.patient_ids, "val": splits.val.patient_ids, "test": splits.test.patient_ids}, src
    )
    for v in (splits.train, splits.val, splits.test):
        if len(v) == 0:
            raise DataError(f"{src}: the {v.name!r} split is empty; use fewer folds or a larger data set")
    return splits


def _pool(views: list[View]) -> View:
    """All records of several views of one data set as one view (they must share the split object)."""
    if len(views) == 1:
        return views[0]
    return View(_Concat([v.split for v in views], [v.indices for v in views]), np.arange(sum(map(len, views))), "all")


class _Concat(SSLSplit):
    """Several splits' records as one split (patient ids unified by name)."""

    def __init__(self, splits: list[SSLSplit], indices: list[np.ndarray]) -> None:
        self.parts = [(s, np.asarray(ix)) for s, ix in zip(splits, indices, strict=False)]
        names = sorted({str(n) for s in splits for n in s.patient_names})
        pos = {n: i for i, n in enumerate(names)}
        self.patient_names = names
        self.labels = np.concatenate([np.asarray(s.labels)[ix] for s, ix in self.parts])
        self.patients = np.concatenate(
            [np.array([pos[str(s.patient_names[p])] for p in np.asarray(s.patients)[ix]], dtype=np.int64)
             for s, ix in self.parts]
        )
        metas = [s.meta.iloc[ix] for s, ix in self.parts if s.meta is not None]
        if len(metas) == len(self.parts):
            import pandas as pd

            self.meta = pd.concat(metas, ignore_index=True)
        else:
            self.meta = None
        self._where = [(j, int(i)) for j, (_, ix) in enumerate(self.parts) for i in ix]

    def __len__(self) -> int:
        return len(self._where)

    def load(self, i: int) -> Any:
        j, k = self._where[i]
        return self.parts[j][0].load(k)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j, k = self._where[i]
        item = dict(self.parts[j][0][k])
        import torch

        item["patient"] = torch.as_tensor(int(self.patients[i]), dtype=torch.int64)
        item["index"] = torch.as_tensor(i, dtype=torch.int64)
        return item


# -- label fractions ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class FractionDraw:
    """The labelled records of one (fraction, seed) draw.

    Attributes:
        positions: positions (into the training view) of the labelled records.
        n_patients: labelled patients drawn.
        fallback_classes: classes that got one extra patient because the fraction left them empty.
    """

    positions: np.ndarray
    n_patients: int
    fallback_classes: list[int]


def sample_fraction(
    labels: np.ndarray,
    patient_ids: np.ndarray,
    fraction: float,
    seed: int,
    *,
    strict: bool = False,
    class_names: Sequence[str] | None = None,
) -> FractionDraw:
    """Draw about ``fraction`` of the patients, stratified by each patient's rarest label, seeded.

    A patient is drawn with all its records. Each stratum gets ``round(fraction * n_stratum)`` patients
    (at least one overall). Fallback (documented): a class left without a labelled record gets one random
    patient that has it, unless ``strict`` is set.

    Args:
        labels: ``(N,)`` class indices or ``(N, K)`` multi-hot labels of the training records.
        patient_ids: ``(N,)`` patient identifiers.
        fraction: in (0, 1].
        seed: the draw's seed.
        strict: raise :class:`FractionError` instead of falling back.
        class_names: names for messages.

    Raises:
        ConfigError: ``fraction`` outside (0, 1].
        FractionError: ``strict`` and a class is left empty.
        DataError: a class has no record at all in the training split.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(f"fraction={fraction!r} must be in (0, 1], e.g. 0.01 for 1 % of the patients")
    labels = np.asarray(labels)
    patients, inverse, pat_stratum = patient_strata(labels, patient_ids)
    rng = np.random.default_rng(seed)
    if fraction >= 1.0:
        chosen = np.arange(len(patients))
    else:
        chosen_list: list[np.ndarray] = []
        for s in np.unique(pat_stratum):
            members = np.flatnonzero(pat_stratum == s)
            n = int(round(fraction * len(members)))
            chosen_list.append(rng.choice(members, size=n, replace=False))
        chosen = np.concatenate(chosen_list) if chosen_list else np.zeros(0, dtype=np.int64)
        if len(chosen) == 0:
            chosen = rng.choice(len(patients), size=1)
    fallback: list[int] = []
    names = list(class_names or [])
    for c in classes_of(labels):
        has = _has_class(labels, c)
        pat_has = np.unique(inverse[has])
        if not np.isin(chosen, pat_has).any():
            cname = names[c] if c < len(names) else str(c)
            if strict:
                raise FractionError(
                    f"fraction={fraction} (seed {seed}) leaves class {cname!r} with no labelled example "
                    f"({len(chosen)} of {len(patients)} patients drawn, {len(pat_has)} have this class); "
                    "use a larger fraction, or strict=False to add one patient per missing class"
                )
            chosen = np.append(chosen, rng.choice(pat_has))
            fallback.append(int(c))
    if fallback:
        shown = [names[c] if c < len(names) else str(c) for c in fallback]
        warnings.warn(
            f"label fraction {fraction} (seed {seed}) left class(es) {shown} with no labelled example; added one "
            f"patient per such class ({len(np.unique(chosen))} of {len(patients)} patients labelled, more than the "
            "fraction asks). Use a larger fraction, or strict_fractions: true in the recipe to refuse instead",
            FractionFallbackWarning, stacklevel=2,
        )
    positions = np.flatnonzero(np.isin(inverse, chosen))
    return FractionDraw(np.sort(positions), int(len(np.unique(chosen))), fallback)


def _has_class(labels: np.ndarray, c: int) -> np.ndarray:
    if is_multilabel(labels):
        return labels[:, c] > 0.5
    return labels == c


def check_classes(train: View, num_classes: int | None, class_names: Sequence[str] = (), source: str = "") -> None:
    """Every class must have a training record; raise a :class:`DataError` naming the missing ones."""
    if num_classes is None:
        return
    present = set(classes_of(train.labels))
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        names = [class_names[c] if c < len(class_names) else str(c) for c in missing]
        raise DataError(
            f"{source or 'data'}: class(es) {names} have no labelled record in the training split; "
            "a probe cannot learn them: add examples or drop the class from the labels"
        )

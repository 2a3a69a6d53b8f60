"""Patient-level evaluation splits (views of a data set's splits), on the core's :mod:`pretext.splits`.

Every split the harness uses is by patient, never by record:

* **official** splits where the data kind ships them (``SSLData.splits`` has ``train``/``val``/``test``:
  MedMNIST's, PTB-XL folds 1-8 / 9 / 10);
* otherwise **patient-wise k-fold** (``k`` folds, fold ``fold`` is the test set) or a **holdout**, both
  stratified by label (:func:`pretext.splits.patient_folds`); a validation set is carved
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
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from pretext.base import SSLData, SSLSplit
from pretext.errors import ConfigError, DataError
from pretext.splits import (  # noqa: F401 - the core's splits and fractions are part of this module's API
    FractionDraw,
    FractionError,
    FractionFallbackWarning,
    LeakageError,
    check_no_leakage,
    classes_of,
    is_multilabel,
    labelled_mask,
    patient_folds,
    patient_strata,
    sample_fraction,
    strata,
)


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
        max_items: the cut of :func:`cap_view` when the views were cut for a quick check, else ``None``.
    """

    train: View
    val: View
    test: View
    kind: str
    fold: int = 0
    max_items: int | None = None  # set when the views were cut for a quick check (:func:`cap_view`)

    def describe(self) -> dict[str, Any]:
        return ({"max_items": self.max_items} if self.max_items else {}) | {
            "split": self.kind,
            "fold": self.fold,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "n_train_patients": len(np.unique(self.train.patient_ids)),
            "n_test_patients": len(np.unique(self.test.patient_ids)),
        }


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
    max_items: int | None = None,
) -> EvalSplits:
    """Patient-level train / val / test views of ``data``.

    Official ``train``/``val``/``test`` splits are used as they are (a missing ``val`` is carved from
    ``train`` by patient). Without an official ``test`` split, the records of all splits are pooled and
    split patient-wise: k-fold with ``fold`` as test when ``k`` is given, else a holdout of about
    ``test_fraction``. Folds are seeded by ``seed`` (keep it fixed across label seeds: the folds then
    stay put while the label draws change). ``max_items`` cuts each of the three to about that many
    records (:func:`cap_view`; a quick check of a pipeline, see :func:`pretext.config.max_items_from_env`).

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
    if max_items:
        full = splits.describe()
        splits = dataclasses.replace(splits, max_items=max_items, train=cap_view(splits.train, max_items, seed),
                                     val=cap_view(splits.val, max_items, seed + 1),
                                     test=cap_view(splits.test, max_items, seed + 2))
        warnings.warn(f"{src}: evaluation splits cut to about {max_items} records each (max_items, e.g. from "
                      f"$MEDSSL_MAX_ITEMS): train {len(splits.train)}/{full['n_train']}, val {len(splits.val)}/"
                      f"{full['n_val']}, test {len(splits.test)}/{full['n_test']}; a quick check, not a result",
                      stacklevel=2)
    return splits


def cap_view(view: View, max_items: int, seed: int = 0) -> View:
    """About ``max_items`` records of ``view`` (``view`` itself when it is no larger), drawn per class in
    proportion to its size, seeded; every class keeps at least two records (one if it has one), so probes and
    AUROC stay defined. Multi-label views are drawn at random. Records stay in their split: no leakage."""
    n = len(view)
    if n <= max_items:
        return view
    rng = np.random.default_rng([int(seed), 0xCA9])
    labels = np.asarray(view.labels)
    if labels.ndim != 1:
        return view.subset(np.sort(rng.choice(n, max_items, replace=False)))
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(len(members), max(2, int(round(len(members) * max_items / n))))
        picks.append(rng.choice(members, take, replace=False))
    return view.subset(np.sort(np.concatenate(picks)))


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


class SmallTestSplitWarning(UserWarning):
    """The test split has fewer patients per class than the configured minimum: its metrics are unreliable."""


def patients_per_class(view: View, num_classes: int, class_names: Sequence[str] = ()) -> dict[str, int]:
    """Distinct patients with a record of each class (multi-label: each label) in ``view``."""
    labels = np.asarray(view.labels)
    pids = np.asarray(view.patient_ids).astype(str)
    out: dict[str, int] = {}
    for c in range(num_classes):
        has = labels[:, c] > 0.5 if labels.ndim == 2 else labels == c
        out[class_names[c] if c < len(class_names) else str(c)] = len(set(pids[has]))
    return out


def check_test_size(view: View, num_classes: int, class_names: Sequence[str] = (), source: str = "",
                    minimum: int = 20) -> str | None:
    """Warn (:class:`SmallTestSplitWarning`) when a class has fewer than ``minimum`` test patients; return the
    message (``None`` when the split is large enough or ``minimum`` is 0)."""
    if minimum <= 0:
        return None
    counts = patients_per_class(view, num_classes, class_names)
    small = {k: v for k, v in counts.items() if v < minimum}
    if not small:
        return None
    msg = (f"{source or 'data'}: the test split has only {', '.join(f'{v} patient(s) of {k!r}' for k, v in small.items())}"
           f" (fewer than {minimum} per class): its metrics are unreliable and their bootstrap intervals may be "
           "undefined (n/a); use more test data or k-fold cross-validation (evaluate --k, or k: under the recipe's "
           "dataset), or lower the minimum (evaluate --min-test-patients; a recipe run warns below 20)")
    warnings.warn(msg, SmallTestSplitWarning, stacklevel=2)
    return msg

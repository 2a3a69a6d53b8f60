"""Patient-level splits and label fractions, the same for every modality and the harness.

* :func:`patient_split`: a seeded train / val / test holdout by patient (optionally stratified), what the
  data kinds use when the data ship no split (``val_fraction``, ``test_fraction``, ``seed``) and what the
  synthetic data sets use;
* :func:`patient_folds`: patient-wise k-fold, stratified by each patient's rarest label (the harness's
  k-fold and holdout splits);
* :func:`sample_fraction`: label fractions (1 %, 10 % ...) drawn by patient, stratified, seeded, with the
  documented fallback (a class left empty gets one patient; :class:`FractionFallbackWarning`);
* :func:`check_no_leakage`: refuses a patient on two sides.

A patient is always on one side only: every function here draws patients, never records.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from pretext.errors import ConfigError, DataError

__all__ = ["LeakageError", "FractionError", "FractionFallbackWarning", "FractionDraw", "check_fractions",
           "patient_split", "patient_folds", "patient_strata", "strata", "classes_of", "is_multilabel",
           "labelled_mask", "sample_fraction", "check_no_leakage"]

ROLES = ("train", "val", "test")


class LeakageError(DataError):
    """A patient appears in more than one side of a split."""


class FractionError(DataError):
    """A label fraction leaves a class with no labelled example (``strict=True``)."""


class FractionFallbackWarning(UserWarning):
    """A label fraction left a class empty and one patient of that class was added (the documented fallback)."""


# -- leakage guard -----------------------------------------------------------------------------------------
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


# -- labels -----------------------------------------------------------------------------------------------
def is_multilabel(labels: np.ndarray) -> bool:
    return np.ndim(labels) == 2


def labelled_mask(labels: np.ndarray) -> np.ndarray:
    """``(N,)`` True where the record has a label (not ``-1``; multi-hot rows without any ``-1``)."""
    labels = np.asarray(labels)
    if is_multilabel(labels):
        return np.asarray(~(labels < 0).any(axis=1))
    return np.asarray(labels >= 0)


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


# -- holdout by patient -----------------------------------------------------------------------------------
def check_fractions(val_fraction: float, test_fraction: float, need_test: bool = False) -> None:
    """Refuse split fractions outside [0, 1) or summing to 1 or more (``need_test``: test must be > 0).

    Raises:
        ConfigError: naming both values.
    """
    low = 0.0 < test_fraction if need_test else 0.0 <= test_fraction
    if not (0.0 <= val_fraction < 1.0 and low and test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        need = "(0, 1)" if need_test else "[0, 1)"
        raise ConfigError(f"{val_fraction=} must be in [0, 1) and {test_fraction=} in {need}, with a sum below 1 "
                          "(patients must be left for training)")


def patient_split(patients: np.ndarray | Sequence[Hashable], val_fraction: float, test_fraction: float,
                  seed: int = 0, strata: Sequence[Hashable] | None = None) -> np.ndarray:
    """``(N,)`` "train" / "val" / "test" of each record, so that each patient lies on one side only.

    Patients are shuffled (seeded) within their stratum (a patient's stratum is its first record's entry
    of ``strata``; one stratum when ``None``). The test and val patient counts are
    ``round(n_patients * fraction)`` overall, shared out over the strata in proportion (largest
    remainders), so small strata (rare classes, multi-label sets) do not round every split away.

    Args:
        patients: ``(N,)`` patient of each record (any hashable ids).
        val_fraction, test_fraction: shares of the patients, each in [0, 1), summing below 1.
        seed: the draw's seed.
        strata: ``(N,)`` stratum of each record (e.g. its label), or ``None``.

    Raises:
        ConfigError: fractions out of range.
    """
    check_fractions(float(val_fraction), float(test_fraction))
    patients = np.asarray(patients)
    first: dict[Hashable, Hashable] = {}
    for p, s in zip(patients.tolist(), strata if strata is not None else [0] * len(patients), strict=True):
        first.setdefault(p, s)
    rng = np.random.default_rng(seed)
    groups = [_sorted(p for p, s in first.items() if s == st) for st in _sorted(set(first.values()))]
    for members in groups:
        rng.shuffle(members)
    sizes = np.array([len(m) for m in groups])
    n = int(sizes.sum())

    def quota(frac: float, cap: np.ndarray) -> np.ndarray:
        want = sizes * frac
        q = np.minimum(np.floor(want).astype(int), cap)
        order = np.argsort(-(want - np.floor(want)) + rng.random(len(sizes)) * 1e-9)
        for k in order[: max(0, int(round(n * frac)) - int(q.sum()))]:
            if q[k] < cap[k]:
                q[k] += 1
        return q

    q_test = quota(float(test_fraction), sizes)
    q_val = quota(float(val_fraction), sizes - q_test)
    side: dict[Hashable, str] = {}
    for members, nt, nv in zip(groups, q_test, q_val, strict=True):
        for k, p in enumerate(members):
            side[p] = "test" if k < nt else "val" if k < nt + nv else "train"
    return np.array([side[p] for p in patients.tolist()], dtype=object)


def _sorted(items: Iterable[Hashable]) -> list[Hashable]:
    """``items`` sorted (by ``repr`` when they do not compare, e.g. mixed types): a stable order to shuffle."""
    items = list(items)
    try:
        return sorted(items)  # type: ignore[type-var]
    except TypeError:
        return sorted(items, key=repr)


# -- label fractions --------------------------------------------------------------------------------------
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

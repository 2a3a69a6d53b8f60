"""Label mapping, the same for every modality: class names <-> indices, single- or multi-label.

A data kind collects one raw label per item (a class name, a class index, a list of names for
multi-label items, or ``None`` when unknown) and :func:`encode_labels` turns them into what
:class:`pretext.base.SSLSplit` holds: ``(N,)`` int64 class indices (``-1`` unknown) or ``(N, K)``
float32 multi-hot rows, plus the class names. Manifest cells are read by :func:`parse_label`
(empty: unknown; ``a;b``: the labels ``a`` and ``b``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pretext.errors import DataError

__all__ = ["parse_label", "is_unknown", "encode_labels", "decode_labels"]


def is_unknown(label: Any) -> bool:
    """True for a missing label: ``None``, ``""``, NaN, or an empty list."""
    if label is None:
        return True
    if isinstance(label, float) and math.isnan(label):
        return True
    if isinstance(label, str):
        return not label.strip()
    if isinstance(label, (list, tuple)):
        return len(label) == 0
    return False


def parse_label(cell: Any) -> str | list[str] | None:
    """One manifest ``label`` cell: ``None`` (empty), a class (``"AF"``, ``"1"``) or several (``"AF;PVC"``)."""
    if is_unknown(cell):
        return None
    text = str(cell).strip()
    if ";" in text:
        return [t.strip() for t in text.split(";") if t.strip()]
    return text


def _as_index(label: Any) -> int | None:
    """``label`` as a whole number >= 0, ``-1`` for a number that is not one, ``None`` for a name."""
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return int(value) if value >= 0 and value == int(value) else -1


def encode_labels(raw: Sequence[Any], *, classes: Sequence[str] | None = None, multilabel: bool | None = None,
                  min_count: int = 0, indices: bool = False, source: str = "data") -> tuple[np.ndarray, list[str]]:
    """Class indices (or multi-hot rows) and class names of the raw labels.

    Args:
        raw: ``(N,)`` labels: a name, an index, a list of names (multi-label), or unknown (:func:`is_unknown`).
        classes: the class names in order (default: the names found, sorted; multi-label: those with at
            least ``max(min_count, 1)`` items). Single-label names outside ``classes`` are refused;
            multi-label ones are dropped.
        multilabel: multi-hot output (default: when any label is a list).
        min_count: multi-label: leave out classes with fewer items (unless ``classes`` is given).
        indices: single-label numbers are class indices ``0..K-1`` (class names ``"0".."K-1"``) rather
            than names (volume manifests: ``label`` is an index or a name).
        source: names the data in messages.

    Returns:
        ``(labels, class_names)``: ``(N,)`` int64 (``-1`` unknown) or ``(N, K)`` float32 multi-hot.

    Raises:
        DataError: a label outside ``classes``, or (``indices``) a number that is not a class index.
    """
    raw = list(raw)
    if multilabel is None:
        multilabel = any(isinstance(v, (list, tuple)) for v in raw)
    if multilabel:
        rows = [[] if is_unknown(v) else [str(c) for c in (v if isinstance(v, (list, tuple)) else [v])] for v in raw]
        counts: dict[str, int] = {}
        for row in rows:
            for c in row:
                counts[c] = counts.get(c, 0) + 1
        names = list(classes) if classes else sorted(c for c, n in counts.items() if n >= max(min_count, 1))
        pos = {c: k for k, c in enumerate(names)}
        hot = np.zeros((len(rows), len(names)), dtype=np.float32)
        for i, row in enumerate(rows):
            for c in row:
                if c in pos:
                    hot[i, pos[c]] = 1.0
        return hot, names
    known = [v for v in raw if not is_unknown(v)]
    idx = [_as_index(v) for v in known]
    if indices and known and all(i is not None for i in idx):
        whole = [int(i) for i in idx if i is not None]
        if min(whole) < 0:
            bad = sorted({str(v) for v, i in zip(known, whole, strict=True) if i < 0})[:5]
            raise DataError(f"{source}: labels must be class indices 0..K-1 or class names; got {bad}")
        names = list(classes) if classes else [str(i) for i in range(max(whole) + 1)]
        labels = np.array([-1 if is_unknown(v) else _as_index(v) for v in raw], dtype=np.int64)
        if len(names) <= int(labels.max()):
            raise DataError(f"{source}: class index {int(labels.max())} but only {len(names)} classes {names}")
        return labels, names
    present = sorted({str(v).strip() for v in known})
    names = list(classes) if classes else present
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise DataError(f"{source}: label(s) {unknown} are not among the classes {names}; fix the labels or the "
                        "class list")
    pos = {c: k for k, c in enumerate(names)}
    return np.array([-1 if is_unknown(v) else pos[str(v).strip()] for v in raw], dtype=np.int64), names


def decode_labels(labels: np.ndarray, class_names: Sequence[str]) -> list[str | list[str] | None]:
    """The inverse of :func:`encode_labels`: names per item (a list for multi-hot rows, ``None`` for ``-1``)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return [[class_names[int(k)] for k in np.flatnonzero(row > 0.5)] for row in labels]
    return [None if int(v) < 0 else class_names[int(v)] for v in labels.tolist()]

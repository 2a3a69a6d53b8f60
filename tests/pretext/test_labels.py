"""pretext.labels: class names <-> indices, single- and multi-label, the same for every modality."""

from __future__ import annotations

import numpy as np
import pytest

from pretext.errors import DataError
from pretext.labels import decode_labels, encode_labels, is_unknown, parse_label


def test_parse_label_cells():
    assert parse_label("") is None and parse_label(None) is None and parse_label(float("nan")) is None
    assert parse_label(" AF ") == "AF" and parse_label("AF;PVC") == ["AF", "PVC"] and parse_label(3) == "3"
    assert is_unknown([]) and is_unknown("  ") and not is_unknown(0)


def test_names_sorted_unknown_is_minus_one():
    labels, names = encode_labels(["b", None, "a", "b", ""])
    assert names == ["a", "b"] and labels.tolist() == [1, -1, 0, 1, -1] and labels.dtype == np.int64


def test_given_classes_keep_their_order_and_refuse_others():
    labels, names = encode_labels(["N", "A"], classes=["N", "A", "O"])
    assert names == ["N", "A", "O"] and labels.tolist() == [0, 1]
    with pytest.raises(DataError, match=r"src: label\(s\) \['X'\] are not among the classes"):
        encode_labels(["N", "X"], classes=["N", "A"], source="src")


def test_indices_mode_reads_numbers_as_class_indices():
    labels, names = encode_labels(["0", "2", None, 1.0], indices=True)
    assert names == ["0", "1", "2"] and labels.tolist() == [0, 2, -1, 1]
    with pytest.raises(DataError, match="class indices 0..K-1 or class names"):
        encode_labels(["0", "1.5"], indices=True)
    with pytest.raises(DataError, match="class indices"):
        encode_labels(["-1", "1"], indices=True)
    # without indices, numbers are names (an EDF label "1"/"2" is two classes, not three)
    assert encode_labels(["1", "2"])[1] == ["1", "2"]
    # mixed numbers and names are names
    assert encode_labels(["1", "a"], indices=True)[1] == ["1", "a"]


def test_multilabel_multi_hot_with_min_count():
    raw = [["AF", "PVC"], ["AF"], None, "RBBB", ["AF", "XYZ"]]
    hot, names = encode_labels(raw, min_count=2)
    assert names == ["AF"] and hot.shape == (5, 1) and hot.dtype == np.float32
    hot, names = encode_labels(raw)
    assert names == ["AF", "PVC", "RBBB", "XYZ"] and hot[0].tolist() == [1, 1, 0, 0] and not hot[2].any()
    hot, names = encode_labels(raw, classes=["PVC", "AF"])  # others dropped
    assert hot.tolist()[4] == [0, 1]
    assert decode_labels(hot, names)[0] == ["PVC", "AF"]


def test_decode_is_the_inverse():
    labels, names = encode_labels(["b", None, "a"])
    assert decode_labels(labels, names) == ["b", None, "a"]
    hot, names = encode_labels([["x", "y"], []], multilabel=True)
    assert decode_labels(hot, names) == [["x", "y"], []]

"""pretext.manifest.read_manifest: one reader and the same strict checks for every modality's manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretext.errors import DataError
from pretext.manifest import read_manifest


def _csv(tmp_path: Path, text: str, files: tuple[str, ...] = ("a.bin", "b.bin")) -> Path:
    for f in files:
        (tmp_path / f).write_bytes(b"x")
    m = tmp_path / "m.csv"
    m.write_text(text)
    return m


def test_reads_resolves_and_keeps_other_columns(tmp_path):
    m = _csv(tmp_path, "path,label,patient_id,split,age,sfreq\na.bin,AF,p1,Train,61,250\n"
                       f"{tmp_path / 'b.bin'},,p2,,,\n")
    df = read_manifest(m, text_columns=("sfreq",))
    assert df["path"].tolist() == [str(tmp_path / "a.bin"), str(tmp_path / "b.bin")]
    assert df["label"].tolist() == ["AF", ""] and df["split"].tolist() == ["train", ""]
    assert df["sfreq"].tolist() == ["250", ""] and df["age"].iloc[0] == 61  # other columns as pandas reads them
    assert df.attrs["lines"] == [2, 3] and df.attrs["given"][0] == "a.bin" and df.attrs["missing"] == []
    assert read_manifest(m, empty_split="train")["split"].tolist() == ["train", "train"]


@pytest.mark.parametrize(("text", "match"), [
    ("", "is empty"),
    ("path,label,patient_id\n", "no rows"),
    ("path,patient_id\na.bin,p1\n", r"lacks column\(s\) \['label'\].*add it"),
    ("path,label\na.bin,x\n", r"lacks column\(s\) \['patient_id'\].*copy the path column"),
    ("path,label,patient_id\n,x,p1\n", r"empty path on line\(s\) \[2\]"),
    ("path,label,patient_id\na.bin,x,\n", r"empty patient_id on line\(s\) \[2\]"),
    ("path,label,patient_id,split\na.bin,x,p1,holdout\n", r"unknown split name\(s\) \['holdout'\] on line\(s\) \[2\]"),
    ("path,label,patient_id,split\na.bin,x,p1,train\nb.bin,y,p1,test\n", r"more than one split: p1 \(test/train\)"),
    ("path,label,patient_id\na.bin,x,p1\n./a.bin,y,p2\n", r"listed more than once.*lines \[2, 3\]"),
])
def test_bad_manifests_are_refused_by_line(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_manifest(_csv(tmp_path, text))


def test_empty_split_filled_before_the_patient_check(tmp_path):
    m = _csv(tmp_path, "path,label,patient_id,split\na.bin,x,p1,\nb.bin,y,p1,test\n")
    read_manifest(m)  # an empty split is no split: no conflict
    with pytest.raises(DataError, match="more than one split"):
        read_manifest(m, empty_split="train")  # empty means train: p1 on train and test


def test_missing_files_refused_or_skipped(tmp_path):
    m = _csv(tmp_path, "path,label,patient_id\na.bin,x,p1\ngone.bin,y,p2\n", files=("a.bin",))
    with pytest.raises(DataError, match=r"line 3: .*gone.bin does not exist.*skip_broken=true"):
        read_manifest(m)
    with pytest.warns(UserWarning, match="skipping 1 missing file"):
        df = read_manifest(m, skip_missing=True)
    assert len(df) == 1 and df.attrs["missing"] == [str(tmp_path / "gone.bin")]
    assert df.attrs["missing_rows"] == [("gone.bin", str(tmp_path / "gone.bin"), 3)]
    m2 = _csv(tmp_path, "path,label,patient_id\ngone.bin,y,p2\n", files=())
    with pytest.raises(DataError, match="none of its 1 file"), pytest.warns(UserWarning):
        read_manifest(m2, skip_missing=True)


def test_file_key_and_exists_hooks(tmp_path):
    (tmp_path / "r1.hea").write_text("")
    m = _csv(tmp_path, "path,label,patient_id\nr1,x,p1\nr1.dat,x,p2\n", files=())
    with pytest.raises(DataError, match="more than once"):
        read_manifest(m, file_key=lambda f: f.removesuffix(".dat"), exists=lambda f: True)
    m = _csv(tmp_path, "path,label,patient_id\nr1,x,p1\n", files=())
    assert len(read_manifest(m, exists=lambda f: f.with_name(f.name + ".hea").exists())) == 1

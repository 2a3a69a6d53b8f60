"""Checks every bring-your-own manifest gets, whatever the modality (volume ``manifest3d:``, signal ``manifest:``).

:func:`read_manifest` reads one (``path,label,patient_id[,split]`` plus any columns the data kind wants) and
applies all of them. A manifest row is refused, by name, when it would otherwise be silently reused,
relabelled or lost:

* the same file listed twice (it would be counted twice, possibly with two labels or on two splits);
* a patient on two splits (test patients would leak into training);
* a file that does not exist (unless the data kind's skip option is set: then it is left out and named in
  a warning);
* an empty ``path`` or ``patient_id`` (splits are by patient), a split name other than train/val/test, a
  missing column, an empty or unreadable file.

Rows are numbered as lines of the CSV file (the header is line 1), as an editor shows them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pretext.errors import DataError

__all__ = ["read_manifest", "check_duplicates", "check_patient_splits", "missing_rows", "SPLITS"]

SPLITS = ("train", "val", "test")


def check_duplicates(manifest: str | Path, paths: Sequence[str], lines: Sequence[int]) -> None:
    """Refuse a manifest that lists one file on several rows (naming the file and the rows).

    Args:
        manifest: the CSV (for messages).
        paths: resolved file path of each row.
        lines: CSV line number of each row.
    """
    where: dict[str, list[int]] = {}
    for p, ln in zip(paths, lines, strict=True):
        where.setdefault(str(Path(p).resolve()), []).append(int(ln))
    dups = [(p, ls) for p, ls in where.items() if len(ls) > 1]
    if dups:
        shown = "; ".join(f"{p} on lines {ls}" for p, ls in dups[:5])
        more = f" (and {len(dups) - 5} more)" if len(dups) > 5 else ""
        raise DataError(
            f"manifest {str(manifest)!r}: {len(dups)} file(s) listed more than once: {shown}{more}; "
            "each file must have one row: delete the repeated rows"
        )


def check_patient_splits(manifest: str | Path, patients: Sequence[str], splits: Sequence[str | None]) -> None:
    """Refuse a manifest whose ``split`` column puts one patient on two splits (naming the patients).

    Rows without a split (``None`` or ``""``) are ignored here.
    """
    seen: dict[str, set[str]] = {}
    for p, s in zip(patients, splits, strict=True):
        if s:
            seen.setdefault(str(p), set()).add(str(s))
    mixed = {p: sorted(s) for p, s in seen.items() if len(s) > 1}
    if mixed:
        shown = ", ".join(f"{p} ({'/'.join(s)})" for p, s in list(mixed.items())[:5])
        raise DataError(
            f"manifest {str(manifest)!r}: {len(mixed)} patient(s) appear in more than one split: {shown}; "
            "splits must be by patient: put all rows of a patient on one split"
        )


def missing_rows(manifest: str | Path, paths: Sequence[str], lines: Sequence[int], skip: bool, skip_option: str,
                 exists: Callable[[Path], bool] | None = None) -> list[int]:
    """Positions of the rows whose file does not exist; an error unless ``skip``.

    Args:
        manifest: the CSV (for messages).
        paths: resolved file path of each row.
        lines: CSV line number of each row.
        skip: leave missing files out (each named in one warning) instead of raising.
        skip_option: the data kind's option that sets ``skip`` (named in the message, e.g. ``skip_broken=true``).
        exists: test for a path (default :meth:`pathlib.Path.exists`).

    Raises:
        DataError: naming the manifest, the line and the missing path of the first few.
    """
    exists = exists or Path.exists
    gone = [i for i, p in enumerate(paths) if not exists(Path(p))]
    if not gone:
        return []
    shown = "; ".join(f"line {lines[i]}: {paths[i]} does not exist" for i in gone[:5])
    more = f" (and {len(gone) - 5} more missing)" if len(gone) > 5 else ""
    if not skip:
        raise DataError(
            f"manifest {str(manifest)!r}: {shown}{more}; fix the path(s) "
            f"(relative ones are read from the manifest's folder) or pass {skip_option} to leave them out"
        )
    warnings.warn(
        f"manifest {str(manifest)!r}: skipping {len(gone)} missing file(s) ({skip_option}): {shown}{more}",
        stacklevel=3,
    )
    return gone


def _lines(mask: Any) -> list[int]:
    return [int(i) + 2 for i in mask.to_numpy().nonzero()[0]]


def read_manifest(path: str | Path, *, columns: Sequence[str] = ("path", "label", "patient_id"),
                  text_columns: Sequence[str] = (), skip_missing: bool = False, skip_option: str = "skip_broken=true",
                  file_key: Callable[[str], str] | None = None, exists: Callable[[Path], bool] | None = None,
                  empty_split: str = "", what: str = "file") -> Any:
    """Read and check a manifest CSV; the one reader of every modality's bring-your-own data.

    Args:
        path: the CSV. Relative file paths in it are read from its folder.
        columns: required columns (``path`` and ``patient_id`` always are).
        text_columns: other columns read as text (``path``, ``label``, ``patient_id``, ``split`` always are).
        skip_missing: leave rows whose file does not exist out (named in a warning) instead of raising.
        skip_option: the data kind's option that sets ``skip_missing`` (named in messages).
        file_key: the file identity used for the duplicate check (e.g. a WFDB record without its extension).
        exists: test for a row's file (default :meth:`pathlib.Path.exists`).
        empty_split: the split of a row whose ``split`` cell is empty (``""``: none, the data kind decides).
        what: one row's item in messages ("volume", "recording").

    Returns:
        A ``pandas.DataFrame`` of the kept rows: ``path`` absolute, the text columns stripped (``""`` when
        empty), ``split`` (if present) ``""`` or train/val/test, other columns as pandas reads them.
        ``attrs``: ``lines`` (CSV line of each kept row), ``given`` (its path as written) and ``missing``
        (absolute paths of the rows left out), ``missing_rows`` (``(given, path, line)`` of those).

    Raises:
        DataError: any of the module's checks, naming the manifest, the lines and the fix.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} is not a file; give the path of the CSV")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
        text = {"path", "label", "patient_id", "split", *text_columns}
        raw = [c for c in header if c.strip() in text]
        df = pd.read_csv(path, dtype={c: str for c in raw}, keep_default_na=False,
                         na_values={c: [] if c in raw else ["", "NA", "NaN", "nan", "null", "N/A"] for c in header})
    except pd.errors.EmptyDataError as err:
        raise DataError(f"manifest {str(path)!r} is empty; it needs a header path,label,patient_id[,split]") from err
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read manifest {str(path)!r} as CSV ({err})") from err
    df.columns = [c.strip() for c in header]
    need = list(dict.fromkeys(["path", *columns, "patient_id"]))
    absent = [c for c in need if c not in df.columns]
    if absent:
        hint = (" (if each file is its own patient, copy the path column: splits are by patient)"
                if "patient_id" in absent else "")
        raise DataError(f"manifest {str(path)!r} lacks column(s) {absent} (has {list(df.columns)}); add "
                        f"{'it' if len(absent) == 1 else 'them'}: the header must be {','.join(need)} with an optional "
                        f"split column{hint}")
    if len(df) == 0:
        raise DataError(f"manifest {str(path)!r} has a header but no rows; add one row per {what}")
    for c in text & set(df.columns):
        df[c] = df[c].astype(str).str.strip()
    if (df["path"] == "").any():
        raise DataError(f"manifest {str(path)!r}: empty path on line(s) {_lines(df['path'] == '')[:10]}")
    if (df["patient_id"] == "").any():
        raise DataError(f"manifest {str(path)!r}: empty patient_id on line(s) {_lines(df['patient_id'] == '')[:10]}; "
                        f"splits are by patient, so every row needs one (use the file name if each {what} is its "
                        "own patient)")
    if "split" in df.columns:
        df["split"] = df["split"].str.lower().replace("", empty_split)
        bad = ~df["split"].isin(("", *SPLITS))
        if bad.any():
            raise DataError(f"manifest {str(path)!r}: unknown split name(s) {sorted(set(df['split'][bad]))} on "
                            f"line(s) {_lines(bad)[:10]}; use train, val or test (or leave it empty)")
        check_patient_splits(path, df["patient_id"].tolist(), df["split"].tolist())
    base = path.resolve().parent
    given = df["path"].tolist()
    df["path"] = [str(Path(p) if Path(p).is_absolute() else base / p) for p in given]
    lines = [i + 2 for i in range(len(df))]
    key = file_key or (lambda p: p)
    check_duplicates(path, [key(p) for p in df["path"]], lines)
    gone = missing_rows(path, df["path"].tolist(), lines, skip_missing, skip_option, exists)
    keep = sorted(set(range(len(df))) - set(gone))
    if not keep:
        raise DataError(f"manifest {str(path)!r}: none of its {len(gone)} file(s) exist; fix the paths")
    out = df.iloc[keep].reset_index(drop=True)
    out.attrs = {"lines": [lines[i] for i in keep], "given": [given[i] for i in keep],
                 "missing": [df["path"].iloc[i] for i in gone],
                 "missing_rows": [(given[i], df["path"].iloc[i], lines[i]) for i in gone]}
    return out

"""Checks every bring-your-own manifest gets, whatever the modality (volume ``manifest3d:``, signal ``manifest:``).

A manifest row is refused, by name, when it would otherwise be silently reused, relabelled or lost:

* the same file listed twice (it would be counted twice, possibly with two labels or on two splits);
* a patient on two splits (test patients would leak into training);
* a file that does not exist (unless the data kind's skip option is set: then it is left out and named in
  a warning).

Rows are numbered as lines of the CSV file (the header is line 1), as an editor shows them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from pretext.errors import DataError

__all__ = ["check_duplicates", "check_patient_splits", "missing_rows"]


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

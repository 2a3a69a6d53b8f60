"""The results file: one JSON line per finished cell, appended and flushed to disk as each cell ends.

A run killed mid-write leaves at most one partial last line, which :meth:`ResultStore.rows` ignores (and
:meth:`ResultStore.append` first cuts off), so finished cells are never lost and a resumed run skips them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.jsonl"
KEY_FIELDS = ("dataset", "task", "encoder", "arm", "protocol", "fraction", "seed", "fold")


def cell_key(row: dict[str, Any]) -> str:
    """The identity of a cell: dataset, task, encoder, arm, protocol, fraction, seed, fold."""
    return "|".join(str(row.get(k, "")) for k in KEY_FIELDS)


def _clean(obj: Any) -> Any:
    """JSON-safe values: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class ResultStore:
    """Append-only JSON-lines store of finished cells in ``folder/results.jsonl``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_NAME

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row (a truncated trailing line from a kill is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def done(self) -> set[str]:
        return {cell_key(r) for r in self.rows()}

    def append(self, row: dict[str, Any]) -> None:
        """Write one row as a single line, then flush and fsync."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_clean(row), sort_keys=False) + "\n"
        self._repair_tail()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_tail(self) -> None:
        """Cut a partial last line (no trailing newline) left by a kill mid-write."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            data = fh.seek(0) or fh.read()
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)

"""The results file: one JSON line per finished cell, appended and flushed to disk as each cell ends.

A run killed mid-write leaves at most one partial last line, which :meth:`ResultStore.rows` ignores (and
:meth:`ResultStore.append` first cuts off), so finished cells are never lost and a resumed run skips them.

Several processes (``sslbench run --shard I/N`` jobs, ``--workers N``) may append to one file at once: each
row is one ``os.write`` on an ``O_APPEND`` descriptor, made while holding an exclusive ``flock`` on the sidecar
``results.jsonl.lock`` (:meth:`ResultStore.lock`). The lock is a separate file because rewriters of the
results file (``sslbench.paired.attach_paired``) replace it by rename; they run under the same lock.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: a single writer only
    fcntl = None  # type: ignore[assignment]

RESULTS_NAME = "results.jsonl"
LOCK_NAME = RESULTS_NAME + ".lock"
_HELD: dict[str, int] = {}  # lock files this process holds (re-entrant), with their depth
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
        return [row for _, row in self.numbered_rows()]

    def numbered_rows(self, skipped: list[tuple[int, str]] | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``(line number, row)`` of every line holding a JSON object (torn or foreign lines are skipped).

        ``skipped``, when given, receives ``(line number, why)`` of every skipped line except a torn last line
        (the one an interrupted write leaves, expected after a kill).
        """
        if not self.path.is_file():
            return []
        out = []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if skipped is not None and i != last:
                    skipped.append((i, f"line is not JSON ({err.msg}, column {err.colno})"))
                continue
            if isinstance(row, dict):
                out.append((i, row))
            elif skipped is not None:
                skipped.append((i, f"line holds a JSON {type(row).__name__}, not a record"))
        return out

    def done(self) -> set[str]:
        return {cell_key(r) for r in self.rows()}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's results lock (exclusive ``flock`` on ``results.jsonl.lock``; re-entrant)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str((self.folder / LOCK_NAME).resolve())
        if _HELD.get(key) or fcntl is None:
            _HELD[key] = _HELD.get(key, 0) + 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row as a single line (one ``os.write``, ``O_APPEND``, under :meth:`lock`), then fsync."""
        data = (json.dumps(_clean(row), sort_keys=False) + "\n").encode("utf-8")
        with self.lock():
            self._repair_tail()  # under the lock no other writer is mid-line: a partial line is a dead one's
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:  # one call for a regular file; the loop only guards against a short write
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

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

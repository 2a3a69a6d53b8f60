"""Observability: progress bar (loss, samples/s, data-wait fraction), CSV and TensorBoard logs."""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class Throughput:
    """Running counters of samples/s and the fraction of wall time spent waiting for data."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.wait = 0.0
        self.samples = 0

    def add(self, samples: int, wait_s: float) -> None:
        self.samples += samples
        self.wait += wait_s

    def read(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return {"samples_per_s": self.samples / dt, "data_wait_frac": min(1.0, self.wait / dt)}


class RunLogger:
    """Appends one row per logged step to ``metrics.csv`` and mirrors scalars to TensorBoard.

    On resume the CSV keeps only rows up to ``start_step`` so the file stays one clean curve.
    """

    def __init__(self, out_dir: Path | None, start_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled and out_dir is not None
        self.path = Path(out_dir) / "metrics.csv" if out_dir is not None else None
        self.columns: list[str] = []
        self.tb: Any = None
        if not self.enabled:
            return
        assert self.path is not None and out_dir is not None
        if self.path.exists():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(float(r.get("step", 0))) <= start_step]
            self.columns = list(rows[0].keys()) if rows else []
            with self.path.open("w", newline="") as fh:
                if rows:
                    w = csv.DictWriter(fh, fieldnames=self.columns)
                    w.writeheader()
                    w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is a dependency, but stay usable without it
            self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        assert self.path is not None
        new_cols = [k for k in row if k not in self.columns]
        if new_cols:  # rewrite header with the union of columns
            old: list[dict[str, Any]] = []
            if self.path.exists() and self.columns:
                with self.path.open(newline="") as fh:
                    old = list(csv.DictReader(fh))
            self.columns += new_cols
            with self.path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.columns)
                w.writeheader()
                w.writerows(old)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        """Flush and stop the TensorBoard writer (its thread would otherwise outlive a failed run and print a
        traceback at exit). A TensorBoard write that fails here (full disk, ``ulimit -f``) warns instead of hiding
        the error the run is already raising; ``metrics.csv`` is the record of the run."""
        tb, self.tb = self.tb, None
        if tb is None:
            return
        try:
            tb.close()
        except OSError as err:
            warnings.warn(f"TensorBoard log {tb.log_dir} could not be closed: {err}; metrics.csv holds the same values",
                          stacklevel=2)


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step", leave=True)

"""The GPU benchmark command (``python -m benchmarks.gpu``); see :mod:`benchmarks.gpu.bench`."""

from benchmarks.gpu.bench import Item, build_items, main, run

__all__ = ["Item", "build_items", "main", "run"]

"""Performance scripts of medssl: ``bench_*.py`` (CPU timings of the engine, data paths and
metrics against their references) and ``gpu/`` (``python -m benchmarks.gpu``); their committed
results, and those of the harness's recipes, are under ``results/``.

The benchmark harness that ``sslbench`` runs is the package :mod:`sslbench`.
"""

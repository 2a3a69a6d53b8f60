"""Benchmark harness: patient-level splits, probes and fine-tuning, clinical metrics, recipes and reports.

Python API::

    from benchmarks import evaluate, run_recipe, write_report
    df = evaluate(checkpoint="runs/rot", data="medmnist3d:adrenalmnist3d.npz", protocol="linear", out="runs/eval")
"""

from benchmarks.evaluate import evaluate  # noqa: E402  (the function shadows the submodule name on purpose)

__all__ = ["evaluate"]

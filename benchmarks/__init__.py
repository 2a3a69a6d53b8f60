"""Benchmark harness: patient-level splits, probes and fine-tuning, clinical metrics, recipes and reports.

Python API::

    from benchmarks.evaluate import evaluate
    from benchmarks.reports import write_report
    from benchmarks.runner import run_recipe

    df = evaluate(checkpoint="runs/rot", data="medmnist3d:adrenalmnist3d.npz", protocol="linear", out="runs/eval")
"""

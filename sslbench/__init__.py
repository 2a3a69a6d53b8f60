"""Benchmark harness: patient-level splits, probes and fine-tuning, clinical metrics, recipes and reports.

Python API::

    from sslbench.evaluate import evaluate
    from sslbench.reports import write_report
    from sslbench.runner import run_recipe

    df = evaluate(checkpoint="runs/rot", data="medmnist3d:adrenalmnist3d.npz", protocol="linear", out="runs/eval")
"""

"""Tests of the demo (benchmarks.demo, ``sslbench demo``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks.cli import build_parser
from benchmarks.demo import headline, plans, run_demo
from pretext.errors import ConfigError


def test_headline_mean_and_std_over_seeds():
    df = pd.DataFrame({"arm": ["ssl", "ssl", "random"], "fraction": [0.1, 0.1, 0.1], "seed": [0, 1, 0],
                       "auroc": [0.8, 0.9, 0.6], "n_labelled": [10, 12, 10], "n_patients_labelled": [3, 4, 3]})
    tab = headline(df).set_index("arm")
    assert tab.loc["ssl", "mean"] == pytest.approx(0.85) and tab.loc["ssl", "seeds"] == 2
    assert tab.loc["ssl", "std"] == pytest.approx(pd.Series([0.8, 0.9]).std())
    assert tab.loc["random", "mean"] == pytest.approx(0.6) and tab.loc["ssl", "patients"] == pytest.approx(3.5)


def test_plans_and_cli_registration():
    full, quick = plans(False), plans(True)
    assert set(full) == {"signal", "volume"}
    assert quick["signal"].data["n_patients"] < full["signal"].data["n_patients"]
    assert quick["signal"].pretrain["steps"] < full["signal"].pretrain["steps"]
    args = build_parser().parse_args(["demo", "--out", "x", "--quick", "--modalities", "signal"])
    assert args.command == "demo" and args.quick and args.modalities == "signal" and callable(args.func)


def test_unknown_modality(tmp_path):
    with pytest.raises(ConfigError, match="eeg"):
        run_demo(tmp_path, quick=True, modalities=["eeg"])


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    res = run_demo(tmp_path, quick=True, modalities=("signal",), seeds=(0, 1))
    printed = capsys.readouterr().out
    report = tmp_path / "REPORT.md"
    assert f"Report: {report.resolve()}" in printed and res["report"] == report
    text = report.read_text()
    for frac in ("| 1% |", "| 10% |", "| 100% |"):
        assert frac in text
    assert "SSL − random" in text and "kNN purity" in text
    assert (tmp_path / "label_efficiency.png").stat().st_size > 5000
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    arms = {(r["arm"], r["protocol"], r["fraction"], r["seed"]) for r in rows}
    assert {("ssl", "linear", f, s) for f in (0.01, 0.1, 1.0) for s in (0, 1)} <= arms
    assert {("random", "linear", f, s) for f in (0.01, 0.1, 1.0) for s in (0, 1)} <= arms
    assert {("scratch", "finetune", f, 0) for f in (0.01, 0.1, 1.0)} <= arms
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    audits = sorted(p.name for p in (tmp_path / "audit").glob("*.json"))
    assert audits == ["synthetic_ecg_cpc_encoder_pclr.json", "synthetic_ecg_cpc_encoder_random-init.json"]
    assert all(p.stat().st_size > 5000 for p in (tmp_path / "audit").glob("*.png"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] and summary["total_s"] > 0 and len(summary["signal"]["headline"]) == 9
    # a rerun resumes: no cell is computed twice
    run_demo(tmp_path, quick=True, modalities=("signal",), seeds=(0, 1))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)

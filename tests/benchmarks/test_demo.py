"""Tests of the demo (benchmarks.demo, ``sslbench demo``)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from benchmarks.cli import build_parser
from benchmarks.demo import _check_stamp, headline, plans, run_demo
from pretext.errors import ConfigError, UserError


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
    # every seed below 100 %; at 100 % the draw is the whole training split, so one seed
    expected = {(a, "linear", f, s) for a in ("ssl", "random") for f in (0.01, 0.1) for s in (0, 1)}
    expected |= {("ssl", "linear", 1.0, 0), ("random", "linear", 1.0, 0)}
    expected |= {("scratch", "finetune", f, 0) for f in (0.01, 0.1, 1.0)}
    assert arms == expected
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    audits = sorted(p.name for p in (tmp_path / "audit").glob("*.json"))
    assert audits == ["synthetic_ecg_cpc_encoder_pclr.json", "synthetic_ecg_cpc_encoder_random-init.json"]
    assert all(p.stat().st_size > 5000 for p in (tmp_path / "audit").glob("*.png"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] and summary["total_s"] > 0 and len(summary["signal"]["headline"]) == 9  # 3 arms x 3 fractions
    # a rerun resumes: no cell is computed twice
    run_demo(tmp_path, quick=True, modalities=("signal",), seeds=(0, 1))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.slow
def test_quick_demo_volume(tmp_path):
    res = run_demo(tmp_path, quick=True, modalities=("volume",), seeds=(0,))
    rows = res["results"]["volume"]["rows"]
    assert set(rows["arm"]) == {"ssl", "random", "scratch"} and set(rows["fraction"]) == {0.01, 0.1, 1.0}
    assert rows["dataset"].eq("synthetic_phantom3d").all() and rows["auroc"].between(0, 1).all()
    audit = res["results"]["volume"]["audits"]["ssl"]
    assert audit["n"] == 12 and "invariance" in audit and audit["map_method"] == "pca"
    assert "## volume: synthetic_phantom3d · rotation / resnet18_3d" in res["report"].read_text()


def test_refuses_to_mix_settings_in_one_folder(tmp_path):
    quick, full = plans(True), plans(False)
    _check_stamp(tmp_path, {"signal": dataclasses.asdict(quick["signal"])})
    _check_stamp(tmp_path, {"signal": dataclasses.asdict(quick["signal"])})  # same settings: fine
    _check_stamp(tmp_path, {"volume": dataclasses.asdict(full["volume"])})  # another modality: fine
    with pytest.raises(UserError, match="other settings"):
        _check_stamp(tmp_path, {"signal": dataclasses.asdict(full["signal"])})

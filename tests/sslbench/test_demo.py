"""Tests of the demo (sslbench.demo, ``sslbench demo``)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from pretext.errors import ConfigError, UserError
from sslbench.cli import build_parser
from sslbench.demo import plans, prepare_out, run_demo
from sslbench.demo_report import headline


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
    # the last line printed says where to look
    assert printed.strip().splitlines()[-1] == f"Report: {report.resolve()} (HTML: {(tmp_path / 'REPORT.html').resolve()})"
    assert res["report"] == report
    text = report.read_text()
    for frac in ("| 1% |", "| 10% |", "| 100% |"):
        assert frac in text
    assert "SSL − random" in text and "kNN purity" in text and "(signal/report/report.html)" in text
    html = (tmp_path / "REPORT.html").read_text()
    assert "<table>" in html and 'href="signal/report/report.html"' in html
    assert (tmp_path / "label_efficiency.png").stat().st_size > 5000
    mod = tmp_path / "signal"
    assert (mod / "report" / "report.html").stat().st_size > 1000
    rows = [json.loads(line) for line in (mod / "results.jsonl").read_text().splitlines()]
    arms = {(r["arm"], r["protocol"], r["fraction"], r["seed"]) for r in rows}
    # every seed below 100 %; at 100 % the draw is the whole training split, so one seed
    expected = {(a, "linear", f, s) for a in ("ssl", "random") for f in (0.01, 0.1) for s in (0, 1)}
    expected |= {("ssl", "linear", 1.0, 0), ("random", "linear", 1.0, 0)}
    expected |= {("scratch", "finetune", f, 0) for f in (0.01, 0.1, 1.0)}
    assert arms == expected
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    audits = sorted(p.name for p in (mod / "audit").glob("*.json"))
    assert audits == ["synthetic_ecg_cpc_encoder_pclr.json", "synthetic_ecg_cpc_encoder_random-init.json"]
    assert all(p.stat().st_size > 5000 for p in (mod / "audit").glob("*.png"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] and summary["total_s"] > 0 and len(summary["signal"]["headline"]) == 9  # 3 arms x 3 fractions
    # a rerun reuses: no cell is computed twice, and it says so
    run_demo(tmp_path, quick=True, modalities=("signal",), seeds=(0, 1))
    assert "reusing the demo" in capsys.readouterr().out
    assert len((mod / "results.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.slow
def test_two_modalities_in_one_demo_folder_twice(tmp_path, capsys):
    """Regression (issue 23): both modalities under one demo folder, run twice; each has its own run folder."""
    for _ in range(2):
        res = run_demo(tmp_path, quick=True, seeds=(0,), fractions=(0.1, 1.0))
        assert set(res["results"]) == {"signal", "volume"}
    printed = capsys.readouterr().out
    assert "reusing the demo" in printed
    for mod, kind in (("signal", "synthetic_ecg"), ("volume", "synthetic_phantom3d")):
        rows = [json.loads(line) for line in (tmp_path / mod / "results.jsonl").read_text().splitlines()]
        assert {r["dataset"] for r in rows} == {kind}
        assert len(rows) == len({(r["arm"], r["protocol"], r["fraction"], r["seed"]) for r in rows})  # none twice
        ident = json.loads((tmp_path / mod / "run-identity.json").read_text())
        assert ident["command"] == "evaluate"
        assert (tmp_path / mod / "report" / "report.md").is_file()
    text = (tmp_path / "REPORT.md").read_text()
    assert "## signal: synthetic_ecg" in text and "## volume: synthetic_phantom3d · rotation / resnet18_3d" in text
    assert "(volume/report/report.html)" in text


def test_existing_folders(tmp_path, capsys):
    quick, full = plans(True), plans(False)
    sig = {"signal": dataclasses.asdict(quick["signal"])}
    assert prepare_out(tmp_path / "absent", sig) == "new"
    assert prepare_out(tmp_path, sig) == "new"  # empty
    # a folder the demo did not make: refused, even with --force, and left as it was
    (tmp_path / "mine.txt").write_text("keep")
    for force in (False, True):
        with pytest.raises(UserError, match="not a demo folder"):
            prepare_out(tmp_path, sig, force=force)
    assert (tmp_path / "mine.txt").read_text() == "keep"
    # a demo of the same settings is reused; another modality joins it
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo_plan.json").write_text(json.dumps({"layout": 2, "modalities": sig}))
    assert prepare_out(demo, sig) == "reuse"
    assert prepare_out(demo, {"volume": dataclasses.asdict(full["volume"])}) == "reuse"
    # other settings: refused, naming --force and --out, nothing changed; --force replaces it whole
    (demo / "signal").mkdir()
    with pytest.raises(UserError, match=r"other settings for \['signal'\].*--force.*another --out"):
        prepare_out(demo, {"signal": dataclasses.asdict(full["signal"])})
    assert (demo / "signal").is_dir()
    assert prepare_out(demo, {"signal": dataclasses.asdict(full["signal"])}, force=True) == "replaced"
    assert not demo.exists() and not list(tmp_path.glob(".demo.replaced-*"))
    # a demo folder of the previous layout (both modalities in one folder)
    old = tmp_path / "old"
    old.mkdir()
    (old / "demo_plan.json").write_text(json.dumps(sig))
    (old / "results.jsonl").write_text("")
    with pytest.raises(UserError, match="older version.*--force"):
        prepare_out(old, sig)


def test_cli_refusal_exit_code(tmp_path):
    """``sslbench demo`` on a foreign folder: exit 2 with one line naming the way out, nothing written."""
    import subprocess
    import sys

    (tmp_path / "notes.txt").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "sslbench.cli", "demo", "--out", str(tmp_path), "--quick"],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "not a demo folder" in proc.stderr and "another --out" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

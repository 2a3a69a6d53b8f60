"""``sslbench.evaluate``: checkpoint loading, the baselines on every cell, resumable results, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from pretext.config import TrainConfig
from pretext.data import load_data
from pretext.errors import ConfigError, DataError
from pretext.pipeline import pretrain
from sslbench.evaluate import evaluate, plan_arms
from sslbench.pretrained import encoder_from_checkpoint, read_checkpoint
from tests.sslbench import _tiny as T

SPEC = f"{T.DATA_KIND}:"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    pretrain(T.TASK, T.ENCODER, SPEC, out, TrainConfig(steps=4, batch_size=8, progress=False, precision="32"))
    return out


def test_checkpoint_round_trip(run_dir):
    state, rc, path = read_checkpoint(run_dir)
    assert rc["task"] == T.TASK and rc["encoder"] == T.ENCODER and path.name == "last.ckpt"
    enc, info = encoder_from_checkpoint(run_dir / "encoder.safetensors", load_data(SPEC))
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k])
    assert info["task"] == T.TASK


def test_channel_mismatch_is_a_clear_error(run_dir):
    with pytest.raises(ConfigError, match=r"in_channels=1 but data .* has 3 channel"):
        encoder_from_checkpoint(run_dir, load_data(SPEC + "?channels=3"))
    with pytest.raises(DataError, match="does not exist"):
        read_checkpoint(run_dir / "nope.ckpt")


def test_plan_arms():
    assert plan_arms("linear", ("random", "scratch")) == [("ssl", "linear"), ("random", "linear"), ("scratch", "finetune")]
    assert plan_arms("finetune", ("random", "scratch")) == [("ssl", "finetune"), ("scratch", "finetune")]


def test_evaluate_runs_cells_with_baselines_and_resumes(run_dir, tmp_path):
    kw = dict(protocol="linear,knn", fractions=(0.1, 1.0), seeds=(0, 1), out=tmp_path, n_boot=50,
              finetune={"steps": 10, "eval_every": 5, "batch_size": 8})
    df = evaluate(run_dir, SPEC, **kw)
    # ssl + random for 2 protocols, scratch once per (fraction, seed): (2 + 2 + 1) x 2 x 2
    assert len(df) == 20
    assert set(df["arm"]) == {"ssl", "random", "scratch"}
    assert (df.loc[df.arm == "ssl", "task"] == T.TASK).all()
    assert {"auroc", "auroc_lo", "auroc_hi", "auprc", "kappa", "ece", "reliability", "subgroups"} <= set(df.columns)
    assert (df.loc[df.fraction == 1.0, "n_labelled"] == 80).all()
    assert (df.auroc_lo <= df.auroc + 1e-9).all() and (df.auroc <= df.auroc_hi + 1e-9).all()
    sub = df.iloc[0]["subgroups"]
    assert {r["attribute"] for r in sub} >= {"sex"}
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["dataset"] for x in lines)
    # rerun: nothing new is computed
    df2 = evaluate(run_dir, SPEC, **kw)
    assert len(df2) == 20 and len((tmp_path / "results.jsonl").read_text().splitlines()) == 20


def test_evaluate_bad_inputs(run_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"evaluate protocols.0='probe' must be one of 'linear', 'knn'"):
        evaluate(run_dir, SPEC, protocol="probe", out=tmp_path)
    with pytest.raises(DataError, match="have no label"):
        evaluate(run_dir, SPEC + "?missing=2", out=tmp_path, seeds=(0,), fractions=(1.0,))
    with pytest.raises(ConfigError, match=r"evaluate fractions.0=1.5 must be <= 1"):
        evaluate(run_dir, SPEC, fractions=(1.5,), seeds=(0,), out=tmp_path, baselines=())


def test_evaluate_cli(run_dir, tmp_path, capsys):
    from sslbench.cli import main

    rc = main(["evaluate", "--checkpoint", str(run_dir), "--data", SPEC, "--protocol", "knn", "--fractions", "1",
               "--seeds", "0", "--baselines", "random", "--n-boot", "20", "--out", str(tmp_path), "--report"])
    out = capsys.readouterr().out
    assert rc == 0 and "knn" in out and (tmp_path / "report" / "report.md").is_file()
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data", SPEC, "--out", str(tmp_path)]) == 2


def test_finetuned_classifier_is_saved_and_exports_as_bundle(run_dir, tmp_path):
    from monai.bundle import ConfigParser

    from pretext.bundle import export_bundle, verify_bundle

    df = evaluate(run_dir, SPEC, protocol="finetune", fractions=(1.0,), seeds=(0,), out=tmp_path / "ev",
                  baselines=(), n_boot=20, finetune={"steps": 4, "eval_every": 2, "batch_size": 8}, save_models=True)
    model_path = df.iloc[0]["selected"]["model"]
    assert model_path.endswith(".ckpt") and (tmp_path / "ev" / "models").is_dir()
    bundle = export_bundle(model_path, tmp_path / "bundle", torchscript=False)
    checks = verify_bundle(bundle)
    assert checks["verify_metadata"].startswith("ok") and checks["verify_net_in_out"] == "ok"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    net.load_state_dict(state)
    x = load_data(SPEC).splits["test"][0]["x"][None]
    assert net(x).shape == (1, load_data(SPEC).num_classes)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert any("auroc" in k for k in meta.get("eval_metrics", {})) or "auroc" in (bundle / "docs" / "README.md").read_text()
    with pytest.raises(ConfigError, match="needs an out folder"):
        evaluate(run_dir, SPEC, protocol="finetune", fractions=(1.0,), seeds=(0,), out=None, save_models=True)


def test_capped_and_full_cells_never_share_a_folder(run_dir, tmp_path, monkeypatch):
    kw = dict(protocol="linear", fractions=(1.0,), seeds=(0,), baselines=("random",), n_boot=0)
    monkeypatch.setenv("MEDSSL_MAX_ITEMS", "12")
    with pytest.warns(UserWarning, match="cut to about 12 records"):
        capped = evaluate(run_dir, SPEC, out=tmp_path / "cap", **kw)
    assert (capped["n_test"] <= 14).all() and (capped["max_items"] == 12).all()
    from sslbench.reports import write_report

    assert "A quick check, not results" in write_report(tmp_path / "cap")["markdown"].read_text()
    with pytest.raises(ConfigError, match="max_items"):  # the same folder without the cap is another setting
        evaluate(run_dir, SPEC, out=tmp_path / "cap", max_items=13, **kw)
    monkeypatch.delenv("MEDSSL_MAX_ITEMS")
    with pytest.raises(ConfigError, match="max_items"):
        evaluate(run_dir, SPEC, out=tmp_path / "cap", **kw)
    full = evaluate(run_dir, SPEC, out=tmp_path / "full", **kw)
    assert (full["n_test"] > 14).all() and "max_items" not in full
    assert "quick check" not in write_report(tmp_path / "full")["markdown"].read_text()

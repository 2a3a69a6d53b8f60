"""Fault injection: a run folder belongs to one configuration (pretrain, evaluate, run), SIGTERM checkpoints like
SIGINT, and every user error on the CLI is one line with exit 2 (issue 10, items 1, 3, 4, 5, 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretext.config import TrainConfig
from pretext.engine import load_checkpoint
from pretext.errors import ConfigError
from pretext.pipeline import pretrain
from pretext.runfolder import IDENTITY_FILE, claim
from sslbench.cli import main
from sslbench.evaluate import evaluate
from sslbench.runner import load_recipe, run_recipe
from tests.sslbench import _tiny as T

REPO = Path(__file__).resolve().parents[2]
SPEC = f"{T.DATA_KIND}:"
PHANTOM = "synthetic_phantom3d:?n_patients=12&size=16"
FAST = ["--steps", "4", "--batch-size", "4", "--log-every", "2", "--warmup-steps", "1", "--progress", "false",
        "--encoder.widen_factor", "0.25"]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert err.startswith("sslbench: ")
    return err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two pretraining runs of the tiny task that differ in their weights (seed)."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", 0), ("b", 1)):
        pretrain(T.TASK, T.ENCODER, SPEC, root / name,
                 TrainConfig(steps=3, batch_size=8, progress=False, precision="32", seed=seed))
    return root


# -- 1. a run folder belongs to one configuration ---------------------------------------------------------------
def test_claim_refuses_other_identity_and_needs_extend_for_new_cells(tmp_path):
    claim(tmp_path, "evaluate", {"ckpt": "x", "n_boot": 10}, {"seeds": [0, 1], "tasks": {"rot": {"k": 1}}})
    claim(tmp_path, "evaluate", {"ckpt": "x", "n_boot": 10}, {"seeds": [1], "tasks": {}})  # a subset: fine
    with pytest.raises(ConfigError, match=r"ckpt: 'x' -> 'y'.*choose a new --out"):
        claim(tmp_path, "evaluate", {"ckpt": "y", "n_boot": 10}, {"seeds": [0]})
    with pytest.raises(ConfigError, match=r"seeds: \[0, 1\] -> \[2\].*pass --extend"):
        claim(tmp_path, "evaluate", {"ckpt": "x", "n_boot": 10}, {"seeds": [2]})
    with pytest.raises(ConfigError, match=r"tasks\.rot\.k: 1 -> 2"):  # the same name with other options
        claim(tmp_path, "evaluate", {"ckpt": "x", "n_boot": 10}, {"tasks": {"rot": {"k": 2}}}, extend=True)
    with pytest.raises(ConfigError, match="holds a `sslbench evaluate` run, not `sslbench run`"):
        claim(tmp_path, "run", {"ckpt": "x"})
    claim(tmp_path, "evaluate", {"ckpt": "x", "n_boot": 10}, {"seeds": [2]}, extend=True)
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["cells"]["seeds"] == [0, 1, 2]


def test_pretrain_resume_with_other_data_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["pretrain", "--task", "rotation", "--data", PHANTOM, "--out", str(out), *FAST]) == 0
    assert "no encoder given: using 'resnet18_3d'" in capsys.readouterr().out  # item 6: the default, said
    config_before = (out / "config.yaml").read_text()
    other = "synthetic_phantom3d:?n_patients=14&size=16"
    assert main(["pretrain", "--out", str(out), "--resume", "--data", other, "--steps", "6"]) == 2
    err = _err(capsys)
    assert "data: 'synthetic_phantom3d:?n_patients=12&size=16' -> " in err and "data_fingerprint" in err
    assert "choose a new --out" in err
    assert (out / "config.yaml").read_text() == config_before  # nothing rewritten
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 4
    # the run's own settings still continue it
    assert main(["pretrain", "--out", str(out), "--resume", "--steps", "6", "--progress", "false"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 6


def test_evaluate_refuses_another_checkpoints_folder(runs, tmp_path, capsys):
    out = tmp_path / "a_results"
    kw = ["--data", SPEC, "--protocol", "knn", "--fractions", "1", "--seeds", "0", "--baselines", "none",
          "--n-boot", "10", "--out", str(out)]
    assert main(["evaluate", "--checkpoint", str(runs / "a"), *kw]) == 0
    printed = capsys.readouterr().out
    assert "1 cells = arms ['ssl/knn'] x fractions [1.0] x seeds [0]" in printed  # item 6: the plan, before work
    lines = (out / "results.jsonl").read_text().splitlines()
    assert main(["evaluate", "--checkpoint", str(runs / "b"), *kw]) == 2
    err = _err(capsys)
    assert "encoder_weights_sha256" in err and "choose a new --out" in err
    assert (out / "results.jsonl").read_text().splitlines() == lines
    # the same weights through encoder.safetensors are the same identity (content, not path)
    assert main(["evaluate", "--checkpoint", str(runs / "a" / "encoder.safetensors"), *kw]) == 0
    # new cells need --extend
    more = [*kw[:-6], "--seeds", "0,1", "--baselines", "none", "--n-boot", "10", "--out", str(out)]
    assert main(["evaluate", "--checkpoint", str(runs / "a"), *more]) == 2
    assert "pass --extend" in _err(capsys)
    assert main(["evaluate", "--checkpoint", str(runs / "a"), *more, "--extend"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_run_folder_evaluates_from_safetensors_without_last_ckpt(runs, tmp_path):
    import shutil

    folder = tmp_path / "weights_only"
    shutil.copytree(runs / "a", folder)
    (folder / "checkpoints" / "last.ckpt").unlink()
    df = evaluate(folder, SPEC, protocol="knn", fractions=(1.0,), seeds=(0,), baselines=(), n_boot=10)
    assert len(df) == 1 and df.iloc[0]["arm"] == "ssl"


def test_run_refuses_other_budget_and_keeps_recipe_yaml(tmp_path):
    recipe, out = T.write_recipe(tmp_path, steps=3), tmp_path / "out"
    run_recipe(load_recipe(recipe), out, log=lambda _: None)
    saved = (out / "recipe.yaml").read_text()
    n = len((out / "results.jsonl").read_text().splitlines())
    with pytest.raises(ConfigError, match=r"pretrain\.steps: 3 -> 6.*choose a new --out"):
        run_recipe(load_recipe(recipe, sets=["pretrain.steps=6"]), out, log=lambda _: None)
    assert (out / "recipe.yaml").read_text() == saved
    with pytest.raises(ConfigError, match=r"seeds: \[0\] -> \[0, 1\].*pass --extend"):
        run_recipe(load_recipe(recipe, sets=["seeds=[0,1]"]), out, log=lambda _: None)
    run_recipe(load_recipe(recipe, sets=["seeds=[0,1]", "threads=2"]), out, log=lambda _: None, extend=True)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2 * n


# -- 3. SIGTERM checkpoints like SIGINT --------------------------------------------------------------------------
def test_sigterm_checkpoints_and_exits_143(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sslbench.cli", "pretrain", "--task", "rotation", "--encoder", "resnet18_3d",
         "--data", PHANTOM, "--out", str(out), "--steps", "100000", "--batch-size", "2", "--log-every", "1",
         "--ckpt-every", "100000", "--progress", "false", "--encoder.widen_factor", "0.25"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    log = out / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # wait until some steps have run
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err and "--resume" in err
    state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert state["step"] >= 2 and f"step {state['step']}" in err


# -- 4. no traceback for a user error --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "--task", "rotation", "--data", PHANTOM, "--lr", "nan"], "--lr (train.lr)='nan' must be a finite number, e.g. --lr 0.001"),
        (["pretrain", "--task", "rotation", "--data", PHANTOM, "--num-workers", "-1"], "--num-workers (train.num_workers)=-1 must be >= 0, e.g. --num-workers 0"),
        (["pretrain", "--out", "{tmp}/nothing", "--resume"], "drop --resume"),
        (["pretrain", "--config", "{tmp}/bad.yaml"], "is not valid YAML at line 2"),
        (["pretrain", "--config", "{tmp}/list.yaml"], "must hold a YAML mapping"),
        (["run", "{tmp}/bad.yaml", "--out", "{tmp}/o"], "recipe '{tmp}/bad.yaml' is not valid YAML"),
        (["evaluate", "--checkpoint", "{runs}/a", "--data", SPEC, "--seeds", "0,x"], "--seeds (evaluate.seeds.1)='x' must be a whole number, e.g. --seeds 0,1,2"),
        (["evaluate", "--checkpoint", "{runs}/a", "--data", SPEC, "--fractions", "0.1,ten"], "--fractions (evaluate.fractions.1)='ten' must be a number, e.g. --fractions 0.01,0.1,1.0"),
        (["evaluate", "--checkpoint", "{tmp}/random/encoder.safetensors", "--data", SPEC],
         "is not a readable safetensors file"),
        (["evaluate", "--checkpoint", "{tmp}/random.ckpt", "--data", SPEC], "cannot be read safely"),
    ],
)
def test_cli_user_errors_are_one_line(runs, tmp_path, capsys, args, message):
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "encoder.safetensors").write_bytes(os.urandom(256))
    (tmp_path / "random.ckpt").write_bytes(os.urandom(256))
    fill = {"tmp": str(tmp_path), "runs": str(runs)}
    argv = [a.format(**fill) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = _err(capsys)
    assert message.format(**fill) in err
    assert "weights_only=False" not in err


def test_pickle_with_code_is_refused_without_torch_advice(tmp_path, capsys, runs):
    import torch

    bad = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "run_config": {"encoder": T.ENCODER}, "x": Path("/")}, bad)  # a pickled class
    assert main(["evaluate", "--checkpoint", str(bad), "--data", SPEC, "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert "never unpickled" in err and "weights_only" not in err

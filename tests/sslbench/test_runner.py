"""``sslbench run``: recipe checks before any work, a tiny end-to-end recipe, resume after a kill, reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pretext.errors import ConfigError, DataError
from sslbench.cli import main
from sslbench.reports import write_report
from sslbench.runner import load_recipe, run_recipe
from sslbench.store import ResultStore, cell_key
from tests.sslbench import _tiny as T

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, **over) -> Path:
    rec = {
        "name": "tiny", "imports": ["tests.sslbench._tiny"],
        "datasets": {"tiny": {"data": f"{T.DATA_KIND}:"}},
        "tasks": [T.TASK], "encoders": {T.ENCODER: {"width": 8}},
        "pretrain": {"steps": 4, "batch_size": 8, "precision": "32"},
        "finetune": {"steps": 10, "eval_every": 5, "batch_size": 8, "lr": 0.01},
        "protocols": ["linear", "finetune"], "fractions": [0.2, 1.0], "seeds": [0, 1],
        "n_boot": 30, "audit": {"method": "pca"}, "threads": 1,
    }
    rec.update(over)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(rec))
    return path


def test_recipe_errors_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown task 'nope'; valid tasks:.*" + T.TASK):
        load_recipe(_recipe(tmp_path, tasks=["nope"]))
    with pytest.raises(ConfigError, match=r"unknown data 'nokind'; valid datas:"):
        load_recipe(_recipe(tmp_path, datasets={"x": {"data": "nokind:/tmp/x"}}))
    with pytest.raises(DataError, match="exists neither"):
        load_recipe(_recipe(tmp_path, datasets={"x": {"data": "medmnist3d:nowhere/x.npz"}}))
    with pytest.raises(ConfigError, match=r"unknown option .protocol.; did you mean .protocols.\?"):
        load_recipe(_recipe(tmp_path, protocol=["linear"]))
    with pytest.raises(ConfigError, match=r"protocols.0='probe' must be one of 'linear', 'knn', 'partial' or 'finetune'"):
        load_recipe(_recipe(tmp_path, protocols=["probe"]))
    out = tmp_path / "out"
    # a data problem (labels missing) is found before pretraining starts: nothing is written
    with pytest.raises(DataError, match="have no label"):
        run_recipe(load_recipe(_recipe(tmp_path, datasets={"t": {"data": f"{T.DATA_KIND}:?missing=2"}})), out)
    assert not out.exists()
    assert main(["run", str(_recipe(tmp_path, tasks=["nope"])), "--out", str(out)]) == 2


def test_tiny_recipe_end_to_end_and_report(tmp_path):
    out = tmp_path / "out"
    logs: list[str] = []
    rec = load_recipe(_recipe(tmp_path))
    store = run_recipe(rec, out, log=logs.append)
    rows = store.rows()
    # per (fraction, seed): ssl linear, random linear, ssl finetune, scratch = 4 cells x 2 x 2
    assert len(rows) == rec.n_cells() == 16
    assert len({cell_key(r) for r in rows}) == 16
    assert (out / "pretrain" / "tiny" / T.ENCODER / T.TASK / "checkpoints" / "last.ckpt").is_file()
    assert (out / "audit" / f"tiny_{T.ENCODER}_{T.TASK}.json").is_file()
    # rerun: every cell is skipped, nothing is pretrained again
    logs.clear()
    run_recipe(rec, out, log=logs.append)
    assert len(store.rows()) == 16 and not any(line.startswith("pretrain") for line in logs)
    paths = write_report(out)
    md = paths["markdown"].read_text()
    assert f"ssl:{T.TASK}" in md and "scratch" in md and "random" in md and "± " in md
    assert "Embedding audit" in md
    pngs = list(paths["dir"].glob("*.png"))
    assert any("efficiency" in p.name for p in pngs) and any("reliability" in p.name for p in pngs)
    assert paths["html"].read_text().startswith("<!doctype html>")
    assert main(["report", str(out)]) == 0


@pytest.mark.faults
@pytest.mark.slow
def test_killed_run_resumes_without_losing_cells(tmp_path):
    recipe = _recipe(tmp_path, fractions=[0.5, 1.0], seeds=[0, 1, 2], protocols=["linear"], baselines=["random"],
                     audit=False)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sslbench.cli", "run", str(recipe), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results.read_text().splitlines()
    assert 2 <= len(before) < 12, "the run should have been killed mid-way"
    with open(results, "a") as fh:  # a line half-written when the process died
        fh.write('{"dataset": "tiny", "task"')
    run_recipe(load_recipe(recipe), out, log=lambda _: None)  # resume (in-process: the subprocess start is slow)
    after = results.read_text().splitlines()
    assert after[: len(before)] == before  # finished cells never lost or rewritten
    rows = [json.loads(x) for x in after]
    assert len(rows) == 12 and len({cell_key(r) for r in rows}) == 12
    assert len(ResultStore(out).rows()) == 12


def test_set_overrides_and_task_encoder_pairs(tmp_path):
    rec = load_recipe(_recipe(tmp_path), sets=["pretrain.steps=7", "seeds=[3]", "finetune.lr=0.5"])
    assert rec.pretrain.steps == 7 and rec.seeds == [3] and rec.finetune.lr == 0.5
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_recipe(_recipe(tmp_path), sets=["seeds"])
    with pytest.raises(ConfigError, match="not in encoders"):
        load_recipe(_recipe(tmp_path, tasks={T.TASK: {"encoders": ["vit_3d"]}}))


@pytest.mark.parametrize("path", sorted((REPO / "sslbench" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_name_registered_components(path):
    """Every shipped recipe parses; names are registered; only a missing data folder may stop it."""
    try:
        rec = load_recipe(path)
    except DataError as err:
        assert "exists neither" in str(err)  # data the user has to bring (PTB-XL, Sleep-EDF, ...)
        raw = yaml.safe_load(path.read_text())
        from pretext.registry import ENCODERS, TASKS

        assert all(t in TASKS for t in raw["tasks"]) and all(e in ENCODERS for e in raw["encoders"])
        return
    assert rec.n_cells() > 0 and rec.pairs()


def test_max_items_is_part_of_a_run_folders_identity(tmp_path, monkeypatch):
    """A quick check ($MEDSSL_MAX_ITEMS or --set max_items=N) never resumes into, or from, a full-size folder."""
    from sslbench.runner import claim_recipe_folder

    monkeypatch.delenv("MEDSSL_MAX_ITEMS", raising=False)
    full = load_recipe(_recipe(tmp_path))
    assert full.max_items is None
    out = tmp_path / "out"
    claim_recipe_folder(full, out, {})
    monkeypatch.setenv("MEDSSL_MAX_ITEMS", "16")
    capped = load_recipe(_recipe(tmp_path))
    assert capped.max_items == 16 and load_recipe(_recipe(tmp_path), sets=["max_items=8"]).max_items == 8
    with pytest.raises(ConfigError, match="max_items"):
        claim_recipe_folder(capped, out, {})
    monkeypatch.delenv("MEDSSL_MAX_ITEMS")
    claim_recipe_folder(load_recipe(_recipe(tmp_path)), out, {})  # the same full-size recipe: accepted

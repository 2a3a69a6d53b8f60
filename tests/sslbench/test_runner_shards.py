"""``sslbench run --shard I/N`` / ``--workers N``: disjoint shards, locked appends, a killed worker redone."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pretext.atomic import atomic_write_text
from pretext.errors import ConfigError
from sslbench.cli import main
from sslbench.reports import write_report
from sslbench.runner import WorkUnit, load_recipe, parse_shard, run_recipe, unit_cells, work_units
from sslbench.store import ResultStore, cell_key
from tests.sslbench import _tiny as T
from tests.sslbench.test_runner import _recipe

REPO = Path(__file__).resolve().parents[2]
# fields that depend on where and when a cell ran, not on what it computed
_RUN_FIELDS = {"elapsed_s", "predictions", "checkpoint", "paired"}


def _small(tmp_path: Path, **over) -> Path:
    kw = {"fractions": [0.5, 1.0], "seeds": [0], "audit": False, "n_boot": 20,
          "finetune": {"steps": 6, "eval_every": 3, "batch_size": 8, "lr": 0.01}}
    kw.update(over)
    return _recipe(tmp_path, **kw)


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _RUN_FIELDS and not k.endswith("_s")}


def test_work_units_partition_every_cell(tmp_path):
    rec = load_recipe(_recipe(tmp_path, datasets={"a": {"data": f"{T.DATA_KIND}:", "k": 3, "folds": [0, 2]},
                                                  "b": {"data": f"{T.DATA_KIND}:"}},
                              protocols=["linear", "knn", "finetune"]))
    units = work_units(rec)
    assert len(units) == len(set(units))
    assert sum(unit_cells(rec, u) for u in units) == rec.n_cells()
    ssl = [u for u in units if u.kind == "ssl"]
    assert sorted(ssl) == sorted(WorkUnit("ssl", d, e, task=t) for d in rec.datasets for t, e in rec.pairs())  # one per pretraining
    for n in (1, 2, 3, 7):
        shards = [[u for j, u in enumerate(units) if j % n == i] for i in range(n)]
        assert sorted(u for s in shards for u in s) == sorted(units)
    # only fine-tuning protocols: the random-init audit gets a unit of its own
    fin = load_recipe(_recipe(tmp_path, protocols=["finetune"]))
    assert WorkUnit("audit", "tiny", T.ENCODER) in work_units(fin)
    assert sum(unit_cells(fin, u) for u in work_units(fin)) == fin.n_cells()
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(ConfigError, match="I/N"):
            parse_shard(bad)
    assert parse_shard("3/4") == (3, 4)
    assert main(["run", str(_small(tmp_path)), "--out", str(tmp_path / "o"), "--shard", "0/2", "--report"]) == 2
    assert not (tmp_path / "o").exists()  # refused before any work


def _appender(folder: str, tag: int, n: int) -> None:
    store = ResultStore(folder)
    for i in range(n):
        store.append({"dataset": "d", "task": "t", "encoder": "e", "arm": f"w{tag}", "protocol": "linear",
                      "fraction": 1.0, "seed": i, "fold": 0, "pad": "x" * 9000})  # > PIPE_BUF: not atomic alone


def _rewriter(folder: str, n: int) -> None:
    """What attach_paired does: read, rewrite, rename over results.jsonl, under the store lock."""
    store = ResultStore(folder)
    for _ in range(n):
        with store.lock():
            text = store.path.read_text() if store.path.is_file() else ""
            atomic_write_text(store.path, text)


def test_concurrent_appends_and_rewrites_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), k, 60)) for k in range(3)]
    procs.append(ctx.Process(target=_rewriter, args=(str(tmp_path), 40)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]  # every line whole
    assert len(rows) == 180 and len({cell_key(r) for r in rows}) == 180


def test_two_shards_in_process_equal_one_process(tmp_path):
    recipe = _small(tmp_path)
    rec = load_recipe(recipe)
    one = run_recipe(rec, tmp_path / "one", log=lambda _: None).rows()
    logs: list[str] = []
    for i in range(2):
        run_recipe(rec, tmp_path / "two", log=logs.append, shard=(i, 2))
    two = ResultStore(tmp_path / "two").rows()
    assert any(line.startswith("shard 1/2:") for line in logs)
    assert sum(line.startswith("pretrain ") for line in logs) == 1  # one pretraining, in one shard
    assert len(one) == rec.n_cells() and len(two) == len(one)
    by_one = {cell_key(r): _strip(r) for r in one}
    by_two = {cell_key(r): _strip(r) for r in two}
    assert len(by_two) == len(two) and set(by_two) == set(by_one)
    for key, row in by_one.items():  # same cells, same numbers
        assert by_two[key] == row, key
    # paired comparisons: the last shard attached them to every SSL cell, as one process does
    assert {cell_key(r): sorted(r.get("paired") or {}) for r in two} == \
        {cell_key(r): sorted(r.get("paired") or {}) for r in one}
    # the report reads the same (row order in results.jsonl differs; the out folder's name is normalised)
    md = [write_report(tmp_path / name)["markdown"].read_text().replace(str(tmp_path / name), "OUT")
          for name in ("one", "two")]
    assert md[0] == md[1]
    # rerunning a finished shard runs nothing
    logs.clear()
    run_recipe(rec, tmp_path / "two", log=logs.append, shard=(0, 2))
    assert len(ResultStore(tmp_path / "two").rows()) == len(one) and not any("[new" in x for x in logs)


@pytest.mark.slow
def test_workers_cli_fills_the_matrix_once(tmp_path, capsys):
    recipe = _small(tmp_path, threads=None)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--workers", "2", "--set", "n_boot=20", "--report"]) == 0
    text = capsys.readouterr().out
    assert "[shard 0/2] shard 0/2:" in text and "[shard 1/2] shard 1/2:" in text
    assert "torch thread(s) each" in text
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    keys = [cell_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == load_recipe(recipe).n_cells()
    report = Path(text.split("report: ", 1)[1].split(" (HTML")[0])  # written by the parent, after both
    assert report.is_file() and f"ssl:{T.TASK}" in report.read_text()


@pytest.mark.faults
@pytest.mark.slow
def test_killed_worker_cell_is_redone_once(tmp_path):
    recipe = _small(tmp_path, seeds=[0, 1], protocols=["linear"], baselines=["random", "scratch"])
    rec = load_recipe(recipe)
    units = work_units(rec)
    shard0 = {u for j, u in enumerate(units) if j % 2 == 0}
    out = tmp_path / "out"
    results = out / "results.jsonl"

    def is_shard0(row: dict) -> bool:
        arm = row["arm"]
        unit = WorkUnit("ssl", row["dataset"], row["encoder"], task=row["task"]) if arm == "ssl" else \
            WorkUnit("baseline", row["dataset"], row["encoder"], fold=int(row["fold"] or 0), arm=arm)
        return unit in shard0

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sslbench.cli", "run", str(recipe), "--out", str(out), "--shard", "0/2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_after_first_cell() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if any(is_shard0(r) for r in ResultStore(out).rows()):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_cell)
    killer.start()
    run_recipe(rec, out, log=lambda _: None, shard=(1, 2))  # the other worker, writing at the same time
    killer.join()
    proc.wait()
    before = results.read_text().splitlines()
    n0 = sum(is_shard0(json.loads(x)) for x in before)
    n_shard0 = sum(unit_cells(rec, u) for u in shard0)
    assert 1 <= n0 < n_shard0, "shard 0 should have been killed mid-way"
    run_recipe(rec, out, log=lambda _: None, shard=(0, 2))  # rerun the killed shard
    after = results.read_text().splitlines()
    assert after[: len(before)] == before  # finished cells kept as they were
    keys = [cell_key(json.loads(x)) for x in after]
    assert len(keys) == len(set(keys)) == rec.n_cells()

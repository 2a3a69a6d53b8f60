"""The online monitor's curves in the report (sslbench.report_monitor)."""

from __future__ import annotations

from pathlib import Path

from sslbench.report_monitor import copy_monitor_csvs, monitor_blocks, monitor_curves

CSV = """step,loss,monitor/eff_rank,monitor/std_ratio,monitor/knn_top1,monitor/collapse
10,4.0,,,,
20,3.5,30.0,0.2,0.6,0
30,3.0,,,,
40,2.5,25.0,0.3,0.7,0
"""


def _run(folder: Path, sub: str = "pretrain") -> None:
    for task in ("simclr", "dino"):
        d = folder / sub / "ds" / "enc" / task
        d.mkdir(parents=True)
        (d / "metrics.csv").write_text(CSV)
    (folder / sub / "ds" / "enc" / "rotation").mkdir()
    (folder / sub / "ds" / "enc" / "rotation" / "metrics.csv").write_text("step,loss\n10,1.0\n")  # no monitor


def test_monitor_blocks_plot_and_tabulate_each_task(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    curves = monitor_curves(tmp_path / "run")
    assert set(curves) == {("ds", "enc")} and set(curves["ds", "enc"]) == {"simclr", "dino"}
    assert list(curves["ds", "enc"]["simclr"]["step"]) == [20, 40]
    blocks = monitor_blocks(tmp_path / "run", tmp_path / "report")
    table = next(v for k, v in blocks if k == "table")
    assert [r[0] for r in table[1]] == ["ds · enc · dino", "ds · enc · simclr"]
    assert table[1][0][2] == "30.000 → 25.000"
    img = next(v for k, v in blocks if k == "img")
    assert (tmp_path / "report" / img[0]).stat().st_size > 0


def test_a_committed_folder_keeps_its_curves_without_checkpoints(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    copied = copy_monitor_csvs(tmp_path / "run", tmp_path / "committed")
    assert len(copied) == 3
    assert set(monitor_curves(tmp_path / "committed")["ds", "enc"]) == {"simclr", "dino"}
    assert monitor_blocks(tmp_path / "empty", tmp_path / "r2") == []

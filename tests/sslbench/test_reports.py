"""Reports: the tables aggregate seeds correctly, deltas are paired, plots and HTML are written."""

from __future__ import annotations

from sslbench.reports import delta_table, efficiency_table, load_results, write_report
from sslbench.store import ResultStore

REL = {"edges": [0, 0.5, 1], "confidence": [0.3, 0.8], "accuracy": [0.4, 0.7], "count": [3, 7]}


def _rows():
    rows = []
    for frac, base in ((0.1, 0.6), (1.0, 0.7)):
        for seed, jitter in ((0, 0.0), (1, 0.1)):
            for arm, task, off in (("ssl", "rotation", 0.05), ("random", "-", 0.0), ("scratch", "-", -0.02)):
                rows.append({"dataset": "d", "task": task, "encoder": "e", "arm": arm,
                             "protocol": "finetune" if arm == "scratch" else "linear", "fraction": frac,
                             "seed": seed, "fold": 0, "auroc": base + jitter + off, "auroc_lo": base - 0.1,
                             "auroc_hi": base + 0.1, "accuracy": 0.5, "ece": 0.1, "reliability": REL,
                             "subgroups": [{"attribute": "sex", "group": "F", "n": 10, "auroc": 0.6}]})
    return rows


def test_tables_aggregate_over_seeds(tmp_path):
    store = ResultStore(tmp_path)
    for r in _rows():
        store.append(r)
    df = load_results(tmp_path)
    header, rows = efficiency_table(df)
    assert header == ["method", "0.1 labels", "1 labels"]
    ssl = next(r for r in rows if r[0] == "ssl:rotation")
    assert ssl[1].startswith("0.700 ± 0.071 [0.500, 0.700] (n=2)")  # (0.65, 0.75); CI bounds averaged
    _, deltas = delta_table(df)
    vs_scratch = next(r for r in deltas if r[0] == "ssl:rotation − scratch")
    assert vs_scratch[1] == "+0.070 ± 0.000"  # paired by seed: 0.05 - (-0.02)
    paths = write_report(tmp_path, title="T")
    md = paths["markdown"].read_text()
    assert "# T" in md and "sex=F (n=10)" in md and "linear: test AUROC" in md
    assert sorted(p.name for p in paths["dir"].glob("*.png")) == ["d_e_linear_efficiency.png", "d_e_linear_reliability.png"]
    assert "<table>" in paths["html"].read_text()


def test_paired_table_marks_intervals_excluding_zero(tmp_path):
    from sslbench.reports import paired_table

    store = ResultStore(tmp_path)
    for r in _rows():
        if r["arm"] == "ssl":
            lo = 0.01 if r["fraction"] == 1.0 else -0.02
            entry = {"metric": "auroc", "diff": 0.05, "lo": lo, "hi": 0.09, "p_delong": 0.01, "auprc_diff": 0.02,
                     "auprc_lo": -0.01, "auprc_hi": 0.05}
            comb = {"diff": 0.05, "lo": lo, "hi": 0.08, "auprc_diff": 0.02, "auprc_lo": -0.01, "auprc_hi": 0.04}
            r["paired"] = {"random": {**entry, "seeds": comb}}
        store.append(r)
    header, rows = paired_table(load_results(tmp_path))
    auroc = next(r for r in rows if r[0] == "ssl:rotation − random (AUROC)")
    assert auroc[1] == "+0.050 [-0.020, +0.080] (0/2 seeds CI excl. 0; DeLong p<0.05 2/2)"
    assert auroc[2] == "+0.050 [+0.010, +0.080] * (2/2 seeds CI excl. 0; DeLong p<0.05 2/2)"
    auprc = next(r for r in rows if r[0] == "ssl:rotation − random (AUPRC)")
    assert "*" not in auprc[2] and "DeLong" not in auprc[2]
    assert "same test patients" in write_report(tmp_path, title="T")["markdown"].read_text()


def test_headline_table_uses_each_protocols_matched_baseline(tmp_path):
    from sslbench.reports import headline_table

    store = ResultStore(tmp_path)
    for r in _rows():
        if r["arm"] == "ssl":
            # a linear SSL row compared with both baselines: only random-init linear is its matched baseline
            r["paired"] = {"random": {"diff": -0.03, "lo": -0.07, "hi": 0.01},
                           "scratch": {"diff": 0.2, "lo": 0.1, "hi": 0.3}}
        store.append(r)
        if r["arm"] == "ssl":  # and a fine-tuned SSL row of the same cell, matched with scratch
            ft = {**r, "protocol": "finetune", "paired": {"random": {"diff": 9.0, "lo": 8.0, "hi": 10.0},
                                                          "scratch": {"diff": 0.04, "lo": 0.01, "hi": 0.07,
                                                                      "seeds": {"diff": 0.05, "lo": 0.02, "hi": 0.08}}}}
            store.append(ft)
    header, rows = headline_table(load_results(tmp_path))
    assert header == ["SSL − matched baseline (test AUROC, paired)", "0.1 labels", "1 labels"]
    assert rows == [["ssl:rotation linear − random", "-0.030 [-0.070, +0.010]", "-0.030 [-0.070, +0.010]"],
                    ["ssl:rotation finetune − scratch", "+0.050 [+0.020, +0.080] *", "+0.050 [+0.020, +0.080] *"]]
    assert "Headline" in write_report(tmp_path, title="T")["markdown"].read_text()

"""The layer contract of pyproject.toml ([tool.importlinter]) holds: import-linter (grimp counts imports inside
functions too) over pretext / volssl / signalssl / sslbench / benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_layer_contracts_are_kept() -> None:
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "3 kept, 0 broken" in res.stdout


def test_a_function_level_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """The check is not blind to imports hidden inside functions (the way cycles used to be hidden)."""
    import shutil

    for pkg in ("pretext", "volssl", "signalssl", "sslbench", "benchmarks"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "results"))
    with open(tmp_path / "pretext" / "losses.py", "a") as fh:
        fh.write("\n\ndef _upward():\n    from volssl.tasks import rotation  # noqa: F401\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "pretext.losses -> volssl.tasks" in res.stdout

"""Every runnable fenced block of README.md (``bash`` and ``python``) is run as written, so a README edit that
breaks an example fails the suite.

How a block runs:

* in a temporary folder laid out like a clone (the repository's top-level entries linked into ``TMP/repo``,
  ``TMP/shared`` linking the real ``../shared``), with the working directory ``TMP/repo``: commands that write
  ``runs/...`` or ``bundles/...`` write there, never into the checkout, and ``../shared/data`` resolves as in a clone;
* ``bash`` blocks with ``bash -e -o pipefail`` (a failing command fails the block), ``python`` blocks as a script;
* with the environment variables of :data:`SMALL` set: the README writes every size as a shell variable or an
  ``os.environ`` lookup whose default is the size we used (e.g. ``--steps ${STEPS:-300}``), so the same text runs
  small here and full size for a reader. Nothing in the text is rewritten.

A block is skipped only when its first line is a visible mark ``# needs ...`` (a GPU, a cluster, data that is not
under ``../shared``) or ``# runs in .ci/run ...`` (``make demo`` / ``make test`` themselves).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUNNABLE = {"bash", "sh", "python"}
SKIP_MARK = re.compile(r"^#\s*(needs\b.*|runs in \.ci/run.*)$")

# The small sizes, through the variables the README documents ("Every example runs as written").
SMALL = {
    "STEPS": "2",            # pretraining steps
    "FT_STEPS": "2",         # fine-tune steps
    "EPOCHS": "1",           # epochs of the bundle's train.json
    "SEEDS": "0",            # label-draw seeds
    "FRACTIONS": "1",        # label fractions
    "OVERLAP": "0",          # sliding-grid overlap of whole-scan features
    "MEDSSL_MAX_ITEMS": "48",  # a quick check: evaluation splits cut to ~48 records each, the monitor to 48 items
    # extra overrides appended to `sslbench run RECIPE`: one seed, one fraction, linear probe, 2 steps, the audit's
    # map by PCA (UMAP's numba compile costs ~10 s per process)
    "SMOKE": "--set seeds=[0] --set fractions=[1.0] --set protocols=[linear] --set pretrain.steps=2 "
             "--set pretrain.warmup_steps=1 --set finetune.steps=2 --set n_boot=50 --set audit.method=pca",
}


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def skip_reason(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        m = SKIP_MARK.match(first.strip())
        return m.group(1) if m else None


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text that are ``bash``/``sh``/``python``, in order."""
    blocks = []
    for tok in MarkdownIt().parse(text):
        lang = (tok.info or "").strip().split(" ")[0].lower()
        if tok.type == "fence" and lang in RUNNABLE and tok.map:
            blocks.append(Block(lang, tok.map[0] + 1, tok.content))
    return blocks


def clone_like(tmp: Path) -> Path:
    """``tmp/repo`` with the repository's tracked top-level entries linked in, ``tmp/shared`` -> ``../shared``."""
    repo = tmp / "repo"
    repo.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name in {"runs", "bundles", "build"} or entry.name.endswith(".egg-info"):
            continue
        (repo / entry.name).symlink_to(entry)
    shared = REPO.parent / "shared"
    if shared.exists():
        (repo.parent / "shared").symlink_to(shared.resolve())
    return repo


def run_block(block: Block, tmp: Path, env_extra: dict[str, str] | None = None,
              timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run one block in a clone-like folder under ``tmp``; returns the finished process (never raises on failure)."""
    repo = clone_like(tmp)
    env = {**os.environ, **SMALL, **(env_extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # sslbench, python of this venv
    # the code of this tree, whichever tree the venv's editable install points at (a worktree, a copy)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:  # the suite's processes already share the cores
        env.setdefault("OMP_NUM_THREADS", "1")
    if block.lang == "python":
        script = repo.parent / "block.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        script = repo.parent / "block.sh"
        script.write_text(block.code, encoding="utf-8")
        cmd = ["bash", "-e", "-o", "pipefail", str(script)]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def readme_cache(tmp_path_factory) -> Path:
    """One cache for all blocks: data ingested by one block is reused by the next, as for a reader."""
    return tmp_path_factory.mktemp("readme-cache")


def test_readme_has_runnable_blocks():
    assert sum(b.skip_reason is None for b in BLOCKS) >= 6, [b.line for b in BLOCKS]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block(block: Block, tmp_path, request, readme_cache):
    if block.skip_reason:
        pytest.skip(f"README.md line {block.line} is marked '# {block.skip_reason}'")
    if "../shared/data" in block.code:
        request.getfixturevalue("shared_data")  # skips with the fixture's message where ../shared is absent
    proc = run_block(block, tmp_path, {"MEDSSL_CACHE": str(readme_cache)})
    assert proc.returncode == 0, (f"README.md line {block.line} ({block.lang}) failed with exit {proc.returncode}\n"
                                  f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-5000:]}")


def test_a_broken_example_fails(tmp_path):
    """The runner reports a broken command as a failure (what makes a README edit that breaks an example fail)."""
    text = "x\n\n```bash\nsslbench list > /dev/null\nsslbench pretrain --task no_such_task --data synthetic_ecg:data --out runs/x\necho unreachable\n```\n"
    (block,) = readme_blocks(text)
    proc = run_block(block, tmp_path, timeout=300)
    assert proc.returncode == 2 and "no_such_task" in proc.stderr and "unreachable" not in proc.stdout
    py = readme_blocks("```python\nimport pretext\nraise SystemExit(pretext.__name__ == 'pretext' and 3)\n```\n")[0]
    assert run_block(py, tmp_path / "py", timeout=300).returncode == 3


def test_marks_and_parsing():
    text = ("```bash\n# needs a GPU\nsslbench pretrain --devices 4\n```\n\n```toml\n[x]\n```\n\n"
            "```python\nprint(1)\n```\n\n```\nplain\n```\n")
    blocks = readme_blocks(text)
    assert [(b.lang, b.line) for b in blocks] == [("bash", 1), ("python", 10)]
    assert blocks[0].skip_reason == "needs a GPU" and blocks[1].skip_reason is None


def test_readme_states_the_sizes_the_tests_use():
    """The README's top says which sizes the tests substitute; keep it true."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    for name, value in SMALL.items():
        said = f"{name}='{value}'" if " " in value else f"{name}={value}"
        assert said in text, f"README.md should say the tests set {said}"

"""``sslbench run RECIPE.yaml --out DIR``: run a benchmark recipe (resumable; one JSON line per cell)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from pretext.errors import ConfigError
from pretext.options import parse_value

_SPREAD = """spreading the cells: --workers N runs N local processes (shards 0/N .. N-1/N) on one --out; --shard I/N runs
one shard, so independent jobs fill one matrix, e.g. a SLURM job array on a shared folder:

  sbatch --array=0-15 --wrap "sslbench run recipe.yaml --out /shared/out --shard \\$SLURM_ARRAY_TASK_ID/16"

then, once all have finished: sslbench report /shared/out. A killed shard is finished by rerunning it (its
finished cells are kept; none runs twice)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a benchmark recipe (tasks x encoders x datasets x protocols x fractions x seeds)",
        description=__doc__ + "\n\nRerunning with the same --out skips finished cells and resumes pretraining "
        "from its last checkpoint.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sslbench run sslbench/recipes/adrenalmnist3d.yaml --out runs/adrenal --report\n\n"
        + _SPREAD,
    )
    p.add_argument("recipe", help="recipe YAML (see sslbench/recipes/)")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, pretrain/, features/)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=SPEC",
                   help="replace dataset NAME's data spec (repeatable), e.g. adrenal28=medmnist3d:/data/x.npz")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a recipe key (dotted, YAML value; repeatable), e.g. pretrain.steps=100, seeds=[0]")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything a real run checks before training (recipe, data, task and encoder options "
                        "with one forward pass, --out), write nothing, and print the number of cells")
    p.add_argument("--extend", action="store_true",
                   help="add new cells (seeds, fractions, protocols, tasks, datasets) to an --out that holds this "
                        "recipe's finished cells; without it a different matrix is refused")
    p.add_argument("--report", action="store_true", help="write the report (sslbench report) at the end")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the cells in N local processes (shards 0/N .. N-1/N; torch threads: CPUs / N unless "
                        "the recipe sets threads)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="run only shard I of N (0 <= I < N) of the recipe's work units; N such jobs on one --out "
                        "fill the whole matrix (write the report afterwards with sslbench report OUT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sslbench.runner import check_recipe, load_recipe, parse_shard, run_recipe, unit_cells, work_units

    overrides = {}
    for item in args.data:
        name, eq, spec = item.partition("=")
        if not eq or not name or not spec:
            raise ConfigError(f"--data {item!r} must read NAME=KIND:PATH")
        overrides[name] = spec
    recipe = load_recipe(args.recipe, overrides, args.sets)
    shard = None
    if args.shard is not None:
        shard = parse_shard(args.shard)
        if args.workers != 1:
            raise ConfigError("--shard and --workers cannot be combined: --workers N starts the N shards itself")
        if args.report:
            raise ConfigError("--report with --shard would report a partial matrix; once every shard has finished, "
                              f"write it with: sslbench report {args.out}")
    args.workers = parse_value(PositiveInt, args.workers, "--workers")
    if args.dry_run:  # the checks of a real run (data, task options, one forward pass, --out), without writing
        check_recipe(recipe, args.out, extend=args.extend)
        print(f"recipe {recipe.name}: {recipe.n_cells()} cells over datasets {sorted(recipe.datasets)}, "
              f"(task, encoder) pairs {recipe.pairs()}, protocols {recipe.protocols}, fractions {recipe.fractions}, "
              f"seeds {recipe.seeds}")
        units = work_units(recipe)
        n = shard[1] if shard else args.workers
        for i in ([shard[0]] if shard else range(n) if n > 1 else []):
            mine = [u for j, u in enumerate(units) if j % n == i]
            print(f"shard {i}/{n}: {len(mine)} work unit(s), {sum(unit_cells(recipe, u) for u in mine)} cells")
        return 0
    if args.workers > 1:
        rc = _run_workers(args, recipe)
        if rc:
            return rc
    else:
        run_recipe(recipe, args.out, extend=args.extend, shard=shard)
    if args.report:
        from sslbench.reports import write_report

        paths = write_report(args.out)
        print(f"report: {paths['markdown']} (HTML: {paths['html']})")
    return 0


def _child_args(args: argparse.Namespace, i: int, n: int, threads: int | None) -> list[str]:
    """The ``sslbench run`` arguments of shard ``i`` of ``n`` (same recipe, --out, --data, --set, --extend)."""
    argv = ["run", args.recipe, "--out", args.out, "--shard", f"{i}/{n}"]
    for item in args.data:
        argv += ["--data", item]
    for item in args.sets:
        argv += ["--set", item]
    if threads is not None:
        argv += ["--set", f"threads={threads}"]
    if args.extend:
        argv.append("--extend")
    return argv


def _run_workers(args: argparse.Namespace, recipe: Any) -> int:
    """Start shards ``0/N .. N-1/N`` as child processes, prefix their output, wait; non-zero if any failed.

    SIGTERM and SIGINT are forwarded to the children (each checkpoints and stops like a single run).
    """
    n = int(args.workers)
    threads = None if recipe.threads else max(1, (os.cpu_count() or 1) // n)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the benchmarks package
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)}
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()
    stopped: list[int] = []

    def pump(i: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                sys.stdout.write(f"[shard {i}/{n}] {line}")
                sys.stdout.flush()

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread: no forwarding
            pass
    pumps = []
    try:
        for i in range(n):
            cmd = [sys.executable, "-m", "sslbench.cli", *_child_args(args, i, n, threads)]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8",
                                    errors="replace",
                                    bufsize=1, start_new_session=True)
            procs.append(proc)
            pumps.append(threading.Thread(target=pump, args=(i, proc), daemon=True))
            pumps[-1].start()
        print(f"started {n} workers on {args.out} ({threads or recipe.threads} torch thread(s) each)", flush=True)
        codes = [proc.wait() for proc in procs]
        for t in pumps:
            t.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:  # an exception here (not a signal): do not leave orphans running
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    failed = [(i, rc) for i, rc in enumerate(codes) if rc != 0]
    for i, rc in failed:
        again = shlex.join(["sslbench", *_child_args(args, i, n, threads)])
        how = f"exit {rc}" if rc > 0 else f"killed by signal {-rc}"
        print(f"sslbench: shard {i}/{n} failed ({how}); its finished cells are kept; finish it with: {again}",
              file=sys.stderr)
    if stopped:
        return 143 if stopped[0] == signal.SIGTERM else 130
    return 1 if failed else 0

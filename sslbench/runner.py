"""Recipes: tasks x encoders x datasets x protocols x fractions x seeds, resumable, one JSON line per cell.

A recipe is YAML::

    name: adrenalmnist3d
    imports: []                        # modules to import first (plugins registering tasks/encoders/data)
    datasets:
      adrenal28:
        data: medmnist3d:../shared/data/adrenalmnist3d/adrenalmnist3d.npz
        k: null                        # patient-wise k-fold when the data has no official test split
        folds: [0]                     # which folds to run (k-fold only)
        drop_unlabelled: false
    tasks: {rotation: {}, mae3d: {mask_ratio: 0.6, encoders: [vit_3d]}}   # or a list of names; values are
                                        # task options, plus ``encoders`` to pair a task with some encoders only
    encoders: {resnet18_3d: {}}                         # or a list; values are encoder options
    pretrain: {steps: 300, batch_size: 32}              # TrainConfig fields
    finetune: {steps: 200, lr: 0.001}                   # sslbench.probes.FinetuneConfig fields
    protocols: [linear, finetune]
    fractions: [0.01, 0.1, 1.0]
    seeds: [0, 1, 2]
    baselines: [random, scratch]
    n_boot: 1000
    max_items: null                                     # N: a quick check on ~N records per split ($MEDSSL_MAX_ITEMS)
    threads: 2                                          # torch CPU threads
    audit: {method: auto, max_records: 600}             # embedding audit on validation (false: off)

Any key can be overridden from the command line with ``--set KEY=VALUE`` (dotted keys, YAML values), e.g.
``--set pretrain.steps=100 --set seeds=[0]``. Relative data paths are read from the current folder, else from the recipe's folder. Everything a recipe
names is checked (names, modalities, paths, task input shapes, splits) before any work starts. Pretraining
goes through the engine into ``OUT/pretrain/<dataset>/<encoder>/<task>`` and resumes from its checkpoint;
cells already in ``OUT/results.jsonl`` are skipped, so a killed run continues where it stopped.

Spreading one recipe over processes and machines: the cells fall into *work units* (:func:`work_units`): each
baseline arm's cells of one (dataset, encoder, fold), and each (dataset, encoder, task) pretraining with all
its SSL cells (so a pretraining happens in exactly one process). ``run_recipe(..., shard=(i, n))`` (``sslbench
run --shard I/N``) runs only the units whose index in that fixed enumeration is ``i`` modulo ``n``; shards are
disjoint, so any number of independent jobs can fill one ``OUT`` (appends to ``results.jsonl`` are locked,
every other file is written temp-then-rename). A killed job's unfinished cell is redone by rerunning its
shard; finished cells are never run twice. ``sslbench run --workers N`` starts the N shards as local
processes. On a SLURM cluster, a job array over a shared folder::

    sbatch --array=0-15 --wrap "sslbench run recipe.yaml --out /shared/out --shard \\$SLURM_ARRAY_TASK_ID/16"

then, once every task has finished, ``sslbench report /shared/out`` (the report is the same as from one
process; paired comparisons are attached by whichever shard finishes last).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from pretext.config import to_dict
from pretext.data import load_data
from pretext.engine.checkpoint import atomic_write_text
from pretext.errors import ConfigError, DataError
from pretext.registry import TASKS
from pretext.runfolder import LOCK_FILE, claim, data_fingerprint, hold
from sslbench.evaluate import Evaluator, plan_arms
from sslbench.paired import PREDICTIONS_DIR, attach_paired
from sslbench.pretrained import encoder_from_checkpoint
from sslbench.recipe import Recipe, load_recipe
from sslbench.splits import make_eval_splits
from sslbench.store import ResultStore, cell_key


def run_audit(rec: Recipe, ev: Evaluator, encoder: Any, name: str, out: Path, log: Callable[[str], None]) -> None:
    """Embedding audit of ``encoder`` on the validation view (never the test split) -> ``out/audit/NAME.json``."""
    if rec.audit is None:
        return
    path = out / "audit" / f"{name}.json"
    if path.is_file():
        return
    import numpy as np

    from sslbench.audit import audit_encoder

    view = ev.splits.val
    cap = int(rec.audit["max_records"])
    if len(view) > cap:
        view = view.subset(np.sort(np.random.default_rng(0).choice(len(view), cap, replace=False)))
    t0 = time.perf_counter()
    res = audit_encoder(encoder, view, modality=ev.data.modality, sfreq=ev.data.sfreq,
                        class_names=ev.data.class_names, out_dir=out / "audit", name=name,
                        method=rec.audit["method"], device=rec.device)
    from sslbench.store import _clean

    atomic_write_text(path, json.dumps(_clean(res), indent=1))
    log(f"audit {name}: kNN purity {res.get('knn_purity', float('nan')):.3f} "
        f"(other patients {res.get('knn_purity_other_patients', float('nan')):.3f}) in {time.perf_counter() - t0:.0f}s")


def _check_tasks(recipe: Recipe, dname: str, data: Any) -> None:
    """Build every (task, encoder) pair for the data and run each task's ``check_input``, before any work."""
    from pretext.data import encoder_for_data
    from pretext.registry import create_task

    for t, e in recipe.pairs():
        cls = TASKS.get(t)
        enc = encoder_for_data(e, data, **recipe.encoders[e])
        task = create_task(t, enc, **recipe.tasks[t])
        check = getattr(cls, "check_input", None)
        if callable(check):
            check(task.cfg, tuple(data.input_shape))
        _dry_step(task, data, f"{dname}: task {t!r} with encoder {e!r}")


def _dry_step(task: Any, data: Any, what: str) -> None:
    """One forward pass on two training items, so shape problems surface before any work."""
    import torch
    from torch.utils.data import default_collate

    from pretext.sampling import pretrain_stream

    stream = pretrain_stream(data.splits["train"], task, seed=0)  # the split's sampling, the task's pairing
    ds = stream.dataset
    if len(ds) < 2:
        raise DataError(f"{what}: the training split has {len(ds)} item(s); pretraining needs at least 2")
    batch = (stream.collate_fn or default_collate)([ds[0], ds[1]])
    task.train()
    with torch.no_grad():
        out = task(batch, generator=torch.Generator().manual_seed(0))
    if "loss" not in out:
        raise ConfigError(f"{what}: the task's forward returned no 'loss' (keys: {sorted(out)})")


def _pretrain(recipe: Recipe, dname: str, spec: str, task: str, encoder: str, out: Path,
              log: Callable[[str], None]) -> Path:
    """Pretrain (or resume, or reuse) one task x encoder on one dataset; return the run folder."""
    from pretext.pipeline import pretrain

    run = out / "pretrain" / dname / encoder / task
    summary = run / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("steps", 0) >= recipe.pretrain.steps:
        return run
    resume = (run / "checkpoints" / "last.ckpt").is_file()
    log(f"pretrain {task} / {encoder} on {dname} for {recipe.pretrain.steps} steps"
        + (" (resuming)" if resume else "") + f" -> {run}")
    t0 = time.perf_counter()
    _, res = pretrain(task, encoder, spec, run, recipe.pretrain, recipe.tasks[task], recipe.encoders[encoder],
                      resume=resume)
    first = res.history[0].get("loss", float("nan")) if res.history else float("nan")
    last = res.history[-1].get("loss", float("nan")) if res.history else float("nan")
    log(f"  loss {first:.4f} -> {last:.4f} in {time.perf_counter() - t0:.0f}s")
    return run


class WorkUnit(NamedTuple):
    """One unit of a recipe's work (:func:`work_units`); which fields are set depends on ``kind``.

    ``kind="baseline"`` (``fold``, ``arm``): that baseline arm's cells (every protocol, fraction, seed);
    ``kind="ssl"`` (``task``): the pretraining and its SSL cells over every fold;
    ``kind="audit"``: the random-init audit, only where no random-arm unit carries it.
    """

    kind: Literal["baseline", "ssl", "audit"]
    dataset: str
    encoder: str
    fold: int | None = None
    arm: str | None = None
    task: str | None = None


def work_units(rec: Recipe) -> list[WorkUnit]:
    """The recipe's units of work, in a fixed order: unit ``j`` belongs to shard ``j % n``."""
    arms = list(dict.fromkeys(a for p in rec.protocols for a, _ in plan_arms(p, rec.baselines)[1:]))
    units: list[WorkUnit] = []
    for dname, d in rec.datasets.items():
        for encoder in rec.encoders:
            units += [WorkUnit("baseline", dname, encoder, fold=int(f), arm=arm)
                      for f in d.get("folds") or [0] for arm in arms]
            if "random" in rec.baselines and "random" not in arms:
                units.append(WorkUnit("audit", dname, encoder))
            units += [WorkUnit("ssl", dname, encoder, task=t) for t, e in rec.pairs() if e == encoder]
    return units


def _random_audit_unit(rec: Recipe, dname: str, encoder: str) -> WorkUnit:
    """The unit that runs the random-init audit: the first fold's random arm, else its own unit."""
    arms = {a for p in rec.protocols for a, _ in plan_arms(p, rec.baselines)[1:]}
    if "random" not in arms:
        return WorkUnit("audit", dname, encoder)
    return WorkUnit("baseline", dname, encoder, fold=int((rec.datasets[dname].get("folds") or [0])[0]), arm="random")


def unit_cells(rec: Recipe, unit: WorkUnit) -> int:
    """How many cells a unit of :func:`work_units` holds."""
    per = len(rec.fractions) * len(rec.seeds)
    if unit.kind == "audit":
        return 0
    if unit.kind == "ssl":
        return per * len(rec.protocols) * len(rec.datasets[unit.dataset].get("folds") or [0])
    pairs = {pair for p in rec.protocols for pair in plan_arms(p, rec.baselines)[1:] if pair[0] == unit.arm}
    return per * len(pairs)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    i, slash, n = str(text).partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (-1, 0)
    if not slash or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard {text!r} must read I/N with 0 <= I < N, e.g. 0/4 (SLURM: "
                          "--shard $SLURM_ARRAY_TASK_ID/N with --array=0-(N-1))")
    return shard


# Recipe keys that only say how to run, not what is computed: they may change between reruns of one folder.
_HOW_KEYS = ("name", "description", "source", "threads", "device")
_HOW_TRAIN_KEYS = ("num_workers", "log_every", "ckpt_every", "accelerator", "devices", "num_nodes", "strategy",
                   "compile", "progress")
# Matrix axes: growing them is an explicit --extend; lists of values, or {name: options} maps.
_CELL_KEYS = ("protocols", "fractions", "seeds", "baselines", "datasets", "tasks", "encoders", "task_encoders")


def claim_recipe_folder(rec: Recipe, out: Path, fingerprints: dict[str, str], extend: bool = False,
                        write: bool = True) -> None:
    """``out`` holds one recipe's matrix: refuse another pretraining/fine-tuning budget, data or settings.

    The identity is the recipe less its axes (and less how-to-run keys); each dataset's entry carries its data
    fingerprint, so other data under the same spec is refused too.
    """
    raw = to_dict(rec)
    identity = {k: v for k, v in raw.items() if k not in _HOW_KEYS + _CELL_KEYS}
    identity["pretrain"] = {k: v for k, v in identity["pretrain"].items() if k not in _HOW_TRAIN_KEYS}
    if identity.get("max_items") is None:  # uncapped: the identity of folders written before the option existed
        identity.pop("max_items", None)
    cells = {k: raw[k] for k in _CELL_KEYS}
    cells["datasets"] = {n: {**d, "data_fingerprint": fingerprints.get(n)} for n, d in rec.datasets.items()}
    claim(out, "run", identity, cells, extend=extend, write=write)


def run_recipe(recipe: Recipe | str | Path, out: str | Path, log: Callable[[str], None] = print,
               extend: bool = False, shard: tuple[int, int] | None = None) -> ResultStore:
    """Run every cell of ``recipe`` not already in ``out/results.jsonl``; return the store.

    ``out`` belongs to this recipe (:func:`claim_recipe_folder`): another pretraining or fine-tuning budget,
    other data or other options are refused; new cells (seeds, fractions, tasks ...) need ``extend=True``.

    The recipe, data and task shapes are all checked first; then, per dataset and encoder, the baselines
    and each task's pretraining + cells run. A killed run resumes from the last finished cell (and from the
    last pretraining checkpoint).

    ``shard=(i, n)`` runs only the work units ``j`` with ``j % n == i`` (see the module docstring); ``n``
    processes with ``i = 0 .. n-1`` on one ``out`` together run every cell exactly once.
    """
    import torch

    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    if shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    units = work_units(rec)
    mine_units = {u for j, u in enumerate(units) if shard is None or j % shard[1] == shard[0]}
    if rec.threads:
        torch.set_num_threads(int(rec.threads))
    loaded = check_recipe(rec)  # everything checked before any work
    lock_name = LOCK_FILE if shard is None else f".sslbench-shard-{shard[0]}-of-{shard[1]}.lock"
    with hold(out, "run" if shard is None else f"run --shard {shard[0]}/{shard[1]}", name=lock_name):
        claim_recipe_folder(rec, out, {n: data_fingerprint(d) for n, (d, _) in loaded.items()}, extend=extend)
        return _run_units(rec, out, loaded, units, mine_units, shard, log)


def check_recipe(rec: Recipe, out: str | Path | None = None, extend: bool = False) -> dict[str, Any]:
    """Everything :func:`run_recipe` checks before any work, without writing anything (``sslbench run --dry-run``).

    Loads every dataset (a missing folder or file is named), builds every (task, encoder) pair with its options
    and runs one forward pass on two training items, makes the evaluation splits, and checks that ``out`` (if
    given) holds no results of another configuration.

    Returns:
        ``{dataset: (data, {fold: splits})}``.
    """
    loaded: dict[str, Any] = {}
    for dname, d in rec.datasets.items():
        data = load_data(d["data"])
        if data.num_classes is None:
            raise DataError(f"dataset {dname!r} ({d['data']}) has no labels; evaluation needs labelled data")
        _check_tasks(rec, dname, data)
        folds = d.get("folds") or [0]
        splits = {f: make_eval_splits(data, k=d.get("k"), fold=int(f), seed=int(d.get("split_seed", 0)),
                                      drop_unlabelled=bool(d.get("drop_unlabelled", False)),
                                      max_items=rec.max_items) for f in folds}
        loaded[dname] = (data, splits)
    if out is not None:
        claim_recipe_folder(rec, Path(out), {n: data_fingerprint(d) for n, (d, _) in loaded.items()}, extend=extend,
                            write=False)
    return loaded


def _run_units(rec: Recipe, out: Path, loaded: dict[str, Any], units: list[WorkUnit],
               mine_units: set[WorkUnit], shard: tuple[int, int] | None,
               log: Callable[[str], None]) -> ResultStore:
    def mine(unit: WorkUnit) -> bool:
        return unit in mine_units

    atomic_write_text(out / "recipe.yaml", yaml.safe_dump({"source": rec.source, **to_dict(rec)},
                                                          sort_keys=False))
    store = ResultStore(out)
    done = store.done()
    total, counter = rec.n_cells(), {"n": 0}
    if shard is not None:
        total = sum(unit_cells(rec, u) for u in mine_units)
        log(f"shard {shard[0]}/{shard[1]}: {len(mine_units)} of {len(units)} work units, {total} of "
            f"{rec.n_cells()} cells")
    log(f"recipe {rec.name}: {total} cells ({len(done)} cells already in {store.path} are skipped)")

    def cell(ev: Evaluator, **kw: Any) -> None:
        row_key = {"dataset": ev.dataset, "encoder": ev.encoder_name, "fold": ev.splits.fold,
                   "task": kw.get("task", "-"), "arm": kw["arm"], "protocol": kw["protocol"],
                   "fraction": float(kw["fraction"]), "seed": int(kw["seed"])}
        if cell_key(row_key) in done:
            return
        ckpt = kw.pop("checkpoint_path", "")
        row = ev.run_cell(**kw)
        row.update(recipe=rec.name, data=rec.datasets[ev.dataset]["data"], checkpoint=ckpt)
        store.append(row)
        done.add(cell_key(row))
        counter["n"] += 1
        log(f"[new {counter['n']}, recipe {total}] {ev.dataset} {row['task']} {row['encoder']} {row['arm']} {row['protocol']} "
            f"f={row['fraction']:g} s={row['seed']} fold={row['fold']}: auroc {_fmt(row.get('auroc'))} "
            f"[{_fmt(row.get('auroc_lo'))}, {_fmt(row.get('auroc_hi'))}] ({row['elapsed_s']:.1f}s)")

    for dname, (data, splits_by_fold) in loaded.items():
        spec = rec.datasets[dname]["data"]
        for encoder, enc_cfg in rec.encoders.items():
            for i_fold, (fold, splits) in enumerate(splits_by_fold.items()):
                ev = Evaluator(data, splits, dataset=dname, encoder=encoder, encoder_cfg=enc_cfg,
                               cache_dir=out / "features", finetune_cfg=rec.finetune, n_boot=rec.n_boot,
                               predictions_dir=out / PREDICTIONS_DIR,
                               strict_fractions=rec.strict_fractions, device=rec.device)
                for proto in rec.protocols:  # baselines first: they do not need pretraining
                    for arm, p in plan_arms(proto, rec.baselines)[1:]:
                        if not mine(WorkUnit("baseline", dname, encoder, fold=int(fold), arm=arm)):
                            continue
                        for frac in rec.fractions:
                            for seed in rec.seeds:
                                cell(ev, arm=arm, protocol=p, fraction=frac, seed=seed)
                if "random" in rec.baselines and i_fold == 0 and mine(_random_audit_unit(rec, dname, encoder)):
                    run_audit(rec, ev, ev.random_encoder(0), f"{dname}_{encoder}_random-init", out, log)
                for task in [t for t, e in rec.pairs() if e == encoder and mine(WorkUnit("ssl", dname, encoder, task=t))]:
                    keys = [cell_key({"dataset": dname, "encoder": encoder, "fold": splits.fold, "task": task,
                                      "arm": "ssl", "protocol": proto, "fraction": float(f), "seed": int(s)})
                            for proto in rec.protocols for f in rec.fractions for s in rec.seeds]
                    audited = rec.audit is None or (out / "audit" / f"{dname}_{encoder}_{task}.json").is_file()
                    if all(k in done for k in keys) and audited:
                        continue
                    run = _pretrain(rec, dname, spec, task, encoder, out, log)
                    enc, info = encoder_from_checkpoint(run, data)
                    run_audit(rec, ev, enc, f"{dname}_{encoder}_{task}", out, log)
                    for proto in rec.protocols:
                        for frac in rec.fractions:
                            for seed in rec.seeds:
                                cell(ev, arm="ssl", protocol=proto, fraction=frac, seed=seed, task=task,
                                     encoder=enc, weights=info["weights"], checkpoint_path=info["checkpoint"])
    with store.lock():  # other shards may be appending meanwhile
        n_paired = attach_paired(out, n_boot=rec.n_boot, log=log)  # SSL vs baselines on the same test patients
    log(f"done: {counter['n']} new cell(s) in {store.path} ({n_paired} SSL cell(s) got paired comparisons); "
        f"write the report with: sslbench report {out}")
    return store


def _fmt(x: Any) -> str:
    return "nan" if x is None else f"{float(x):.3f}"


__all__ = ["Recipe", "WorkUnit", "check_recipe", "load_recipe", "run_recipe", "unit_cells", "work_units"]

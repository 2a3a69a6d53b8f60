"""Label-efficiency evaluation of a pretrained encoder, with the random-init and scratch baselines on every cell.

>>> from sslbench.evaluate import evaluate
>>> df = evaluate(checkpoint="runs/rot/checkpoints/last.ckpt",
...               data="medmnist3d:../shared/data/adrenalmnist3d/adrenalmnist3d.npz",
...               protocol="linear", fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), out="runs/eval")

A *cell* is (dataset, task, encoder, arm, protocol, fraction, seed, fold). Arms:

* ``ssl``: the pretrained encoder under the protocol;
* ``random``: the same encoder architecture randomly initialised (seeded by the cell's seed), same protocol
  (for ``finetune`` this is the same procedure as ``scratch`` and is not run twice);
* ``scratch``: the randomly initialised encoder trained end to end on the labelled fraction (supervised).

Each cell draws its labelled patients (:func:`sslbench.splits.sample_fraction`), selects hyper-parameters /
the training step on validation, then predicts the test split once and reports metrics with patient-level
bootstrap CIs, ECE, reliability bins and subgroup metrics.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from torch import nn

from pretext.base import SSLData
from pretext.config import ConfigModel, Field, MaxItems, build_config, model_validator, to_dict
from pretext.data import encoder_for_data, load_data
from pretext.errors import ConfigError, DataError
from pretext.runfolder import claim, data_fingerprint, hold, state_hash
from sslbench.features import cached_features
from sslbench.metrics import pick_threshold, summarize
from sslbench.paired import PREDICTIONS_DIR, attach_paired, predictions_name, save_predictions
from sslbench.pretrained import encoder_from_checkpoint
from sslbench.probes import (
    FinetuneConfig,
    Protocol,
    check_protocol,
    finetune,
    knn_probe,
    linear_probe,
)
from sslbench.splits import (
    EvalSplits,
    check_classes,
    check_test_size,
    make_eval_splits,
    patients_per_class,
    sample_fraction,
)
from sslbench.store import RESULTS_NAME, ResultStore, cell_key

ARMS = ("ssl", "random", "scratch")


# -- one dataset, many cells ---------------------------------------------------------------------------------
class Evaluator:
    """Runs cells on one dataset + encoder architecture, caching features per weights.

    Args:
        data: the loaded data.
        splits: its patient-level train/val/test views.
        dataset: a short name for tables.
        encoder: registered encoder name (for the random/scratch arms).
        encoder_cfg: its options besides the data sizing.
        cache_dir: feature cache folder (None: no cache).
        finetune_cfg: fine-tuning budget.
        n_boot: bootstrap resamples for the test CIs.
        strict_fractions: error instead of the one-patient-per-class fallback.
        min_test_patients: warn (:class:`~sslbench.splits.SmallTestSplitWarning`) when a class has fewer test
            patients; rows then carry ``small_test: true`` (0: no check).
    """

    def __init__(self, data: SSLData, splits: EvalSplits, *, dataset: str, encoder: str,
                 encoder_cfg: dict[str, Any] | None = None, cache_dir: str | Path | None = None,
                 finetune_cfg: FinetuneConfig = FinetuneConfig(), n_boot: int = 1000,
                 strict_fractions: bool = False, device: str = "cpu", models_dir: str | Path | None = None,
                 task: str = "-", predictions_dir: str | Path | None = None, min_test_patients: int = 20) -> None:
        if data.num_classes is None:
            raise DataError(f"{data.source!r} has no labels (num_classes is None); evaluation needs labelled data")
        if not data.multilabel and int(data.num_classes) < 2:
            names = list(data.class_names) or ["?"]
            raise DataError(f"{data.source!r}: the labels hold one class only ({names[0]!r}); a classifier needs at "
                            "least two classes: check the label column (or label_map) of the data")
        check_classes(splits.train, data.num_classes, data.class_names, data.source)
        self.small_test = check_test_size(splits.test, int(data.num_classes), data.class_names, data.source,
                                          min_test_patients)
        self.test_patients = patients_per_class(splits.test, int(data.num_classes), data.class_names)
        self.data, self.splits, self.dataset = data, splits, dataset
        self.encoder_name, self.encoder_cfg = encoder, dict(encoder_cfg or {})
        self.cache_dir, self.ft, self.n_boot = cache_dir, finetune_cfg, n_boot
        self.strict, self.device = strict_fractions, device
        self.multilabel = bool(data.multilabel)
        self.n_classes = int(data.num_classes)
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.task = task
        self.predictions_dir = Path(predictions_dir) if predictions_dir is not None else None  # for paired tests

    def random_encoder(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return encoder_for_data(self.encoder_name, self.data, **self.encoder_cfg)

    def run_cell(self, *, arm: str, protocol: str, fraction: float, seed: int, task: str = "-",
                 encoder: nn.Module | None = None, weights: str = "") -> dict[str, Any]:
        """Run one cell and return its row (metrics, CIs, selection, sizes, timing)."""
        check_protocol(protocol)
        if arm not in ARMS:
            raise ConfigError(f"arm {arm!r} must be one of {ARMS}")
        t0 = time.perf_counter()
        s = self.splits
        draw = sample_fraction(s.train.labels, s.train.patient_ids, fraction, seed, strict=self.strict,
                               class_names=self.data.class_names)
        train = s.train.subset(draw.positions)
        if arm == "ssl":
            if encoder is None:
                raise ConfigError("the ssl arm needs the pretrained encoder")
        else:
            encoder = self.random_encoder(seed)
            weights = f"random:{self.encoder_name}:{json.dumps(self.encoder_cfg, sort_keys=True, default=str)}:{seed}"
        if arm == "scratch":
            protocol = "finetune"
        selected: dict[str, Any]
        if protocol in ("linear", "knn"):
            feats = {v: cached_features(encoder, getattr(s, v), weights=weights, source=self.data.source,
                                        cache_dir=self.cache_dir, device=self.device) for v in ("train", "val", "test")}
            probe = linear_probe if protocol == "linear" else knn_probe
            predict, selected = probe(feats["train"][draw.positions], train.labels, feats["val"], s.val.labels,
                                      n_classes=self.n_classes, multilabel=self.multilabel,
                                      **({"seed": seed} if protocol == "linear" else {}))
            val_proba = predict(feats["val"])
            proba = predict(feats["test"])
        else:
            model, selected = finetune(copy.deepcopy(encoder), train, s.val, num_classes=self.n_classes,
                                       multilabel=self.multilabel, mode=protocol, cfg=self.ft, seed=seed)
            val_proba = model.predict_proba(s.val)
            proba = model.predict_proba(s.test)  # the test split, once
        threshold = pick_threshold(s.val.labels, val_proba, self.multilabel)  # decision rule from validation
        res = summarize(s.test.labels, proba, groups=s.test.patient_ids, meta=s.test.meta,
                        multilabel=self.multilabel, n_boot=self.n_boot, seed=seed, threshold=threshold)
        if self.models_dir is not None and protocol not in ("linear", "knn"):
            selected["model"] = str(self.save_classifier(model, arm, protocol, fraction, seed, task, res))
        if self.predictions_dir is not None:  # kept so sslbench.paired can compare arms on the same patients
            key = {"dataset": self.dataset, "task": task, "encoder": self.encoder_name, "arm": arm,
                   "protocol": protocol, "fraction": float(fraction), "seed": int(seed), "fold": s.fold}
            res["predictions"] = save_predictions(self.predictions_dir / predictions_name(key), s.test.labels,
                                                  proba, s.test.patient_ids).name
        return {
            "dataset": self.dataset, "task": task, "encoder": self.encoder_name, "arm": arm, "protocol": protocol,
            "fraction": float(fraction), "seed": int(seed), "fold": s.fold, **s.describe(),
            "n_labelled": len(train), "n_patients_labelled": draw.n_patients,
            "fallback_classes": [self.data.class_names[c] if c < len(self.data.class_names) else c
                                 for c in draw.fallback_classes],
            "selected": selected, **res, "test_patients_per_class": self.test_patients,
            "small_test": self.small_test is not None, "elapsed_s": round(time.perf_counter() - t0, 2),
        }


    def save_classifier(self, model: nn.Module, arm: str, protocol: str, fraction: float, seed: int, task: str,
                        res: dict[str, Any]) -> Path:
        """Save a fine-tuned cell's classifier so ``sslbench export-bundle`` can ship it."""
        from pretext.bundle import save_classifier_checkpoint
        from pretext.pipeline import run_config_for

        assert self.models_dir is not None
        path = self.models_dir / f"{self.dataset}_{task if arm == 'ssl' else arm}_{protocol}_f{fraction:g}_s{seed}.ckpt"
        rc = run_config_for(task if arm == "ssl" else "-", {}, self.encoder_name, self.encoder_cfg, self.data, seed)
        results = {f"test_{k}": float(v) for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return save_classifier_checkpoint(path, model.encoder, model.head, rc, {"kind": "linear", "num_classes": self.n_classes},
                                          class_names=list(self.data.class_names), multilabel=self.multilabel,
                                          results=results)


def plan_arms(protocol: str, baselines: Sequence[str]) -> list[tuple[str, str]]:
    """The (arm, protocol) pairs of a protocol's cells; random-init fine-tune is the scratch baseline."""
    out = [("ssl", protocol)]
    if "random" in baselines and protocol != "finetune":
        out.append(("random", protocol))
    if "scratch" in baselines:
        out.append(("scratch", "finetune"))
    return out


#: a label fraction: a share of the labelled patients
Fraction = Annotated[float, Field(gt=0, le=1)]


class EvalOptions(ConfigModel):
    """The options of :func:`evaluate` that choose its cells, folds and intervals (checked before any work).

    Attributes:
        protocols: evaluation protocols (:data:`sslbench.probes.PROTOCOLS`).
        fractions: label fractions in (0, 1], drawn by patient.
        seeds: seeds of the label draws (and of the random inits / fine-tuning).
        baselines: any of "random", "scratch".
        n_boot: bootstrap resamples for the confidence intervals (0 leaves them out).
        k: patient-wise k-fold when the data has no official test split.
        fold: the test fold of ``k``.
        min_test_patients: warn when a class has fewer test patients than this (0: never).
        max_items: cut each evaluation split to about this many records (a quick check; default
            ``$MEDSSL_MAX_ITEMS``, unset: no cut; :func:`pretext.config.max_items_from_env`).
    """

    protocols: list[Protocol] = Field(["linear"], min_length=1)
    fractions: list[Fraction] = Field([0.01, 0.1, 1.0], min_length=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    baselines: list[Literal["random", "scratch"]] = ["random", "scratch"]
    n_boot: int = Field(1000, ge=0)
    k: int | None = Field(None, ge=2, examples=[5])
    fold: int = Field(0, ge=0)
    min_test_patients: int = Field(20, ge=0)
    max_items: MaxItems

    @model_validator(mode="after")
    def _fold_of_k(self) -> EvalOptions:
        if self.k is not None and self.fold >= self.k:
            raise ValueError(f"fold={self.fold} must be in 0..{self.k - 1} for k={self.k}")
        return self


#: the ``sslbench evaluate`` flags of :class:`EvalOptions` and :class:`~sslbench.probes.FinetuneConfig` fields
EVAL_FLAGS = {"protocols": "--protocol", "fractions": "--fractions", "seeds": "--seeds", "baselines": "--baselines",
              "n_boot": "--n-boot", "k": "--k", "fold": "--fold", "min_test_patients": "--min-test-patients",
              "max_items": "--max-items"}
FINETUNE_FLAGS = {"steps": "--finetune-steps", "lr": "--finetune-lr", "layer_decay": "--layer-decay",
                  "k_blocks": "--k-blocks"}


def evaluate(
    checkpoint: str | Path,
    data: str | SSLData,
    protocol: str | Sequence[str] = "linear",
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path | None = None,
    *,
    baselines: Sequence[str] = ("random", "scratch"),
    finetune: FinetuneConfig | dict[str, Any] | None = None,
    k: int | None = None,
    fold: int = 0,
    n_boot: int = 1000,
    drop_unlabelled: bool = False,
    strict_fractions: bool = False,
    dataset: str | None = None,
    device: str = "cpu",
    save_models: bool = False,
    extend: bool = False,
    min_test_patients: int = 20,
    max_items: int | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Evaluate a pretrained checkpoint on labelled data at several label fractions and seeds.

    Args:
        checkpoint: ``last.ckpt`` / ``encoder.safetensors`` / run folder of ``sslbench pretrain``.
        data: a data spec ``KIND:PATH?opt=val`` (or loaded :class:`SSLData`).
        protocol: "linear", "knn", "partial", "finetune", or several.
        fractions: label fractions in (0, 1], drawn by patient.
        seeds: seeds of the label draws (and of the random inits / fine-tuning).
        out: folder for ``results.jsonl`` (finished cells are skipped on a rerun) and the feature cache.
        baselines: any of "random", "scratch".
        finetune: fine-tuning budget (:class:`FinetuneConfig` fields).
        k, fold: patient-wise k-fold (fold ``fold`` is the test set) when the data has no official test split.
        n_boot: bootstrap resamples for the CIs.
        drop_unlabelled: leave records without a label out instead of failing.
        strict_fractions: fail when a fraction leaves a class empty instead of adding a patient.
        dataset: name used in tables (default: the data file's stem).
        save_models: save each fine-tuned cell's classifier under ``out/models/`` (exportable with
            ``sslbench export-bundle``); its path is in the row's ``selected["model"]``.
        extend: allow adding cells (protocols, fractions, seeds, baselines) to an ``out`` folder that holds
            other cells of the same checkpoint and data; without it, a different set is refused.
        min_test_patients: warn when a class has fewer test patients than this (0: never).
        max_items: cut each evaluation split to about this many records, for a quick check (default
            ``$MEDSSL_MAX_ITEMS``; the folder's identity records it, so capped and full cells never mix).
        log: where to say which cells will run (``print`` on the CLI); ``None`` is silent.

    Every option is checked before anything is written to ``out``; ``out`` is owned by this process while it
    runs (:func:`pretext.runfolder.hold`), and a user error before the first finished cell leaves nothing there.

    Raises:
        ConfigError: an option out of range, or ``out`` holds results of another checkpoint (content hash), data
            or evaluation setting, or another process is using ``out``.

    Returns:
        One row per cell (see :meth:`Evaluator.run_cell`), including cells already in ``out``.
    """
    opts = build_config(EvalOptions, {"protocols": protocol, "fractions": fractions, "seeds": seeds,
                                      "baselines": baselines, "n_boot": n_boot, "k": k, "fold": fold,
                                      "min_test_patients": min_test_patients, "max_items": max_items}, "evaluate")
    ft = finetune if isinstance(finetune, FinetuneConfig) else build_config(FinetuneConfig, finetune, "finetune")
    if save_models and not out:
        raise ConfigError("evaluate save_models=True needs an out folder to save the classifiers in")
    ds = load_data(data) if isinstance(data, str) else data
    encoder, info = encoder_from_checkpoint(checkpoint, ds)
    name = dataset or Path(ds.source.split(":", 1)[-1].split("?")[0]).stem or "data"
    splits = make_eval_splits(ds, k=opts.k, fold=opts.fold, drop_unlabelled=drop_unlabelled,
                              max_items=opts.max_items)
    ev = Evaluator(ds, splits, dataset=name, encoder=info["encoder"], encoder_cfg=info["encoder_cfg"],
                   cache_dir=Path(out) / "features" if out else None, finetune_cfg=ft, n_boot=opts.n_boot,
                   strict_fractions=strict_fractions, device=device,
                   models_dir=Path(out) / "models" if out and save_models else None,
                   predictions_dir=Path(out) / PREDICTIONS_DIR if out else None,
                   min_test_patients=opts.min_test_patients)
    with hold(out, "evaluate", keep=(RESULTS_NAME,)) if out else nullcontext(Path(".")):
        return _run_cells(ev, encoder, info, ds, name, splits, out, opts, ft, drop_unlabelled, strict_fractions,
                          extend, log)


def _run_cells(ev: Evaluator, encoder: nn.Module, info: dict[str, Any], ds: SSLData, name: str, splits: EvalSplits,
               out: str | Path | None, opts: EvalOptions, ft: FinetuneConfig, drop_unlabelled: bool,
               strict_fractions: bool, extend: bool, log: Callable[[str], None] | None) -> pd.DataFrame:
    protocols, fracs, seed_list, baselines = opts.protocols, opts.fractions, opts.seeds, opts.baselines
    k, fold, n_boot = opts.k, opts.fold, opts.n_boot
    if out:
        claim(out, "evaluate", identity={
            "encoder_weights_sha256": state_hash(encoder.state_dict()), "data": ds.source,
            "data_fingerprint": data_fingerprint(ds), "k": k, "fold": fold, "finetune": to_dict(ft),
            "n_boot": n_boot, "drop_unlabelled": drop_unlabelled, "strict_fractions": strict_fractions,
            **({"max_items": opts.max_items} if opts.max_items else {}),  # absent when uncapped: older folders match
        }, cells={"protocols": protocols, "fractions": fracs, "seeds": seed_list, "baselines": list(baselines)},
            extend=extend)
    store = ResultStore(out) if out else None
    done = store.done() if store else set()
    if log is not None:
        arms = sorted({f"{arm}/{p}" for proto in protocols for arm, p in plan_arms(proto, baselines)})
        n = len(arms) * len(fracs) * len(seed_list)
        log(f"evaluating {info['checkpoint']} on {ds.source}: {n} cells = arms {arms} x fractions {fracs} x "
            f"seeds {seed_list}" + (f" ({len(done)} finished cells in {out} are kept)" if done else "")
            + ("; the scratch arm trains a model from random init on each cell" if "scratch" in baselines else ""))
    rows: list[dict[str, Any]] = []
    for proto in protocols:
        for arm, p in plan_arms(proto, baselines):
            for frac in fracs:
                for seed in seed_list:
                    task = info["task"] if arm == "ssl" else "-"
                    key = cell_key({"dataset": name, "task": task, "encoder": info["encoder"], "arm": arm,
                                    "protocol": p, "fraction": float(frac), "seed": seed, "fold": splits.fold})
                    if key in done or any(cell_key(r) == key for r in rows):
                        continue
                    row = ev.run_cell(arm=arm, protocol=p, fraction=frac, seed=seed, task=task,
                                      encoder=encoder if arm == "ssl" else None, weights=info["weights"])
                    row["checkpoint"] = info["checkpoint"] if arm == "ssl" else ""
                    row["data"] = ds.source
                    if store:
                        store.append(row)
                    rows.append(row)
    if store:
        attach_paired(out, n_boot=n_boot, multilabel=ev.multilabel)  # SSL vs baselines on the same test patients
    all_rows = store.rows() if store else rows
    return pd.DataFrame(all_rows)


__all__ = ["ARMS", "EVAL_FLAGS", "FINETUNE_FLAGS", "EvalOptions", "Evaluator", "evaluate", "plan_arms"]

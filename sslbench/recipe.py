"""Recipes as a pydantic model: every name, option, path and modality of a recipe checked before any work.

The YAML a recipe holds is described in :mod:`sslbench.runner`. :func:`load_recipe` reads it, applies
``--set KEY=VALUE`` overrides (:func:`pretext.config.parse_overrides`, the parser of the command line too),
imports the recipe's plugin modules and validates it into a :class:`Recipe`; a bad value is one line naming
the key, the value and what is allowed, an unknown or misspelt key gets the closest valid one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field as PydField
from pydantic import ValidationInfo

from pretext.config import (
    ConfigModel,
    Field,
    MaxItems,
    TrainConfig,
    build_config,
    field_validator,
    model_validator,
    parse_overrides,
    read_yaml_mapping,
)
from pretext.data import parse_spec
from pretext.errors import ConfigError, DataError
from pretext.registry import DATA, ENCODERS, TASKS
from sslbench.evaluate import Fraction, plan_arms
from sslbench.probes import FinetuneConfig, Protocol


class DatasetEntry(ConfigModel):
    """One dataset of a recipe (only the keys given are kept in the recipe, as the run folder records them)."""

    data: str
    k: int | None = Field(None, ge=2)
    folds: list[int] | None = None
    drop_unlabelled: bool = False
    split_seed: int = 0
    modality: str | None = None  # filled from the data kind

    @field_validator("data")
    @classmethod
    def _known_kind(cls, spec: str) -> str:
        DATA.get(parse_spec(spec)[0])  # unknown kind -> ConfigError listing the valid ones
        return spec


class AuditOptions(ConfigModel):
    """The embedding audit of each encoder on validation records (``audit: false`` turns it off)."""

    method: str = "auto"
    max_records: int = Field(600, ge=1)


def _named(value: Any, what: str) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return {str(v): {} for v in value}
    if isinstance(value, dict):
        return {str(k): dict(v or {}) for k, v in value.items()}
    raise ValueError(f"{what} must be a list of names or a mapping name -> options, got {value!r}")


class Recipe(ConfigModel):
    """A validated recipe (see :mod:`sslbench.runner` for the YAML)."""

    name: str
    description: str = ""
    imports: list[str] = []
    datasets: dict[str, dict[str, Any]] = PydField(min_length=1)
    tasks: dict[str, dict[str, Any]] = PydField(min_length=1)
    encoders: dict[str, dict[str, Any]] = PydField(min_length=1)
    pretrain: TrainConfig = TrainConfig(progress=False)
    finetune: FinetuneConfig = FinetuneConfig()
    protocols: list[Protocol] = ["linear"]
    fractions: list[Fraction] = [0.01, 0.1, 1.0]
    seeds: list[int] = [0, 1, 2]
    baselines: list[Literal["random", "scratch"]] = ["random", "scratch"]
    n_boot: int = Field(1000, ge=0)
    max_items: MaxItems  # a quick check ($MEDSSL_MAX_ITEMS)
    threads: int | None = Field(None, ge=1)
    strict_fractions: bool = False
    device: str = "cpu"
    audit: dict[str, Any] | None = AuditOptions().model_dump()
    task_encoders: dict[str, list[str]] = {}
    source: str = ""

    @model_validator(mode="before")
    @classmethod
    def _task_encoders(cls, raw: Any) -> Any:
        """A task's ``encoders`` option pairs it with some encoders only: it moves to ``task_encoders``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), (dict, list, str)):
            return raw
        tasks = _named(raw["tasks"], "tasks")
        pairs = dict(raw.get("task_encoders") or {})
        for t, opts in tasks.items():
            if "encoders" in opts:
                pick = opts.pop("encoders")
                pairs[t] = [pick] if isinstance(pick, str) else list(pick)
        return {**raw, "tasks": tasks, "task_encoders": pairs}

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"datasets must be a mapping name -> {{data: KIND:PATH, ...}}, got {value!r}")
        out = {}
        for name, d in value.items():
            d = {"data": d} if isinstance(d, str) else dict(d or {})
            entry = build_config(DatasetEntry, d, f"dataset {name!r}")
            kept = entry.model_dump(exclude_unset=True)
            kept["modality"] = DATA.meta(parse_spec(entry.data)[0]).get("modality")
            out[str(name)] = kept
        return out

    @field_validator("tasks", "encoders", mode="before")
    @classmethod
    def _registered(cls, value: Any, info: ValidationInfo) -> Any:
        value = _named(value, str(info.field_name))
        registry = TASKS if info.field_name == "tasks" else ENCODERS
        for name in value:
            registry.get(name)  # unknown -> ConfigError listing the registered names
        return value

    @field_validator("pretrain", mode="before")
    @classmethod
    def _pretrain(cls, value: Any) -> Any:
        return build_config(TrainConfig, {"progress": False, **dict(value or {})}, "pretrain")

    @field_validator("finetune", mode="before")
    @classmethod
    def _finetune(cls, value: Any) -> Any:
        return build_config(FinetuneConfig, dict(value or {}), "finetune")

    @field_validator("audit", mode="before")
    @classmethod
    def _audit(cls, value: Any) -> Any:
        if value is False or value is None:
            return None
        if value is True:
            return AuditOptions().model_dump()
        if isinstance(value, dict):
            return build_config(AuditOptions, value, "audit").model_dump()
        raise ValueError(f"audit must be true, false or a mapping, got {value!r}")

    @model_validator(mode="after")
    def _pairs_and_modalities(self) -> Recipe:
        for t, picked in self.task_encoders.items():
            bad = sorted(set(picked) - set(self.encoders))
            if bad:
                raise ValueError(f"task {t!r} names encoder(s) {bad} that are not in encoders: {sorted(self.encoders)}")
        for dname, d in self.datasets.items():
            mod = d["modality"]
            for t in self.tasks:
                tm = TASKS.meta(t).get("modality")
                if mod and tm and tm not in (mod, "any"):
                    raise ValueError(f"task {t!r} is for {tm} data but dataset {dname!r} is {mod}; "
                                     f"{mod} tasks: {', '.join(TASKS.names(modality=mod))}")
            for e in self.encoders:
                em = ENCODERS.meta(e).get("modality")
                if mod and em and em != mod:
                    raise ValueError(f"encoder {e!r} is a {em} encoder but dataset {dname!r} is {mod}")
        return self

    def n_cells(self) -> int:
        base = {pair for p in self.protocols for pair in plan_arms(p, self.baselines)[1:]}
        folds = sum(len(d.get("folds") or [0]) for d in self.datasets.values())
        ssl = len(self.protocols) * len(self.pairs())
        return folds * (ssl + len(base) * len(self.encoders)) * len(self.fractions) * len(self.seeds)

    def pairs(self) -> list[tuple[str, str]]:
        """(task, encoder) pairs to pretrain: every encoder, or the task's ``encoders`` option."""
        return [(t, e) for t in self.tasks for e in self.encoders if e in self.task_encoders.get(t, self.encoders)]


def _resolve_path(spec: str, base: Path) -> str:
    kind, path, _ = parse_spec(spec)
    if not path or Path(path).is_absolute() or Path(path).exists() or DATA.meta(kind).get("virtual"):
        return spec
    alt = (base / path).resolve()
    if alt.exists():
        return spec.replace(f"{kind}:{path}", f"{kind}:{alt}", 1)
    raise DataError(f"data path {path!r} (spec {spec!r}) exists neither in the current folder nor beside the "
                    f"recipe ({base}); fix the path or override it with --data NAME=KIND:PATH")


def load_recipe(path: str | Path, data_overrides: dict[str, str] | None = None, sets: list[str] | None = None) -> Recipe:
    """Read and check a recipe; every name, path and option is validated before any work.

    ``sets``: ``KEY=VALUE`` overrides (dotted keys, YAML values); ``data_overrides``: dataset name -> data spec.

    Raises:
        ConfigError: unknown keys, tasks, encoders, data kinds, protocols, or modality mismatches.
        DataError: missing data paths.
    """
    p = Path(path)
    where = f"recipe {str(p)!r}"
    raw = parse_overrides(list(sets or []), "--set", into=read_yaml_mapping(p, "recipe"))
    for module in raw.get("imports") or []:  # plugins register their tasks/encoders/data before the checks
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"{where}: imports: cannot import {module!r} ({err})") from err
    datasets = raw.get("datasets")
    if data_overrides:
        extra = sorted(set(data_overrides) - set(datasets or {}))
        if extra:
            raise ConfigError(f"--data names {extra} are not datasets of {where}; its datasets: {sorted(datasets or {})}")
        datasets = {n: ({**d, "data": data_overrides[n]} if isinstance(d, dict) else data_overrides[n])
                    if n in data_overrides else d for n, d in datasets.items()}
    rec = build_config(Recipe, {**raw, "name": str(raw.get("name") or p.stem), "source": str(p),
                                **({"datasets": datasets} if datasets is not None else {})}, where)
    resolved = {n: {**d, "data": _resolve_path(d["data"], p.parent)} for n, d in rec.datasets.items()}
    return rec.model_copy(update={"datasets": resolved})


__all__ = ["AuditOptions", "DatasetEntry", "Recipe", "load_recipe"]

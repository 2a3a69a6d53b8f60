"""Configuration: one pydantic model per component, validated in one place, YAML round trip.

Every configuration (the engine's :class:`TrainConfig`, each task's ``Config``, fine-tuning, recipes) is a
subclass of :class:`ConfigModel`: a frozen pydantic model that refuses unknown fields. :func:`build_config` is the
one way to make one from a mapping (a YAML file, dotted command-line overrides, a recipe section); a bad value
is a :class:`~pretext.errors.ConfigError` of one line naming the field, the value given and what is allowed,
and an unknown or misspelt field name is refused with the closest valid name.

>>> cfg = build_config(TrainConfig, {"steps": 100, "precision": "32"})
>>> assert build_config(TrainConfig, yaml.safe_load(to_yaml(cfg))) == cfg

A task whose ``Config`` is still a frozen stdlib dataclass is validated the same way (pydantic reads the
dataclass's annotations; ``__post_init__`` checks still run).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pretext.atomic import atomic_write_text
from pretext.errors import ConfigError
from pretext.options import allowed, check_names, explain

D = TypeVar("D")

#: what :func:`build_config` is building: (the name in messages, field -> command-line flag)
_BUILDING: ContextVar[tuple[str, Mapping[str, str]] | None] = ContextVar("config_building", default=None)

def _listed(value: Any, annotation: Any) -> Any:
    """A comma-separated string for a tuple or list field -> its items (``--task.tasks rotation,mae3d``)."""
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    if isinstance(value, str) and any(typing.get_origin(k) in (tuple, list) for k in kinds):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


#: an engine precision; ``32`` read from YAML as a number is the text "32"
Precision = Annotated[Literal["bf16-mixed", "16-mixed", "32", "auto"], BeforeValidator(_number_as_text)]
def low_to_high(value: tuple[float, float]) -> tuple[float, float]:
    """A ``[low, high]`` range with ``low <= high`` (a pydantic after-validator)."""
    if value[0] > value[1]:
        raise ValueError(f"{list(value)} must be [low, high] with low <= high")
    return value


def span(**bounds: float) -> Any:
    """The type of a ``[low, high]`` range field whose ends both satisfy ``bounds`` (pydantic ``Field`` bounds:
    ``ge``, ``gt``, ``le``, ``lt``) and ``low <= high``: ``crop_scale: span(gt=0, le=1) = (0.5, 1.0)``."""
    end = Annotated[float, Field(**bounds)]
    return Annotated[tuple[end, end], AfterValidator(low_to_high)]


#: pydantic settings of configuration dataclasses (a transform's parameters): as :class:`ConfigModel`'s
DATACLASS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

#: an engine accelerator (``auto``: CUDA when visible, else CPU)
Accelerator = Literal["auto", "cpu", "cuda", "mps"]


class ConfigModel(BaseModel):
    """Base of every configuration model: frozen, unknown fields refused, no NaN/inf numbers.

    A comma-separated string fills a tuple or list field (``--task.tasks rotation,mae3d``). ``renamed`` maps a
    field name this model no longer has to the one to write instead; it is only used in the error message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              protected_namespaces=())

    renamed: ClassVar[dict[str, str]] = {}

    def __init__(self, **values: Any) -> None:
        what, flags = _BUILDING.get() or (type(self).__qualname__, {})
        _BUILDING.set(None)  # nested models name themselves
        check_names(values, list(type(self).model_fields), what, renamed=self.renamed)
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(explain(err, what, type(self), flags)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _split_commas(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        return _listed(value, field.annotation) if field is not None else value


class TrainConfig(ConfigModel):
    """Engine settings (``pretext.engine.fit``).

    Attributes:
        steps: optimizer steps to run in total.
        batch_size: samples per device per micro-batch.
        lr: peak learning rate (AdamW), reached after ``warmup_steps``; cosine decay to ``min_lr``.
        min_lr: final learning rate of the cosine schedule.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        warmup_steps: linear warmup length in optimizer steps.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        clip_grad: max global gradient norm; 0 disables clipping.
        precision: "bf16-mixed", "16-mixed" (loss scaling), "32", or "auto"
            (bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32 on CPU).
        ema: EMA decay of weights (e.g. 0.999); 0 disables. The EMA copy is saved beside the model.
        max_nonfinite: stop after this many consecutive non-finite losses (each such step is skipped).
        seed: seeds data order, corruptions and initialisation.
        num_workers: DataLoader worker processes (0 loads data in the main process).
        log_every: steps between log lines (CSV/TensorBoard).
        ckpt_every: steps between checkpoints (``last.ckpt``, atomically replaced).
        accelerator: "auto", "cpu", "cuda", "mps".
        devices: devices per node ("auto", an int, or "1,3" for a list).
        num_nodes: number of nodes (multi-node through torchrun or SLURM).
        strategy: "auto", "ddp", "fsdp", ... (Lightning Fabric strategies).
        compile: wrap the task with ``torch.compile``.
        progress: show a progress bar.
        monitor_every: steps between the online representation monitor's measurements (effective rank, per-dim
            std, kNN top-1; :mod:`pretext.engine.hooks`) of a pretext task, and at the last step; 0 disables.
        monitor_items: items of the training split the monitor encodes (the kNN uses their labels, if any).
    """

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0)
    accumulate: int = Field(1, ge=1)
    clip_grad: float = Field(1.0, ge=0)
    precision: Precision = "auto"
    ema: float = Field(0.0, ge=0, lt=1)
    max_nonfinite: int = Field(5, ge=1)
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(200, ge=1)
    accelerator: Accelerator = "auto"
    devices: str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    compile: bool = False
    progress: bool = True
    monitor_every: int = Field(100, ge=0)
    monitor_items: int = Field(256, ge=1)


# -- building and explaining -------------------------------------------------------------------------------
_MISSING = object()


MAX_ITEMS_ENV = "MEDSSL_MAX_ITEMS"


def max_items_from_env() -> int | None:
    """``$MEDSSL_MAX_ITEMS`` (unset or empty: ``None``): a quick check of any command on a fraction of the data.

    When set, evaluation cuts each of its train/val/test splits to at most this many records (stratified by
    label, seeded) and the online monitor encodes at most this many items; pretraining steps are unchanged.
    The cap is recorded in the run folder's identity, so capped and full results never mix. Like
    Lightning's ``limit_*_batches`` or the ``--max_*_samples`` of Hugging Face's example scripts, it is for
    smoke tests of a pipeline (the README's examples run with it in the test suite), never for results.

    Raises:
        ConfigError: the value is not a positive whole number.
    """
    raw = os.environ.get(MAX_ITEMS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{MAX_ITEMS_ENV}={raw!r} must be a positive whole number of items, e.g. "
                          f"{MAX_ITEMS_ENV}=64 for a quick check; unset it for full-size runs")
    return n


#: a ``max_items`` field: ``None`` (also when given explicitly) means ``$MEDSSL_MAX_ITEMS``, then no cut
MaxItems = Annotated[int | None, Field(None, ge=1, validate_default=True),
                     BeforeValidator(lambda v: max_items_from_env() if v is None else v)]


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> default of a config class (a :class:`ConfigModel` or a dataclass); required fields map to
    :data:`dataclasses.MISSING`."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: (dataclasses.MISSING if f.is_required() else f.get_default(call_default_factory=True))
                for name, f in cls.model_fields.items()}
    if dataclasses.is_dataclass(cls):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = dataclasses.MISSING
        return out
    raise TypeError(f"{cls!r} is neither a pydantic model nor a dataclass")


def config_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation (resolved) of a config class."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(typing.cast(Any, cls))}


def build_config(cls: type[D], values: Mapping[str, Any] | None = None, what: str | None = None,
                 flags: Mapping[str, str] | None = None) -> D:
    """Validate ``values`` into config class ``cls`` (a :class:`ConfigModel`, or a stdlib/pydantic dataclass).

    Args:
        what: the name in messages (``train``, ``finetune``, ``task 'rotation'``); default the class name.
        flags: field -> the command-line flag that set it (``{"lr": "--finetune-lr"}``): a bad value of such a
            field is named by its flag, with a valid example (the field's ``examples``, else its default).

    Raises:
        ConfigError: an unknown field (the closest valid name is suggested) or a bad value (one line naming
            ``what field=value`` and what is allowed).
    """
    values = dict(values or {})
    what = what or cls.__name__
    if issubclass(cls, ConfigModel):  # its __init__ checks and explains
        token = _BUILDING.set((what, dict(flags or {})))
        try:
            return typing.cast(D, cls(**values))
        finally:
            _BUILDING.reset(token)
    check_names(values, list(config_fields(cls)), what, renamed=getattr(cls, "renamed", None))
    hints = config_types(cls)
    values = {k: _listed(v, hints.get(k)) for k, v in values.items()}
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as err:
        raise ConfigError(explain(err, what, cls, flags)) from None


# -- dotted overrides (the command line and recipes' --set) ------------------------------------------------
def read_value(text: Any) -> Any:
    """A value given as text on the command line, read as YAML (``4`` int, ``0.5`` float, ``[0, 1]`` list,
    ``true`` bool); anything else stays the text. Non-text values pass through."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], key: str, value: Any, what: str) -> dict[str, Any]:
    """Set ``tree["a"]["b"]["c"] = read_value(value)`` for ``key="a.b.c"``, making the mappings on the way.

    Raises:
        ConfigError: an empty key part, or a part that holds a value other than a mapping.
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{what}: {key!r} is not a dotted name (write e.g. pretrain.steps or task.mask_ratio)")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{what}: {'.'.join(parts[:i + 1])!r} is {node[part]!r}, not a mapping")
        node = node[part]
    node[parts[-1]] = read_value(value)
    return tree


def parse_overrides(tokens: list[str], what: str, scopes: tuple[str, ...] | None = None,
                    into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted overrides into a nested mapping: the one parser of the command line and of recipes' ``--set``.

    ``tokens`` are ``--a.b VALUE``, ``--a.b=VALUE`` (command-line flags) or ``a.b=VALUE`` (``--set`` items);
    values are read as YAML (:func:`read_value`). With ``scopes``, the first part of every key must be one
    of them (``("task", "encoder")``: ``--task.mask_ratio 0.6 --encoder.depth 4``) and every scope is in the
    result. ``into``: the mapping to set the keys in (e.g. a recipe read from YAML); default a new one.

    Raises:
        ConfigError: a token that is not ``KEY=VALUE`` / ``--KEY [VALUE]``, a flag without a value, or a key
            outside ``scopes`` (one line naming it and what to write).
    """
    tree: dict[str, Any] = into if into is not None else {}
    for s in scopes or ():
        tree.setdefault(s, {})
    hint = ", ".join(f"--{s}.FIELD VALUE" for s in scopes) if scopes else "KEY=VALUE, e.g. pretrain.steps=100"
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        flag = tok.startswith("--")
        key, eq, value = tok[2:].partition("=") if flag else tok.partition("=")
        if flag and not eq:
            if i + 1 >= len(tokens):
                raise ConfigError(f"{what}: {tok} needs a value")
            value, i = tokens[i + 1], i + 1
        elif not eq or not key:
            raise ConfigError(f"{what}: {tok!r} must read {hint}")
        if scopes is not None and (key.partition(".")[0] not in scopes or "." not in key):
            raise ConfigError(f"{what}: unrecognized argument {tok!r}; it takes {hint} beside its flags")
        set_dotted(tree, key, value, what)
        i += 1
    return tree


# -- YAML ---------------------------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    """A config (possibly nested; a model or a dataclass) -> plain dict/list/scalars, safe for YAML and
    ``weights_only`` loads."""
    if isinstance(obj, BaseModel):
        return {name: to_dict(getattr(obj, name)) for name in type(obj).model_fields}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def read_yaml_mapping(path: str | Path, what: str = "YAML file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (a run config, a recipe).

    Raises:
        ConfigError: the file is missing, is not valid YAML (the message gives line and column) or holds
            something other than a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML{where}: {problem}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a YAML mapping (key: value lines), got {type(data).__name__}")
    return data


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write_text(Path(path), to_yaml(obj))


__all__ = ["DATACLASS_CONFIG", "MAX_ITEMS_ENV", "MaxItems", "max_items_from_env", "Accelerator", "AfterValidator", "ConfigModel", "Field", "Precision", "TrainConfig", "allowed", "build_config", "config_fields", "config_types", "explain",
           "field_validator", "model_validator", "parse_overrides", "read_value", "read_yaml_mapping", "set_dotted",
           "low_to_high", "span", "to_dict", "to_yaml", "write_yaml"]


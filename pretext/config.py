"""Configuration: one frozen dataclass per component, YAML round trip, CLI flags from fields.

>>> cfg = build_dataclass(TrainConfig, {"steps": 100, "precision": "32"})
>>> assert from_yaml(TrainConfig, to_yaml(cfg)) == cfg
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pretext.atomic import atomic_write_text
from pretext.errors import ConfigError

D = TypeVar("D")

PRECISIONS = ("bf16-mixed", "16-mixed", "32", "auto")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
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
        num_workers: DataLoader worker processes.
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

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 50
    accumulate: int = 1
    clip_grad: float = 1.0
    precision: str = "auto"
    ema: float = 0.0
    max_nonfinite: int = 5
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    compile: bool = False
    progress: bool = True
    monitor_every: int = 100
    monitor_items: int = 256

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not one of {PRECISIONS}")
        for name in ("steps", "batch_size", "accumulate", "log_every", "ckpt_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1")
        for name in ("lr", "min_lr", "weight_decay", "clip_grad", "ema"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} must be a finite number (e.g. --{name.replace('_', '-')} 0.001)")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr!r} must be > 0")
        for name in ("min_lr", "weight_decay", "clip_grad", "warmup_steps", "num_workers", "monitor_every",
                     "monitor_items"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0"
                                  + (" (0 loads data in the main process)" if name == "num_workers" else ""))
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema={self.ema!r} must be in [0, 1); use 0 to disable")


def check_fields(cfg: Any, what: str, *, at_least: dict[str, float] | None = None,
                 above: dict[str, float] | None = None, probabilities: tuple[str, ...] = (),
                 choices: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Range checks of a config dataclass's fields, one message each naming ``what.field``, the value and the range.

    ``at_least={"depth": 1}``: ``>= 1``; ``above={"temperature": 0}``: ``> 0``; ``probabilities``: in [0, 1];
    ``choices={"pair": ("patient", "record")}``: one of these. Non-finite numbers are refused everywhere.
    """
    def value(name: str) -> Any:
        v = getattr(cfg, name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{what} {name}={v!r} must be a finite number")
        return v

    for name, lo in (at_least or {}).items():
        if value(name) < lo:
            raise ConfigError(f"{what} {name}={getattr(cfg, name)!r} must be >= {lo:g}")
    for name, lo in (above or {}).items():
        if value(name) <= lo:
            raise ConfigError(f"{what} {name}={getattr(cfg, name)!r} must be > {lo:g}")
    for name in probabilities:
        if not 0.0 <= value(name) <= 1.0:
            raise ConfigError(f"{what} {name}={getattr(cfg, name)!r} must be a probability in [0, 1]")
    for name, options in (choices or {}).items():
        if getattr(cfg, name) not in options:
            raise ConfigError(f"{what} {name}={getattr(cfg, name)!r} must be one of {', '.join(map(repr, options))}")


def _resolve_type(cls: type, field: dataclasses.Field[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(field.name, Any)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce YAML/CLI values to a field type (tuples from lists, numbers from strings)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or value is None:
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or value == "none" and type(None) in args:
            return None
        last: Exception | None = None
        for a in non_none:
            try:
                return _coerce(value, a, where)
            except (ConfigError, ValueError, TypeError) as err:
                last = err
        raise ConfigError(f"{where}: {value!r} does not fit {tp}") from last
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} must be one of {args}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}={value!r} needs {len(args)} values")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return build_dataclass(typing.cast(type, tp), value, what=where)
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}={value!r} is not a boolean (use true/false)")
        return bool(value)
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}={value!r} is not a valid {tp.__name__}") from err
    return value


def build_dataclass(cls: type[D], values: dict[str, Any] | None, what: str | None = None) -> D:
    """Instantiate dataclass ``cls`` from a mapping, coercing types; unknown keys are an error."""
    values = dict(values or {})
    what = what or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; valid options: {', '.join(fields)}")
    kwargs = {k: _coerce(v, _resolve_type(cls, fields[k]), f"{what}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{what}: {err}") from err


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) -> plain dict/list/scalars, safe for YAML and ``weights_only`` loads."""
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


def from_yaml(cls: type[D], text: str) -> D:
    data = yaml.safe_load(text) or {}
    return build_dataclass(cls, data)


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write_text(Path(path), to_yaml(obj))


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one ``--prefix.field`` flag per dataclass field (default ``None`` = keep the dataclass default)."""
    group = parser.add_argument_group(f"{cls.__name__} options" + (f" (--{prefix}.*)" if prefix else ""))
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = f"--{prefix}.{f.name}" if prefix else f"--{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        group.add_argument(flag, dest=f"{prefix}.{f.name}" if prefix else f.name, default=None,
                           metavar=f.name.upper(), help=f"(default: {default!r})")


def collect_dataclass_args(ns: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The flags of :func:`add_dataclass_args` that the user actually set, as a dict."""
    out = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        val = getattr(ns, key, None)
        if val is not None:
            out[f.name] = yaml.safe_load(val) if isinstance(val, str) and prefix else val
    return out

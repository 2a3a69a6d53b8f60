"""Name -> component registries for pretext tasks, encoders and data kinds.

Components register with a decorator, as in timm::

    @register_task("rotation", modality="volume")
    class Rotation(PretextTask): ...

    @register_encoder("resnet18_3d", modality="volume")
    def resnet18_3d(in_channels: int = 1, img_size=(32, 32, 32), **kw) -> nn.Module: ...

    @register_data("medmnist3d", modality="volume")
    def load_medmnist3d(path: str, **options) -> SSLData: ...

A separate package adds its own components without editing this one, through the
entry-point groups ``medssl.tasks``, ``medssl.encoders`` and ``medssl.data``::

    [project.entry-points."medssl.tasks"]
    my_task = "my_pkg.tasks:MyTask"      # a class/function (registered under "my_task")
    more = "my_pkg.more_tasks"             # or a module whose decorators register on import

Built-in components live in the packages that each modality adapter names (:mod:`pretext.modality`:
``Modality.packages``, the adapters themselves found through the entry-point group ``medssl.modalities``);
every module in them (found by scanning the package folder) is imported the first time a registry is
read, so a new task is one file dropped beside the others, the core names no modality package, and
importing :mod:`pretext` stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

from pretext.errors import ConfigError, UserError
from pretext.options import validate_options

T = TypeVar("T")

_GROUPS = {"task": "medssl.tasks", "encoder": "medssl.encoders", "data": "medssl.data"}


def _import_submodules(package: Any) -> None:
    """Import every module of a built-in package: a new file in ``volssl/tasks/`` (or ``volssl/encoders/``,
    ...) registers itself by being there; no ``__init__`` or list needs editing."""
    path = getattr(package, "__path__", None)
    if path is None:  # a plain module
        return
    for info in pkgutil.iter_modules(path, prefix=package.__name__ + "."):
        importlib.import_module(info.name)
        if info.ispkg:
            _import_submodules(importlib.import_module(info.name))


class Registry:
    """A name -> object table with lazily loaded built-ins and entry-point plugins."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = _GROUPS[kind]
        self._items: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = False

    # -- registration ------------------------------------------------------------------
    def register(self, name: str, obj: T, **meta: Any) -> T:
        if not name or not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered by {_qualname(self._items[name])}; "
                f"pick another name for {_qualname(obj)}"
            )
        self._items[name] = obj
        self._meta[name] = dict(meta)
        return obj

    def decorator(self, name: str, **meta: Any) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj, **meta)

        return wrap

    # -- loading -----------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in builtin_packages(self.kind):
            _import_submodules(importlib.import_module(module))
        for ep in _entry_points(self.group):
            obj = ep.load()
            if inspect.ismodule(obj):
                continue  # its decorators registered what it has
            if obj not in self._items.values():
                meta = getattr(obj, "registry_meta", {})
                self.register(ep.name, obj, plugin=ep.value, **meta)

    # -- lookup ------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        self._load()
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self, **where: Any) -> list[str]:
        self._load()
        return sorted(n for n in self._items if all(self._meta[n].get(k) == v for k, v in where.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


# built-in components of the core itself: the modality-agnostic tasks (registered with ``modality="any"``)
CORE_PACKAGES: dict[str, tuple[str, ...]] = {"task": ("pretext.tasks",)}


def builtin_packages(kind: str) -> list[str]:
    """The packages scanned for built-in components of ``kind`` ("task", "encoder", "data"): the core's own
    (:data:`CORE_PACKAGES`), then each modality adapter's."""
    from pretext.modality import modalities

    return [*CORE_PACKAGES.get(kind, ()), *(pkg for adapter in modalities().values() for pkg in adapter.packages.get(kind, ()))]


def _entry_points(group: str) -> Iterable[Any]:
    return entry_points(group=group)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


TASKS = Registry("task")
ENCODERS = Registry("encoder")
DATA = Registry("data")


def register_task(name: str, **meta: Any) -> Callable[[T], T]:
    """Class decorator: register a :class:`pretext.base.PretextTask` subclass under ``name``.

    ``meta`` is free-form; ``modality="volume"|"signal"`` is used by ``sslbench list``.
    """
    return TASKS.decorator(name, **meta)


def register_encoder(name: str, **meta: Any) -> Callable[[T], T]:
    """Decorator: register an encoder class or factory function under ``name``."""
    return ENCODERS.decorator(name, **meta)


def register_data(kind: str, **meta: Any) -> Callable[[T], T]:
    """Decorator: register a data loader ``fn(path: str, **options) -> SSLData`` under ``kind``.

    :func:`pretext.data.load_data` checks a spec's options against ``fn``'s signature
    (:func:`pretext.options.validate_options`) before calling it.
    """
    return DATA.decorator(kind, **meta)


def list_tasks(modality: str | None = None) -> list[str]:
    """Names of the registered pretext tasks (optionally of one modality; the modality-agnostic ones, registered
    with ``modality="any"``, are listed for every modality)."""
    if not modality:
        return TASKS.names()
    return sorted({*TASKS.names(modality=modality), *TASKS.names(modality="any")})


def list_encoders(modality: str | None = None) -> list[str]:
    """Names of the registered encoders (optionally of one modality)."""
    return ENCODERS.names(**({"modality": modality} if modality else {}))


def list_data_kinds(modality: str | None = None) -> list[str]:
    """Names of the registered data kinds (the ``KIND`` of a ``KIND:PATH`` data spec)."""
    return DATA.names(**({"modality": modality} if modality else {}))


def get_data_kind(kind: str) -> Callable[..., Any]:
    return DATA.get(kind)


def create_encoder(name: str, **kwargs: Any) -> Any:
    """Build a registered encoder: ``create_encoder("resnet18_3d", in_channels=1, img_size=(28,)*3)``."""
    factory = ENCODERS.get(name)
    kwargs = validate_options(factory, kwargs, f"encoder {name!r}", skip=("self",))
    try:
        encoder = factory(**kwargs)
    except UserError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:
        if not kwargs:  # the defaults failed: a bug, not bad input
            raise
        raise ConfigError(f"encoder {name!r} cannot be built with {kwargs}: {err} (sizes, widths and counts must be "
                          "positive; see the options with `sslbench list encoders -v`)") from err
    _tag(encoder, {"encoder": name, "encoder_cfg": kwargs, "modality": ENCODERS.meta(name).get("modality")})
    return encoder


def _tag(module: Any, info: dict[str, Any]) -> None:
    """Remember how a component was built, so ``fit`` can record it in checkpoints without being told."""
    from pretext.config import to_dict

    try:
        object.__setattr__(module, "medssl_config", to_dict(info))
    except (AttributeError, TypeError):  # objects with __slots__ or frozen ones: nothing to record
        pass


def create_task(name: str, encoder: Any, **cfg: Any) -> Any:
    """Wrap ``encoder`` in a registered pretext task; ``cfg`` fills the task's ``Config`` (:func:`pretext.config.build_config`).

    ``encoder`` is an encoder module or the name of a registered encoder (then built with
    the defaults; pass a module to choose its options).
    """
    cls = TASKS.get(name)
    if isinstance(encoder, str):
        encoder = create_encoder(encoder)
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None:
        from pretext.config import build_config

        task = cls(encoder, build_config(cast(type, config_cls), cfg, what=f"task {name!r}"))
    else:
        task = cls(encoder, **validate_options(cls, cfg, f"task {name!r}", skip=("self", "encoder")))
    _tag(task, {"task": name, "task_cfg": getattr(task, "cfg", None) or cfg})
    return task

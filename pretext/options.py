"""Data-kind option names shared by every modality, and the old spellings that still work.

One spelling per option on every side: ``val_fraction``, ``test_fraction``, ``skip_broken``, ``normalize``.
The older spellings (``val_frac``, ``test_frac``, ``on_error=skip|raise``, ``normalise``) are deprecated
aliases: :func:`rename_options` maps them to the new names with a :class:`FutureWarning` naming the new
one, so specs and recipes written before keep loading. :func:`pretext.data.load_data` and every
function registered with :func:`pretext.registry.register_data` (:func:`accept_renamed`) apply it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from pretext.errors import ConfigError

__all__ = ["RENAMED", "rename_options", "accept_renamed", "as_flag"]

#: old option name -> new option name
RENAMED: dict[str, str] = {
    "val_frac": "val_fraction",
    "test_frac": "test_fraction",
    "on_error": "skip_broken",
    "normalise": "normalize",
}

F = TypeVar("F", bound=Callable[..., Any])


def as_flag(value: Any, what: str) -> bool:
    """``value`` (a bool or ``true/false/yes/no/on/off/1/0``) as a bool.

    Raises:
        ConfigError: anything else (the message names the option and the value).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none"):
        return False
    raise ConfigError(f"{what}={value!r} must be true or false")


def _on_error(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("raise", "skip"):
        raise ConfigError(f"on_error={value!r} must be 'raise' or 'skip'; write skip_broken=true or false instead")
    return text == "skip"


def rename_options(options: dict[str, Any], where: str = "data spec", stacklevel: int = 3,
                   warn: bool = True) -> dict[str, Any]:
    """``options`` with the deprecated names of :data:`RENAMED` replaced by the new ones.

    ``on_error=skip|raise`` becomes ``skip_broken=true|false``. Each old name found is named in a
    :class:`FutureWarning` with its new name (unless ``warn`` is false: reading a spec recorded earlier,
    e.g. in a checkpoint, is not the user's to fix).

    Raises:
        ConfigError: an option is given under both names, or ``on_error`` is not raise/skip.
    """
    out = dict(options)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{where}: {old}= and {new}= name the same option; keep only {new}=")
        value = out.pop(old)
        out[new] = _on_error(value) if old == "on_error" else value
        shown = f"skip_broken={'true' if out[new] else 'false'}" if old == "on_error" else f"{new}={value}"
        if warn:
            warnings.warn(f"{where}: option {old}= is deprecated and will be removed; write {shown}",
                          FutureWarning, stacklevel=stacklevel)
    return out


def accept_renamed(fn: F) -> F:
    """Wrap a data-kind function so that keyword arguments under a deprecated name still work (with a warning)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(k in RENAMED for k in kwargs):
            kwargs = rename_options(kwargs, f"{getattr(fn, '__qualname__', fn)}()", stacklevel=4)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

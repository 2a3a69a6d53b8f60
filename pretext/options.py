"""Option names and option values of keyword-configured components (data kinds, encoders).

One spelling per option, no aliases: ``val_fraction``, ``test_fraction``, ``skip_broken``, ``normalize``.
An unknown or misspelt name is refused by :func:`check_names` with the closest valid name; names that 0.1
spelt otherwise (:data:`REMOVED`) are refused with the name to write now.

:func:`validate_options` checks a call's keyword options against the function's signature: names as above,
and the values of ``bool``/``int``/``float`` parameters through a pydantic model built from the signature
(``skip_broken=yes`` becomes ``True``, ``skip_broken=sometimes`` is refused naming the option).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model

from pretext.errors import ConfigError

__all__ = ["REMOVED", "allowed", "check_names", "closest", "explain", "parse_value", "validate_options"]

#: option names of 0.1 that are gone -> the option to write instead (used in error messages only)
REMOVED: dict[str, str] = {
    "val_frac": "val_fraction",
    "test_frac": "test_fraction",
    "on_error": "skip_broken (true or false)",
    "normalise": "normalize",
}


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (by spelling), if any is close."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def check_names(options: Mapping[str, Any], valid: Iterable[str], what: str,
                renamed: Mapping[str, str] | None = None) -> None:
    """Refuse option names not in ``valid``, one line naming each with the name to write instead.

    Args:
        renamed: names this component used to have -> their current name (besides :data:`REMOVED`).

    Raises:
        ConfigError: ``what: unknown option 'stepz'; did you mean 'steps'? (valid options: ...)``.
    """
    valid = list(valid)
    bad = [k for k in options if k not in valid]
    if not bad:
        return
    hints = []
    for k in bad:
        new = (renamed or {}).get(k) or REMOVED.get(k)
        if new is not None:
            hints.append(f"option {k!r} is now called {new}; write that instead")
            continue
        near = closest(k, valid)
        hints.append(f"unknown option {k!r}" + (f"; did you mean {near!r}?" if near else ""))
    raise ConfigError(f"{what}: {'; '.join(hints)} (valid options: {', '.join(valid)})")


def allowed(err: Any) -> str:
    """What pydantic's error ``err`` allows, as the fix to write."""
    kind, ctx = err["type"], err.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        key = {">=": "ge", ">": "gt", "<=": "le", "<": "lt"}[bounds[kind]]
        return f"must be {bounds[kind]} {ctx.get(key)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("tuple_type", "list_type", "too_short", "too_long"):
        return f"must be a list ({err['msg'].lower()})"
    if kind == "missing":
        return "is required"
    return str(err["msg"])


def explain(err: ValidationError, what: str) -> str:
    """One line for a pydantic :class:`ValidationError`: ``WHAT field=value must be ...`` per bad field."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] in ("value_error", "assertion_error"):  # a model's own check: its message says it all
            msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            parts.append(f"{what} {msg}" if loc and msg.startswith(loc) else f"{what} {loc}: {msg}" if loc
                         else f"{what}: {msg}")
        else:
            parts.append(f"{what} {loc}={e.get('input')!r} {allowed(e)}" if loc else f"{what}: {allowed(e)}")
    return "; ".join(dict.fromkeys(parts))


def parse_value(tp: Any, value: Any, what: str) -> Any:
    """``value`` validated as type ``tp`` by pydantic (``"yes"`` -> ``True``, ``"3"`` -> ``3``).

    Raises:
        ConfigError: ``what=value must be ...`` in one line.
    """
    try:
        return TypeAdapter(tp).validate_python(value)
    except ValidationError as err:
        raise ConfigError(f"{what}={value!r} {allowed(err.errors()[0])}") from None


_CHECKED = (bool, int, float)


def validate_options(fn: Callable[..., Any], options: dict[str, Any], what: str,
                     skip: tuple[str, ...] = ("self", "path")) -> dict[str, Any]:
    """``options`` checked against ``fn``'s keyword parameters; returns them with typed values.

    Unknown names are refused (:func:`check_names`); when ``fn`` takes ``**kwargs`` (and passes them on), only
    the names of :data:`REMOVED`. Parameters annotated
    ``bool``, ``int`` or ``float`` are validated by a pydantic model made from the signature; the others are
    passed as given (the component checks them).

    Raises:
        ConfigError: an unknown name or a value of the wrong type, naming the option.
    """
    sig = inspect.signature(fn)
    params = {n: p for n, p in sig.parameters.items() if n not in skip
              and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):  # passes options on: refuse 0.1 names only
        check_names({k: v for k, v in options.items() if k in REMOVED and k not in params}, list(params), what)
    else:
        check_names(options, list(params), what)
    try:
        hints = typing.get_type_hints(getattr(fn, "__init__") if isinstance(fn, type) else fn)  # noqa: B009
    except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
        hints = {}
    typed = {n: (hints[n], ...) for n in options if n in params and hints.get(n) in _CHECKED}
    if not typed:
        return dict(options)
    model = create_model("Options", __config__=ConfigDict(allow_inf_nan=False), **typed)  # type: ignore[call-overload]
    try:
        checked = model.model_validate({n: options[n] for n in typed})
    except ValidationError as err:
        raise ConfigError(explain(err, what)) from None
    return {**options, **{n: getattr(checked, n) for n in typed}}


def as_flag(value: Any, what: str) -> bool:
    """``value`` as a bool through pydantic (:func:`parse_value`): ``skip_broken=yes`` -> True."""
    return bool(parse_value(bool, value, what))

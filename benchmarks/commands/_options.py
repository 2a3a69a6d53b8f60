"""Dotted options shared by the sub-commands: ``--task.FIELD VALUE``, ``--encoder.KW=VALUE``."""

from __future__ import annotations

from typing import Any

import yaml

from pretext.errors import UserError


def parse_dotted(extra: list[str], scopes: tuple[str, ...], command: str) -> dict[str, dict[str, Any]]:
    """``["--encoder.depth", "4", "--task.mask_ratio=0.6"]`` -> ``{"encoder": {"depth": 4}, "task": {...}}``.

    Values are read as YAML (numbers, lists, booleans). Anything else is a one-line error naming it.
    """
    out: dict[str, dict[str, Any]] = {s: {} for s in scopes}
    hint = ", ".join(f"--{s}.KW VALUE" for s in scopes)
    i = 0
    while i < len(extra):
        tok = extra[i]
        key, eq, val = tok[2:].partition("=") if tok.startswith("--") else ("", "", "")
        scope, _, field = key.partition(".")
        if scope not in out or not field:
            raise UserError(f"unrecognized argument {tok!r}; {command} takes {hint} beside its flags")
        if not eq:
            if i + 1 >= len(extra):
                raise UserError(f"{tok} needs a value")
            val, i = extra[i + 1], i + 1
        out[scope][field] = yaml.safe_load(val)
        i += 1
    return out

"""``sslbench list``: the registered tasks, encoders and data kinds."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from pretext.config import config_fields
from pretext.registry import DATA, ENCODERS, TASKS


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered pretext tasks, encoders and data kinds")
    p.add_argument("what", nargs="?", choices=["tasks", "encoders", "data", "all"], default="all")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show each task's options (--task.FIELD) and each encoder's/data kind's keywords")
    p.set_defaults(func=run)


def _options(obj: Any) -> list[str]:
    cfg = getattr(obj, "Config", None)
    if cfg is not None:
        return [f"{name}={default!r}" for name, default in config_fields(cfg).items()]
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return [f"{p.name}={p.default!r}" if p.default is not p.empty else p.name
            for p in params if p.name not in ("self", "path") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _table(title: str, registry: Any, verbose: bool = False) -> list[str]:
    lines = [f"{title}:"]
    for name in registry.names():
        meta = registry.meta(name)
        obj = registry.get(name)
        doc = (getattr(obj, "__doc__", "") or "").strip().splitlines()
        tag = meta.get("modality", "")
        extra = f"  [plugin {meta['plugin']}]" if "plugin" in meta else ""
        lines.append(f"  {name:<24} {tag:<7} {doc[0] if doc else ''}{extra}")
        if verbose and _options(obj):
            lines.append("      options: " + ", ".join(_options(obj)))
    return lines


def run(args: argparse.Namespace) -> int:
    out: list[str] = []
    if args.what in ("tasks", "all"):
        out += _table("tasks", TASKS, args.verbose)
    if args.what in ("encoders", "all"):
        out += _table("encoders", ENCODERS, args.verbose)
    if args.what in ("data", "all"):
        out += _table("data kinds (use as --data KIND:PATH)", DATA, args.verbose)
    print("\n".join(out))
    return 0

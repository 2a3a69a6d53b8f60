"""``sslbench list``: the registered tasks, encoders and data kinds."""

from __future__ import annotations

import argparse
from typing import Any

from pretext.registry import DATA, ENCODERS, TASKS


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered pretext tasks, encoders and data kinds")
    p.add_argument("what", nargs="?", choices=["tasks", "encoders", "data", "all"], default="all")
    p.set_defaults(func=run)


def _table(title: str, registry: Any) -> list[str]:
    lines = [f"{title}:"]
    for name in registry.names():
        meta = registry.meta(name)
        obj = registry.get(name)
        doc = (getattr(obj, "__doc__", "") or "").strip().splitlines()
        tag = meta.get("modality", "")
        extra = f"  [plugin {meta['plugin']}]" if "plugin" in meta else ""
        lines.append(f"  {name:<24} {tag:<7} {doc[0] if doc else ''}{extra}")
    return lines


def run(args: argparse.Namespace) -> int:
    out: list[str] = []
    if args.what in ("tasks", "all"):
        out += _table("tasks", TASKS)
    if args.what in ("encoders", "all"):
        out += _table("encoders", ENCODERS)
    if args.what in ("data", "all"):
        out += _table("data kinds (use as --data KIND:PATH)", DATA)
    print("\n".join(out))
    return 0

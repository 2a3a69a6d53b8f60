"""``sslbench``: the command-line entry point.

Sub-commands are discovered from :mod:`benchmarks.commands`: every module there defines
``register(subparsers)``, which adds its parser and sets ``func=run`` with ``run(args) -> int``.
User errors (:class:`pretext.errors.UserError`) print as one line and exit 2; set
``MEDSSL_DEBUG=1`` (or pass ``--debug``) for the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

import benchmarks.commands as commands_pkg
from pretext.errors import NonFiniteLossError, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslbench",
        description="Self-supervised pretraining and label-efficiency benchmarks for 3D volumes and ECG/EEG.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MEDSSL_DEBUG") == "1"
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        if extra and not getattr(args, "accepts_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        return int(args.func(args) or 0)
    except UserError as err:
        if debug:
            raise
        print(f"sslbench: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        if debug:
            raise
        print(f"sslbench: stopped: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("sslbench: interrupted; the last checkpoint is kept: continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``sslbench``: the command-line entry point.

Sub-commands are discovered from :mod:`sslbench.commands`: every module there defines
``register(subparsers)``, which adds its parser and sets ``func=run`` with ``run(args) -> int``.
User errors (:class:`pretext.errors.UserError`, malformed YAML, a missing file, a full disk or a file-size limit)
print as one line and exit 2;
SIGTERM (pre-emption) checkpoints like Ctrl-C and exits 143 (Ctrl-C: 130); set
``MEDSSL_DEBUG=1`` (or pass ``--debug``) for the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import yaml

import sslbench.commands as commands_pkg
from pretext.atomic import disk_error
from pretext.errors import NonFiniteLossError, Preempted, UserError, raise_preempted


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
    previous = _install_sigterm()
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
    except yaml.YAMLError as err:  # a --config file or a recipe that is not valid YAML
        if debug:
            raise
        mark = getattr(err, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "the input"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        print(f"sslbench: error: malformed YAML in {where}: {problem}; fix the file (it must be a YAML mapping)",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        if debug:
            raise
        print(f"sslbench: error: {err.strerror or err}: {err.filename!r}; check the path", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        if debug:
            raise
        print(f"sslbench: stopped: {err}", file=sys.stderr)
        return 3
    except Preempted as err:
        where = (f"checkpoint written at step {err.step} to {err.checkpoint}; " if err.checkpoint else
                 "finished cells and the last checkpoint are kept; ")
        print(f"sslbench: terminated by SIGTERM (pre-emption); {where}continue with the same command "
              "(sslbench pretrain: add --resume; sslbench run/evaluate: it skips finished cells)", file=sys.stderr)
        return 143
    except KeyboardInterrupt as err:
        where = f" (step {getattr(err, 'step', None)}, {err.checkpoint})" if getattr(err, "checkpoint", None) else ""
        print(f"sslbench: interrupted; the last checkpoint is kept{where}: continue with --resume "
              "(sslbench run/evaluate: rerun the same command)", file=sys.stderr)
        return 130
    except Exception as err:  # a full disk or a file-size limit met outside the atomic writers (logs, reports)
        said = None if debug else disk_error(err)
        if said is None:
            raise
        print(f"sslbench: error: {said}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _install_sigterm() -> Any:
    """SIGTERM raises :class:`Preempted` everywhere in the CLI (training installs its own around its loop)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_preempted)


if __name__ == "__main__":
    sys.exit(main())

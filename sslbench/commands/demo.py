"""``sslbench demo``: the self-contained demo (what ``make demo`` runs); see :mod:`sslbench.demo`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from sslbench.demo import __doc__ as doc
    from sslbench.demo import build_parser

    p = sub.add_parser("demo", help="pretrain, probe at 1/10/100 %% labels and report, on generated data (~3 min)",
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    build_parser(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sslbench.demo import main

    return main(args=args)

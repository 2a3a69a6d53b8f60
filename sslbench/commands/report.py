"""``sslbench report DIR``: Markdown + HTML report with tables and PNG plots from a results folder."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write the Markdown/HTML report of a results folder (sslbench run/evaluate)",
                       description=__doc__)
    p.add_argument("folder", help="folder holding results.jsonl")
    p.add_argument("--out", default=None, help="report folder (default: FOLDER/report)")
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sslbench.reports import write_report

    paths = write_report(args.folder, out=args.out, title=args.title)
    print(f"report: {paths['markdown']} (HTML: {paths['html']}, plots in {paths['dir']})")
    return 0

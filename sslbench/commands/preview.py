"""``sslbench preview``: what the model is given, after preprocessing and before sampling, for a few items.

Volumes: the whole preprocessed scan (for a ``?patch=`` spec, the scan the patches are drawn from) as NIfTI and
a PNG of orthogonal mid-slices; signals: the whole stored record as a PNG of traces. One summary line per item
(source, shape and spacing or rate before and after, intensity range) is printed and written to
``DIR/summary.txt``. The same spec with and without ``patch=`` previews the same voxels.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from pretext.data import load_data
from pretext.errors import ConfigError
from pretext.modality import get_modality
from pretext.options import parse_value


def register(sub: Any) -> None:
    p = sub.add_parser("preview", help="write what the model is given for a few items (NIfTI/PNG + a summary)")
    p.add_argument("--data", required=True, help="data spec KIND:PATH?options, as for pretrain")
    p.add_argument("--out", required=True, help="folder for the previews (created)")
    p.add_argument("--n", type=int, default=4, help="items to preview (default 4)")
    p.add_argument("--split", default="train", help="which split (default train)")
    p.set_defaults(func=run)


def preview(spec: str, out: str | Path, n: int = 4, split: str = "train") -> list[str]:
    """Write previews of the first ``n`` records of ``split`` of ``spec`` under ``out``; return the summary lines."""
    n = parse_value(PositiveInt, n, "--n")
    data = load_data(spec)
    if split not in data.splits:
        raise ConfigError(f"--split {split!r} is not in the data; it has {sorted(data.splits)}")
    sp = data.splits[split]
    package = get_modality(data.modality).packages["data"][0].split(".")[0]  # the modality's own preview
    writer = importlib.import_module(f"{package}.preview").preview_item
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines, seen = [], set()
    for i in range(len(sp)):
        key = int(sp.records[i]) if hasattr(sp, "records") else i  # windows of one record: preview it once
        if key in seen:
            continue
        seen.add(key)
        lines.append(writer(sp, i, out, f"item{len(lines):02d}"))
        if len(lines) == n:
            break
    (out / "summary.txt").write_text(f"{spec}\n" + "\n".join(lines) + "\n")
    return lines


def run(args: argparse.Namespace) -> int:
    lines = preview(args.data, args.out, args.n, args.split)
    print("\n".join(lines))
    print(f"previews of {len(lines)} item(s) in {args.out} (summary.txt, item*.png" +
          (", item*.nii.gz)" if any(Path(args.out).glob("*.nii.gz")) else ")"))
    return 0

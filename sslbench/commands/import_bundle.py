"""``sslbench import-bundle``: a MONAI bundle's weights -> a medssl encoder checkpoint for fine-tuning."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pretext.config import parse_overrides


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-bundle",
        help="load a MONAI bundle's model.pt into one of our encoders (report matched/missing/unexpected keys)",
        description="Build an encoder for a MONAI bundle's network_def (our own bundles, or monai.networks.nets "
                    "classes through monai_net; or the encoder you name with --encoder and --encoder.KW VALUE), "
                    "copy the weights that fit, and write a checkpoint that sslbench evaluate fine-tunes.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder (configs/, models/model.pt)")
    p.add_argument("--out", required=True, help="checkpoint to write (.ckpt; encoder.safetensors is written beside)")
    p.add_argument("--encoder", default=None, help="registered encoder to load into (default: from network_def)")
    p.add_argument("--config", default=None, help="config under configs/ holding the network (default inference.json)")
    p.add_argument("--net-id", default="network_def", help="id of the network in the config")
    p.add_argument("--report", default=None, help="also write the key report as JSON here")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from pretext.bundle.importer import import_bundle

    kwargs = parse_overrides(list(getattr(args, "extra", [])), "sslbench import-bundle", scopes=("encoder",))["encoder"]
    report = import_bundle(args.bundle, args.out, encoder=args.encoder, encoder_kwargs=kwargs, config=args.config,
                           net_id=args.net_id)
    print(report.summary())
    print(f"checkpoint written: {args.out}  (fine-tune it: sslbench evaluate --checkpoint {args.out} ...)")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    return 0

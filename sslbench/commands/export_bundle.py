"""``sslbench export-bundle``: a pretrained encoder or fine-tuned classifier checkpoint -> a MONAI bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pretext.config import parse_overrides
from pretext.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export-bundle",
        help="write a MONAI bundle (metadata, inference/train/pretrain configs, weights, TorchScript, docs)",
        description="Export a checkpoint (sslbench pretrain's checkpoints/last.ckpt, a run folder, or a fine-tuned "
                    "classifier) as a MONAI bundle, then verify it with MONAI's verify_metadata and verify_net_in_out. "
                    "Encoder options can be overridden with --encoder.KW VALUE.",
    )
    p.add_argument("--checkpoint", required=True,
                   help="a .ckpt with run_config, a run folder, or an encoder.safetensors with run_config metadata")
    p.add_argument("--out", required=True, help="bundle folder to create (must not exist)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the head that configs/train.json adds to an encoder bundle (default 2)")
    p.add_argument("--imaging-modality", default=None,
                   help='DICOM-style modality of the input for metadata ("CT", "MR", "EKG", "EEG"; default: guessed)')
    p.add_argument("--version", default="0.1.0", help="bundle version (default 0.1.0)")
    p.add_argument("--authors", default="medssl contributors")
    p.add_argument("--results", default=None,
                   help="JSON file of downstream metrics ({name: value}) for the README and eval_metrics")
    p.add_argument("--no-torchscript", action="store_true", help="do not write models/model.ts")
    p.add_argument("--no-verify", action="store_true", help="skip MONAI's checks after writing")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from pretext.bundle import export_bundle
    from pretext.bundle.verify import verify_bundle

    results = None
    if args.results:
        try:
            results = json.loads(Path(args.results).read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"--results {args.results!r} is not a readable JSON file: {err}") from err
        if not isinstance(results, dict):
            raise UserError(f"--results {args.results!r} must hold a JSON object of metric -> value")
    out = export_bundle(args.checkpoint, args.out, encoder_overrides=parse_overrides(
        list(getattr(args, "extra", [])), "sslbench export-bundle", scopes=("encoder",))["encoder"],
                        num_classes=args.num_classes, imaging_modality=args.imaging_modality, version=args.version,
                        authors=args.authors, torchscript=not args.no_torchscript, results=results)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"bundle written: {out}")
    for f in files:
        print(f"  {f}")
    if not args.no_verify:
        for check, result in verify_bundle(out).items():
            print(f"  check {check}: {result}")
    print(f"run it: python -m monai.bundle run --config_file {out}/configs/inference.json "
          f"--meta_file {out}/configs/metadata.json --bundle_root {out} --dataset_dir IMAGES_FOLDER")
    return 0

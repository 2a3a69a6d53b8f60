"""``sslbench evaluate``: label-efficiency evaluation of a pretrained checkpoint, with both baselines."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import PositiveInt

from pretext.config import build_config
from pretext.options import parse_value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="probe / fine-tune a pretrained checkpoint at several label fractions and seeds",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sslbench evaluate --checkpoint runs/rot/checkpoints/last.ckpt "
               "--data medmnist3d:../shared/data/adrenalmnist3d/adrenalmnist3d.npz --protocol linear "
               "--fractions 0.01,0.1,1 --seeds 0,1,2 --out runs/eval",
    )
    p.add_argument("--checkpoint", required=True, help="last.ckpt, encoder.safetensors or the run folder")
    p.add_argument("--data", required=True, help="labelled data spec KIND:PATH[?opt=val]")
    p.add_argument("--protocol", default="linear", help="linear|knn|partial|finetune (comma-separated for several)")
    p.add_argument("--fractions", default="0.01,0.1,1", help="label fractions, drawn by patient (default 0.01,0.1,1)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the label draws (default 0,1,2)")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, feature cache)")
    p.add_argument("--baselines", default="random,scratch", help="random,scratch (or 'none')")
    p.add_argument("--k", type=int, default=None, help="patient-wise k-fold when the data has no official test split")
    p.add_argument("--fold", type=int, default=0, help="test fold for --k")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--finetune-steps", type=int, default=None, help="max fine-tuning steps")
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning learning rate")
    p.add_argument("--layer-decay", type=float, default=None, help="layer-wise LR decay for finetune (1 = off)")
    p.add_argument("--k-blocks", type=int, default=None, help="trained blocks for the partial protocol")
    p.add_argument("--drop-unlabelled", action="store_true", help="leave out records without a label")
    p.add_argument("--strict-fractions", action="store_true",
                   help="fail when a fraction leaves a class empty (default: add one patient of that class)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (at least 1)")
    p.add_argument("--min-test-patients", dest="min_test_patients", type=int, default=20,
                   help="warn when a class has fewer test patients than this; their intervals show n/a when "
                        "undefined (default 20; 0: no warning)")
    p.add_argument("--max-items", dest="max_items", type=int, default=None,
                   help="a quick check: cut each evaluation split to about N records (default $MEDSSL_MAX_ITEMS; "
                        "not for results)")
    p.add_argument("--extend", action="store_true",
                   help="add new cells (protocols, fractions, seeds, baselines) to an --out holding this checkpoint's "
                        "results; without it a different set is refused")
    p.add_argument("--report", action="store_true", help="write the report into --out at the end")
    p.add_argument("--save-models", action="store_true",
                   help="save each fine-tuned classifier under OUT/models/ (export with sslbench export-bundle)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from sslbench.evaluate import EVAL_FLAGS, FINETUNE_FLAGS, EvalOptions, evaluate
    from sslbench.probes import FinetuneConfig

    if args.threads is not None:
        torch.set_num_threads(parse_value(PositiveInt, args.threads, "--threads"))
    baselines = [] if args.baselines in ("", "none") else args.baselines
    opts = build_config(EvalOptions, {"protocols": args.protocol, "fractions": args.fractions, "seeds": args.seeds,
                                      "baselines": baselines, "n_boot": args.n_boot, "k": args.k, "fold": args.fold,
                                      "min_test_patients": args.min_test_patients, "max_items": args.max_items},
                      "evaluate", flags=EVAL_FLAGS)
    given = {"steps": args.finetune_steps, "lr": args.finetune_lr, "layer_decay": args.layer_decay,
             "k_blocks": args.k_blocks}
    ft = build_config(FinetuneConfig, {k: v for k, v in given.items() if v is not None}, "finetune",
                      flags=FINETUNE_FLAGS)
    df = evaluate(args.checkpoint, args.data, protocol=opts.protocols, fractions=opts.fractions, seeds=opts.seeds,
                  out=args.out, baselines=opts.baselines, finetune=ft, k=opts.k, fold=opts.fold, n_boot=opts.n_boot,
                  drop_unlabelled=args.drop_unlabelled, strict_fractions=args.strict_fractions,
                  save_models=args.save_models, extend=args.extend, min_test_patients=opts.min_test_patients,
                  max_items=opts.max_items, log=print)
    cols = [c for c in ("task", "arm", "protocol", "fraction", "seed", "auroc", "auroc_lo", "auroc_hi", "accuracy")
            if c in df.columns]
    for c in cols[5:]:  # metric columns: None (an undefined interval) shows as n/a
        df[c] = pd.to_numeric(df[c], errors="coerce")
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="n/a"))
    print(f"results: {args.out}/results.jsonl")
    if args.report:
        from sslbench.reports import write_report

        paths = write_report(args.out)
        print(f"report: {paths['markdown']}")
    return 0

"""``sslbench run RECIPE.yaml --out DIR``: run a benchmark recipe (resumable; one JSON line per cell)."""

from __future__ import annotations

import argparse
from typing import Any

from pretext.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a benchmark recipe (tasks x encoders x datasets x protocols x fractions x seeds)",
        description=__doc__ + "\n\nRerunning with the same --out skips finished cells and resumes pretraining "
        "from its last checkpoint.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sslbench run benchmarks/recipes/adrenalmnist3d.yaml --out runs/adrenal --report",
    )
    p.add_argument("recipe", help="recipe YAML (see benchmarks/recipes/)")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, pretrain/, features/)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=SPEC",
                   help="replace dataset NAME's data spec (repeatable), e.g. adrenal28=medmnist3d:/data/x.npz")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a recipe key (dotted, YAML value; repeatable), e.g. pretrain.steps=100, seeds=[0]")
    p.add_argument("--dry-run", action="store_true", help="check the recipe and print the number of cells only")
    p.add_argument("--extend", action="store_true",
                   help="add new cells (seeds, fractions, protocols, tasks, datasets) to an --out that holds this "
                        "recipe's finished cells; without it a different matrix is refused")
    p.add_argument("--report", action="store_true", help="write the report (sslbench report) at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.runner import load_recipe, run_recipe

    overrides = {}
    for item in args.data:
        name, eq, spec = item.partition("=")
        if not eq or not name or not spec:
            raise ConfigError(f"--data {item!r} must read NAME=KIND:PATH")
        overrides[name] = spec
    recipe = load_recipe(args.recipe, overrides, args.sets)
    if args.dry_run:
        print(f"recipe {recipe.name}: {recipe.n_cells()} cells over datasets {sorted(recipe.datasets)}, "
              f"(task, encoder) pairs {recipe.pairs()}, protocols {recipe.protocols}, fractions {recipe.fractions}, "
              f"seeds {recipe.seeds}")
        return 0
    run_recipe(recipe, args.out, extend=args.extend)
    if args.report:
        from benchmarks.reports import write_report

        paths = write_report(args.out)
        print(f"report: {paths['markdown']} (HTML: {paths['html']})")
    return 0

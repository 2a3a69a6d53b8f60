"""Trivial-solution losses of each pretext task on AdrenalMNIST3D, to read the curves against.

* rotation / slice_order: chance cross-entropy ``ln(K)``;
* pixel_shuffle (MSE): predicting zeros everywhere (``mean(x^2)``; the masks are mostly 0), and
  returning the corrupted input (the ``identity_loss`` column of the run);
* mae3d with ``norm_pix_loss``: predicting each masked patch's mean (0 after normalisation), which
  needs no information: the share of non-constant patches;
* mae3d with raw targets: predicting the global mean intensity (the voxel variance).

Usage: ``python benchmarks/results/volume/baselines.py --out benchmarks/results/volume/baselines.json``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from pretext.data import load_data
from volssl.transforms import patchify

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "adrenalmnist3d"


def volumes(spec: str) -> torch.Tensor:
    tr = load_data(spec).splits["train"]
    return torch.stack([tr.load(i) for i in range(len(tr))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, float] = {"rotation_chance_ce": math.log(10), "slice_order_chance_ce": math.log(10)}
    for name, query in (("28", ""), ("28_pad32", "?pad_to=32"), ("64", "?size=64")):
        x = volumes(f"medmnist3d:{DATA}{query}")
        out[f"pixel_shuffle_zero_prediction_mse_{name}"] = float((x ** 2).mean())
        out[f"mae_raw_global_mean_mse_{name}"] = float(x.var(unbiased=False))
        for p in (4, 8, 16):
            if all(s % p == 0 for s in x.shape[2:]):
                var = patchify(x, (p,) * 3).var(-1, unbiased=False)
                out[f"mae_normpix_patch_mean_{name}_p{p}"] = float((var / (var + 1e-6)).mean())
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

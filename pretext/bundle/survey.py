"""Export every registered encoder (random weights, small sizes) as a bundle and run :func:`verify_bundle`.

``python -m pretext.bundle.survey [--out DIR]`` prints one line per encoder: seconds for export +
checks, and the result of MONAI's verify_metadata / verify_net_in_out, the ConfigParser build and the
TorchScript reload comparison. For maintainers adding an encoder: a failure names the cause.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch

#: options that keep each built-in encoder small enough for a CPU check
SIZES: dict[str, dict[str, Any]] = {"volume": {"in_channels": 1, "img_size": [16, 16, 16]},
                                     "signal": {"n_chans": 2, "n_times": 256, "sfreq": 100.0}}
SMALL: dict[str, dict[str, Any]] = {
    "resnet18_3d": {"widen_factor": 0.25},
    "resnet50_3d": {"widen_factor": 0.125},
    "vit_3d": {"embed_dim": 48, "depth": 1, "num_heads": 2},
    "monai_net": {"net": "ResNet", "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 16, 32]},
}


def survey(out: Path) -> list[tuple[str, float, str]]:
    """``(encoder, seconds, result)`` for every registered encoder."""
    from pretext.bundle import export_bundle
    from pretext.bundle.verify import verify_bundle
    from pretext.engine.checkpoint import save_checkpoint
    from pretext.registry import ENCODERS, create_encoder, list_encoders

    rows = []
    for name in list_encoders():
        kw: dict[str, Any] = dict(SIZES[cast(str, ENCODERS.meta(name).get("modality"))])
        kw.update(SMALL.get(name, {}))
        t0 = time.perf_counter()
        try:
            enc = create_encoder(name, **{k: tuple(v) if k == "img_size" else v for k, v in kw.items()})
            ckpt = out / f"{name}.ckpt"
            save_checkpoint(ckpt, {"model": {f"encoder.{k}": v for k, v in enc.state_dict().items()},
                                   "run_config": {"task": "survey", "encoder": name, "encoder_cfg": kw, "data": ""}})
            checks = verify_bundle(export_bundle(ckpt, out / name))
            result = "; ".join(f"{k}: {v}" for k, v in checks.items())
            if "torchscript" not in checks:
                result += "; torchscript: not exported (see the bundle README)"
        except Exception as err:  # noqa: BLE001 - report and go on
            result = f"FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        rows.append((name, time.perf_counter() - t0, result))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the bundles (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        rows = survey(out)
    for name, sec, result in rows:
        print(f"{name:26s} {sec:6.1f}s  {result}")
    return int(any(r.startswith("FAILED") for _, _, r in rows))


if __name__ == "__main__":
    raise SystemExit(main())

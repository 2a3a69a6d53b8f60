"""Volume performance benchmark: Models Genesis corruptions and training steps, with references run in
the same process.

1. Local pixel shuffling at 64x64x32 (the Models Genesis cube), one CPU thread, paper semantics
   (10,000 blocks, sides up to dim/10, blocks read the uncorrupted input, later blocks win):
   ours (numba kernel; and the batched tensor path used on GPUs) vs a plain NumPy loop with the same
   semantics (:func:`volssl.transforms.shuffle.shuffle_blocks_loop`) vs MONAI ``RandCoarseShuffle``
   with 10,000 holes of the same size range.
2. The whole Models Genesis chain (flips, shuffle, Bezier remap, in/out-painting; all applied), batch 8,
   cubes/s: ours (numba kernels), the same chain with only the shuffle in numba (the previous
   implementation), the tensor path (the GPU path) on CPU, and a plain NumPy chain (:func:`benchmarks.bench_volume_chain.numpy_chain`);
   ratios against the shuffle alone and these references, measured in interleaved rounds; per-stage costs.
3. One ``mae3d`` training step (forward, backward, AdamW) vs MONAI ``MaskedAutoEncoderViT`` of the
   same size, volumes/s and ratio.
4. One training step of every volume task at 28^3 (volumes/s).

Usage: ``python benchmarks/bench_volume.py [--quick] [--parts shuffle,chain] [--device cuda] [--out DIR]``
(``--parts`` reruns some parts and keeps the others of the JSON already in ``DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_volume_chain import bench_chain, chain_markdown, timed  # noqa: E402
from pretext.registry import create_encoder, create_task  # noqa: E402
from volssl.transforms import RandomLocalPixelShuffle, patchify  # noqa: E402
from volssl.transforms.shuffle import random_blocks, shuffle_blocks_loop  # noqa: E402


def bench_shuffle(quick: bool) -> dict[str, Any]:
    shape = (64, 64, 32)
    x1 = torch.rand(1, 1, *shape)
    g = torch.Generator().manual_seed(0)
    res: dict[str, Any] = {"shape": shape, "num_blocks": 10000, "max_block": [s // 10 for s in shape]}

    # exactness: numba kernel == batched tensor path, on the same parameters
    xb = torch.rand(2, 1, *shape)
    p = RandomLocalPixelShuffle().get_params(xb.shape, g)
    res["numba_equals_tensor_path"] = bool(torch.equal(dataclasses.replace(p, backend="numba")(xb),
                                                       dataclasses.replace(p, backend="torch")(xb)))

    n = 50 if quick else 300
    shuffle, shuffle_t = RandomLocalPixelShuffle(), RandomLocalPixelShuffle(backend="torch")
    t = timed(lambda: shuffle(x1, g), n, warmup=3)
    res["ours_numba_b1"] = {"cubes_per_s_wall": 1 / t["wall_s"], "cubes_per_s_cpu": 1 / t["cpu_s"]}
    x8 = torch.rand(8, 1, *shape)
    t = timed(lambda: shuffle(x8, g), max(5, n // 8), warmup=1)
    res["ours_numba_b8"] = {"cubes_per_s_wall": 8 / t["wall_s"], "cubes_per_s_cpu": 8 / t["cpu_s"]}
    t = timed(lambda: shuffle_t(x1, g), 2 if quick else 4, warmup=1)
    res["ours_tensor_path_cpu_b1"] = {"cubes_per_s_wall": 1 / t["wall_s"], "cubes_per_s_cpu": 1 / t["cpu_s"]}

    xn, rng = x1[0].numpy(), np.random.default_rng(0)
    t = timed(lambda: shuffle_blocks_loop(xn, random_blocks(rng, shape)), 3 if quick else 10, warmup=1)
    res["numpy_loop"] = {"cubes_per_s_wall": 1 / t["wall_s"], "cubes_per_s_cpu": 1 / t["cpu_s"]}

    from monai.transforms import RandCoarseShuffle

    mon = RandCoarseShuffle(holes=10000, spatial_size=1, max_spatial_size=[s // 10 for s in shape], prob=1.0)
    mon.set_random_state(0)
    t = timed(lambda: mon(xn), 2 if quick else 5, warmup=1)
    res["monai_RandCoarseShuffle"] = {"cubes_per_s_wall": 1 / t["wall_s"], "cubes_per_s_cpu": 1 / t["cpu_s"]}

    ours = res["ours_numba_b1"]
    for ref in ("numpy_loop", "monai_RandCoarseShuffle", "ours_tensor_path_cpu_b1"):
        for k in ("wall", "cpu"):
            res[f"ratio_ours_vs_{ref}_{k}"] = ours[f"cubes_per_s_{k}"] / res[ref][f"cubes_per_s_{k}"]
    res["target_cubes_per_s"] = 400
    return res


def _train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn().backward()
    opt.step()


def bench_mae(quick: bool, device: torch.device, precision: str) -> dict[str, Any]:
    from monai.networks.nets import MaskedAutoEncoderViT

    img, patch, batch = (64, 64, 64), 16, 8
    size = {"hidden": 384, "layers": 6, "heads": 6, "mlp": 1536, "dec_hidden": 192, "dec_layers": 2, "dec_heads": 6}
    x = torch.rand(batch, 1, *img, device=device)
    enc = create_encoder("vit_3d", img_size=img, patch_size=patch, embed_dim=size["hidden"], depth=size["layers"],
                         num_heads=size["heads"], mlp_ratio=size["mlp"] / size["hidden"], qkv_bias=False)
    ours = create_task("mae3d", enc, norm_pix_loss=False, decoder_dim=size["dec_hidden"],
                       decoder_depth=size["dec_layers"], decoder_heads=size["dec_heads"]).to(device)
    mon = MaskedAutoEncoderViT(in_channels=1, img_size=img, patch_size=patch, hidden_size=size["hidden"],
                               mlp_dim=size["mlp"], num_layers=size["layers"], num_heads=size["heads"],
                               masking_ratio=0.75, decoder_hidden_size=size["dec_hidden"],
                               decoder_mlp_dim=size["dec_hidden"] * 4, decoder_num_layers=size["dec_layers"],
                               decoder_num_heads=size["dec_heads"]).to(device)
    g = torch.Generator().manual_seed(0)
    auto = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None

    def ours_loss() -> torch.Tensor:
        if auto:
            with auto():
                return ours({"x": x}, generator=g)["loss"]
        return ours({"x": x}, generator=g)["loss"]

    def monai_loss() -> torch.Tensor:
        def f() -> torch.Tensor:
            pred, mask = mon(x)
            target = patchify(x, (patch,) * 3)  # our loss builds its target inside the step too
            return (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum()

        if auto:
            with auto():
                return f()
        return f()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_m = torch.optim.AdamW(mon.parameters(), lr=1e-4)
    n = 3 if quick else 8
    res: dict[str, Any] = {"img_size": img, "patch": patch, "batch": batch, "precision": precision, **size,
                           "params_ours": sum(p.numel() for p in ours.parameters()),
                           "params_monai": sum(p.numel() for p in mon.parameters())}
    rounds = 3 if quick else 5
    for r in range(rounds):  # interleave, alternating the order, to share the machine's load fairly
        pair = [("ours", ours, ours_loss, opt_o), ("monai", mon, monai_loss, opt_m)]
        for name, model, fn, opt in pair if r % 2 == 0 else reversed(pair):
            t = timed(lambda model=model, fn=fn, opt=opt: _train_step(model, fn, opt), n, warmup=1, sync=sync)
            res.setdefault(f"{name}_volumes_per_s_wall", []).append(batch / t["wall_s"])
            res.setdefault(f"{name}_volumes_per_s_cpu", []).append(batch / t["cpu_s"])
    for k in ("wall", "cpu"):
        ratios = [o / m for o, m in zip(res[f"ours_volumes_per_s_{k}"], res[f"monai_volumes_per_s_{k}"], strict=True)]
        res[f"ratio_ours_vs_monai_{k}_per_round"] = ratios
        res[f"ratio_ours_vs_monai_{k}"] = float(np.median(ratios))
    return res


def bench_tasks(quick: bool, device: torch.device, precision: str) -> dict[str, Any]:
    img, batch = (28, 28, 28), 8
    x = torch.rand(batch, 1, *img, device=device)
    setups = {
        "rotation": ("resnet18_3d", {"widen_factor": 0.5}, {}),
        "slice_order": ("resnet18_3d", {"widen_factor": 0.5}, {}),
        "pixel_shuffle": ("resnet18_3d", {"widen_factor": 0.5}, {}),
        "mae3d": ("vit_3d", {"embed_dim": 192, "depth": 4, "num_heads": 6}, {}),
        "combined": ("resnet18_3d", {"widen_factor": 0.5}, {"tasks": ("rotation", "pixel_shuffle")}),
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {}
    for name, (enc_name, ekw, tkw) in setups.items():
        task = create_task(name, create_encoder(enc_name, img_size=img, **ekw), **tkw).to(device)
        opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)

        def loss(task=task, g=g) -> torch.Tensor:  # noqa: ANN001
            if precision == "bf16":
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return task({"x": x}, generator=g)["loss"]
            return task({"x": x}, generator=g)["loss"]

        t = timed(lambda task=task, loss=loss, opt=opt: _train_step(task, loss, opt), 2 if quick else 4, warmup=1,
                  sync=sync)
        out[name] = {"encoder": enc_name, "encoder_kwargs": ekw, "img_size": img, "batch": batch,
                     "volumes_per_s_wall": batch / t["wall_s"], "volumes_per_s_cpu": batch / t["cpu_s"]}
    return out


def _md_shuffle(s: dict[str, Any]) -> list[str]:
    lines = ["## Local pixel shuffling, 64x64x32, one thread (paper semantics, 10,000 blocks)", "",
             "| implementation | cubes/s (wall) | cubes/s (CPU time) |", "|---|---:|---:|"]
    for k in ("ours_numba_b1", "ours_numba_b8", "ours_tensor_path_cpu_b1", "numpy_loop", "monai_RandCoarseShuffle"):
        lines.append(f"| {k} | {s[k]['cubes_per_s_wall']:.1f} | {s[k]['cubes_per_s_cpu']:.1f} |")
    return lines + ["", f"Ours vs the NumPy loop (same semantics): x{s['ratio_ours_vs_numpy_loop_wall']:.1f} (wall), "
                    f"x{s['ratio_ours_vs_numpy_loop_cpu']:.1f} (CPU). Ours vs MONAI RandCoarseShuffle: "
                    f"x{s['ratio_ours_vs_monai_RandCoarseShuffle_wall']:.1f} (wall), "
                    f"x{s['ratio_ours_vs_monai_RandCoarseShuffle_cpu']:.1f} (CPU). Target: {s['target_cubes_per_s']} "
                    f"cubes/s. numba kernel == tensor path on the same parameters: {s['numba_equals_tensor_path']}.", ""]


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Volume benchmark", "",
        f"Machine: {r['machine']}; torch threads: {r['threads']}; device: {r['device']}; precision: {r['precision']}.",
        "CPU timings share a 2-core machine with other jobs: wall-clock rates are depressed by the load,"
        " process-CPU rates are closer to an idle core. Ratios compare runs made in the same process.", "",
    ]
    lines += _md_shuffle(r["shuffle"]) if "shuffle" in r else []
    lines += chain_markdown(r["chain"]) if "chain" in r else []
    lines += _md_mae_tasks(r) if "mae" in r and "tasks" in r else []
    parts = [k for k in ("shuffle", "chain", "mae", "tasks") if k in r]
    lines += ["Measured at (UTC): " + ", ".join(f"{k} {r[k].get('time_utc', r['time_utc'])}" for k in parts) + "."]
    return "\n".join(lines) + "\n"


def _md_mae_tasks(r: dict[str, Any]) -> list[str]:
    lines = ["## mae3d training step vs MONAI MaskedAutoEncoderViT (same size)", ""]
    m = r["mae"]
    lines += [f"64^3, patch 16, batch {m['batch']}, hidden {m['hidden']}, {m['layers']} layers, decoder {m['dec_hidden']} x "
              f"{m['dec_layers']}; params ours {m['params_ours']:,} / MONAI {m['params_monai']:,}.", "",
              "| | volumes/s (wall, median of rounds) | volumes/s (CPU, median) |", "|---|---:|---:|",
              f"| ours mae3d + vit_3d | {np.median(m['ours_volumes_per_s_wall']):.2f} | {np.median(m['ours_volumes_per_s_cpu']):.2f} |",
              f"| MONAI MaskedAutoEncoderViT | {np.median(m['monai_volumes_per_s_wall']):.2f} | {np.median(m['monai_volumes_per_s_cpu']):.2f} |",
              "", f"Ratio ours/MONAI (median of {len(m['ratio_ours_vs_monai_cpu_per_round'])} interleaved rounds): "
              f"x{m['ratio_ours_vs_monai_wall']:.2f} (wall), x{m['ratio_ours_vs_monai_cpu']:.2f} (CPU). Ours embeds only the "
              "visible patches (a linear map equal to the patch conv); MONAI embeds all patches then drops 75%.", "",
              "## One training step per task, 28^3, batch 8", "", "| task | encoder | volumes/s (wall) | volumes/s (CPU) |",
              "|---|---|---:|---:|"]
    for k, v in r["tasks"].items():
        if isinstance(v, dict) and "encoder" in v:
            lines.append(f"| {k} | {v['encoder']} {v['encoder_kwargs']} | {v['volumes_per_s_wall']:.1f} | "
                         f"{v['volumes_per_s_cpu']:.1f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--parts", default="shuffle,chain,mae,tasks",
                    help="parts to run; the others are kept from the JSON already in --out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="32 or bf16 (default: bf16 on cuda, 32 on cpu)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "volume")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "32")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    path = args.out / f"bench_volume{suffix}.json"
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"shuffle", "chain", "mae", "tasks"})
    if unknown:
        ap.error(f"--parts {unknown} unknown; choose from shuffle, chain, mae, tasks")
    r: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and len(parts) < 4 else {}
    for kept in set(r) & {"shuffle", "chain", "mae", "tasks"}:
        r[kept].setdefault("time_utc", r["time_utc"])  # a part kept from an earlier run keeps its time
    r.update({"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": args.threads,
              "device": str(device), "precision": precision, "torch": torch.__version__,
              "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    run = {"shuffle": lambda: bench_shuffle(args.quick), "chain": lambda: bench_chain(args.quick, device),
           "mae": lambda: bench_mae(args.quick, device, precision),
           "tasks": lambda: bench_tasks(args.quick, device, precision)}
    for part in parts:
        r[part] = {**run[part](), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick}
        print(json.dumps(r[part], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    (args.out / f"bench_volume{suffix}.md").write_text(to_markdown(r))
    print(to_markdown(r))


if __name__ == "__main__":
    main()

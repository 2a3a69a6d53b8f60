"""The Models Genesis chain part of ``benchmarks/bench_volume.py``, and the timing helpers of both.

The whole chain (flips, shuffle, Bezier remap, in/out-painting; all applied), batch 8 at 64x64x32: ours
(numba kernels) against the shuffle alone, the same chain with only the shuffle in numba (the previous
implementation), the tensor path (the GPU path) on CPU and a plain NumPy chain (:func:`numpy_chain`), in
interleaved rounds; each stage alone on each path; and the tensor path's op and byte count for a batch as a
GPU runs it (:func:`tensor_path_work`, the basis of its expected GPU cost).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pretext.transforms import Compose
from volssl.tasks.pixel_shuffle import PixelShuffle, genesis_corrupt
from volssl.transforms import RandomBezierRemap, RandomFlip, RandomLocalPixelShuffle, RandomPainting
from volssl.transforms.shuffle import random_blocks, shuffle_blocks_loop


def timed(fn: Callable[[], Any], n: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Run ``fn`` ``n`` times after ``warmup``; wall and process-CPU seconds per call."""
    for _ in range(warmup):
        fn()
    sync()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    sync()
    return {"wall_s": (time.perf_counter() - w) / n, "cpu_s": (time.process_time() - c) / n}


def rounds(fns: dict[str, tuple[Callable[[], Any], int]], n_rounds: int,
           sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds (order reversed every other round, so a changing machine load hits all alike):
    ``fns`` maps a name to ``(fn, calls per round)``; returns wall and process-CPU seconds per call, per round."""
    for fn, _ in fns.values():
        fn()
    out: dict[str, dict[str, list[float]]] = {k: {"wall_s": [], "cpu_s": []} for k in fns}
    for r in range(n_rounds):
        for name in list(fns) if r % 2 == 0 else reversed(list(fns)):
            fn, n = fns[name]
            t = timed(fn, n, warmup=0, sync=sync)
            out[name]["wall_s"].append(t["wall_s"])
            out[name]["cpu_s"].append(t["cpu_s"])
    return out


def bench_chain(quick: bool, device: torch.device) -> dict[str, Any]:
    """The whole chain (all probabilities 1, flips at the paper's 0.4), batch 8 at 64x64x32, against the shuffle
    alone and the references; then each stage alone on each path."""
    cfg = PixelShuffle.Config(local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0)
    b, shape = 8, (64, 64, 32)
    x = torch.rand(b, 1, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def stages(backend: dict[str, str]) -> dict[str, Any]:
        return {"flip": RandomFlip(cfg.flip_rate, backend=backend["flip"]),
                "shuffle": RandomLocalPixelShuffle(cfg.num_blocks, None, cfg.local_rate, backend["shuffle"]),
                "bezier": RandomBezierRemap(cfg.nonlinear_rate, cfg.bezier_points, backend=backend["bezier"]),
                "painting": RandomPainting(cfg.paint_rate, cfg.inpaint_rate, backend=backend["painting"])}

    def chain(backend: dict[str, str]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        st = stages(backend)
        rest = Compose([st["shuffle"], st["bezier"], st["painting"]])

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            target = st["flip"](x, g)
            return rest(target, g), target
        return run

    every = dict.fromkeys(("flip", "shuffle", "bezier", "painting"), "torch")
    before = {**every, "shuffle": "auto"}  # the previous implementation: numba for the shuffle only
    res: dict[str, Any] = {"batch": b, "shape": list(shape), "all_probabilities_1": True, "flip_rate": cfg.flip_rate,
                           "num_blocks": cfg.num_blocks, "bezier_points": cfg.bezier_points, "device": str(device)}
    # exactness: same draws, same views, on every path
    outs = {}
    for name, fn in (("genesis_corrupt", lambda: genesis_corrupt(x, g, cfg)),
                     ("numba_shuffle_only", chain(before)), ("tensor_path", chain(every))):
        g.manual_seed(1)
        outs[name] = fn()
    res["paths_bit_identical"] = all(torch.equal(a, c) for o in outs.values()
                                     for a, c in zip(o, outs["genesis_corrupt"], strict=True))

    fns: dict[str, tuple[Callable[[], Any], int]] = {
        "ours": (lambda: genesis_corrupt(x, g, cfg), 2 if quick else 5),
        "shuffle_alone": (lambda: stages(dict.fromkeys(every, "auto"))["shuffle"](x, g), 2 if quick else 5),
    }
    if device.type == "cpu":
        fns["numba_shuffle_only"] = (chain(before), 1 if quick else 3)
        fns["tensor_path"] = (chain(every), 1)
    rng, xn = np.random.default_rng(0), x.cpu().numpy()
    fns["numpy_chain"] = (lambda: [numpy_chain(v, rng, cfg) for v in xn], 1)
    t = rounds(fns, 2 if quick else 5, sync)
    for name, v in t.items():
        res[name] = {f"cubes_per_s_{k}": b / statistics.median(v[f"{k}_s"]) for k in ("wall", "cpu")}
        res[name]["rounds_cpu_s"] = v["cpu_s"]
    for ref in fns:
        if ref != "ours":
            for k in ("wall", "cpu"):
                res[f"ratio_ours_vs_{ref}_{k}"] = res["ours"][f"cubes_per_s_{k}"] / res[ref][f"cubes_per_s_{k}"]
    res["target_cubes_per_s"] = 360
    res["target_vs_shuffle_alone"] = 360 / 950  # the target was set against the shuffle's ~950 cubes/s (idle core)

    # each stage alone, milliseconds of process CPU per cube (median of rounds)
    paths = {"kernels": dict.fromkeys(every, "auto"), "tensor_path": every} if device.type == "cpu" else {
        "tensor_path": every}
    stage_fns = {}
    for path, backend in paths.items():
        for name, tr in stages(backend).items():
            slow = path == "tensor_path" and name == "shuffle"
            stage_fns[f"{path}/{name}"] = (lambda tr=tr: tr(x, g), 1 if slow or quick else 3)
    t = rounds(stage_fns, 2 if quick else 3, sync)
    res["stage_ms_per_cube_cpu"] = {k: 1e3 * statistics.median(v["cpu_s"]) / b for k, v in t.items()}
    res["stage_ms_per_cube_wall"] = {k: 1e3 * statistics.median(v["wall_s"]) / b for k, v in t.items()}
    res["tensor_path_work_b32"] = tensor_path_work(cfg, shape)
    return res


def tensor_path_work(cfg: Any, shape: tuple[int, ...], batch: int = 32) -> dict[str, Any]:
    """Kernel launches (tensor ops that are not views) and bytes of new tensors of the tensor path for one batch
    as a GPU runs it (the shuffle with the GPU's chunk size): the basis of its expected GPU cost."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops, new_bytes = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                self.ops += 1
                if not func.__name__.split(".")[0].endswith("_"):  # in-place ops allocate nothing
                    outs = out if isinstance(out, tuple | list) else [out]
                    self.new_bytes += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))
            return out

    from volssl.transforms.shuffle import CHUNK_TABLE_BYTES, shuffle_torch

    x = torch.rand(batch, 1, *shape)
    g = torch.Generator().manual_seed(0)
    shuffle = RandomLocalPixelShuffle(cfg.num_blocks, None, cfg.local_rate, "torch").get_params(x.shape, g)
    chunk = max(1, CHUNK_TABLE_BYTES // (cfg.num_blocks * math.prod(shuffle.max_block) * 8))
    rest = Compose([RandomFlip(cfg.flip_rate, backend="torch"),
                    RandomBezierRemap(cfg.nonlinear_rate, cfg.bezier_points, backend="torch"),
                    RandomPainting(cfg.paint_rate, cfg.inpaint_rate, backend="torch")]).get_params(x.shape, g)
    out: dict[str, Any] = {"batch": batch, "shuffle_chunk": chunk}
    for name, fn in (("shuffle", lambda: shuffle_torch(x, shuffle.seeds, shuffle.enabled, shuffle.max_block, chunk)),
                     ("flip_bezier_painting", lambda: rest(x))):
        with Count() as c:
            fn()
        out[name] = {"ops": c.ops, "new_gb": c.new_bytes / 1e9}
    return out


# -- a plain NumPy Models Genesis chain (our own straightforward code; one volume at a time) --------------


def numpy_chain(volume: np.ndarray, rng: np.random.Generator, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The Models Genesis corruption of one volume ``(C, D, H, W)`` in ``[0, 1]``, step by step in NumPy.

    The paper's steps and rates (``cfg``: a :class:`PixelShuffle.Config`): up to three random flips (the
    target), local pixel shuffling, a Bezier intensity curve (``np.interp`` of ``cfg.bezier_points``
    samples), then in-painting (noise boxes) or out-painting (noise around kept boxes).
    """
    x = volume
    for _ in range(3):  # one more flip while the draw stays below flip_rate
        if rng.random() >= cfg.flip_rate:
            break
        x = np.flip(x, axis=1 + int(rng.integers(3)))
    target = np.ascontiguousarray(x)
    out = target
    if rng.random() < cfg.local_rate:
        out = shuffle_blocks_loop(out, random_blocks(rng, out.shape[1:], cfg.num_blocks))
    if rng.random() < cfg.nonlinear_rate:
        p = np.array([[0.0, 0.0], *rng.random((2, 2)), [1.0, 1.0]])
        t = np.linspace(0.0, 1.0, cfg.bezier_points)[:, None]
        curve = t ** 3 * p[0] + 3 * t ** 2 * (1 - t) * p[1] + 3 * t * (1 - t) ** 2 * p[2] + (1 - t) ** 3 * p[3]
        xs, ys = np.sort(curve[:, 0]), curve[:, 1]
        out = np.interp(out, xs, np.sort(ys) if rng.random() >= 0.5 else ys).astype(volume.dtype)
    if rng.random() < cfg.paint_rate:
        dims = np.array(out.shape[1:])
        inner = rng.random() < cfg.inpaint_rate
        low, high = (dims // 6, dims // 3) if inner else (dims - 4 * dims // 7, dims - 3 * dims // 7)
        painted = out.copy() if inner else rng.random(out.shape).astype(out.dtype)
        for k in range(5):  # the first box always, then one more while the draw stays below 0.95
            if k and rng.random() >= 0.95:
                break
            size = rng.integers(np.maximum(low, 1), np.maximum(high, low) + 1)
            margins = [min(3, (n - s) // 2) for n, s in zip(dims, size, strict=True)]  # 3 voxels where they fit
            corner = [int(rng.integers(m, n - s - m + 1)) for m, n, s in zip(margins, dims, size, strict=True)]
            box = (slice(None), *(slice(c, c + s) for c, s in zip(corner, size, strict=True)))
            painted[box] = rng.random(painted[box].shape) if inner else out[box]
        out = painted
    return out, target


def chain_markdown(c: dict[str, Any]) -> list[str]:
    lines = [f"## Whole Models Genesis chain, batch {c['batch']}, {'x'.join(map(str, c['shape']))}, one thread", "",
             f"Flips (rate {c['flip_rate']}), shuffle ({c['num_blocks']} blocks), Bezier remap ({c['bezier_points']} "
             "points), in/out-painting; shuffle, remap and painting always applied. Median of interleaved rounds.", "",
             "| implementation | cubes/s (wall) | cubes/s (CPU time) | ours / it (CPU time) |", "|---|---:|---:|---:|"]
    names = {"ours": "ours (numba kernels on CPU)", "shuffle_alone": "the shuffle alone (numba)",
             "numba_shuffle_only": "previous: numba shuffle, tensor ops for the rest",
             "tensor_path": "tensor path (the GPU path) on CPU", "numpy_chain": "plain NumPy chain, one volume at a time"}
    for k, label in names.items():
        if k in c:
            ratio = f"x{c[f'ratio_ours_vs_{k}_cpu']:.2f}" if k != "ours" else ""
            lines.append(f"| {label} | {c[k]['cubes_per_s_wall']:.1f} | {c[k]['cubes_per_s_cpu']:.1f} | {ratio} |")
    lines += ["", f"Target: {c['target_cubes_per_s']} cubes/s, set as {c['target_vs_shuffle_alone']:.2f} x the shuffle "
              f"alone; measured chain / shuffle alone: {c['ratio_ours_vs_shuffle_alone_cpu']:.2f} (CPU time). "
              f"All paths give bit-identical views from one seed: {c['paths_bit_identical']}.", "",
              "Each stage alone, ms of process CPU per cube (median of rounds):", "",
              "| stage | " + " | ".join(sorted({k.split('/')[0] for k in c['stage_ms_per_cube_cpu']})) + " |",
              "|---|" + "---:|" * len({k.split('/')[0] for k in c['stage_ms_per_cube_cpu']})]
    paths = sorted({k.split("/")[0] for k in c["stage_ms_per_cube_cpu"]})
    for stage in ("flip", "shuffle", "bezier", "painting"):
        lines.append(f"| {stage} | " + " | ".join(f"{c['stage_ms_per_cube_cpu'][f'{p}/{stage}']:.3f}" for p in paths) + " |")
    w = c.get("tensor_path_work_b32")
    if w:
        lines += ["", f"Tensor path for a batch of {w['batch']} as a GPU runs it (shuffle {w['shuffle_chunk']} volumes per "
                  f"chunk): shuffle {w['shuffle']['ops']} tensor ops, {w['shuffle']['new_gb']:.1f} GB of new tensors; "
                  f"flips + Bezier + painting {w['flip_bezier_painting']['ops']} ops, "
                  f"{w['flip_bezier_painting']['new_gb']:.2f} GB."]
    return lines + [""]

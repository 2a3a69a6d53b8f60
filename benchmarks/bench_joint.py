"""Joint-embedding costs, each measured as a ratio within one run (issue 25 items 1 and 4).

1. ``losses``: our NT-Xent / VICReg / DINO losses (:mod:`pretext.losses`) against lightly's ``NTXentLoss``,
   ``VICRegLoss`` and ``DINOLoss``: forward + backward of the loss alone on fixed embeddings of the recipes' shapes,
   and a whole training step of the task (views, encoder, head, loss, backward, AdamW) with lightly's loss put in
   place of ours. The arms alternate, so load from other jobs on a shared machine hits both.
2. ``monitor``: the online representation monitor's cost. The same pretraining through ``pretext.engine.fit``
   with the monitor at the default interval (``TrainConfig.monitor_every``, ``monitor_items``) and without it
   (``monitor_every=0``), alternating; the monitor's own time is also clocked inside the monitored run, so the
   fraction does not depend on two runs' noise.

    python -m benchmarks.bench_joint --out benchmarks/results/joint
    python -m benchmarks.bench_joint --only monitor --monitor-steps 100 --monitor-modalities signal --out /tmp/j

Writes ``OUT/bench_joint.json`` (every timing), ``OUT/bench_joint.md`` (the tables) and ``OUT/bench_joint.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pretext import losses as our_losses
from pretext.config import TrainConfig
from pretext.engine import fit
from pretext.engine import hooks as engine_hooks
from pretext.registry import create_encoder, create_task
from pretext.testing import RandomSplit

#: the setups timed: name -> (encoder, encoder options, item shape, batch size); "volume" is the AdrenalMNIST3D
#: recipe's encoder, "volume-small" the same at a quarter of the width (the monitored runs on a 2-core CPU)
SETUPS: dict[str, tuple[str, dict[str, Any], tuple[int, ...], int]] = {
    "volume": ("resnet10_3d", {"widen_factor": 0.5, "img_size": (28, 28, 28)}, (1, 28, 28, 28), 32),
    "volume-small": ("resnet10_3d", {"widen_factor": 0.25, "img_size": (28, 28, 28)}, (1, 28, 28, 28), 32),
    "signal": ("cpc_encoder", {"n_chans": 8, "n_times": 800, "sfreq": 100.0}, (8, 800), 32),
}
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "simclr": {"temperature": 0.1, "same_patient": "ignore"},  # lightly's NT-Xent has no patient groups
    "vicreg": {"proj_hidden": 512, "proj_dim": 512},
    "dino": {"out_dim": 1024, "local_crops": 2},
}


# -- 1. losses ---------------------------------------------------------------------------------------------
def _lightly_losses() -> dict[str, Callable[..., torch.Tensor]]:
    """Drop-in replacements with our losses' signatures, computed by lightly's modules."""
    from lightly.loss import DINOLoss, NTXentLoss, VICRegLoss

    cache: dict[tuple[Any, ...], torch.nn.Module] = {}

    def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, groups: Any = None, **_: Any) -> torch.Tensor:
        if groups is not None:
            raise ValueError("lightly's NTXentLoss has no patient groups: time with same_patient='ignore'")
        mod = cache.setdefault(("ntx", temperature), NTXentLoss(temperature=temperature))
        return mod(z1, z2)

    def vicreg(z1: torch.Tensor, z2: torch.Tensor, sim: float = 25.0, var: float = 25.0, cov: float = 1.0) -> torch.Tensor:
        return cache.setdefault(("vic", sim, var, cov), VICRegLoss(sim, var, cov))(z1, z2)

    def dino(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, teacher_temp: float,
             student_temp: float) -> torch.Tensor:
        key = ("dino", center.shape[-1], teacher_temp, student_temp)
        mod = cache.setdefault(key, DINOLoss(output_dim=center.shape[-1], warmup_teacher_temp=teacher_temp,
                                             teacher_temp=teacher_temp, student_temp=student_temp))
        return mod(teacher, student)

    return {"simclr": nt_xent, "vicreg": vicreg, "dino": dino}


def _ours() -> dict[str, Callable[..., torch.Tensor]]:
    def dino(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, teacher_temp: float,
             student_temp: float) -> torch.Tensor:
        loss = our_losses.dino_loss(student, teacher, center, teacher_temp, student_temp)
        center.copy_(our_losses.dino_center(center, teacher, 0.9))  # lightly's loss updates its centre too
        return loss

    return {"simclr": our_losses.nt_xent, "vicreg": our_losses.vicreg_loss, "dino": dino}


def _loss_inputs(task: str, batch: int, gen: torch.Generator) -> tuple[list[Any], dict[str, Any]]:
    def z(d: int, n: int = batch) -> torch.Tensor:
        return torch.randn(n, d, generator=gen).requires_grad_()

    if task == "simclr":
        return [z(128), z(128), 0.1], {}
    if task == "vicreg":
        return [z(512), z(512)], {}
    student = [z(1024) for _ in range(4)]  # 2 global + 2 local views
    teacher = [torch.randn(batch, 1024, generator=gen) for _ in range(2)]
    return [student, teacher, torch.zeros(1, 1024), 0.04, 0.1], {}


def _leaves(args: list[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for a in args:
        for t in (a if isinstance(a, list) else [a]):
            if torch.is_tensor(t) and t.requires_grad:
                out.append(t)
    return out


def time_losses(batch: int, repeats: int) -> list[dict[str, Any]]:
    """Forward + backward of each loss alone, ours vs lightly's, alternating; median seconds per call."""
    ours, theirs = _ours(), _lightly_losses()
    rows = []
    for task in ("simclr", "vicreg", "dino"):
        gen = torch.Generator().manual_seed(0)
        args, _ = _loss_inputs(task, batch, gen)
        times: dict[str, list[float]] = {"ours": [], "lightly": []}
        values = {}
        for r in range(repeats + 3):
            for arm, fn in (("ours", ours[task]), ("lightly", theirs[task])):
                call = [a.clone() if torch.is_tensor(a) and not a.requires_grad else a for a in args]
                t0 = time.perf_counter()
                loss = fn(*call)
                loss.backward()
                dt = time.perf_counter() - t0
                for leaf in _leaves(args):
                    leaf.grad = None
                if r >= 3:  # warm-up calls are not counted
                    times[arm].append(dt)
                values[arm] = float(loss.detach())
        o, t = statistics.median(times["ours"]), statistics.median(times["lightly"])
        rows.append({"what": "loss", "task": task, "batch": batch, "ours_s": o, "lightly_s": t, "ratio": o / t,
                     "loss_ours": values["ours"], "loss_lightly": values["lightly"]})
    return rows


@contextmanager
def _swapped(task: str, fn: Callable[..., torch.Tensor]) -> Iterator[None]:
    import pretext.tasks.dino as dino_mod
    import pretext.tasks.simclr as simclr_mod
    import pretext.tasks.vicreg as vicreg_mod

    mod, attr = {"simclr": (simclr_mod, "nt_xent"), "vicreg": (vicreg_mod, "vicreg_loss"),
                 "dino": (dino_mod, "dino_loss")}[task]
    old = getattr(mod, attr)
    setattr(mod, attr, fn)
    try:
        yield
    finally:
        setattr(mod, attr, old)


def _build(task: str, modality: str, seed: int = 0) -> tuple[torch.nn.Module, RandomSplit, int]:
    enc_name, enc_opts, shape, batch = SETUPS[modality]
    torch.manual_seed(seed)
    model = create_task(task, create_encoder(enc_name, **enc_opts), **TASK_OPTIONS[task])
    return model, RandomSplit(n=512, shape=shape, seed=seed), batch


def time_steps(modality: str, steps: int) -> list[dict[str, Any]]:
    """Whole training steps of each task with our loss vs lightly's in its place (alternating blocks of steps)."""
    theirs = _lightly_losses()
    rows = []
    for task in ("simclr", "vicreg", "dino"):
        model, data, batch = _build(task, modality)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {"ours": [], "lightly": []}
        for i in range(steps + 1):
            for arm in ("ours", "lightly"):
                idx = torch.randint(len(data), (batch,), generator=gen)
                b = {"x": data.x[idx], "patient": torch.as_tensor(data.patients[idx.numpy()])}
                ctx = _swapped(task, theirs[task]) if arm == "lightly" else _null()
                with ctx:
                    t0 = time.perf_counter()
                    out = model(b, generator=gen)
                    out["loss"].backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    dt = time.perf_counter() - t0
                if i > 0:  # the first step of each arm warms up
                    times[arm].append(dt)
        o, t = statistics.median(times["ours"]), statistics.median(times["lightly"])
        rows.append({"what": "step", "task": task, "modality": modality, "encoder": SETUPS[modality][0],
                     "batch": batch, "steps": steps, "ours_s": o, "lightly_s": t, "ratio": o / t})
    return rows


@contextmanager
def _null() -> Iterator[None]:
    yield


# -- 2. the monitor ----------------------------------------------------------------------------------------
def time_monitor(modality: str, task: str, steps: int, repeats: int) -> dict[str, Any]:
    """Wall time of ``fit`` with the monitor at the default interval vs without it, and the monitor's own time."""
    default = TrainConfig()
    clock = {"s": 0.0, "n": 0}
    original = engine_hooks.RepresentationMonitor.after_step

    def timed(self: Any, step: int, module: torch.nn.Module) -> dict[str, float]:
        t0 = time.perf_counter()
        out = original(self, step, module)
        if out:
            clock["s"] += time.perf_counter() - t0
            clock["n"] += 1
        return out

    walls: dict[str, list[float]] = {"monitor": [], "none": []}
    monitor_s: list[float] = []
    engine_hooks.RepresentationMonitor.after_step = timed  # type: ignore[method-assign]
    try:
        for r in range(repeats):
            for arm in ("none", "monitor") if r % 2 == 0 else ("monitor", "none"):
                model, data, batch = _build(task, modality, seed=0)
                cfg = TrainConfig(steps=steps, batch_size=batch, warmup_steps=min(10, steps - 1), log_every=10,
                                  ckpt_every=10 * steps, progress=False, accelerator="cpu", precision="32",
                                  monitor_every=default.monitor_every if arm == "monitor" else 0,
                                  monitor_items=default.monitor_items)
                clock.update(s=0.0, n=0)
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    fit(model, data, cfg, out_dir=tmp)
                    walls[arm].append(time.perf_counter() - t0)
                if arm == "monitor":
                    monitor_s.append(clock["s"])
                    n_measured = clock["n"]
    finally:
        engine_hooks.RepresentationMonitor.after_step = original  # type: ignore[method-assign]
    wall_m, wall_n = statistics.median(walls["monitor"]), statistics.median(walls["none"])
    own = statistics.median(monitor_s)
    return {"what": "monitor", "task": task, "modality": modality, "encoder": SETUPS[modality][0],
            "batch": SETUPS[modality][3], "steps": steps, "monitor_every": default.monitor_every,
            "monitor_items": default.monitor_items, "measurements": n_measured, "repeats": repeats,
            "wall_monitor_s": walls["monitor"], "wall_none_s": walls["none"],
            "wall_ratio": wall_m / wall_n, "monitor_own_s": own, "monitor_fraction": own / (wall_m - own)}


# -- output ------------------------------------------------------------------------------------------------
def _markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    out = [f"Environment: {env['platform']}, torch {env['torch']}, {env['threads']} torch threads, CPU.", ""]
    loss = [r for r in rows if r["what"] == "loss"]
    if loss:
        out += ["Loss alone (forward + backward on fixed embeddings), median seconds per call:", "",
                "| loss | batch | ours | lightly | ours / lightly |", "|---|---|---|---|---|"]
        out += [f"| {r['task']} | {r['batch']} | {r['ours_s'] * 1e3:.2f} ms | {r['lightly_s'] * 1e3:.2f} ms | "
                f"{r['ratio']:.2f} |" for r in loss] + [""]
    step = [r for r in rows if r["what"] == "step"]
    if step:
        out += ["Whole training step (views, encoder, head, loss, backward, AdamW), median seconds:", "",
                "| task | encoder | batch | our loss | lightly's loss | ratio |", "|---|---|---|---|---|---|"]
        out += [f"| {r['task']} | {r['encoder']} | {r['batch']} | {r['ours_s']:.3f} s | {r['lightly_s']:.3f} s | "
                f"{r['ratio']:.3f} |" for r in step] + [""]
    mon = [r for r in rows if r["what"] == "monitor"]
    if mon:
        out += ["Online monitor at the default interval (fit with vs without it, alternating):", "",
                "| task | encoder | batch | steps | measurements | wall with / without | monitor's own time / "
                "rest of the run |", "|---|---|---|---|---|---|---|"]
        out += [f"| {r['task']} | {r['encoder']} | {r['batch']} | {r['steps']} | {r['measurements']} "
                f"(every {r['monitor_every']}, {r['monitor_items']} items) | {r['wall_ratio']:.3f} | "
                f"{100 * r['monitor_fraction']:.2f} % |" for r in mon] + [""]
    return "\n".join(out)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("loss", "loss alone: ours / lightly", "ratio"), ("step", "training step: ours / lightly", "ratio"),
              ("monitor", "monitor time / step time (%)", "monitor_fraction")]
    groups = [g for g in groups if any(r["what"] == g[0] for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), dpi=100, squeeze=False)
    for ax, (what, title, key) in zip(axes[0], groups, strict=True):
        sel = [r for r in rows if r["what"] == what]
        labels = [f"{r['task']}\n{r.get('encoder', '').replace('_encoder', '')}".strip() for r in sel]
        vals = [r[key] * (100 if key == "monitor_fraction" else 1) for r in sel]
        ax.bar(range(len(sel)), vals, color="tab:blue")
        ax.axhline(5 if key == "monitor_fraction" else 1, color="grey", ls="--", lw=1)
        ax.set_xticks(range(len(sel)), labels, fontsize=7, rotation=30)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/joint")
    ap.add_argument("--only", choices=["losses", "monitor"], default=None)
    ap.add_argument("--loss-repeats", type=int, default=30)
    ap.add_argument("--step-steps", type=int, default=5, help="timed steps per arm and task")
    ap.add_argument("--step-modalities", default="signal,volume")
    ap.add_argument("--monitor-steps", default="signal=200,volume-small=100",
                    help="pretraining steps per monitored run, per modality (the default interval is 100)")
    ap.add_argument("--monitor-repeats", default="signal=2,volume-small=1",
                    help="fits per arm, per setup (or one number for all)")
    ap.add_argument("--monitor-modalities", default="signal,volume-small")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    rows: list[dict[str, Any]] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(new: list[dict[str, Any]]) -> None:  # after each measurement, so a stopped run keeps what it has
        rows.extend(new)
        (out / "bench_joint.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=2))
        (out / "bench_joint.md").write_text(_markdown(rows, env))
        _plot(rows, out / "bench_joint.png")

    def per_setup(text: str, name: str) -> int:
        return int(dict(kv.split("=") for kv in text.split(","))[name] if "=" in text else text)

    if args.only in (None, "monitor"):
        for m in filter(None, args.monitor_modalities.split(",")):
            save([time_monitor(m, "simclr", per_setup(args.monitor_steps, m), per_setup(args.monitor_repeats, m))])
    if args.only in (None, "losses"):
        save(time_losses(64, args.loss_repeats))
        for m in filter(None, args.step_modalities.split(",")):
            save(time_steps(m, args.step_steps))
    print(_markdown(rows, env))


def replot(folder: str | Path) -> None:
    """Redraw ``bench_joint.png`` and ``bench_joint.md`` of a finished run from its ``bench_joint.json``."""
    data = json.loads((Path(folder) / "bench_joint.json").read_text())
    (Path(folder) / "bench_joint.md").write_text(_markdown(data["rows"], data["env"]))
    _plot(data["rows"], Path(folder) / "bench_joint.png")


if __name__ == "__main__":
    main()

"""Engine overhead: steps/s of ``pretext.engine.fit`` against a bare PyTorch loop on the same work.

Both loops train the same model on the same batches with AdamW; the engine adds Fabric setup,
the non-finite guard, clipping, the LR schedule, logging and per-step generators. The figure
that matters is the ratio (engine / bare), measured in the same run.

    python -m benchmarks.bench_engine --steps 200 --out benchmarks/results/engine
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from pretext.config import TrainConfig
from pretext.engine import fit
from pretext.engine.sampler import ResumableBatchSampler, step_generator
from pretext.testing import RandomSplit


class ConvEncoder(nn.Module):
    def __init__(self, n_chans: int = 12, width: int = 64) -> None:
        super().__init__()
        self.num_features = width
        self.net = nn.Sequential(
            nn.Conv1d(n_chans, width, 7, stride=2, padding=3), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NoiseContrast(nn.Module):
    """Two noisy views, InfoNCE between them (a realistic SSL step)."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder.num_features, 32)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        n1 = torch.randn(x.shape, generator=generator).to(x.device)
        n2 = torch.randn(x.shape, generator=generator).to(x.device)
        z1 = nn.functional.normalize(self.proj(self.encoder.forward_features(x + 0.1 * n1)).float(), dim=1)
        z2 = nn.functional.normalize(self.proj(self.encoder.forward_features(x + 0.1 * n2)).float(), dim=1)
        logits = z1 @ z2.T / 0.1
        loss = nn.functional.cross_entropy(logits, torch.arange(len(x), device=x.device))
        return {"loss": loss}


def bare_loop(task: nn.Module, data: RandomSplit, steps: int, batch_size: int, precision: str) -> float:
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    it = iter(ResumableBatchSampler(len(data), batch_size, seed=0))
    t0 = time.perf_counter()
    for s in range(steps):
        idx = next(it)
        batch = {"x": data.x[idx]}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = task(batch, generator=step_generator(0, s))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - t0)


def engine_loop(task: nn.Module, data: RandomSplit, steps: int, batch_size: int, precision: str) -> float:
    cfg = TrainConfig(steps=steps, batch_size=batch_size, precision=precision, progress=False, log_every=10, warmup_steps=5)
    t0 = time.perf_counter()
    fit(task, data, cfg, out_dir=None)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/engine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = RandomSplit(n=512, shape=(12, 1000))
    rows = []
    for precision in ["32", "bf16-mixed"]:  # CPU comparison; GPU figures come from a lent device
        torch.manual_seed(0)
        bare = bare_loop(NoiseContrast(ConvEncoder()), data, args.steps, args.batch_size, precision)
        torch.manual_seed(0)
        eng = engine_loop(NoiseContrast(ConvEncoder()), data, args.steps, args.batch_size, precision)
        rows.append({"precision": precision, "bare_steps_per_s": bare, "engine_steps_per_s": eng, "ratio_engine_over_bare": eng / bare})
        print(f"{precision:>10}: bare {bare:7.2f} steps/s   engine {eng:7.2f} steps/s   ratio {eng / bare:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
           "cpu": platform.processor() or platform.machine(), "threads": args.threads}
    (out / "engine_overhead.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=2))
    md = ["| precision | bare loop steps/s | engine steps/s | engine / bare |", "|---|---|---|---|"]
    md += [f"| {r['precision']} | {r['bare_steps_per_s']:.2f} | {r['engine_steps_per_s']:.2f} | {r['ratio_engine_over_bare']:.3f} |" for r in rows]
    note = (f"\nMeasured with `python -m benchmarks.bench_engine --steps {args.steps} --batch-size {args.batch_size} "
            f"--threads {args.threads}` on {env['device']} ({env['cpu']}), torch {env['torch']}. Batch of 12x1000 signals, "
            "3-layer conv encoder, two-view InfoNCE. The bare loop omits clipping, schedule, guard and logging. "
            "Whether CPU bf16 autocast beats fp32 depends on the CPU's bf16 instructions; compare the two rows. "
            "Engine precision `auto` stays at 32 on CPU.\n")
    (out / "README.md").write_text("# Engine overhead\n\n" + "\n".join(md) + "\n" + note)


if __name__ == "__main__":
    main()

"""Run by test_ddp.py under torchrun: 2-process DDP on CPU (gloo); each rank dumps its weights."""

import sys
from pathlib import Path

import torch

from pretext.config import TrainConfig
from pretext.engine import fit
from pretext.testing import RandomSplit, TinyEncoder, ToyTask

out = Path(sys.argv[1])
torch.manual_seed(0)
task = ToyTask(TinyEncoder())
init = {k: v.clone() for k, v in task.state_dict().items()}
cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=1, progress=False, precision="32",
                  accelerator="cpu", strategy="ddp", log_every=3)
res = fit(task, RandomSplit(n=32), cfg, out_dir=out / "run")
rank = torch.distributed.get_rank()
torch.save({"state": task.state_dict(), "init": init, "world": torch.distributed.get_world_size(),
            "first_loss": res.history[0]["loss"]}, out / f"rank{rank}.pt")

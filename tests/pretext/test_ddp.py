"""Two-process DDP on CPU through torchrun (gloo): replicas stay identical."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_keeps_replicas_identical(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "--master_addr=127.0.0.1", str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert r0["first_loss"] != r1["first_loss"]  # each rank saw its own shard of the batch
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    assert any(not torch.equal(r0["state"][k], r0["init"][k]) for k in r0["init"] if k != "calls")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # written once, by rank 0

"""A run folder is owned by one process at a time, a user error leaves nothing behind, and a resume neither
changes a hyperparameter silently nor retrains a finished run (issue 27, item 3, item 9 and three weak cases)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretext.engine import load_checkpoint
from pretext.errors import ConfigError
from pretext.runfolder import LOCK_FILE, hold
from sslbench.cli import main
from tests.sslbench import _tiny as T

REPO = Path(__file__).resolve().parents[2]
TINY = ["--task", T.TASK, "--encoder", T.ENCODER, "--data", f"{T.DATA_KIND}:", "--batch-size", "4",
        "--log-every", "1", "--warmup-steps", "1", "--progress", "false", "--precision", "32"]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    return err


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that owns ``folder`` (as a running ``sslbench pretrain`` would) until it is killed."""
    script = ("import sys, time\nfrom pretext.runfolder import hold\n"
              f"with hold({str(folder)!r}, 'pretrain'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, encoding="utf-8", errors="replace",
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_on_a_run_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        assert main(["pretrain", *TINY, "--steps", "2", "--out", str(out)]) == 2
        err = _err(capsys)
        assert f"run folder {str(out)!r} is in use by sslbench pretrain (pid {proc.pid} on host " in err
        assert "choose another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused process wrote nothing
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the lock file stays behind
        proc.wait()
    owner = json.loads((out / LOCK_FILE).read_text())
    assert owner["pid"] == proc.pid and owner["host"] == socket.gethostname()
    assert main(["pretrain", *TINY, "--steps", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "no longer running" in err and "taking the folder over" in err
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 2
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_lock_of_another_host_is_refused_while_its_heartbeat_is_fresh(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_FILE
    lock.write_text(json.dumps({"command": "pretrain", "pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(ConfigError, match=r"in use by sslbench pretrain \(pid 1 on host elsewhere.*delete "):
        with hold(out, "evaluate"):
            pass
    old = time.time() - 3600  # no heartbeat for an hour: the owner is gone
    os.utime(lock, (old, old))
    with hold(out, "evaluate"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch-size", "100000"], "fewer than one global batch"),  # found by the engine, after the folder is made
])
def test_user_error_after_set_up_leaves_nothing_behind(tmp_path, capsys, extra, message):
    out = tmp_path / "new"
    assert main(["pretrain", *TINY, "--steps", "2", "--out", str(out), *extra]) == 2
    assert message in _err(capsys)
    assert not out.exists()


def test_user_error_in_the_first_step_leaves_no_config_or_tensorboard(tmp_path, capsys):
    """CPC's horizon longer than the sequence is found in the first forward pass, after config.yaml and the
    TensorBoard file were written: they are removed again; files that were there before are kept."""
    out = tmp_path / "cpc"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["pretrain", "--task", "cpc", "--data", "synthetic_ecg:?n_patients=8", "--out", str(out), "--steps", "2",
            "--batch-size", "2", "--task.horizon", "500", "--progress", "false"]
    assert main(argv) == 2
    assert "need more than horizon=500" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_refuses_a_changed_hyperparameter_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--steps", "2", "--lr", "0.001", "--out", str(out)]) == 0
    config = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--steps", "4", "--lr", "0.5"]) == 2
    err = _err(capsys)
    assert "train.lr: 0.001 -> 0.5" in err and "choose a new --out" in err
    assert (out / "config.yaml").read_text() == config  # the record still says what trained the run
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["run_config"]["train"]["lr"] == 0.001


def test_resume_of_a_finished_run_says_it_is_complete_and_rewrites_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["pretrain", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "is already complete: its checkpoint is at step 2 (--steps 2)" in printed
    assert "nan" not in printed
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_partial_checkpoint_of_a_killed_writer_is_removed_on_resume(tmp_path, capsys):
    """``kill -9`` while ``last.ckpt`` is written leaves the previous checkpoint intact but also a partial copy
    (``.last.ckpt.XXXXXXXX.tmp``, a checkpoint's size per kill); the next owner of the run folder removes it."""
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--steps", "2", "--out", str(out)]) == 0
    partial = out / "checkpoints" / ".last.ckpt.k9x_2ab7.tmp"
    partial.write_bytes(b"\0" * 4096)  # what atomic_write had written when the process was killed
    mine = out / "checkpoints" / "notes.tmp"
    mine.write_text("not ours")
    assert main(["pretrain", "--out", str(out), "--resume", "--steps", "4"]) == 0
    assert not partial.exists() and mine.read_text() == "not ours"
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 4

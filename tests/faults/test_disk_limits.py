"""A full disk or a file-size limit while a checkpoint is written is said in words, exit 2, and the earlier
checkpoint is kept (issue 27, items 6 and 7)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import pretext.atomic as atomic_mod
from pretext.engine import load_checkpoint
from pretext.engine.checkpoint import save_checkpoint
from pretext.errors import DataError
from sslbench.cli import main
from tests.sslbench import _tiny as T

REPO = Path(__file__).resolve().parents[2]
TINY = ["--task", T.TASK, "--encoder", T.ENCODER, "--data", f"{T.DATA_KIND}:", "--batch-size", "4",
        "--log-every", "1", "--warmup-steps", "1", "--progress", "false", "--precision", "32"]


class _FullDisk:
    """A file object that takes ``room`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def test_disk_full_inside_torch_save_is_said_in_words_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, capsys):
    """torch.save turns the failed write into ``RuntimeError: ... unexpected pos``: still "no space left", exit 2."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_save(obj, f, *args, **kwargs)
        return real_save(obj, _FullDisk(f, room=1000), *args, **kwargs)  # the second checkpoint meets a full disk

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--steps", "6", "--ckpt-every", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslbench: error: no space left on ")
    assert "last.ckpt" in err and "is kept until the new one is complete" in err
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["step"] == 2  # the earlier checkpoint, intact
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"]  # no temporary file left


def test_free_space_check_does_not_count_the_checkpoint_being_replaced(tmp_path, monkeypatch):
    ckpt = tmp_path / "last.ckpt"
    state = {"model": {"w": torch.zeros(50_000)}, "step": 1}
    save_checkpoint(ckpt, state)
    before = ckpt.read_bytes()
    usage = namedtuple("usage", "total used free")
    # room for the new file only if the old one were already gone: both exist until the rename
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 150_000, 150_000))
    with pytest.raises(DataError, match=r"no space left on .*needed about 200\.0 kB, 150\.0 kB free, the previous "
                                        r"last\.ckpt .* is kept until the new one is complete"):
        save_checkpoint(ckpt, {**state, "step": 2})
    assert ckpt.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_file_size_limit_is_said_in_words(tmp_path):
    """``ulimit -f``: the write fails with EFBIG (SIGXFSZ ignored, as Python does); one line, exit 2."""
    out = tmp_path / "run"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n"
        "import tests.sslbench._tiny\n"
        "from sslbench.cli import main\n"
        f"sys.exit(main({['pretrain', *TINY, '--steps', '4', '--ckpt-every', '2', '--encoder.width', '64', '--out', str(out)]!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace",
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith("sslbench: error: file too large for the file-size limit: ") and "ulimit -f" in err[0]
    assert "last.ckpt" in err[0]


def test_a_killed_folder_build_is_removed_by_the_next_build_but_a_live_one_is_kept(tmp_path):
    """``kill -9`` during a store build (signal ingest) left ``.NAME.tmp-*`` with a copy of the data for good;
    the next build of the same folder removes it, unless a live process holds it (it is building right now)."""
    import fcntl
    import time

    from pretext.atomic import atomic_dir

    final = tmp_path / "store"
    dead = tmp_path / ".store.tmp-dead1234"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "signals.bin").write_bytes(b"\0" * 4096)
    live = tmp_path / ".store.tmp-live5678"
    live.mkdir()
    old = time.time() - 3600
    for d in (dead, live):
        os.utime(d, (old, old))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(live)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, encoding="utf-8", errors="replace")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with atomic_dir(final) as tmp:
            (tmp / "done").write_text("ok")
            with pytest.raises(BlockingIOError):  # our own build is locked while it runs
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                finally:
                    os.close(fd)
        assert (final / "done").read_text() == "ok"
        assert not dead.exists() and live.is_dir()
    finally:
        holder.kill()
        holder.wait()

"""A folder the CLI writes into belongs to one configuration.

Every run folder (``sslbench pretrain --out``, ``evaluate --out``, ``run --out``) holds ``run-identity.json``:
what produced it (task, encoder and their configs, the data spec with a fingerprint of the data's content, the
checkpoint's content hash, the recipe) split into

- ``identity``: what every result in the folder depends on; continuing with anything different is refused, and
  the message names each differing key with both values and the fix;
- ``cells``: the axes of a result matrix (protocols, fractions, seeds, ... as lists; datasets, tasks, encoders as
  ``{name: options}``); adding to them needs the explicit ``extend=True`` (``--extend`` on the CLI), so a typo
  cannot silently grow a matrix. A name already there with other options is a clash, refused like the identity.

The identity is compared as plain JSON values, so it must hold only what changes results: not thread counts,
progress bars or output paths.

A run folder is also owned by one process at a time (:func:`hold`): a lock file ``.sslbench.lock`` naming the
owner (command, pid, host, start time) under an exclusive ``flock``. A second process is refused with the owner
named; a lock left by a crash (``kill -9``, a lost node) is detected and taken over: on the same host the kernel
drops a dead process's ``flock``; a lock written on another host is stale once its heartbeat (the owner touches
the file every 30 s) is older than 5 minutes. A user error found after set-up removes what the failed command
created in the folder (and the folder, if it made it), unless a lasting result (a checkpoint, a results file)
was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.atomic import atomic_write_text
from pretext.errors import ConfigError, UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

IDENTITY_FILE = "run-identity.json"
LOCK_FILE = ".sslbench.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def plain_json(value: Any) -> Any:
    """JSON round trip: tuples become lists, numpy scalars numbers, so saved and current compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def diff_values(saved: Any, current: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += diff_values(saved.get(key, "<unset>"), current.get(key, "<unset>"), name)
        return out
    return [] if saved == current else [(prefix or "<root>", saved, current)]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_diff(diffs: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    parts = [f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"... and {len(diffs) - limit} more")
    return "; ".join(parts)


def claim(out: str | Path, command: str, identity: Mapping[str, Any], cells: Mapping[str, Any] | None = None,
          extend: bool = False, extend_flag: str = "--extend", write: bool = True) -> dict[str, Any]:
    """Record (or check) that ``out`` belongs to ``identity``; return the record written.

    ``write=False`` only checks (a dry run): nothing is created.

    Raises:
        ConfigError: ``out`` was produced by another command or another identity (the message names every
            differing key and says: choose a new ``--out``); or the cell axes grow without ``extend``.
    """
    folder = Path(out)
    path = folder / IDENTITY_FILE
    record = {"command": command, "identity": plain_json(dict(identity)), "cells": plain_json(dict(cells or {}))}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{str(path)!r} cannot be read ({err}); the folder's origin is unknown: choose a "
                              f"new --out (or delete {path.name} if you know the folder is yours)") from err
        if saved.get("command") != command:
            raise ConfigError(f"{str(folder)!r} holds a `sslbench {saved.get('command')}` run, not `sslbench "
                              f"{command}`; choose a new --out")
        diffs = diff_values(saved.get("identity", {}), record["identity"])
        if diffs:
            raise ConfigError(f"{str(folder)!r} holds results of another configuration ({describe_diff(diffs)}); "
                              "its results would be mixed with or mistaken for this run's: choose a new --out")
        clash, grown = _compare_cells(saved.get("cells", {}), record["cells"])
        if clash:
            raise ConfigError(f"{str(folder)!r} holds results made with other settings ({describe_diff(clash)}); "
                              "its results would be mixed with or mistaken for this run's: choose a new --out")
        if grown and not extend:
            raise ConfigError(f"{str(folder)!r} holds a matrix with other cells ({describe_diff(grown)}); pass "
                              f"{extend_flag} to add these cells to it (finished cells are kept), or choose a new --out")
        record["cells"] = _union(saved.get("cells", {}), record["cells"])
        if record == saved:
            return record
    if not write:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _compare_cells(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list, list]:
    """``(clash, grown)``: named cells (``{task: options}`` axes) present in both but configured differently,
    and axes whose current values are not all among the saved ones (a subset of cells is fine)."""
    clash: list[tuple[str, Any, Any]] = []
    grown: list[tuple[str, Any, Any]] = []
    for key, value in current.items():
        old = saved.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            for name in sorted(set(value) & set(old)):
                clash += diff_values(old[name], value[name], f"{key}.{name}")
            if set(value) - set(old):
                grown.append((key, sorted(old), sorted(value)))
        elif isinstance(value, list) and isinstance(old, list):
            if any(v not in old for v in value):
                grown.append((key, old, value))
        elif old != value:
            grown.append((key, old, value))
    return clash, grown


def _union(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(saved)
    for key, value in current.items():
        old = out.get(key)
        if isinstance(value, list) and isinstance(old, list):
            out[key] = old + [v for v in value if v not in old]
        elif isinstance(value, dict) and isinstance(old, dict):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


def state_hash(state: Mapping[str, Any]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and tensor bytes: the same weights give the same hash
    whether they came from ``last.ckpt`` or ``encoder.safetensors``."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        arr = t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy() if torch.is_tensor(t) else np.asarray(t)
        h.update(f"{name}:{getattr(t, 'dtype', '')}:{tuple(getattr(t, 'shape', ()))}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def data_fingerprint(data: Any, items_per_split: int = 3) -> str:
    """A cheap content fingerprint of an :class:`~pretext.base.SSLData`, for any modality.

    Hashes the input shape, every split's length, labels and patients, and the bytes of a few items of each
    split (first, middle, last): other data under the same spec (a replaced file, a rebuilt archive) changes it,
    and computing it reads ``3 x splits`` items only.
    """
    h = hashlib.sha1()
    h.update(json.dumps([data.modality, list(data.input_shape), data.num_classes, data.sfreq], default=str).encode())
    for name in sorted(data.splits):
        split = data.splits[name]
        n = len(split)
        h.update(f"{name}:{n}".encode())
        for arr in (getattr(split, "labels", None), getattr(split, "patients", None)):
            if arr is not None:
                h.update(np.ascontiguousarray(np.asarray(arr)).tobytes())
        picks = sorted({0, n // 2, n - 1}) if n else []
        for i in picks[:items_per_split]:
            x = split.load(i)
            h.update(np.ascontiguousarray(x.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()[:16]


# -- one process per run folder ------------------------------------------------------------------------------
def secondary_rank() -> bool:
    """True in a non-zero rank of a distributed launch (torchrun, SLURM, Fabric's own launcher): rank 0 owns
    the folder for all of them."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) != 0:
            return True
    return False


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe_owner(owner: Mapping[str, Any]) -> str:
    return (f"sslbench {owner.get('command', '?')} (pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
            f"since {owner.get('since', '?')})")


class FolderLock:
    """An owned run folder: the lock file's descriptor (holding the ``flock``) and its heartbeat thread."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock {path}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.fd)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def lock_folder(out: str | Path, command: str, name: str = LOCK_FILE,
                log: Callable[[str], None] | None = None) -> FolderLock | None:
    """Take the lock of run folder ``out`` (created if missing) for ``command``; ``None`` without ``flock``.

    Raises:
        ConfigError: another live process holds it (named: command, pid, host, start time).
        UserError: the folder cannot be made or written.
    """
    if fcntl is None:  # pragma: no cover
        return None
    folder = Path(out)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as err:
        raise UserError(f"output folder {str(folder)!r} is not writable ({err.strerror}); choose another --out") from err
    say = log or (lambda msg: print(f"sslbench: note: {msg}", file=sys.stderr))
    host = socket.gethostname()
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"run folder {str(folder)!r} is in use by {_describe_owner(_read_owner(path))}; two "
                              "processes writing one folder would mix their files: wait for it to finish or choose "
                              "another --out") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if not current:  # its owner removed it while we waited for it: lock the new file instead
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        old = _read_owner(path)
        if old:
            age = time.time() - os.fstat(fd).st_mtime
            if old.get("host") != host and age < STALE_AFTER_S:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise ConfigError(
                    f"run folder {str(folder)!r} is in use by {_describe_owner(old)} (its lock was renewed {age:.0f} s "
                    f"ago); wait for it to finish or choose another --out; if that process is gone, delete {path}")
            say(f"{path} was left by {_describe_owner(old)}, which is no longer running (a crash or kill -9); "
                "taking the folder over")
        owner = {"command": command, "pid": os.getpid(), "host": host,
                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(fd)
        return FolderLock(path, fd)
    raise ConfigError(f"could not lock run folder {str(folder)!r}: its lock file keeps changing; is another "
                      "process starting there?")


@contextmanager
def hold(out: str | Path, command: str, *, keep: Sequence[str] | None = None, name: str = LOCK_FILE,
         log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Own run folder ``out`` for the block (:func:`lock_folder`); released at the end, whatever happens.

    Args:
        keep: paths in ``out`` that hold a lasting result (``checkpoints/last.ckpt``, ``results.jsonl``). If the
            block fails with a :class:`~pretext.errors.UserError` while none of them exists, everything the block
            created in ``out`` is removed again (and ``out`` itself if it was made here), so a user error leaves
            nothing behind. ``None``: never remove anything.
        name: the lock file's name (one folder may hold several independent owners, e.g. shards).

    In a non-zero rank of a distributed launch (:func:`secondary_rank`) this does nothing: rank 0 owns the folder.
    """
    folder = Path(out)
    if secondary_rank():
        yield folder
        return
    existed = folder.is_dir()
    before = set(os.listdir(folder)) if existed else set()
    lock = lock_folder(folder, command, name, log)
    failed = False
    try:
        yield folder
    except UserError:
        failed = keep is not None and not any((folder / k).exists() for k in keep)
        raise
    finally:
        if failed:
            for entry in sorted(set(os.listdir(folder)) - before - {name}):
                target = folder / entry
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
        if lock is not None:
            lock.release()
        if failed and not existed:
            try:
                folder.rmdir()
            except OSError:
                pass


__all__ = ["IDENTITY_FILE", "LOCK_FILE", "FolderLock", "claim", "data_fingerprint", "describe_diff", "diff_values",
           "hold", "lock_folder", "plain_json", "secondary_rank", "state_hash"]

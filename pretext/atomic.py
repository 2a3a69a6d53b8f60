"""Atomic writes of files and folders, with a full disk said in words.

Everything the suite writes for later reuse (cache stores, checkpoints, configs, summaries) goes
through here: the content is written to a temporary sibling and renamed into place only once it
is complete, so a killed or failed write never leaves a half file or folder under the final name,
and the previous version (if any) stays intact. A full disk (``ENOSPC``, or a quota: ``EDQUOT``)
becomes a :class:`~pretext.errors.DataError` "no space left on DEVICE (PATH) (needed about N MB)", and a
file-size limit (``EFBIG``, ``ulimit -f``) one that says so; both also when a writer (``torch.save``) wraps
the failed write in another exception. Where the size is known, the free space is checked before writing:
the file being replaced is not counted, since both exist until the rename.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pretext.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; a killed build's temporary folder stays (named in the docstring)
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_dir", "atomic_write", "atomic_write_bytes", "atomic_write_text", "check_free_space",
           "disk_error", "is_no_space", "is_too_big", "no_space_error", "preallocate", "remove_partial_writes",
           "too_big_error"]

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_no_space(err: BaseException) -> bool:
    """True for a full disk or an exceeded quota."""
    return isinstance(err, OSError) and err.errno in _NO_SPACE


def is_too_big(err: BaseException) -> bool:
    """True for a file larger than the process may write (``EFBIG``: ``ulimit -f``, or the filesystem's limit)."""
    return isinstance(err, OSError) and err.errno == errno.EFBIG


def _disk_cause(err: BaseException) -> OSError | None:
    """The full-disk / file-size ``OSError`` behind ``err``: itself, or one it was raised from or during
    (``torch.save`` turns a failed write into ``RuntimeError: ... unexpected pos``)."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if is_no_space(cur) or is_too_big(cur):
            return cur  # type: ignore[return-value]
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def disk_error(err: BaseException, path: str | Path | None = None, needed_bytes: int | None = None,
               hint: str | None = None) -> DataError | None:
    """The :class:`DataError` that says ``err`` in words if it is (or hides) a full disk or a file-size limit
    (``None`` otherwise); ``path`` defaults to the file named by the error."""
    cause = _disk_cause(err)
    if cause is None:
        return None
    path = path if path is not None else (cause.filename or ".")
    return too_big_error(path, needed_bytes, hint) if is_too_big(cause) else no_space_error(path, needed_bytes, hint)


def _mount_point(path: Path) -> Path:
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _size(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


def no_space_error(path: str | Path, needed_bytes: int | None = None, hint: str | None = None) -> DataError:
    """The :class:`DataError` for a full disk while writing ``path``."""
    path = Path(path)
    mount = _mount_point(path)
    parts = []
    if needed_bytes:
        parts.append(f"needed about {_size(needed_bytes)}")
    try:
        parts.append(f"{_size(shutil.disk_usage(mount).free)} free")
    except OSError:
        pass
    if path.is_file():  # the old file stays until the new one is complete
        parts.append(f"the previous {path.name} ({_size(path.stat().st_size)}) is kept until the new one is complete")
    sizes = f" ({', '.join(parts)})" if parts else ""
    fix = hint or "free some space there or write to another disk, then rerun"
    return DataError(f"no space left on {mount} ({path}){sizes}; {fix}")


def too_big_error(path: str | Path, needed_bytes: int | None = None, hint: str | None = None) -> DataError:
    """The :class:`DataError` for a write beyond the file-size limit (``EFBIG``, e.g. ``ulimit -f``)."""
    import resource

    path = Path(path)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    parts = [f"needed about {_size(needed_bytes)}"] if needed_bytes else []
    if limit != resource.RLIM_INFINITY:
        parts.append(f"this process may write files of at most {_size(limit)}, see ulimit -f")
    if path.is_file():
        parts.append(f"the previous {path.name} is kept unchanged")
    sizes = f" ({', '.join(parts)})" if parts else ""
    fix = "raise the file-size limit (ulimit -f unlimited) or write to a filesystem that takes larger files, then rerun"
    return DataError(f"file too large for the file-size limit: {path}{sizes}; {fix}")


def check_free_space(path: str | Path, needed_bytes: int | None, hint: str | None = None) -> None:
    """Refuse (:func:`no_space_error`) before writing ``needed_bytes`` next to ``path`` when the disk has less free.

    A file that ``path`` replaces is not counted as free: the old and the new file both exist until the rename.
    """
    if not needed_bytes:
        return
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return
    if usage.total > 0 and usage.free < needed_bytes:
        raise no_space_error(path, needed_bytes, hint)


def preallocate(path: str | Path) -> None:
    """Reserve the disk blocks of a (sparse) file at its current size.

    A memory map over a sparse file on a full disk kills the process with SIGBUS on write;
    after this a full disk raises ``ENOSPC`` here instead. A filesystem without
    ``posix_fallocate`` is left as is.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: str | Path, *, needed_bytes: int | None = None, hint: str | None = None,
               overwrite: bool = True) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary sibling, renamed to ``path`` on success.

    On any failure the temporary folder is removed (a full disk raises :func:`no_space_error`).
    If ``path`` appeared meanwhile (another process finished first), theirs is kept and ours dropped;
    with ``overwrite=False`` (a folder that must be new, e.g. an exported bundle) that raises
    :class:`FileExistsError` instead. The temporary folder is ``flock``-ed while it is built; one that a killed
    build left behind (no lock held) is removed by the next build of the same ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        said = disk_error(err, path, needed_bytes, hint)
        if said is not None:
            raise said from err
        raise
    owner = _own(tmp)
    try:
        yield tmp
        if not overwrite and path.exists():
            raise FileExistsError(errno.EEXIST, "the folder appeared while it was being built", str(path))
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists() or not overwrite:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race: keep theirs
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        said = disk_error(err, path, needed_bytes, hint)
        if said is not None:
            raise said from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if owner is not None:
            os.close(owner)  # releases the flock (the folder, renamed or removed, keeps its inode)


#: a temporary folder younger than this is never taken for a dead build's (its builder may not hold it yet)
_BUILD_GRACE_S = 30.0


def _own(folder: Path) -> int | None:
    """Hold an exclusive ``flock`` on ``folder`` while it is built; the open descriptor, or None without flock."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_dead_builds(path: Path) -> None:
    """Remove temporary folders of ``path`` (``.NAME.tmp-*``) whose builder is gone (``kill -9``, OOM, a power
    cut): no process holds their ``flock`` any more. A store's build can be as large as its source data, and
    without this every killed build would keep its copy for good. A folder whose lock is held (another process
    is building the same store right now) or that is only seconds old is left alone."""
    if fcntl is None:
        return
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.tmp-") and p.is_dir()]
    except OSError:
        return
    for folder in candidates:
        try:
            if time.time() - folder.stat().st_mtime < _BUILD_GRACE_S:
                continue
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live builder holds it
            os.close(fd)
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *, needed_bytes: int | None = None,
                 hint: str | None = None) -> None:
    """Write a file atomically: ``write(fh)`` fills a temporary sibling, fsynced, then renamed over ``path``.

    On failure the temporary file is removed and ``path`` (if it existed) is unchanged. With ``needed_bytes``
    the free space is checked first (:func:`check_free_space`).
    """
    path = Path(path)
    tmp: str | None = None
    check_free_space(path, needed_bytes, hint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        said = disk_error(err, path, needed_bytes, hint)
        if said is not None:
            raise said from err
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


#: the temporary sibling :func:`atomic_write` writes into (``tempfile.mkstemp``'s 8 random characters)
_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when its process was killed
    mid-write (``kill -9``, the OOM killer, a power cut): the target file itself was never touched, but each left
    a partial copy that would take disk space for good (a checkpoint's size per kill). Call it only while this
    process owns ``folder`` (the run-folder lock, :func:`pretext.runfolder.hold`), so no live writer's file is
    removed.

    Returns:
        The files removed.
    """
    gone: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return gone
    for p in entries:
        if _PARTIAL.match(p.name) and p.is_file():
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone


def atomic_write_bytes(path: str | Path, data: bytes, *, hint: str | None = None) -> None:
    atomic_write(path, lambda fh: fh.write(data), needed_bytes=len(data), hint=hint)


def atomic_write_text(path: str | Path, text: str, *, hint: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), hint=hint)

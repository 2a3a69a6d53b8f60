"""Atomic writes of files and folders, with a full disk said in words.

Everything the suite writes for later reuse (cache stores, checkpoints, configs, summaries) goes
through here: the content is written to a temporary sibling and renamed into place only once it
is complete, so a killed or failed write never leaves a half file or folder under the final name,
and the previous version (if any) stays intact. A full disk (``ENOSPC``, or a quota: ``EDQUOT``)
becomes a :class:`~pretext.errors.DataError` "no space left on DEVICE (PATH) (needed about N MB)".
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pretext.errors import DataError

__all__ = ["atomic_dir", "atomic_write", "atomic_write_bytes", "atomic_write_text", "is_no_space", "no_space_error",
           "preallocate"]

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_no_space(err: BaseException) -> bool:
    """True for a full disk or an exceeded quota."""
    return isinstance(err, OSError) and err.errno in _NO_SPACE


def _mount_point(path: Path) -> Path:
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _size(n: int) -> str:
    if n >= 1e5:
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
    sizes = f" ({', '.join(parts)})" if parts else ""
    fix = hint or "free some space there or write to another disk, then rerun"
    return DataError(f"no space left on {mount} ({path}){sizes}; {fix}")


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
    :class:`FileExistsError` instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(path, needed_bytes, hint) from err
        raise
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
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_no_space(err):
            raise no_space_error(path, needed_bytes, hint) from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *, needed_bytes: int | None = None,
                 hint: str | None = None) -> None:
    """Write a file atomically: ``write(fh)`` fills a temporary sibling, fsynced, then renamed over ``path``.

    On failure the temporary file is removed and ``path`` (if it existed) is unchanged.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_no_space(err):
            raise no_space_error(path, needed_bytes, hint) from err
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, hint: str | None = None) -> None:
    atomic_write(path, lambda fh: fh.write(data), needed_bytes=len(data), hint=hint)


def atomic_write_text(path: str | Path, text: str, *, hint: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), hint=hint)

"""Where ingest-once stores live and what names them: one cache folder and one content key for every modality.

* :func:`cache_dir` is ``$MEDSSL_CACHE`` (an empty value counts as unset) or ``~/.cache/medssl``, with one
  subfolder per modality (``volume``, ``signal``, ...).
* :func:`resolve_cache` reads a data kind's ``cache`` option the same way on every side: ``"auto"`` (the
  default folder), a folder (its subfolder is used), or ``"none"`` (no disk cache).
* :func:`cache_key` names an entry by its kind, a fingerprint of the source files (:func:`file_fingerprint`:
  resolved path, size, modification time; a folder such as a DICOM series by its files) and the settings
  that change the content, so a changed file or setting makes a new entry and an unchanged one is reused.

Entries are built with :func:`pretext.atomic.atomic_dir` (temporary folder, then rename) and record each
file's size; :func:`files_damage` compares them when an entry is opened (cheap: no hashing) and
:func:`reuse_entry` deletes a damaged entry with a warning, so the caller rebuilds it from the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "resolve_cache", "file_fingerprint", "cache_key", "files_damage", "reuse_entry", "NO_CACHE"]

NO_CACHE = (None, False, "none", "off", "false", "no", "")
_AUTO = (True, "auto", "true", "on", "yes")


def cache_dir(sub: str | None = None) -> Path:
    """``$MEDSSL_CACHE`` or ``~/.cache/medssl``, plus ``sub`` when given.

    Args:
        sub: the store kind's subfolder (``"volume"``, ``"signal"``).
    """
    root = Path(os.environ.get("MEDSSL_CACHE") or Path.home() / ".cache" / "medssl")
    return root / sub if sub else root


def resolve_cache(cache: Any, sub: str | None = None) -> Path | None:
    """The folder a data kind's ``cache`` option names, or ``None`` for no disk cache.

    Args:
        cache: ``"auto"``/``True`` (:func:`cache_dir`), ``"none"``/``None``/``False`` (in memory or a
            temporary folder, as the modality does it), or a folder.
        sub: the store kind's subfolder, added to the default folder and to a given one alike.
    """
    if isinstance(cache, str):
        cache = cache.strip()
        if cache.lower() in NO_CACHE or cache.lower() in _AUTO:
            cache = cache.lower()
    if cache in NO_CACHE:
        return None
    if cache in _AUTO:
        return cache_dir(sub)
    root = Path(str(cache)).expanduser()
    return root / sub if sub else root


def file_fingerprint(paths: Iterable[str | Path]) -> list[tuple[str, int, int]]:
    """``[(resolved path, size, mtime_ns), ...]`` of the source files (cheap: no reading).

    A folder (a DICOM series) counts as its files: total size, newest modification time. A path that
    does not exist is ``(path, -1, -1)`` (so it still changes the key when it appears).
    """
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            st = [(f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir()) if f.is_file()]
            out.append((str(p.resolve()), sum(s for s, _ in st), max((m for _, m in st), default=0)))
        elif p.exists():
            st_ = p.stat()
            out.append((str(p.resolve()), st_.st_size, st_.st_mtime_ns))
        else:
            out.append((str(p.resolve()), -1, -1))
    return out


def cache_key(kind: str, sources: Iterable[str | Path], settings: dict[str, Any], version: int = 1,
              length: int = 16) -> str:
    """``KIND-HASH``: the entry name for ``sources`` read with ``settings`` (JSON-able, sorted).

    Args:
        kind: the data kind (first part of the name, so entries are easy to tell apart).
        sources: the files read.
        settings: every option that changes the stored content.
        version: the store format version (a new format makes new entries).
        length: hex digits of the hash.
    """
    blob = json.dumps({"v": version, "kind": kind, "files": file_fingerprint(sources), "settings": settings},
                      sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:length]}"


def files_damage(folder: str | Path, sizes: Mapping[str, int | None]) -> str | None:
    """What is wrong with the files of an entry (one missing, or not the size written), or ``None``.

    Args:
        folder: the entry.
        sizes: file name -> size in bytes recorded at build time (``None``: only its presence is checked).
    """
    for name, size in sizes.items():
        f = Path(folder) / name
        if not f.is_file():
            return f"{name} is missing"
        if size is not None and f.stat().st_size != int(size):
            return f"{name} has {f.stat().st_size} bytes, {int(size)} were written"
    return None


def reuse_entry(folder: str | Path, damage: Callable[[Path], str | None], what: str) -> bool:
    """True if an intact entry is at ``folder``; a damaged one is deleted with a warning (rebuild it).

    Args:
        folder: the entry.
        damage: ``folder -> problem or None`` (the store's own check, e.g. built on :func:`files_damage`).
        what: the store's name in the warning ("volume cache", "signal store").
    """
    folder = Path(folder)
    if not folder.exists():
        return False
    problem = damage(folder)
    if problem is None:
        return True
    warnings.warn(f"{what} {folder} is damaged ({problem}); deleting it and rebuilding it from the source",
                  stacklevel=3)
    shutil.rmtree(folder, ignore_errors=True)
    return False

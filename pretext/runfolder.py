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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.atomic import atomic_write_text
from pretext.errors import ConfigError

IDENTITY_FILE = "run-identity.json"


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
          extend: bool = False, extend_flag: str = "--extend") -> dict[str, Any]:
    """Record (or check) that ``out`` belongs to ``identity``; return the record written.

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


__all__ = ["IDENTITY_FILE", "claim", "data_fingerprint", "describe_diff", "diff_values", "plain_json", "state_hash"]

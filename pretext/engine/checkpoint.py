"""Atomic, safely loadable checkpoints.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(..., weights_only=True)``: no pickled classes, no code runs on load.
Files are written to a temporary sibling, fsynced, then renamed over the target, so a
run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.errors import DataError

CHECKPOINT_VERSION = 1


def _atomic_write(path: Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors and primitives only) atomically with ``torch.save``."""
    state = {"version": CHECKPOINT_VERSION, **state}
    _atomic_write(Path(path), lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        DataError: the file is missing, truncated or not a checkpoint of this suite.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist; pass the path of a .ckpt written by sslbench pretrain")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise DataError(f"checkpoint {str(path)!r} cannot be read safely ({type(err).__name__}: {err}); "
                        "it may be truncated or not a medssl checkpoint") from err
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"checkpoint {str(path)!r} has no 'model' entry; it was not written by medssl")
    return state


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (shared storage is cloned first)."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


def capture_rng() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as weights_only-safe values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _tuples_to_lists(random.getstate()),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_lists_to_tuples(state["python"]))


def _tuples_to_lists(obj: Any) -> Any:
    return [_tuples_to_lists(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _lists_to_tuples(obj: Any) -> Any:
    return tuple(_lists_to_tuples(o) for o in obj) if isinstance(obj, list) else obj

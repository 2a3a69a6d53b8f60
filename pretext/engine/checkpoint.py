"""Atomic, safely loadable checkpoints.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(..., weights_only=True)``: no pickled classes, no code runs on load.
Files are written to a temporary sibling, fsynced, then renamed over the target
(:mod:`pretext.atomic`), so a run killed mid-write, or a full disk, leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from pretext.errors import DataError

__all__ = ["atomic_write_bytes", "atomic_write_text", "save_checkpoint", "load_checkpoint", "save_safetensors",
           "load_safetensors", "read_run", "encoder_state", "capture_rng", "restore_rng", "torch_load_safely",
           "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors and primitives only) atomically with ``torch.save``."""
    state = {"version": CHECKPOINT_VERSION, **state}
    atomic_write(Path(path), lambda fh: torch.save(state, fh), needed_bytes=_tensor_bytes(state),
                 hint="free some space there (or pass another output folder) and rerun; the previous "
                      "checkpoint, if any, is unchanged")


def _tensor_bytes(obj: Any) -> int:
    """About how many bytes ``torch.save(obj)`` writes (its tensors' storage)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        DataError: the file is missing, truncated or not a checkpoint of this suite.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist; pass the path of a .ckpt written by sslbench pretrain")
    state = torch_load_safely(path, "checkpoint", "it may be truncated, damaged or not a medssl checkpoint: pass the "
                              "run's checkpoints/last.ckpt or its encoder.safetensors, or pretrain again", map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"checkpoint {str(path)!r} has no 'model' entry; it was not written by medssl")
    return state


def torch_load_safely(path: str | Path, what: str, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: the one safe loader of every checkpoint and bundle reader.

    Nothing but tensors and plain values is ever unpickled. Any failure (random bytes, a truncated file, a
    pickle with code in it) is one line naming ``what`` and the file, then ``fix``; PyTorch's multi-line text
    and its advice to retry with ``weights_only=False`` (which would run the file's code) are never passed on.

    Raises:
        DataError: the file cannot be loaded as tensors and plain values.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise DataError(f"{what} {str(path)!r} cannot be read safely ({_load_problem(err)}); {fix}") from None


def _load_problem(err: BaseException) -> str:
    """What went wrong reading a file, without PyTorch's advice to retry with ``weights_only=False``: a file
    that needs it runs arbitrary code when loaded, and is refused here on purpose."""
    text = str(err)
    code = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)", text)
    if code or "Unsupported global" in text:  # a pickled class or function: loading it would run code
        named = f" ({code.group(1)})" if code else ""
        return f"it holds Python objects{named} other than tensors and plain values, which are never unpickled"
    if "weights_only" in text or "WeightsUnpickler" in text:  # random bytes, another format, a damaged pickle
        stop = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        why = f"; unpickling stopped at: {stop.group(1).strip()[:120]}" if stop else ""
        return f"it is not a file of tensors written by torch.save{why}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.split(" weights_only")[0].split("Please")[0].strip()
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file.

    Raises:
        DataError: the file is missing, truncated or not safetensors (named, with the fix).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise DataError(f"weights file {str(p)!r} does not exist; pass a run folder's encoder.safetensors")
    try:
        with safe_open(str(p), "pt") as fh:
            meta = fh.metadata() or {}
        return load_file(str(p)), dict(meta)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DataError(f"weights file {str(p)!r} is not a readable safetensors file ({_load_problem(err)}); it may "
                        "be truncated or damaged: copy it again or pretrain again") from err


def read_run(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint of a pretraining or fine-tuning run, wherever the user points: the one reader of the
    harness (:func:`sslbench.pretrained.read_checkpoint`) and the bundle export (:func:`pretext.bundle.source.read_source`).

    Args:
        path: a ``.ckpt`` (:func:`load_checkpoint`), an ``encoder.safetensors`` (its ``run_config`` metadata),
            or a run folder (its ``checkpoints/last.ckpt``, else the ``encoder.safetensors`` a finished run leaves).

    Returns:
        ``(state, file)``: ``state`` has ``"model"`` (a safetensors file's tensors as ``"encoder.*"``) and
        ``"run_config"`` (``None`` when the file records none), plus the checkpoint's other entries.

    Raises:
        DataError: a run folder with neither file, or a missing, damaged or foreign file (named).
    """
    import json

    p = Path(path)
    if p.is_dir():
        ckpt, weights = p / "checkpoints" / "last.ckpt", p / "encoder.safetensors"
        if not ckpt.is_file() and not weights.is_file():
            raise DataError(f"run folder {str(p)!r} has neither checkpoints/last.ckpt nor encoder.safetensors; "
                            "pass the folder given to sslbench pretrain --out")
        p = ckpt if ckpt.is_file() else weights
    if p.suffix == ".safetensors":
        tensors, meta = load_safetensors(p)
        run_config = json.loads(meta["run_config"]) if "run_config" in meta else None
        return {"model": {f"encoder.{k}": v for k, v in tensors.items()}, "run_config": run_config}, p
    state = load_checkpoint(p)
    state.setdefault("run_config", None)
    return state, p


def encoder_state(model: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` weights of a model state dict, without the prefix (empty when there are none)."""
    return {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (shared storage is cloned first)."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


def capture_rng() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as weights_only-safe values."""
    np_state: Any = np.random.get_state()  # the legacy tuple
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

"""A run folder for :func:`pretext.engine.fit`: a new run or the one to resume, and nothing else.

A new run needs a writable folder without a checkpoint; ``--resume`` needs its checkpoint and the same task,
encoder, data and optimisation settings (:func:`check_same_run` names each difference).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pretext.errors import ConfigError, UserError
from pretext.runfolder import describe_diff, diff_values, plain_json

CKPT_NAME = "last.ckpt"


def check_out_dir(out_dir: Path, resume: bool) -> Path | None:
    """Create/validate the run folder; return the checkpoint to resume from (or None)."""
    ckpt = out_dir / "checkpoints" / CKPT_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output folder {str(out_dir)!r} is not writable ({err.strerror}); choose another --out") from err
    if resume:
        if not ckpt.is_file():
            raise UserError(f"--resume given but {str(ckpt)!r} does not exist; drop --resume to start a new run")
        return ckpt
    if ckpt.is_file():
        raise UserError(f"output folder {str(out_dir)!r} already holds a run ({ckpt.name}); "
                        "pass --resume to continue it or choose a new --out")
    return None


# What a resumed run must share with the run it continues: the model, the data, the batch stream and the
# optimisation hyperparameters (the restored optimizer and scheduler keep the saved ones, so a new value would be
# recorded but not applied). The step budget (``--steps``), logging and checkpoint cadence may change on resume.
_SAME_RUN_KEYS = ("task", "encoder", "task_cfg", "encoder_cfg", "data", "data_fingerprint")
_SAME_TRAIN_KEYS = ("seed", "batch_size", "accumulate", "lr", "min_lr", "weight_decay", "warmup_steps", "clip_grad",
                    "ema")


def check_same_run(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume ``path`` with another task, encoder, config or data (each difference named)."""
    diffs = []
    for key in _SAME_RUN_KEYS:
        if key in saved and key in current:
            diffs += diff_values(plain_json(saved[key]), plain_json(current[key]), key)
    s_train, c_train = saved.get("train") or {}, current.get("train") or {}
    for key in _SAME_TRAIN_KEYS:
        if key in s_train and key in c_train and s_train[key] != c_train[key]:
            diffs.append((f"train.{key}", s_train[key], c_train[key]))
    if diffs:
        raise ConfigError(
            f"checkpoint {str(path)!r} is from another run ({describe_diff(diffs)}); resuming would mix two "
            "configurations in one run folder: resume with the run's own settings (only --out and --resume, "
            "optionally --steps) or choose a new --out"
        )


__all__ = ["CKPT_NAME", "check_out_dir", "check_same_run"]

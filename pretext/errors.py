"""Errors raised on bad user input.

Every message names the offending value and says how to fix it. The CLI prints a
:class:`UserError` as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (a value, a file, a flag): the message says what to fix."""


class DataError(UserError):
    """A data file or folder that cannot be read as asked; the message names the file."""


class ConfigError(UserError):
    """A configuration value that is unknown or inconsistent."""


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss was NaN/inf for too many steps in a row."""


class Preempted(KeyboardInterrupt):
    """SIGTERM (SLURM/Kubernetes pre-emption) received: handled like Ctrl-C, so the run checkpoints first.

    Attributes (set by :func:`pretext.engine.fit` when it wrote a checkpoint): ``checkpoint``, ``step``.
    """

    checkpoint: str | None = None
    step: int | None = None


def raise_preempted(signum: int, frame: object) -> None:
    """A ``signal.signal`` handler: turn SIGTERM into :class:`Preempted` in the main thread."""
    raise Preempted(f"received signal {signum}")

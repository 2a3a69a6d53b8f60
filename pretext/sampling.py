"""How a split is sampled for pretraining, and which pairing a task asks for: the one interface the engine uses.

A split **declares its sampling** (:attr:`pretext.base.SSLSplit.sampling`):

* ``"items"``   every item is one fixed-shape tensor (MedMNIST cubes, resized volumes);
* ``"patches"`` items are whole scans of any shape, pretraining draws random patches (``volssl.sampling``);
* ``"windows"`` items are windows of longer recordings (signals; ``records`` says which recording).

A task **declares its pairing** (:meth:`pretext.base.PretextTask.pairing`), one of :data:`PAIRINGS`:

* ``"none"``     single items (restoration, rotation, CPC);
* ``"views"``    two random views of one item, made by the task (SimCLR's default);
* ``"patches"``  two patches of one whole scan (keys ``x`` and ``x2``); on a split of fixed-shape items this
  falls back to ``"views"`` with a warning;
* ``"patient"``  two records (scans, recordings) of one patient (``x``, ``x2``; PCLR generalised), with the
  single-item fallback of :class:`pretext.pairs.PatientPairs` (another window of the same record, or the item
  itself) counted and warned.

The engine calls :func:`pretrain_stream` and nothing else: the split's :meth:`~Streamable.stream` turns it into
a :class:`Stream` (the dataset to iterate and its collate function), then the task's ``wrap_dataset`` may adapt
it (rotation's isotropic resampling). A split class changes how it is sampled by overriding ``sampling`` and
``stream``; the base class (items and windows) implements ``"none"``, ``"views"`` and ``"patient"``, and the
patch split (``volssl.sampling.VolumeSplit``) adds ``"patches"``. Every batch carries ``patient``, so tasks keep
items of one patient from being each other's negatives whatever the pairing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import Dataset

from pretext.errors import UserError

SAMPLINGS = ("items", "patches", "windows")
PAIRINGS = ("none", "views", "patches", "patient")

__all__ = ["PAIRINGS", "SAMPLINGS", "Stream", "Streamable", "check_pairing", "pretrain_stream"]


@dataclasses.dataclass
class Stream:
    """What the engine iterates: ``dataset`` (items are dicts of tensors) and the ``collate_fn`` its
    DataLoader needs (``None``: PyTorch's default)."""

    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any] | None = None


@runtime_checkable
class Streamable(Protocol):
    """A dataset that says how it is sampled: :class:`pretext.base.SSLSplit` and the patch streams."""

    sampling: str

    def stream(self, seed: int = 0, pairing: str = "none") -> Stream:
        """The pretraining stream for ``pairing`` (one of :data:`PAIRINGS`); draws depend on ``seed`` only."""
        ...


def check_pairing(pairing: str, what: str) -> str:
    """Return ``pairing`` or raise a :class:`UserError` naming the valid ones."""
    if pairing not in PAIRINGS:
        raise UserError(f"{what}: pairing={pairing!r} must be one of {', '.join(PAIRINGS)}")
    return pairing


def pretrain_stream(dataset: Dataset, task: Any, seed: int = 0) -> Stream:
    """The stream ``fit`` iterates for ``task`` on ``dataset``: the split's stream for the task's pairing, then
    the task's ``wrap_dataset``.

    A plain ``Dataset`` (not :class:`Streamable`) is used as it is, which serves pairings ``"none"`` and
    ``"views"``; asking it for another pairing is refused.
    """
    is_task = callable(getattr(task, "pairing", None)) and callable(getattr(task, "wrap_dataset", None))
    pairing = task.pairing() if is_task else "none"
    if isinstance(dataset, Streamable):
        stream = dataset.stream(seed=seed, pairing=pairing)
    elif pairing in ("none", "views"):
        stream = Stream(dataset)
    else:
        raise UserError(f"pairing {pairing!r} needs a split that knows its patients and records "
                        f"(a pretext.base.SSLSplit), got a {type(dataset).__name__}")
    if is_task:  # a pretext.base.PretextTask
        stream = Stream(task.wrap_dataset(stream.dataset, task.cfg, seed=seed), stream.collate_fn)
    return stream

"""The pretext-task protocol and the data container every data kind returns.

Batches are dicts of tensors. Keys shared by all data kinds:

* ``"x"``: the input, ``(B, C, D, H, W)`` for volumes or ``(B, C, T)`` for signals;
* ``"label"``: ``(B,)`` int64 class index, or ``(B, K)`` float multi-hot; ``-1`` where unknown;
* ``"patient"``: ``(B,)`` int64 patient index (into ``SSLSplit.patient_names``);
* ``"index"``: ``(B,)`` int64 item index in the split.

Tasks may ask a dataset wrapper for more (PCLR's ``"x2"`` second view of the same patient).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pretext.config import ConfigModel

Batch = dict[str, torch.Tensor]


@runtime_checkable
class Encoder(Protocol):
    """What every encoder offers (an ``nn.Module``).

    * ``num_features``: width F of the pooled feature;
    * ``forward_features(x) -> (B, F)``: pooled features, what probes and heads consume;
    * optionally ``forward_tokens(x) -> (B, N, F)`` (patch/time tokens) and
      ``forward_maps(x) -> list[(B, C_i, ...)]`` (multi-scale feature maps for decoders).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...


class PretextTask(nn.Module):
    """Base class of a pretext task: an ``nn.Module`` built around an encoder.

    Subclasses define ``Config`` (a :class:`pretext.config.ConfigModel`: its fields are the task's options, with
    their ranges; a frozen dataclass is validated the same way) and ``forward(batch, generator)``, which
    makes the views and targets itself, batched on the batch's device. Random parameters are
    drawn from ``generator`` (a CPU ``torch.Generator`` the engine seeds per step) and then
    moved to the device, so one seed gives the same corruption on CPU and GPU.
    After pretraining, ``task.encoder`` is what downstream uses.
    """

    Config: ClassVar[type] = ConfigModel  # no options
    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg if cfg is not None else self.Config()

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Return a dict with a scalar ``"loss"`` (fp32) and any other scalars to log."""
        raise NotImplementedError

    def pairing(self) -> str:
        """The pairing this task asks of the split (:data:`pretext.sampling.PAIRINGS`): ``"none"`` here; the
        joint-embedding tasks return their ``pairing`` option."""
        return "none"

    @classmethod
    def wrap_dataset(cls, split: Dataset, cfg: Any, seed: int = 0) -> Dataset:
        """Adapt the stream the split gave (:func:`pretext.sampling.pretrain_stream`); override to pair items
        yourself (PCLR) or resample them (rotation). The default returns it unchanged."""
        return split

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        """Raise a :class:`pretext.errors.UserError` when ``input_shape`` (C, ...) cannot work."""


class SSLSplit(Dataset):
    """One split of a data kind: items are dicts with ``"x"``, ``"label"``, ``"patient"``, ``"index"``.

    Subclasses implement ``__len__`` and ``load(i) -> torch.Tensor``; labels and patients are
    arrays so that splits, label fractions and leakage checks never touch the data.

    Attributes:
        labels: ``(N,)`` int class indices (``-1`` unknown) or ``(N, K)`` float multi-hot.
        patients: ``(N,)`` int64 patient index into ``patient_names``.
        patient_names: patient identifiers as strings.
        meta: optional per-item metadata table (``pandas.DataFrame``: sex, age, site, ...).
    """

    labels: np.ndarray
    patients: np.ndarray
    patient_names: list[str]
    meta: Any = None
    sampling: str = "items"  # how pretraining samples it: "items" | "patches" | "windows" (pretext.sampling)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def stream(self, seed: int = 0, pairing: str = "none") -> Any:
        """The pretraining :class:`pretext.sampling.Stream` for ``pairing``: the split itself for ``"none"`` and
        ``"views"``, :class:`pretext.pairs.PatientPairs` for ``"patient"``; ``"patches"`` (two patches of one
        whole scan) falls back to ``"views"`` here, where items have one fixed shape."""
        from pretext.sampling import Stream, check_pairing

        check_pairing(pairing, type(self).__name__)
        if pairing == "patient":
            from pretext.pairs import PatientPairs

            return Stream(PatientPairs(self, seed, pair="patient", what="pairing 'patient'"))
        if pairing == "patches":
            warnings.warn("pairing 'patches' needs whole scans (a data spec with ?patch=D,H,W); this split's "
                          "items have one fixed shape, so two views of each item are used ('views')", stacklevel=2)
        return Stream(self)

    def __getitem__(self, i: int) -> Batch:
        label = self.labels[i]
        return {
            "x": self.load(i),
            "label": torch.as_tensor(label, dtype=torch.float32 if np.ndim(label) else torch.int64),
            "patient": torch.as_tensor(int(self.patients[i]), dtype=torch.int64),
            "index": torch.as_tensor(i, dtype=torch.int64),
        }


@dataclasses.dataclass
class SSLData:
    """What a data kind (``KIND:PATH``) loads: named splits plus what a model needs to know.

    Attributes:
        modality: "volume" or "signal".
        splits: "train", and where defined "val" and "test".
        input_shape: ``(C, D, H, W)`` or ``(C, T)`` of one item.
        num_classes: classes of the label (None when unlabelled).
        class_names: names of the classes.
        multilabel: labels are multi-hot.
        sfreq: sampling rate in Hz (signals).
        channel_names: lead/channel names in order (signals) or modality channel names.
        source: the spec it was loaded from, for reports.
        meta: anything else (spacing, normalisation used, official split name ...).
    """

    modality: str
    splits: dict[str, SSLSplit]
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    multilabel: bool = False
    sfreq: float | None = None
    channel_names: list[str] = dataclasses.field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def encoder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that size an encoder for this data (the modality adapter's: braindecode/MONAI names)."""
        from pretext.modality import get_modality

        return get_modality(self.modality).encoder_kwargs(self.input_shape, self.sfreq)


class ArraySplit(SSLSplit):
    """A split over items held in one array (in memory or a memmap): ``x[index[i]]`` is item ``i``.

    Args:
        x: ``(N_all, C, ...)`` array of every item.
        index: ``(N,)`` rows of ``x`` in this split.
        labels, patients: per-row arrays over all ``N_all`` rows (subset by ``index`` here).
        patient_names: patient identifiers.
        meta: per-row ``pandas.DataFrame`` over all rows (subset by ``index`` here).
    """

    def __init__(self, x: np.ndarray, index: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                 patient_names: list[str], meta: Any = None) -> None:
        self.x, self.index = x, np.asarray(index)
        self.labels = labels[self.index]
        self.patients = patients[self.index]
        self.patient_names = patient_names
        self.meta = meta.iloc[self.index].reset_index(drop=True) if meta is not None else None

    def __len__(self) -> int:
        return int(self.index.size)

    def load(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.x[self.index[i]], dtype=np.float32))


def repeated_patient_splits(x: np.ndarray, table: Any, per_patient: int, val_fraction: float, test_fraction: float,
                            seed: int, item_col: str) -> dict[str, ArraySplit]:
    """Stratified patient-wise splits over ``x``, whose rows are ``per_patient`` consecutive items per patient.

    Args:
        x: ``(P * per_patient, C, ...)`` items, patient-major.
        table: per-patient ``pandas.DataFrame`` with ``patient`` (name) and ``label`` columns, plus any
            metadata columns (``sex``, ``age``, ``site``) copied into each split's ``meta``.
        per_patient: items per patient; ``item_col`` names the item's index within its patient in ``meta``.
        val_fraction, test_fraction, seed: see :func:`pretext.splits.patient_split` (stratified by class).

    Raises:
        ConfigError: fractions outside [0, 1) (test: (0, 1)) or summing to 1 or more.
    """
    from pretext.splits import check_fractions, patient_split

    check_fractions(float(val_fraction), float(test_fraction), need_test=True)
    n_patients = len(table)
    patients = np.repeat(np.arange(n_patients, dtype=np.int64), per_patient)
    labels = table["label"].to_numpy(np.int64)[patients]
    cols = [c for c in ("patient", "sex", "age", "site") if c in table.columns]
    meta = table.loc[patients, cols].reset_index(drop=True)
    meta[item_col] = np.tile(np.arange(per_patient), n_patients)
    names = table["patient"].tolist()
    role = patient_split(np.arange(n_patients), float(val_fraction), float(test_fraction), seed,
                         strata=table["label"].tolist())[patients]
    return {k: ArraySplit(x, np.flatnonzero(role == k), labels, patients, names, meta)
            for k in ("train", "val", "test") if (role == k).any()}

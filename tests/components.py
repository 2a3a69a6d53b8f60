"""Tiny builds of the registered tasks and encoders, shared by the contract tests (``tests/test_contracts.py``) and
the per-package tests (imported as ``tests.components``).

Everything is found in the registries and sized through the modality adapters
(:meth:`pretext.modality.Modality.encoder_kwargs`), so a new task or encoder file is tested without editing a
test. The option tables below list only components that need options to run on tiny CPU inputs (a narrower
network, a short sequence's CPC steps, a decoder of a tiny ViT); every other component runs with its defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from pretext.base import PretextTask, SSLSplit
from pretext.modality import get_modality
from pretext.pipeline import default_encoder
from pretext.registry import ENCODERS, TASKS, Registry, builtin_packages, create_encoder, create_task
from pretext.sampling import pretrain_stream

# the tiny input of each modality: item shape (C, ...) and sampling rate
SHAPES: dict[str, tuple[tuple[int, ...], float | None]] = {
    "volume": ((1, 16, 16, 16), None),
    "signal": ((2, 256), 100.0),
}

# encoders whose defaults are too big (or cannot run) for the tiny inputs; "_shape" overrides the input
ENCODER_OPTIONS: dict[str, dict[str, Any]] = {
    "resnet18_3d": {"widen_factor": 0.125},
    "resnet50_3d": {"widen_factor": 0.125},
    "vit_3d": {"embed_dim": 48, "depth": 1, "num_heads": 2, "patch_size": 4},
    "monai_net": {"net": "UNet", "out_channels": 8, "channels": (4, 8), "strides": (2,)},  # DenseNet121: >= 32^3
    "xresnet1d34": {"widths": (8, 16, 32, 64)},
    "xresnet1d50": {"widths": (8, 16, 32, 64)},
    "xresnet1d101": {"widths": (8, 16, 32, 64)},
    "ribeiro_resnet": {"_shape": (2, 512)},  # downsamples by 256
    "tsai_InceptionTimePlus": {"nf": 16},
    "tsai_XResNet1dPlus": {"block_szs_base": (8, 16, 32, 64)},
    "tsai_TSTPlus": {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1},
    "tsai_XceptionTimePlus": {"nf": 4},
}

# tasks that need options on the tiny inputs (with their default encoder, pretext.pipeline.default_encoder)
_SHUFFLE = {"max_block": (3, 3, 3), "num_blocks": 300}  # blocks of dim // 10 = 1 voxel shuffle nothing at 16^3
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "cpc": {"horizon": 3},  # 256 samples give 8 latent steps
    "mae3d": {"decoder_dim": 48, "decoder_heads": 2, "decoder_depth": 1},
    "pixel_shuffle": _SHUFFLE,
    "combined": {"options": {"pixel_shuffle": _SHUFFLE}},
    # a fixed centre (momentum 1) keeps the teacher's targets fixed, so "overfit one batch" is well posed;
    # two local crops keep the tiny runs quick
    "dino": {"center_momentum": 1.0, "local_crops": 2, "out_dim": 256},
}


def shipped(registry: Registry, modality: str | None = None) -> list[str]:
    """Names the project's modality packages register (tests register helpers of their own elsewhere)."""
    packages = tuple(builtin_packages(registry.kind))
    names = registry.names(**({"modality": modality} if modality else {}))
    return [n for n in names if getattr(registry.get(n), "__module__", "").startswith(packages)]


def modality_of(registry: Registry, name: str) -> str:
    modality = registry.meta(name).get("modality")
    assert modality, f"{registry.kind} {name!r} is registered without modality=...; add it to its decorator"
    return str(modality)


def input_shape(encoder: str) -> tuple[int, ...]:
    """The tiny item shape ``(C, ...)`` an encoder is built for."""
    return tuple(ENCODER_OPTIONS.get(encoder, {}).get("_shape", SHAPES[modality_of(ENCODERS, encoder)][0]))


def encoder_options(encoder: str) -> dict[str, Any]:
    """The option table's options of ``encoder`` (no sizing): ``{}`` for most."""
    return {k: v for k, v in ENCODER_OPTIONS.get(encoder, {}).items() if k != "_shape"}


def encoder_kwargs(encoder: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a tiny ``encoder``: the modality adapter's sizing plus the option table."""
    modality = modality_of(ENCODERS, encoder)
    options = encoder_options(encoder)
    sizing = get_modality(modality).encoder_kwargs(input_shape(encoder), SHAPES[modality][1])
    return {**{k: v for k, v in sizing.items() if v is not None}, **options, **overrides}


def tiny_encoder(encoder: str, **overrides: Any) -> torch.nn.Module:
    return create_encoder(encoder, **encoder_kwargs(encoder, **overrides))


def task_cases(modality: str | None = None) -> list[str]:
    """The shipped tasks as test cases: ``"rotation"``, and a modality-agnostic task (``modality="any"``) once per
    modality, ``"simclr@volume"``, ``"simclr@signal"``."""
    cases = []
    for name in shipped(TASKS):
        tag = modality_of(TASKS, name)
        for m in (SHAPES if tag == "any" else (tag,)):
            if modality in (None, m):
                cases.append(f"{name}@{m}" if tag == "any" else name)
    return cases


def split_case(case: str) -> tuple[str, str]:
    """``"simclr@signal"`` -> ``("simclr", "signal")``; ``"rotation"`` -> ``("rotation", "volume")``."""
    name, _, modality = case.partition("@")
    return name, modality or modality_of(TASKS, name)


def task_encoder(task: str) -> str:
    """The encoder a task (or a case ``"simclr@signal"``) runs with when none is named (its own ``encoder=``
    meta, else the modality default)."""
    name, modality = split_case(task)
    return default_encoder(name, modality)


def tiny_task(task: str, encoder: str | None = None, encoder_options: dict[str, Any] | None = None,
              seed: int = 0, **overrides: Any) -> PretextTask:
    """``task`` (or a case ``"simclr@signal"``) on a tiny encoder, with the option table's options (``overrides``
    replace them)."""
    torch.manual_seed(seed)
    enc = tiny_encoder(encoder or task_encoder(task), **(encoder_options or {}))
    name = split_case(task)[0]
    return create_task(name, enc, **{**TASK_OPTIONS.get(name, {}), **overrides})


def random_items(shape: Sequence[int], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` items of ``shape``: volumes in [0, 1] with a brighter block (some structure), else Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 4:  # (C, D, H, W)
        side = shape[1:]
        x = torch.rand(n, *shape, generator=g)
        x[:, :, side[0] // 4: 3 * side[0] // 4, side[1] // 3:, : side[2] // 2] += 0.5
        return x.clamp(0, 1)
    return torch.randn(n, *shape, generator=g)


class TinySplit(SSLSplit):
    """``n`` random items, two per patient, each its own recording (so pairing tasks find partners)."""

    def __init__(self, shape: Sequence[int], n: int = 4, seed: int = 0) -> None:
        self.x = random_items(shape, n, seed)
        self.labels = np.arange(n, dtype=np.int64) % 2
        self.patients = np.arange(n, dtype=np.int64) // 2
        self.records = np.arange(n, dtype=np.int64)
        self.patient_names = [f"p{i}" for i in range(n // 2 + n % 2)]

    def __len__(self) -> int:
        return len(self.x)

    def load(self, i: int) -> torch.Tensor:
        return self.x[i]


def tiny_batch(task: PretextTask, shape: Sequence[int], n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as the engine gives ``task``: items of a :class:`TinySplit` through the split's stream for the
    task's pairing and the task's ``wrap_dataset`` (:func:`pretext.sampling.pretrain_stream`; PCLR pairs each
    item with a second recording of its patient), collated."""
    stream = pretrain_stream(TinySplit(shape, n, seed), task, seed=seed)
    return (stream.collate_fn or default_collate)([stream.dataset[i] for i in range(n)])

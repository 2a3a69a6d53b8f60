"""A resumable, deterministic stream of batches.

Batch ``b`` of the stream depends only on ``(seed, b, rank, world_size)``: epoch ``e`` uses the
permutation drawn from ``seed + e``, and each rank takes interleaved slices of it. Resuming
at step ``s`` starts the stream at batch ``s``, so a killed run continues with exactly the
batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from pretext.errors import ConfigError


class ResumableBatchSampler(Sampler[list[int]]):
    """Infinite batch sampler; yields index lists of length ``batch_size``.

    Args:
        n: dataset length.
        batch_size: per-rank batch size.
        seed: base seed of the per-epoch permutations.
        start: index of the first batch to yield (for resume).
        rank, world_size: this process and the number of processes (DDP).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if n < batch_size * world_size:
            raise ConfigError(
                f"the dataset has {n} items, fewer than one global batch ({batch_size=} x {world_size=}); "
                "lower --batch-size or add data"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.per_epoch = n // (batch_size * world_size)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start
        epoch, perm = -1, torch.empty(0, dtype=torch.int64)
        while True:
            e, j = divmod(b, self.per_epoch)
            if e != epoch:
                epoch = e
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + e))
            lo = (j * self.world_size + self.rank) * self.batch_size
            yield perm[lo : lo + self.batch_size].tolist()
            b += 1


def step_generator(seed: int, micro_step: int, rank: int = 0) -> torch.Generator:
    """The CPU generator a task draws its random views from at one micro-step (stateless)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step) * 1009 + rank)

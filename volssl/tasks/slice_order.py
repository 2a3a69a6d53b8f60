"""Slab order prediction (a 3D jigsaw along one axis).

The volume is cut along ``axis`` into ``num_slabs`` slabs. Slab ``j`` starts at a random offset
inside the ``j``-th segment, so neighbouring slabs are separated by a random gap, and each slab is
cropped in-plane at a random shift (``jitter``): matching edges or aligned borders do not reveal
the order. The slabs are shuffled by one permutation of a fixed set chosen for maximal Hamming
distance (:func:`volssl.transforms.permutation_set`); one shared encoder embeds every slab and an
MLP on the concatenated features predicts the permutation index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange

from pretext.base import Batch, PretextTask
from pretext.config import ConfigModel, Field, model_validator
from pretext.errors import UserError
from pretext.registry import register_task
from volssl.tasks._common import check_batch, check_volume_shape, mlp
from volssl.transforms import RandomSlabOrder, permutation_set, slab_geometry


@register_task("slice_order", modality="volume")
class SliceOrder(PretextTask):
    """Predict the permutation of shuffled slabs.

    Input ``(B, C, D, H, W)``; each slab ``(C, t, H', W')`` (for ``axis=0``) goes through the encoder.
    """

    class Config(ConfigModel):
        """Attributes:
            num_slabs: slabs k cut along ``axis``.
            num_permutations: size of the permutation set (<= k!); the classes of the task.
            axis: 0, 1 or 2 (D, H or W).
            thickness: slab thickness as a fraction of the segment ``length // k`` (the rest is gap).
            jitter: in-plane crop as a fraction of the smaller in-plane side (random shift per slab).
            slab_input: "auto" (resize slabs to the encoder's ``img_size`` when it needs a fixed size,
                e.g. vit_3d), "native" or "resize".
            hidden: width of the MLP head.
            perm_seed: seed of the permutation set's tie breaks.
        """

        num_slabs: int = Field(4, ge=2)
        num_permutations: int = 10
        axis: Literal[0, 1, 2] = 0
        thickness: float = Field(0.75, gt=0, le=1)
        jitter: float = Field(0.1, ge=0, lt=0.5)
        slab_input: Literal["auto", "native", "resize"] = "auto"
        hidden: int = Field(512, ge=1)
        perm_seed: int = Field(0, ge=0)

        @model_validator(mode="after")
        def _permutations_exist(self) -> Any:
            permutation_set(self.num_slabs, self.num_permutations, self.perm_seed)  # a ValueError says why not
            return self

    name = "slice_order"
    modality = "volume"

    def __init__(self, encoder: torch.nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        c = self.cfg
        perms = permutation_set(c.num_slabs, c.num_permutations, c.perm_seed)
        self.register_buffer("perms", torch.tensor(perms), persistent=False)
        self.head = mlp(encoder.num_features * c.num_slabs, c.hidden, c.num_permutations)
        self.slabs = RandomSlabOrder(c.num_slabs, perms, c.axis, c.thickness, c.jitter)
        mode = c.slab_input
        self.resize = mode == "resize" or (mode == "auto" and getattr(encoder, "fixed_input_size", False))

    def make_views(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, D, H, W)`` -> shuffled slabs ``(B, k, C, ...)`` and permutation labels ``(B,)``."""
        view = self.slabs.get_params(x.shape, generator)
        return view(x), view.labels.to(x.device)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        check_batch(x, self.name, self)
        slabs, labels = self.make_views(x, generator)
        flat = rearrange(slabs, "b k c d h w -> (b k) c d h w")
        if self.resize:
            flat = F.interpolate(flat, size=tuple(self.encoder.img_size), mode="trilinear", align_corners=False)
        feats = rearrange(self.encoder.forward_features(flat), "(b k) f -> b (k f)", b=x.shape[0])
        logits = self.head(feats)
        loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss, "acc": (logits.argmax(1) == labels).float().mean().detach()}

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        cfg = cfg or cls.Config()
        shape = check_volume_shape(input_shape, "slice_order")
        length = shape[1 + cfg.axis]
        if length < 2 * cfg.num_slabs:
            raise UserError(
                f"task 'slice_order': the volume has {length} voxels along axis {cfg.axis}, fewer than 2 per slab "
                f"for num_slabs={cfg.num_slabs}; use fewer slabs (--task.num_slabs), another axis, or larger volumes"
            )
        inplane = [s for a, s in enumerate(shape[1:]) if a != cfg.axis]
        _, jit = slab_geometry(length, inplane, cfg.num_slabs, cfg.thickness, cfg.jitter)
        if min(inplane) - jit < 2:
            raise UserError(f"task 'slice_order': in-plane sides {inplane} are too small for jitter={cfg.jitter}")

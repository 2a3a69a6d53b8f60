"""3D masked autoencoder (He et al. 2022, in 3D): mask most patches, encode only the visible ones,
reconstruct the masked patches with a light transformer decoder.

The encoder must offer the token hooks of :class:`volssl.encoders.ViT3D` (``forward_masked``,
``patch_size``, ``grid_size``, ``num_patches``, ``embed_dim``): ``vit_3d`` does. The patch size is
the encoder's (``--encoder.patch_size 16`` or ``8``). Positions in the decoder are the fixed 3D
sin-cos embedding; the loss is the MSE on masked patches, optionally against per-patch
normalised targets (``norm_pix_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pretext.base import Batch, PretextTask
from pretext.capabilities import MaskedTokens, require
from pretext.config import ConfigModel, Field, model_validator
from pretext.errors import UserError
from pretext.registry import register_task
from volssl.encoders.vit import Block, sincos_pos_embed_3d
from volssl.tasks._common import check_batch, check_volume_shape
from volssl.transforms import RandomPatchMask, patchify, unpatchify


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Mean squared error over masked patches, fp32.

    Args:
        pred, target: ``(B, N, P)`` patch values.
        mask: ``(B, N)``, 1 where the patch was masked.
        norm_pix: standardise each target patch (mean 0, variance 1; eps 1e-6) first.
    """
    pred, target, mask = pred.float(), target.float(), mask.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MAEDecoder(nn.Module):
    """Light decoder: ``(B, 1 + K, E)`` visible tokens -> ``(B, N, P)`` patch predictions."""

    def __init__(self, embed_dim: int, grid: Sequence[int], patch_values: int, dim: int = 192, depth: int = 2,
                 heads: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_pos_embed_3d(dim, grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_values)

    def forward(self, latent: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        z = self.embed(latent)
        cls_tok, vis = z[:, :1], z[:, 1:]
        b, n, dim = z.shape[0], self.pos.shape[1], z.shape[-1]
        full = self.mask_token.to(z.dtype).expand(b, n, dim).clone()
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, dim), vis)
        tokens = torch.cat([cls_tok, full + self.pos.to(z.dtype)], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.head(self.norm(tokens))[:, 1:]


@register_task("mae3d", modality="volume", encoder="vit_3d")
class MAE3D(PretextTask):
    """Masked autoencoding of 3D patches (see module docstring). Input ``(B, C, D, H, W)``."""

    class Config(ConfigModel):
        """Attributes:
            mask_ratio: fraction of patches masked (exactly ``N - int(N * (1 - ratio))``).
            norm_pix_loss: per-patch normalised targets.
            decoder_dim: decoder width (divisible by 6 and by ``decoder_heads``).
            decoder_depth: decoder transformer blocks.
            decoder_heads: decoder attention heads.
        """

        mask_ratio: float = Field(0.75, gt=0, lt=1)
        norm_pix_loss: bool = True
        decoder_dim: int = Field(192, ge=6)
        decoder_depth: int = Field(2, ge=1)
        decoder_heads: int = Field(6, ge=1)

        @model_validator(mode="after")
        def _divisible(self) -> Any:
            if self.decoder_dim % 6 or self.decoder_dim % self.decoder_heads:
                raise ValueError(f"decoder_dim={self.decoder_dim} must be divisible by 6 and by decoder_heads="
                                 f"{self.decoder_heads}")
            return self

    name = "mae3d"
    modality = "volume"

    def __init__(self, encoder: torch.nn.Module, cfg: Config | None = None) -> None:
        super().__init__(encoder, cfg)
        require(encoder, MaskedTokens, self.name, "a patch-token encoder such as vit_3d")
        c = self.cfg
        n, keep = encoder.num_patches, int(encoder.num_patches * (1 - c.mask_ratio))
        if not 1 <= keep < n:
            raise UserError(
                f"task 'mae3d': {n} patch(es) of {tuple(encoder.patch_size)} in img_size {tuple(encoder.img_size)} with "
                f"mask_ratio={c.mask_ratio} leaves {keep} visible; use a smaller --encoder.patch_size or larger volumes"
            )
        values = int(torch.tensor(encoder.patch_size).prod()) * getattr(encoder, "in_channels", 1)
        self.masking = RandomPatchMask(c.mask_ratio)
        self.decoder = MAEDecoder(encoder.embed_dim, encoder.grid_size, values, c.decoder_dim, c.decoder_depth,
                                  c.decoder_heads)

    def _mask(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids_keep (B, K)`` and ``mask (B, N)`` (1 = masked) on ``x``'s device."""
        m = self.masking.get_params((x.shape[0], self.encoder.num_patches), generator)
        return m.ids_keep.to(x.device), m.mask.to(x.device)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        check_batch(x, self.name, self)
        enc = self.encoder
        ids_keep, mask = self._mask(x, generator)
        pred = self.decoder(enc.forward_masked(x, ids_keep), ids_keep)
        loss = mae_loss(pred, patchify(x, enc.patch_size), mask, self.cfg.norm_pix_loss)
        return {"loss": loss, "masked_fraction": mask.mean()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted volume and the voxel mask ``(B, 1, D, H, W)`` (for figures; un-normalised targets only)."""
        enc = self.encoder
        ids_keep, mask = self._mask(x, generator)
        pred = self.decoder(enc.forward_masked(x, ids_keep), ids_keep)
        vol = unpatchify(pred, enc.patch_size, enc.grid_size, x.shape[1])
        pv = int(torch.tensor(enc.patch_size).prod())
        m = unpatchify(mask[..., None].expand(-1, -1, pv), enc.patch_size, enc.grid_size, 1)
        return vol, m

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        shape = check_volume_shape(input_shape, "mae3d", min_side=2)
        if min(shape[1:]) < 4:
            raise UserError(f"task 'mae3d': volume {shape[1:]} is too small to cut into patches; use >= 8 voxels a side")

"""A 3D Vision Transformer (einops + ``scaled_dot_product_attention``) with MAE hooks.

Besides the common interface it offers what :mod:`volssl.tasks.mae3d` needs: ``embed`` (patch
tokens with position), ``forward_masked`` (encode only the kept tokens) and the fixed 3D sin-cos
position embedding :func:`sincos_pos_embed_3d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pretext.errors import ConfigError
from pretext.registry import register_encoder
from volssl.encoders.resnet import as_size3


def sincos_pos_embed_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(N,)`` positions -> ``(N, dim)`` sin/cos features (``dim`` even), as in MAE."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_pos_embed_3d(dim: int, grid: Sequence[int]) -> torch.Tensor:
    """Fixed 3D sin-cos position embedding ``(d*h*w, dim)``, tokens in ``(d h w)`` order.

    ``dim`` must be divisible by 6: a third of it encodes each axis with sin/cos pairs.
    """
    if dim % 6:
        raise ConfigError(f"embed_dim={dim} must be divisible by 6 for the 3D sin-cos position embedding")
    d, h, w = grid
    zz, yy, xx = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    parts = [sincos_pos_embed_1d(dim // 3, a.reshape(-1)) for a in (zz, yy, xx)]
    return torch.cat(parts, dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``; ``(B, N, E) -> (B, N, E)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def auto_patch_size(img_size: Sequence[int]) -> int:
    """Largest of 16, 8, 4, 2 dividing every side with at least 2 patches per side (28 -> 4, 64 -> 16)."""
    for p in (16, 8, 4, 2):
        if all(s % p == 0 and s // p >= 2 for s in img_size):
            return p
    return 1


class ViT3D(nn.Module):
    """3D ViT encoder.

    Args:
        in_channels: input channels C.
        img_size: ``(D, H, W)``; each side must be divisible by the patch size.
        patch_size: cubic patch side (int) or ``(pd, ph, pw)``; None picks :func:`auto_patch_size`.
        embed_dim: token width E (divisible by 6 for sin-cos positions, and by ``num_heads``).
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / E.
        pos_embed: "sincos" (fixed, 3D) or "learnable".
        global_pool: "avg" (mean of patch tokens) or "cls" for ``forward_features``.
        spatial_dims: must be 3.

    Shapes:
        ``forward_tokens``: ``(B, C, D, H, W) -> (B, N, E)`` with ``N = prod(img_size / patch)``;
        ``forward_features``: ``-> (B, E)``; ``forward_maps``: ``-> [(B, E, d, h, w)]``.
    """

    def __init__(self, in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32),
                 patch_size: int | Sequence[int] | None = None, embed_dim: int = 384, depth: int = 6,
                 num_heads: int = 6, mlp_ratio: float = 4.0, pos_embed: str = "sincos",
                 global_pool: str = "avg", spatial_dims: int = 3, qkv_bias: bool = True) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ConfigError(f"vit_3d needs spatial_dims=3, got {spatial_dims}")
        if pos_embed not in ("sincos", "learnable") or global_pool not in ("avg", "cls"):
            raise ConfigError(f"{pos_embed=} must be sincos/learnable and {global_pool=} avg/cls")
        for name, v in (("in_channels", in_channels), ("embed_dim", embed_dim), ("depth", depth),
                        ("num_heads", num_heads)):
            if v < 1:
                raise ConfigError(f"vit_3d {name}={v} must be >= 1")
        if embed_dim % num_heads or mlp_ratio <= 0:
            raise ConfigError(f"vit_3d embed_dim={embed_dim} must be divisible by num_heads={num_heads} and "
                              f"mlp_ratio={mlp_ratio} > 0")
        self.img_size = as_size3(img_size)
        ps = auto_patch_size(self.img_size) if patch_size is None else patch_size
        self.patch_size = as_size3(ps)
        bad = [(s, p) for s, p in zip(self.img_size, self.patch_size, strict=False) if s % p]
        if bad:
            raise ConfigError(
                f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}; pick a patch size "
                f"dividing every side (e.g. --encoder.patch_size {auto_patch_size(self.img_size)}) or crop/pad "
                "the data (medmnist3d ?pad_to=32, nifti ?size=...)"
            )
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size, strict=False))
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.in_channels, self.embed_dim, self.num_features = in_channels, embed_dim, embed_dim
        self.global_pool = global_pool
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_pos_embed_3d(embed_dim, self.grid_size)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.feature_channels = [embed_dim]
        self.feature_strides = [self.patch_size[0]]
        self.fixed_input_size = True  # tokens and positions are built for img_size
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.embed_dim, -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def patch_values(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, N, C*pd*ph*pw)`` in the order of ``patch_embed``'s weight."""
        if tuple(x.shape[2:]) != self.img_size:
            raise ConfigError(
                f"vit_3d was built for img_size={self.img_size} but got a volume of {tuple(x.shape[2:])}; "
                "build the encoder for the data's size"
            )
        pd, ph, pw = self.patch_size
        return rearrange(x, "b c (d pd) (h ph) (w pw) -> b (d h w) (c pd ph pw)", pd=pd, ph=ph, pw=pw)

    def _project(self, values: torch.Tensor) -> torch.Tensor:
        # the strided Conv3d as one matrix product (same weights; much faster than a 16^3-kernel conv)
        w = self.patch_embed.weight.reshape(self.embed_dim, -1)
        return F.linear(values, w, self.patch_embed.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, N, E)`` patch tokens plus position embedding."""
        return self._project(self.patch_values(x)) + self.pos_embed

    def _run(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the kept patches (MAE): ``ids_keep (B, K)`` -> ``(B, 1 + K, E)`` (cls first).

        Only the kept patches are embedded (a quarter of the work at mask ratio 0.75).
        """
        values = self.patch_values(x)
        values = torch.gather(values, 1, ids_keep[..., None].expand(-1, -1, values.shape[-1]))
        pos = self.pos_embed.expand(len(x), -1, -1)
        pos = torch.gather(pos, 1, ids_keep[..., None].expand(-1, -1, pos.shape[-1]))
        return self._run(self._project(values) + pos)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, N, E)`` normalised patch tokens (no cls)."""
        return self._run(self.embed(x))[:, 1:]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(self.embed(x))
        return out[:, 0] if self.global_pool == "cls" else out[:, 1:].mean(dim=1)

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One map: the tokens on their grid, ``(B, E, d, h, w)``."""
        d, h, w = self.grid_size
        return [rearrange(self.forward_tokens(x), "b (d h w) e -> b e d h w", d=d, h=h, w=w)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_encoder("vit_3d", modality="volume")
def vit_3d(in_channels: int = 1, img_size: int | Sequence[int] = (32, 32, 32),
           patch_size: int | Sequence[int] | None = None, embed_dim: int = 384, depth: int = 6, num_heads: int = 6,
           mlp_ratio: float = 4.0, pos_embed: str = "sincos", global_pool: str = "avg",
           spatial_dims: int = 3, qkv_bias: bool = True) -> ViT3D:
    """3D ViT (patch tokens, 3D sin-cos positions); ``patch_size`` None -> 16/8/4 as the size allows."""
    return ViT3D(in_channels, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, pos_embed,
                 global_pool, spatial_dims, qkv_bias)

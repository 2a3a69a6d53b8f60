"""MAE patch masking and the patch layout of the ViT.

:class:`RandomPatchMask` draws which tokens stay visible -> :class:`PatchMask` holds ``ids_keep`` and the
mask -> :func:`keep_tokens` selects the visible tokens. :func:`patchify` / :func:`unpatchify` convert
between volumes and patch tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from einops import rearrange

from pretext.errors import ConfigError
from pretext.transforms import RandomTransform, Transform

__all__ = ["PatchMask", "RandomPatchMask", "keep_tokens", "patchify", "unpatchify"]


def keep_tokens(tokens: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """The visible tokens: ``tokens (B, N, P)``, ``ids_keep (B, K)`` -> ``(B, K, P)`` (the pure function)."""
    ids = ids_keep.to(tokens.device)
    return tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


@dataclasses.dataclass
class PatchMask(Transform):
    """A fixed MAE mask.

    Attributes:
        ids_keep: ``(B, K)`` kept token indices, in random order.
        mask: ``(B, N)`` float, 1 = masked.
    """

    ids_keep: torch.Tensor
    mask: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, P)`` -> the visible ones ``(B, K, P)``."""
        return keep_tokens(x, self.ids_keep)


class RandomPatchMask(RandomTransform):
    """MAE masking: exactly ``N - int(N * (1 - ratio))`` of the ``N`` tokens masked per sample.

    Args:
        ratio: fraction of tokens masked.
    """

    def __init__(self, ratio: float = 0.75) -> None:
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"mask_ratio={ratio} must be in (0, 1)")
        self.ratio = float(ratio)

    def get_params(self, batch_shape: Sequence[int], generator: torch.Generator | None) -> PatchMask:
        """``batch_shape`` is ``(B, N, ...)``: batch and tokens. Draws ``(B, N)`` float32 uniforms."""
        b, n = int(batch_shape[0]), int(batch_shape[1])
        keep = int(n * (1 - self.ratio))
        if not 1 <= keep < n:
            raise ConfigError(f"mask_ratio={self.ratio} leaves {keep} of {n} tokens visible; need 1..{n - 1}: "
                              "lower the ratio or cut the volume into more patches")
        noise = torch.rand(b, n, generator=generator)
        ids_keep = noise.argsort(dim=1)[:, :keep]
        mask = torch.ones(b, n)
        mask.scatter_(1, ids_keep, 0.0)
        return PatchMask(ids_keep, mask)


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``(B, C, D, H, W) -> (B, N, pd*ph*pw*C)``, tokens in ``(d h w)`` order as the ViT's."""
    pd, ph, pw = patch
    return rearrange(x, "b c (d pd) (h ph) (w pw) -> b (d h w) (pd ph pw c)", pd=pd, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, P) -> (B, C, D, H, W)``."""
    (pd, ph, pw), (d, h, w) = patch, grid
    return rearrange(tokens, "b (d h w) (pd ph pw c) -> b c (d pd) (h ph) (w pw)",
                     d=d, h=h, w=w, pd=pd, ph=ph, pw=pw, c=channels)

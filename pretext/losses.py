"""Shared self-supervised losses as plain functions (always computed in fp32).

Every function casts its inputs with ``.float()`` so that it returns an fp32 scalar under
autocast too. Shapes follow the docstrings; ``N`` is the number of queries, ``M`` of keys.

>>> q, k = torch.randn(4, 8), torch.randn(4, 8)
>>> info_nce(q, k).shape
torch.Size([])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

_F = TypeVar("_F", bound=Callable[..., Any])


def fp32(fn: _F) -> _F:
    """Run ``fn`` with autocast disabled (on CPU and CUDA), so its matmuls stay in fp32."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast("cuda", enabled=False):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]

__all__ = [
    "info_nce",
    "nt_xent",
    "multi_positive_nt_xent",
    "positive_mask_from_groups",
    "masked_mse",
    "cross_entropy",
    "fp32",
]


@fp32
def info_nce(
    query: torch.Tensor,
    keys: torch.Tensor,
    temperature: float = 1.0,
    targets: torch.Tensor | None = None,
    normalize: bool = False,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE: cross-entropy of each query against all keys, the positive given by ``targets``.

    Args:
        query: ``(N, D)`` queries.
        keys: ``(M, D)`` candidate keys (the positive and the negatives).
        temperature: divides the logits.
        targets: ``(N,)`` index of each query's positive key; defaults to ``arange(N)``
            (keys aligned with queries, the MoCo/CLIP layout; then ``M >= N``).
        normalize: L2-normalise queries and keys first (cosine similarity).
        key_mask: optional ``(N, M)`` bool, ``False`` removes a key from a query's candidates.

    Returns:
        fp32 scalar, the mean over queries.
    """
    q, k = query.float(), keys.float()
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = q @ k.T / temperature
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, float("-inf"))
    if targets is None:
        if k.shape[0] < q.shape[0]:
            raise ValueError(f"info_nce without targets needs as many keys as queries, got {q.shape[0]=} {k.shape[0]=}")
        targets = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, targets)


def positive_mask_from_groups(groups: torch.Tensor, views: int = 2) -> torch.Tensor:
    """Positive mask for ``views`` stacked views of a batch whose items belong to ``groups``.

    Args:
        groups: ``(B,)`` int group id per item (a patient index for PCLR).
        views: number of views stacked as ``[view0 (B), view1 (B), ...]``.

    Returns:
        ``(V*B, V*B)`` bool, ``True`` where two rows share a group, diagonal ``False``.
    """
    g = groups.reshape(-1).repeat(views)
    mask = g[:, None] == g[None, :]
    mask.fill_diagonal_(False)
    return mask


@fp32
def multi_positive_nt_xent(z: torch.Tensor, positive_mask: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent with any number of positives per row (SupCon "L_out" form).

    Each row is contrasted against every other row; its loss is the mean over its positives of
    ``-log softmax(sim / T)``. With exactly one positive per row this is SimCLR's NT-Xent.

    Args:
        z: ``(N, D)`` embeddings (normalised here).
        positive_mask: ``(N, N)`` bool, ``True`` for positive pairs; the diagonal is ignored.
        temperature: softmax temperature.

    Returns:
        fp32 scalar, mean over rows that have at least one positive.
    """
    z = F.normalize(z.float(), dim=-1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = positive_mask.to(z.device).bool() & ~eye
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        raise ValueError("multi_positive_nt_xent: no row has a positive; check positive_mask")
    per_row = -(log_prob.masked_fill(~pos, 0.0).sum(1)) / n_pos.clamp(min=1)
    return per_row[has].mean()


@fp32
def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR's NT-Xent over two views; with ``groups`` every same-group row is a positive too.

    Args:
        z1: ``(B, D)`` embeddings of view 1.
        z2: ``(B, D)`` embeddings of view 2 (row ``i`` pairs with ``z1[i]``).
        temperature: softmax temperature (0.1 as in PCLR).
        groups: optional ``(B,)`` ids (patients): items of one group are all positives of each
            other (multi-positive mask); ``None`` keeps only the pair.

    Returns:
        fp32 scalar.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two views of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    if groups is None:
        groups = torch.arange(b, device=z1.device)
    return multi_positive_nt_xent(torch.cat([z1, z2]), positive_mask_from_groups(groups.to(z1.device)), temperature)


@fp32
def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the elements where ``mask`` is true (all when ``None``).

    Args:
        pred: any shape.
        target: same shape as ``pred``.
        mask: broadcastable to ``pred``; bool or 0/1 weights.

    Returns:
        fp32 scalar (0 when the mask is empty).
    """
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    w = mask.float().expand_as(err)
    return (err * w).sum() / w.sum().clamp(min=1.0)


@fp32
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """``F.cross_entropy`` computed in fp32 (for use under autocast)."""
    return F.cross_entropy(logits.float(), target, **kwargs)  # type: ignore[arg-type]

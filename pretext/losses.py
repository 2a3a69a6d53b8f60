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
    "vicreg_loss",
    "dino_loss",
    "dino_center",
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
def multi_positive_nt_xent(z: torch.Tensor, positive_mask: torch.Tensor, temperature: float = 0.1,
                           exclude_mask: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent with any number of positives per row (SupCon "L_out" form).

    Each row is contrasted against every other row; its loss is the mean over its positives of
    ``-log softmax(sim / T)``. With exactly one positive per row this is SimCLR's NT-Xent.

    Args:
        z: ``(N, D)`` embeddings (normalised here).
        positive_mask: ``(N, N)`` bool, ``True`` for positive pairs; the diagonal is ignored.
        temperature: softmax temperature.
        exclude_mask: optional ``(N, N)`` bool, ``True`` removes a pair from the row's candidates altogether
            (neither positive nor negative: items of one patient under patient-aware negatives).

    Returns:
        fp32 scalar, mean over rows that have at least one positive.
    """
    z = F.normalize(z.float(), dim=-1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = positive_mask.to(z.device).bool() & ~eye
    drop = eye if exclude_mask is None else eye | (exclude_mask.to(z.device).bool() & ~pos)
    logits = (z @ z.T / temperature).masked_fill(drop, float("-inf"))
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
    same_group: str = "positive",
) -> torch.Tensor:
    """SimCLR's NT-Xent over two views; with ``groups``, rows of one group are never negatives of each other.

    Args:
        z1: ``(B, D)`` embeddings of view 1.
        z2: ``(B, D)`` embeddings of view 2 (row ``i`` pairs with ``z1[i]``).
        temperature: softmax temperature (0.1 as in PCLR).
        groups: optional ``(B,)`` ids (patients); ``None``: every other row is a negative (SimCLR).
        same_group: with ``groups``, ``"positive"`` makes every same-group row a positive (multi-positive
            mask, PCLR), ``"exclude"`` keeps only the pair as positive and drops the other same-group rows
            from the denominator (neither positive nor negative).

    Returns:
        fp32 scalar.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two views of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if same_group not in ("positive", "exclude"):
        raise ValueError(f"nt_xent {same_group=} must be 'positive' or 'exclude'")
    b = z1.shape[0]
    pairs = positive_mask_from_groups(torch.arange(b, device=z1.device))
    if groups is None:
        return multi_positive_nt_xent(torch.cat([z1, z2]), pairs, temperature)
    same = positive_mask_from_groups(groups.to(z1.device))
    if same_group == "positive":
        return multi_positive_nt_xent(torch.cat([z1, z2]), same, temperature)
    return multi_positive_nt_xent(torch.cat([z1, z2]), pairs, temperature, exclude_mask=same)


@fp32
def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg (Bardes et al., ICLR 2022): invariance (MSE) + variance hinge + covariance decorrelation.

    Matches lightly's ``VICRegLoss`` (lambda, mu, nu = 25, 25, 1): the variance term is averaged over the two
    branches, the covariance term summed, each branch's off-diagonal covariance squared and divided by ``D``.

    Args:
        z1, z2: ``(B, D)`` embeddings of the two views (``B >= 2``).

    Returns:
        fp32 scalar.
    """
    a, b = z1.float(), z2.float()
    if a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(f"vicreg_loss needs two (B, D) views of one shape with B >= 2, got {tuple(a.shape)}, {tuple(b.shape)}")
    inv = F.mse_loss(a, b)

    def variance(x: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - torch.sqrt(x.var(dim=0) + eps)).mean()

    def covariance(x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        x = x - x.mean(dim=0)
        cov = (x.T @ x) / (n - 1)
        off = cov - torch.diag(torch.diagonal(cov))
        return off.pow(2).sum() / d

    var = 0.5 * (variance(a) + variance(b))
    cov = covariance(a) + covariance(b)
    return sim_weight * inv + var_weight * var + cov_weight * cov


@fp32
def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              teacher_temp: float = 0.04, student_temp: float = 0.1) -> torch.Tensor:
    """DINO's self-distillation cross-entropy (Caron et al., ICCV 2021), as lightly's ``DINOLoss``.

    Each teacher view's centred, sharpened softmax is the target of every student view except the same view;
    the loss is the mean over those (teacher view, student view) pairs of the batch-mean cross-entropy.

    Args:
        student: ``V_s`` tensors ``(B, K)`` of student logits (global views first, then local crops).
        teacher: ``V_t`` tensors ``(B, K)`` of teacher logits (global views only; ``V_t <= V_s``).
        center: ``(1, K)`` running centre of the teacher's logits (update it with :func:`dino_center`).
        teacher_temp, student_temp: softmax temperatures (sharpening: ``teacher_temp < student_temp``).

    Returns:
        fp32 scalar.
    """
    t_prob = [F.softmax((t.float() - center.float()) / teacher_temp, dim=-1) for t in teacher]
    s_logp = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    total, n = torch.zeros((), device=center.device), 0
    for i, t in enumerate(t_prob):
        for j, s in enumerate(s_logp):
            if i == j:
                continue
            total = total + torch.sum(-t * s, dim=-1).mean()
            n += 1
    if n == 0:
        raise ValueError("dino_loss needs at least two views (one teacher view and another student view)")
    return total / n


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher: list[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """The centre's EMA update: ``momentum * center + (1 - momentum) * mean of the teacher logits``."""
    batch = torch.cat([t.float() for t in teacher]).mean(dim=0, keepdim=True)
    return center * momentum + batch * (1.0 - momentum)


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

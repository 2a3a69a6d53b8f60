"""CPC: contrastive predictive coding (Oord et al. 2018; for ECG Mehari & Strodthoff 2022).

An encoder maps ``x (B, C, T)`` to latents ``z (B, N, D)``; a causal context network gives
``c (B, N, H)``; a linear map per step ``k = 1..K`` predicts ``z[t + k]`` from ``c[t]``, scored
by InfoNCE against negatives from the batch (same time, other sequences), the same
sequence (other times), both, or all ``B * N`` latents. :func:`cpc_loss` computes every step
and position in one batched einsum (the straightforward loop it is checked and timed against is
``benchmarks.bench_signal.cpc_loss_loop``).

*Horizon* ``K`` (``--task.horizon``) is how many latent steps ahead are predicted; it is not the number of
training steps (``--steps``).

Use an encoder with a small receptive field (``cpc_encoder``): with a deep CNN (xresnet1d)
each latent already sees the future samples it is asked to predict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pretext.base import PretextTask
from pretext.capabilities import Latents, TokenFeatures, require
from pretext.config import ConfigModel, Field
from pretext.errors import UserError
from pretext.losses import fp32
from pretext.registry import register_task

__all__ = ["CPC", "cpc_loss", "NEGATIVES"]

NEGATIVES = ("batch", "same_seq", "both", "all")


@fp32
def cpc_loss(z: torch.Tensor, pred: torch.Tensor, negatives: str = "both",
             temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC InfoNCE over every step of the horizon and every position at once.

    Args:
        z: ``(B, N, D)`` target latents.
        pred: ``(B, N, K, D)`` predictions (``K``: the horizon); ``pred[:, t, k - 1]`` predicts ``z[:, t + k]``.
        negatives: "batch" (``z[b', t+k]`` for all b'), "same_seq" (``z[b, s]`` for all s),
            "both" (the union: B + N - 1 candidates) or "all" (all ``B * N`` latents).
        temperature: divides the scores.

    Returns:
        ``(loss, accuracy)``: fp32 scalars; the loss is the mean over steps of each step's mean
        cross-entropy over its valid positions (``t + k < N``).
    """
    if negatives not in NEGATIVES:
        raise UserError(f"cpc {negatives=} must be one of {NEGATIVES}")
    z, pred = z.float(), pred.float()
    b, n, k, _ = pred.shape
    dev = z.device
    t_idx = torch.arange(n, device=dev)[:, None] + torch.arange(1, k + 1, device=dev)[None, :]  # (N, K)
    valid = t_idx < n
    tgt_t = t_idx.clamp(max=n - 1)
    if negatives == "all":
        logits = torch.einsum("btkd,md->btkm", pred, rearrange(z, "b n d -> (b n) d")) / temperature
        target = torch.arange(b, device=dev)[:, None, None] * n + tgt_t[None]
        pos = logits.gather(-1, target[..., None])[..., 0]
        lse = torch.logsumexp(logits, -1)
        hit = logits.argmax(-1) == target
    elif negatives == "same_seq":
        logits = torch.einsum("btkd,bsd->btks", pred, z) / temperature  # (B, N, K, N)
        target = tgt_t[None].expand(b, n, k)
        pos = logits.gather(-1, target[..., None])[..., 0]
        lse = torch.logsumexp(logits, -1)
        hit = logits.argmax(-1) == target
    else:
        zt = z[:, tgt_t]  # (B, N, K, D): z[c, t + k]
        logits = torch.einsum("btkd,ctkd->btkc", pred, zt) / temperature  # (B, N, K, B)
        pos = torch.diagonal(logits, dim1=0, dim2=3).permute(2, 0, 1)  # (B, N, K): c == b
        lse = torch.logsumexp(logits, -1)
        best = logits.amax(-1)
        if negatives == "both":  # add z[b, s] for s != t + k (the positive is already in the batch part)
            seq = torch.einsum("btkd,bsd->btks", pred, z) / temperature  # (B, N, K, N)
            seq = seq.masked_fill(F.one_hot(tgt_t, n).bool()[None], float("-inf"))
            lse = torch.logaddexp(lse, torch.logsumexp(seq, -1))
            best = torch.maximum(best, seq.amax(-1))
        hit = pos >= best
    ce = lse - pos  # (B, N, K) cross-entropy of every (sequence, position, step)
    w = valid[None].float()  # (1, N, K)
    per_step = (ce * w).sum((0, 1)) / (b * valid.sum(0)).clamp(min=1)
    steps_ok = valid.any(0)
    loss = per_step[steps_ok].mean()
    acc = (hit.float() * w).sum() / (b * w.sum()).clamp(min=1.0)
    return loss, acc


@register_task("cpc", modality="signal")
class CPC(PretextTask):
    """Contrastive predictive coding of the next ``horizon`` latents.

    The encoder must offer ``forward_tokens``; if it also offers ``forward_latents`` and
    ``forward_context`` (``cpc_encoder``) those are used, otherwise a GRU context network is added.
    """

    class Config(ConfigModel):
        """CPC options.

        Attributes:
            horizon: how many latent steps ahead are predicted, K (12 as in Oord et al.); 0.1 called it ``steps``.
            negatives: "batch", "same_seq", "both" (default) or "all" (B*N candidates; memory grows as (B*N)^2).
            temperature: divides the scores.
            context_dim: width of the added GRU context (encoders without ``forward_context``).
            context_layers: layers of the added GRU.
            max_score_gb: refuse a batch whose score tensor (B, N, K, candidates) would exceed this
                many GB (fp32), with a message that says how to shrink it.
        """

        renamed = {"steps": "horizon"}

        horizon: int = Field(12, ge=1)
        negatives: Literal["batch", "same_seq", "both", "all"] = "both"
        temperature: float = Field(1.0, gt=0)
        context_dim: int = Field(256, ge=1)
        context_layers: int = Field(1, ge=1)
        max_score_gb: float = Field(4.0, gt=0)

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        require(encoder, TokenFeatures, "cpc", "a sequence of local features (B, N, F), e.g. cpc_encoder")
        self.own_context = not isinstance(encoder, Latents)
        if self.own_context:
            d = h = int(encoder.num_features)
            self.context = nn.GRU(d, self.cfg.context_dim, self.cfg.context_layers, batch_first=True)
            h = self.cfg.context_dim
        else:
            d, h = int(encoder.dim), int(encoder.context_dim)
        self.latent_dim = d
        self.predictor = nn.Linear(h, self.cfg.horizon * d)

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        if len(input_shape) != 2:
            raise UserError(f"cpc takes signals (C, T); got an item of shape {tuple(input_shape)}")

    def latents_and_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, T) -> (z (B, N, D), c (B, N, H))``."""
        if self.own_context:
            z = self.encoder.forward_tokens(x)
            return z, self.context(z)[0]
        z = self.encoder.forward_latents(x)
        return z, self.encoder.forward_context(z)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        z, c = self.latents_and_context(batch["x"])
        n = z.shape[1]
        if n <= self.cfg.horizon:
            raise UserError(f"cpc: the encoder gives N={n} latent steps for T={batch['x'].shape[-1]} samples; need more "
                            f"than horizon={self.cfg.horizon}: use longer windows or pass --task.horizon {max(1, n - 1)}")
        b, k = z.shape[0], self.cfg.horizon
        cand = {"batch": b, "same_seq": n, "both": b + n - 1, "all": b * n}[self.cfg.negatives]
        gb = 4 * b * n * k * cand / 1e9
        if gb > self.cfg.max_score_gb:
            raise UserError(f"cpc: the score tensor would take {gb:.1f} GB (B={b}, N={n} latent steps, K={k}, "
                            f"{cand} candidates with negatives={self.cfg.negatives!r}); use negatives=both or batch, "
                            "a smaller batch, shorter windows or an encoder that downsamples more "
                            f"(or raise --task.max_score_gb above {self.cfg.max_score_gb})")
        pred = rearrange(self.predictor(c), "b n (k d) -> b n k d", k=self.cfg.horizon)
        loss, acc = cpc_loss(z, pred, self.cfg.negatives, self.cfg.temperature)
        return {"loss": loss, "cpc_acc": acc.detach()}

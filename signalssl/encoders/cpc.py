"""The CPC encoder: a strided convolutional feature encoder + an autoregressive context network.

``x (B, C, T) --conv--> z (B, N, D) --GRU/LSTM/causal transformer--> c (B, N, H)``, with
``N = T // prod(strides)``. CPC predicts future ``z`` from ``c``; downstream uses ``c``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from pretext.registry import register_encoder

__all__ = ["CPCEncoder", "cpc_encoder"]

CONTEXTS = ("gru", "lstm", "transformer")


def _sinusoid(n: int, dim: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class CPCEncoder(nn.Module):
    """Strided conv encoder + context network (Oord et al. 2018; Mehari & Strodthoff 2022 for ECG).

    Args:
        n_chans: input channels.
        n_times: input length in samples (must give at least 2 latent steps).
        sfreq: sampling rate (recorded).
        dim: latent width D of the conv encoder.
        context_dim: width H of the context network.
        context: "gru", "lstm" or "transformer" (causal self-attention).
        context_layers: layers of the context network.
        strides: stride of each conv layer (kernel = 2 * stride); total downsampling = product.
        n_heads: attention heads (transformer context).
        dropout: dropout in the context network.

    Shapes:
        ``forward_latents``: ``(B, C, T) -> (B, N, D)``; ``forward_context``: ``(B, N, D) -> (B, N, H)``;
        ``forward_tokens``: ``(B, C, T) -> (B, N, H)``; ``forward_features``: ``(B, C, T) -> (B, H)`` (mean).
    """

    def __init__(self, n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, dim: int = 128,
                 context_dim: int = 128, context: str = "gru", context_layers: int = 2,
                 strides: tuple[int, ...] = (4, 2, 2, 2), n_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if context not in CONTEXTS:
            raise ValueError(f"{context=} must be one of {CONTEXTS}")
        down = math.prod(strides)
        if n_times // down < 2:
            raise ValueError(f"{n_times=} gives {n_times // down} latent steps with {strides=} (downsampling {down}); "
                             "use longer windows or smaller strides")
        self.n_chans, self.n_times, self.sfreq, self.downsample = n_chans, n_times, sfreq, down
        layers: list[nn.Module] = []
        c = n_chans
        for s in strides:
            layers += [nn.Conv1d(c, dim, 2 * s, stride=s, padding=s // 2, bias=False), nn.GroupNorm(1, dim), nn.GELU()]
            c = dim
        layers.append(nn.Conv1d(dim, dim, 1))
        self.conv = nn.Sequential(*layers)
        self.context_type = context
        if context == "transformer":
            self.ctx_in = nn.Linear(dim, context_dim)
            layer = nn.TransformerEncoderLayer(context_dim, n_heads, 4 * context_dim, dropout, batch_first=True,
                                               norm_first=True)
            self.ctx = nn.TransformerEncoder(layer, context_layers, enable_nested_tensor=False)
        else:
            rnn = nn.GRU if context == "gru" else nn.LSTM
            self.ctx = rnn(dim, context_dim, context_layers, batch_first=True,
                           dropout=dropout if context_layers > 1 else 0.0)
        self.dim, self.context_dim = dim, context_dim
        self.num_features = context_dim

    def forward_latents(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv(x), "b d n -> b n d")

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        if self.context_type == "transformer":
            n = z.shape[1]
            h = self.ctx_in(z) + _sinusoid(n, self.context_dim, z.device).to(z.dtype)
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=z.device), diagonal=1)
            return self.ctx(h, mask=mask, is_causal=True)
        return self.ctx(z)[0]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_context(self.forward_latents(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_encoder("cpc_encoder", modality="signal", default=True)
def cpc_encoder(n_chans: int = 12, n_times: int = 1000, sfreq: float | None = None, **kw: object) -> CPCEncoder:
    """CPC encoder (strided conv + GRU context by default; ``context=lstm|transformer``)."""
    return CPCEncoder(n_chans, n_times, sfreq, **kw)  # type: ignore[arg-type]

"""Small heads shared by tasks and probes: a projection MLP and a linear classification head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ProjectionHead", "LinearHead"]


class ProjectionHead(nn.Module):
    """SimCLR-style projection MLP: ``num_layers`` linear layers, BN + ReLU between them.

    Args:
        in_dim: input width (the encoder's ``num_features``).
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: linear layers in total (1 = a single linear map).
        norm: "bn" for BatchNorm1d between layers, "none" for none.

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, num_layers: int = 2,
                 norm: str = "bn") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"{num_layers=} must be >= 1")
        if norm not in ("bn", "none"):
            raise ValueError(f"{norm=} must be 'bn' or 'none'")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=norm == "none"))
            if norm == "bn":
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    """Linear classifier, optionally behind a parameter-free BatchNorm (the MAE linear-probe trick).

    Args:
        in_dim: feature width.
        num_classes: output logits.
        batch_norm: standardise features with ``BatchNorm1d(affine=False)`` first.
        dropout: dropout before the linear layer.

    Shapes:
        ``(B, in_dim) -> (B, num_classes)``.
    """

    def __init__(self, in_dim: int, num_classes: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"{num_classes=} must be >= 1")
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if batch_norm else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(x)))

"""Small heads shared by tasks and probes: a projection MLP and a linear classification head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DINOHead", "ProjectionHead", "LinearHead"]


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


class DINOHead(nn.Module):
    """DINO's head (Caron et al. 2021; lightly's ``DINOProjectionHead``): an MLP with GELU to a bottleneck, L2
    normalisation, then a weight-normalised linear layer without bias to ``out_dim`` prototypes.

    Args:
        in_dim: input width (the encoder's ``num_features``).
        hidden_dim: width of the hidden layers.
        bottleneck_dim: width before the prototypes.
        out_dim: number of prototypes K (65536 in DINO; far fewer suit small data).
        num_layers: MLP layers (>= 1).
        batch_norm: BatchNorm in the MLP (DINO's ResNet setting).
        norm_last_layer: fix the prototypes' weight-norm gain at 1 (DINO's default, stabler training).

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, bottleneck_dim: int = 128, out_dim: int = 1024,
                 num_layers: int = 3, batch_norm: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"{num_layers=} must be >= 1")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim)] + ([nn.BatchNorm1d(hidden_dim)] if batch_norm else []) + [nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return self.last_layer(x)


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

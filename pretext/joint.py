"""What the joint-embedding tasks (``simclr``, ``vicreg``, ``dino`` in :mod:`pretext.tasks`) share: the pairing
option, the modality's view policy, and the two (or more) views of a batch.

The tasks never branch on a modality. The view policy comes from the modality adapter of the batch's items
(:meth:`pretext.modality.Modality.views`: random resized 3D crops, flips, rotation, intensity, gamma, blur, noise
for volumes; crop, scaling, baseline wander, noise, lead dropout, time masking for signals), with the task's
``views`` option overriding its documented parameters. Pairs come from the split (:mod:`pretext.sampling`):
``pairing="views"`` makes both views from one item, ``"patches"`` and ``"patient"`` from the ``x``/``x2`` the
split gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast, get_args

import torch
from torch import nn

from pretext.base import Batch, PretextTask
from pretext.capabilities import PooledFeatures
from pretext.config import ConfigModel
from pretext.errors import ConfigError, UserError

__all__ = ["JOINT_PAIRINGS", "JointConfig", "JointEmbedding", "view_policy"]

Pairing = Literal["views", "patches", "patient"]
JOINT_PAIRINGS: tuple[str, ...] = get_args(Pairing)


class JointConfig(ConfigModel):
    """Options every joint-embedding task has (each task's ``Config`` subclasses this model).

    Attributes:
        pairing: where the two views come from: ``"views"`` (two random views of one item), ``"patches"`` (two
            patches of one whole scan; data with ``?patch=D,H,W``), ``"patient"`` (two records of one patient,
            with the single-record fallback counted and warned).
        views: overrides of the modality's view parameters, e.g. ``{crop_scale: [0.3, 1.0], blur_p: 0}``
            (``sslbench list tasks -v`` and :mod:`volssl.views` / :mod:`signalssl.views` list them).
    """

    pairing: Pairing = "views"
    views: dict[str, Any] = {}


def view_policy(item_shape: Sequence[int], overrides: dict[str, Any], sizing: dict[str, Any] | None = None) -> Any:
    """The view policy of the modality whose items have ``item_shape`` ``(C, ...)``, with ``overrides``."""
    from pretext.modality import get_modality, modality_of_shape

    try:
        return get_modality(modality_of_shape(item_shape)).views(sizing or {}, **dict(overrides))
    except (TypeError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise ConfigError(f"views {overrides!r}: {err}") from err


class JointEmbedding(PretextTask):
    """Base of the joint-embedding tasks: pairing, views, and the encoder + projector forward."""

    modality = "any"

    def __init__(self, encoder: nn.Module, cfg: Any = None) -> None:
        super().__init__(encoder, cfg)
        self._policies: dict[int, Any] = {}
        info = getattr(encoder, "medssl_config", None)
        self._sizing = dict(info.get("encoder_cfg") or {}) if isinstance(info, dict) else {}

    def pairing(self) -> str:
        return str(self.cfg.pairing)

    @classmethod
    def check_input(cls, cfg: Any, input_shape: Sequence[int]) -> None:
        if len(input_shape) < 2:
            raise UserError(f"{cls.name or cls.__name__} needs items (C, ...) with at least one axis after C, "
                            f"got {tuple(input_shape)}")
        view_policy(input_shape, (cfg or cls.Config()).views)  # bad view parameters are named before any work

    def policy(self, x: torch.Tensor) -> Any:
        """The view policy for batches like ``x`` (built once per item rank)."""
        if x.ndim not in self._policies:
            self._policies[x.ndim] = view_policy(tuple(x.shape[1:]), self.cfg.views, self._sizing)
        return self._policies[x.ndim]

    def two_views(self, batch: Batch, generator: torch.Generator | None, **changes: Any) -> tuple[torch.Tensor, ...]:
        """Two random views: of ``x`` twice (``pairing="views"``, or where the split gave no ``x2``), or of ``x``
        and ``x2``. ``changes`` replace view parameters (DINO's global crops)."""
        x = batch["x"]
        if x.shape[0] < 2:
            raise UserError(f"{self.name or type(self).__name__} needs a batch of at least 2, got {x.shape[0]}")
        pol = self.policy(x)
        if changes:
            pol = pol.replace(**changes)
        x2 = batch.get("x2", x) if self.cfg.pairing != "views" else x
        return pol(x, generator), pol(x2, generator)

    def local_views(self, x: torch.Tensor, n: int, generator: torch.Generator | None, scale: Sequence[float],
                    size_frac: float) -> list[torch.Tensor]:
        """``n`` small crops of ``x`` (DINO's local views): crop scale ``scale``, each axis ``size_frac`` of the
        input's."""
        spatial = tuple(max(1, round(s * size_frac)) for s in x.shape[2:])
        pol = self.policy(x).replace(crop_scale=tuple(scale), size=spatial if len(spatial) > 1 else spatial[0])
        return [pol(x, generator) for _ in range(n)]

    def embed(self, views: Sequence[torch.Tensor], head: nn.Module) -> list[torch.Tensor]:
        """``head(encoder(view))`` for each view; views of one shape go through the encoder together."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            z = head(cast(PooledFeatures, self.encoder).forward_features(torch.cat(list(views[i:j]))))
            out += list(z.chunk(j - i))
            i = j
        return out

"""Evaluation protocols: linear probe, kNN, partial and full fine-tuning (through ``pretext.engine.fit``).

* **linear**: standardised frozen features -> ``LogisticRegression``; ``C`` picked on validation AUROC.
* **knn**: L2-normalised frozen features, cosine distance, distance-weighted vote; ``k`` picked on validation.
* **partial**: the encoder's last ``k_blocks`` blocks and a linear head are trained, the rest is frozen (kept in
  eval mode, so frozen BatchNorm statistics do not move). *Blocks* are found generically by
  :func:`encoder_blocks`: the encoder's top-level child modules that hold parameters, in registration order,
  descending through single wrapper modules (``self.net = Sequential(...)``).
* **finetune**: everything is trained, with optional layer-wise LR decay (block ``i`` from the top gets
  ``lr * layer_decay ** (i + 1)``; the head gets ``lr``).

Fine-tuning runs through the shared engine with a :class:`Classifier` whose ``forward(batch, generator)``
returns ``{"loss"}`` and an ``evaluate`` callback that scores the validation set every ``eval_every`` steps
and keeps the best state (model selection on validation only). The test split is never seen here: callers
predict it once with the selected model.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pretext.config import Accelerator, ConfigModel, Field, Precision, TrainConfig
from pretext.errors import ConfigError
from sslbench.features import loader
from sslbench.metrics import compute_metrics
from sslbench.pooled import patch_dataset, pooled_features, reads_patch_grids
from sslbench.splits import View

#: an evaluation protocol: a probe on frozen features, the top blocks trained, or the whole encoder
Protocol = Literal["linear", "knn", "partial", "finetune"]
PROTOCOLS: tuple[str, ...] = typing.get_args(Protocol)
LINEAR_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
KNN_KS = (1, 3, 5, 10, 20, 50)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r} is unknown; valid protocols: {', '.join(PROTOCOLS)}")
    return protocol


def val_score(y: np.ndarray, proba: np.ndarray, multilabel: bool) -> float:
    """The model-selection score: validation AUROC (accuracy where AUROC is undefined)."""
    m = compute_metrics(y, proba, multilabel=multilabel, which=("auroc", "accuracy"))
    return m["auroc"] if math.isfinite(m["auroc"]) else m["accuracy"]


def log_loss(y: np.ndarray, proba: np.ndarray, multilabel: bool) -> float:
    """Mean negative log-likelihood (binary per label for multi-label)."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1 - 1e-7)
    if multilabel:
        yb = np.asarray(y) > 0.5
        return float(-np.mean(np.where(yb, np.log(p), np.log(1 - p))))
    return float(-np.mean(np.log(p[np.arange(len(p)), np.asarray(y).astype(int)])))


class Selector:
    """Keeps the best candidate seen: highest validation AUROC, where candidates within ``tol`` of the best
    AUROC count as tied and the lower validation log-loss wins.

    AUROC ignores the scale of the scores, so a heavily regularised model nearly ties with a good one; the
    log-loss tie-break keeps the probabilities (accuracy, calibration) sensible.
    """

    def __init__(self, multilabel: bool, tol: float = 0.01) -> None:
        self.multilabel, self.tol = multilabel, tol
        self.auroc, self.nll, self.payload = -math.inf, math.inf, None

    def offer(self, y: np.ndarray, proba: np.ndarray, payload: Any) -> bool:
        """Score a candidate; keep it (and return True) if it is the new best."""
        a, n = val_score(y, proba, self.multilabel), log_loss(y, proba, self.multilabel)
        better = a > self.auroc + self.tol or (a >= self.auroc - self.tol and n < self.nll)
        if better:
            self.auroc, self.nll, self.payload = a, n, payload
        return better


# -- frozen-feature probes -----------------------------------------------------------------------------------
def _full_proba(model: Any, x: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """Class probabilities ``(N, C)`` even when the training subset lacked a class (its column is 0)."""
    if multilabel:
        parts = model.predict_proba(x)
        if isinstance(parts, list):  # KNeighborsClassifier on multi-hot targets
            return np.stack([p[:, -1] if p.shape[1] > 1 else np.zeros(len(x)) for p in parts], 1)
        return np.asarray(parts)
    p = model.predict_proba(x)
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = p
    return out


def linear_probe(
    f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, *,
    n_classes: int, multilabel: bool = False, Cs: Sequence[float] = LINEAR_CS, seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Fit logistic regression for each ``C`` on train features; keep the best on validation.

    Returns:
        ``(predict_proba(features) -> (N, C) function, {"C": best C, "val_score": its score})``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sel = Selector(multilabel)
    for c in Cs:
        clf: Any = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        if multilabel:
            clf = OneVsRestClassifier(clf)
        model = make_pipeline(StandardScaler(), clf).fit(f_train, y_train.astype(int))
        sel.offer(y_val, _full_proba(model, f_val, n_classes, multilabel), (model, c))
    model, c = sel.payload
    return (lambda f: _full_proba(model, f, n_classes, multilabel)), {"C": c, "val_score": sel.auroc, "val_nll": sel.nll}


def knn_probe(
    f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, *,
    n_classes: int, multilabel: bool = False, ks: Sequence[int] = KNN_KS,
) -> tuple[Any, dict[str, Any]]:
    """Cosine kNN on L2-normalised features; ``k`` (<= number of training records) picked on validation."""
    from sklearn.neighbors import KNeighborsClassifier

    def norm(f: np.ndarray) -> np.ndarray:
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    sel = Selector(multilabel)
    for k in sorted({min(k, len(f_train)) for k in ks}):
        model = KNeighborsClassifier(n_neighbors=k, weights="distance", metric="cosine").fit(
            norm(f_train), y_train.astype(int))
        sel.offer(y_val, _full_proba(model, norm(f_val), n_classes, multilabel), (model, k))
    model, k = sel.payload
    return (lambda f: _full_proba(model, norm(f), n_classes, multilabel)), {"k": k, "val_score": sel.auroc, "val_nll": sel.nll}


# -- fine-tuning ----------------------------------------------------------------------------------------------
class FinetuneConfig(ConfigModel):
    """Fine-tuning budget and optimiser (for partial/finetune protocols and the scratch baseline).

    Attributes:
        steps: maximum optimizer steps.
        max_epochs: stop earlier when this many passes over the labelled records are done.
        min_steps: but never fewer than this.
        batch_size: capped at the number of labelled records.
        lr: peak AdamW learning rate of the head (and of the top block).
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: linear warmup.
        eval_every: validation scoring period in steps (the best state is kept).
        layer_decay: layer-wise LR decay factor (1 = off).
        k_blocks: trained blocks for the partial protocol.
        precision: engine precision ("32", "bf16-mixed", "auto").
        accelerator: engine accelerator ("auto", "cpu", "cuda").
    """

    steps: int = Field(300, ge=1)
    max_epochs: float = Field(30.0, gt=0)
    min_steps: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_every: int = Field(25, ge=1)
    precision: Precision = "32"
    accelerator: Accelerator = "auto"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(10, ge=0)
    layer_decay: float = Field(1.0, gt=0, le=1, examples=[0.75])
    k_blocks: int = Field(1, ge=1)

    def n_steps(self, n_train: int) -> int:
        """``max_epochs`` passes over ``n_train`` records, at least ``min_steps``, never more than ``steps``."""
        per_epoch = max(1, n_train // min(self.batch_size, n_train))
        return int(max(min(self.min_steps, self.steps), min(self.steps, math.ceil(self.max_epochs * per_epoch))))


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's blocks: top-level children holding parameters, descending through single wrappers."""
    mod = encoder
    while True:
        kids = [c for c in mod.children() if any(True for _ in c.parameters())]
        if len(kids) == 1 and any(True for _ in kids[0].children()):
            mod = kids[0]
            continue
        return kids or [mod]


class Classifier(nn.Module):
    """Encoder + linear head; ``forward(batch, generator) -> {"loss", "acc"}`` (the engine's task contract).

    Args:
        encoder: any encoder with ``num_features`` and ``forward_features``.
        num_classes: output width.
        multilabel: BCE on multi-hot labels instead of cross-entropy.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, multilabel: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.num_features), num_classes)
        self.multilabel = multilabel
        self.frozen: list[nn.Module] = []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...) -> (B, num_classes)``."""
        return self.head(self.encoder.forward_features(x))

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["x"]).float()
        y = batch["label"]
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
            acc = ((logits > 0) == (y > 0.5)).float().mean()
        else:
            loss = F.cross_entropy(logits, y.long())
            acc = (logits.argmax(1) == y).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def freeze_all_but_last(self, k: int) -> None:
        """Freeze the encoder except its last ``k`` blocks (see :func:`encoder_blocks`)."""
        blocks = encoder_blocks(self.encoder)
        if not 1 <= k <= len(blocks):
            raise ConfigError(f"k_blocks={k} must be in 1..{len(blocks)} (the encoder has {len(blocks)} blocks)")
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for b in blocks[len(blocks) - k:]:
            for p in b.parameters():
                p.requires_grad_(True)
        self.frozen = blocks[: len(blocks) - k]

    @torch.no_grad()
    def predict_proba(self, view: View, batch_size: int = 64) -> np.ndarray:
        """``(N, C)`` probabilities (softmax, or sigmoid for multi-label) on every record of ``view``."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        if reads_patch_grids(view):  # whole volumes: the head on pooled grid-patch features
            feats = torch.from_numpy(pooled_features(self.encoder, view, batch_size, dev)).to(dev)
            z = self.head(feats).float()
            self.train(was)
            return (torch.sigmoid(z) if self.multilabel else torch.softmax(z, 1)).cpu().numpy()
        for batch in loader(view, batch_size):
            z = self.logits(batch["x"].to(dev)).float()
            out.append((torch.sigmoid(z) if self.multilabel else torch.softmax(z, 1)).cpu().numpy())
        self.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.head.out_features))


def layer_decay_groups(model: Classifier, decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Engine param groups with ``lr_scale``: head 1, block ``i`` from the top ``decay ** (i + 1)``."""
    blocks = encoder_blocks(model.encoder)
    scale_of: dict[int, float] = {}
    for depth, block in enumerate(reversed(blocks)):
        for p in block.parameters():
            scale_of[id(p)] = decay ** (depth + 1)
    bottom = decay ** (len(blocks) + 1)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0 if name.startswith("head.") else scale_of.get(id(p), bottom)
        groups.setdefault((scale, p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr_scale": s, "weight_decay": weight_decay if wd else 0.0}
            for (s, wd), ps in sorted(groups.items(), key=lambda kv: -kv[0][0])]


def finetune(
    encoder: nn.Module, train: View, val: View, *, num_classes: int, multilabel: bool = False,
    mode: str = "finetune", cfg: FinetuneConfig = FinetuneConfig(), seed: int = 0,
) -> tuple[Classifier, dict[str, Any]]:
    """Train ``encoder`` + head on ``train`` through the engine; return the best-on-``val`` classifier.

    Args:
        mode: "finetune" (all layers, optional layer-wise LR decay) or "partial" (last ``cfg.k_blocks``).

    Returns:
        ``(classifier with the best validation state loaded, {"best_step", "val_score", "steps"})``.
    """
    from pretext.engine import fit

    torch.manual_seed(seed)
    model = Classifier(encoder, num_classes, multilabel)
    if mode == "partial":
        model.freeze_all_but_last(cfg.k_blocks)
    elif mode != "finetune":
        raise ConfigError(f"fine-tune mode {mode!r} must be 'finetune' or 'partial'")
    groups = layer_decay_groups(model, cfg.layer_decay, cfg.weight_decay) if cfg.layer_decay != 1.0 else None
    steps = cfg.n_steps(len(train))
    tcfg = TrainConfig(steps=steps, batch_size=min(cfg.batch_size, len(train)), lr=cfg.lr, min_lr=cfg.lr * 0.01,
                       weight_decay=cfg.weight_decay, warmup_steps=min(cfg.warmup_steps, steps - 1), clip_grad=1.0,
                       precision=cfg.precision, seed=seed, log_every=max(1, steps), ckpt_every=10**9,
                       accelerator=cfg.accelerator, devices="1", progress=False)
    sel = Selector(multilabel)
    y_val = val.labels
    calls = {"n": 0}

    def on_val(module: nn.Module) -> dict[str, float]:
        calls["n"] += 1
        proba = module.predict_proba(val)  # type: ignore[operator]
        if sel.offer(y_val, proba, calls["n"]):
            best_state.clear()
            best_state.update({k: v.detach().clone() for k, v in module.state_dict().items()})
        return {"auroc": val_score(y_val, proba, multilabel), "nll": log_loss(y_val, proba, multilabel)}

    best_state: dict[str, torch.Tensor] = {}

    data = patch_dataset(train, seed) if reads_patch_grids(train) else train.dataset()  # whole volumes: random patches
    result = fit(model, data, tcfg, out_dir=None, evaluate=on_val,
                 eval_every=min(cfg.eval_every, steps), param_groups=groups)
    evals = [e["step"] for e in result.evals]
    if best_state:
        model.load_state_dict(best_state)
    n = sel.payload or 0
    best_step = evals[n - 1] if 0 < n <= len(evals) else steps
    return model, {"best_step": int(best_step), "val_score": float(sel.auroc), "val_nll": float(sel.nll),
                   "steps": int(steps)}

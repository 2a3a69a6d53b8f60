"""Embedding audit: what a frozen encoder's feature space encodes, beyond one probe number.

Three checks on the pooled features of a split (usually validation or test):

* **kNN label purity**: the share of each record's ``k`` nearest neighbours (cosine) that carry its label,
  also with neighbours restricted to *other patients* (records of one patient are near-duplicates, so
  plain purity flatters an encoder that only recognises patients), beside the chance level
  ``sum_c p_c^2``. The same neighbour agreement is reported for metadata (sex, site, age band) and the
  share of neighbours from the record's own patient: a high value there means the space encodes
  identity or acquisition rather than disease.
* **2-D map** (UMAP, t-SNE as fallback, PCA as last resort) coloured by label, patient and metadata, as PNG.
* **Invariance**: the embedding distance between a record and a clinically irrelevant perturbation of
  it (baseline wander + noise for signals, intensity shift/scale + noise for volumes) against the mean
  distance between records of different classes (``ratio_between``; well below 1 is good), and the
  share of records whose kNN-predicted label survives the perturbation.

>>> result = audit_encoder(encoder, view, out_dir="report/audit", name="cpc", sfreq=100)
>>> result["knn_purity_other_patients"], result["invariance"]["ratio_between"], result["plots"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretext.modality import get_modality, modality_of_shape
from sslbench.features import encode
from sslbench.metrics import subgroup_columns
from sslbench.splits import View

Perturbation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# -- geometry -------------------------------------------------------------------------------------------
def _normalise(z: np.ndarray, centre: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - centre
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def neighbours(z: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices ``(N, k)`` of each row's ``k`` nearest other rows (cosine); ``groups``: skip the row's own group."""
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    if groups is not None:
        sim[groups[:, None] == groups[None, :]] = -np.inf
    k = min(k, max(1, len(z) - 1))
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    valid = np.take_along_axis(sim, idx, 1) > -np.inf
    return np.where(valid, idx, -1)


def agreement(nbrs: np.ndarray, values: np.ndarray) -> float:
    """Mean share of valid neighbours (``-1`` = none) whose value equals the row's."""
    values = np.asarray(values)
    ok = nbrs >= 0
    same = (values[np.where(ok, nbrs, 0)] == values[:, None]) & ok
    per_row = same.sum(1) / np.maximum(ok.sum(1), 1)
    return float(per_row[ok.any(1)].mean()) if ok.any() else float("nan")


def chance(values: np.ndarray) -> float:
    """Agreement of random neighbours: ``sum_c p_c^2``."""
    _, counts = np.unique(np.asarray(values), return_counts=True)
    p = counts / counts.sum()
    return float((p**2).sum())


def _knn_vote(nbrs: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    ok = nbrs >= 0
    votes = np.zeros((len(nbrs), n_classes))
    for j in range(nbrs.shape[1]):
        np.add.at(votes, (np.arange(len(nbrs))[ok[:, j]], labels[nbrs[ok[:, j], j]]), 1)
    return votes.argmax(1)


def invariance(z: np.ndarray, z_pert: np.ndarray, labels: np.ndarray, k: int = 10) -> dict[str, float]:
    """Distance under a perturbation against distances within and between classes.

    Args:
        z: ``(N, F)`` normalised features of the records.
        z_pert: ``(N, F)`` normalised features of their perturbed versions.
        labels: ``(N,)`` class indices.
        k: neighbours for the kNN label-stability check.

    Returns:
        ``d_perturb`` (mean distance record -> perturbed), ``d_within`` / ``d_between`` (mean distance over
        pairs of the same / of different classes), ``ratio_between = d_perturb / d_between``,
        ``ratio_within`` and ``knn_label_stability`` (share of records whose kNN vote among the clean
        records is unchanged by the perturbation).
    """
    d_pert = np.linalg.norm(z - z_pert, axis=1)
    dist = np.sqrt(np.clip(2 - 2 * (z @ z.T), 0, None))
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(z), dtype=bool)
    d_within = float(dist[same & off].mean()) if (same & off).any() else float("nan")
    d_between = float(dist[~same].mean()) if (~same).any() else float("nan")
    n_classes = int(labels.max()) + 1
    clean_vote = _knn_vote(neighbours(z, k), labels, n_classes)
    sim = z_pert @ z.T
    np.fill_diagonal(sim, -np.inf)  # the clean copy of the record itself is not a neighbour
    kk = min(k, len(z) - 1)
    pert_vote = _knn_vote(np.argpartition(-sim, kk - 1, axis=1)[:, :kk], labels, n_classes)
    return {
        "d_perturb": float(d_pert.mean()),
        "d_within": d_within,
        "d_between": d_between,
        "ratio_between": float(d_pert.mean() / d_between) if d_between > 0 else float("nan"),
        "ratio_within": float(d_pert.mean() / d_within) if d_within > 0 else float("nan"),
        "knn_label_stability": float((clean_vote == pert_vote).mean()),
    }


# -- 2-D map --------------------------------------------------------------------------------------------
def embed_2d(z: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``(N, 2)`` coordinates by UMAP (``"umap"``), t-SNE (``"tsne"``) or PCA (``"pca"``).

    ``"auto"`` tries UMAP, then t-SNE (when umap-learn is missing: ``pip install umap-learn``).
    Returns the coordinates and the method used.
    """
    if method not in ("auto", "umap", "tsne", "pca"):
        raise ValueError(f"{method=} must be one of auto, umap, tsne, pca")
    n = len(z)
    if n < 5 or method == "pca":
        zc = z - z.mean(0)
        u, s, _ = np.linalg.svd(zc, full_matrices=False)
        coords = u[:, :2] * s[:2] if u.shape[1] >= 2 else np.c_[zc[:, :1], np.zeros(n)]
        return coords, "pca"
    if method in ("auto", "umap"):
        try:
            import warnings

            import umap  # lazy: importing numba takes seconds

            threads = torch.get_num_threads()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reducer = umap.UMAP(n_neighbors=min(15, n - 1), random_state=seed, metric="cosine")
                    return reducer.fit_transform(z), "umap"
            finally:  # numba's parallel layer resets the OpenMP thread count torch uses
                torch.set_num_threads(threads)
        except ImportError:
            if method == "umap":
                raise ImportError("UMAP needs umap-learn: pip install umap-learn (or use method='tsne')") from None
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (n - 1) // 3)))
    return TSNE(init="pca", random_state=seed, perplexity=perplexity, metric="cosine").fit_transform(z), "tsne"


def plot_map(coords: np.ndarray, colourings: Mapping[str, np.ndarray], path: str | Path, title: str = "",
             names: Mapping[str, Sequence[str]] | None = None) -> Path:
    """One scatter panel per colouring (categorical, or continuous for numeric ones with many values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or {}
    fig, axes = plt.subplots(1, len(colourings), figsize=(3.6 * len(colourings), 3.6), squeeze=False)
    for ax, (what, values) in zip(axes[0], colourings.items(), strict=True):
        values = np.asarray(values)
        numeric = values.dtype.kind in "if" and len(np.unique(values)) > 12
        if numeric or what == "patient":
            codes = values if numeric else np.unique(values, return_inverse=True)[1]
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=codes, s=8, cmap="viridis" if numeric else "tab20")
            if numeric:
                fig.colorbar(sc, ax=ax, fraction=0.046)
        else:
            for j, v in enumerate(np.unique(values)):
                m = values == v
                known = names.get(what, ())
                label = known[int(v)] if values.dtype.kind in "iu" and 0 <= int(v) < len(known) else str(v)
                ax.scatter(coords[m, 0], coords[m, 1], s=8, color=plt.cm.tab10(j % 10), label=label)
            ax.legend(fontsize=6, markerscale=1.5, loc="best")
        ax.set_title(f"by {what}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- the audit ------------------------------------------------------------------------------------------
def audit_features(features: np.ndarray, labels: np.ndarray, *, patients: np.ndarray | None = None,
                   meta: Any = None, perturbed: np.ndarray | None = None, k: int = 10,
                   class_names: Sequence[str] = (), out_dir: str | Path | None = None, name: str = "encoder",
                   method: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Audit precomputed features.

    Args:
        features: ``(N, F)`` pooled features.
        labels: ``(N,)`` class indices (multi-hot labels are audited by their first positive class).
        patients: ``(N,)`` patient identifiers (enables the other-patient purity and patient share).
        meta: per-record metadata table (sex, age, site ... are used when present).
        perturbed: ``(N, F)`` features of perturbed inputs (enables the invariance check).
        k: neighbours.
        class_names: names of the classes, for the plot legend.
        out_dir: where the PNG goes (no plot when None).
        name: names the encoder in the plot title and file name.
        method: 2-D map method (see :func:`embed_2d`).
        seed: seeds the 2-D map.

    Returns:
        a JSON-friendly dict: ``n``, ``k``, ``knn_purity``, ``knn_purity_other_patients``, ``chance_purity``,
        ``same_patient_neighbours``, ``meta_agreement`` ({column: {"agreement", "chance"}}),
        ``invariance`` (see :func:`invariance`) and ``plots`` (paths).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(1)
    keep = labels >= 0
    feats = np.asarray(features, dtype=np.float64)[keep]
    labels = labels[keep].astype(np.int64)
    if len(feats) < 3:
        raise ValueError(f"the audit needs at least 3 labelled records, got {len(feats)}")
    centre = feats.mean(0)
    z = _normalise(feats, centre)
    nbrs = neighbours(z, k)
    out: dict[str, Any] = {"name": name, "n": int(len(z)), "k": int(nbrs.shape[1]),
                           "knn_purity": agreement(nbrs, labels), "chance_purity": chance(labels)}
    colourings: dict[str, np.ndarray] = {"label": labels}
    if patients is not None:
        pids = np.asarray(patients).astype(str)[keep]
        out["knn_purity_other_patients"] = agreement(neighbours(z, k, groups=pids), labels)
        out["same_patient_neighbours"] = agreement(nbrs, pids)
        colourings["patient"] = pids
    meta_cols = subgroup_columns(meta.iloc[np.flatnonzero(keep)].reset_index(drop=True)) if meta is not None else {}
    out["meta_agreement"] = {c: {"agreement": agreement(nbrs, v), "chance": chance(v)} for c, v in meta_cols.items()}
    colourings.update(meta_cols)
    if perturbed is not None:
        zp = _normalise(np.asarray(perturbed, dtype=np.float64)[keep], centre)
        out["invariance"] = invariance(z, zp, labels, k)
    out["plots"] = {}
    if out_dir is not None:
        coords, used = embed_2d(z, method, seed)
        out["map_method"] = used
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        path = plot_map(coords, colourings, Path(out_dir) / f"embedding_{safe}.png", title=f"{name} ({used})",
                        names={"label": list(class_names)})
        out["plots"]["embedding"] = str(path)
    return out


@torch.no_grad()
def perturbed_features(encoder: nn.Module, view: View, perturb: Perturbation, *, batch_size: int = 64,
                       device: str | torch.device = "cpu", seed: int = 0) -> np.ndarray:
    """``(N, F)`` features of ``perturb(x)`` for every record of ``view`` (seeded, encoder in eval mode)."""
    from sslbench.features import loader

    was_training = encoder.training
    encoder.eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    out = [encoder.forward_features(perturb(b["x"], gen).to(device)).float().cpu().numpy()
           for b in loader(view, batch_size)]
    encoder.train(was_training)
    return np.concatenate(out).astype(np.float32)


def default_perturbation(modality: str, sfreq: float | None = None) -> Perturbation:
    """The modality adapter's perturbation (baseline wander + noise for signals, intensity shift/scale + noise
    for volumes)."""
    adapter = get_modality(modality)
    return lambda x, g: adapter.perturb(x, g, sfreq=sfreq)


def audit_encoder(encoder: nn.Module, view: View, *, modality: str | None = None, sfreq: float | None = None,
                  perturb: Perturbation | None = None, features: np.ndarray | None = None,
                  class_names: Sequence[str] = (), out_dir: str | Path | None = None, name: str = "encoder",
                  k: int = 10, method: str = "auto", batch_size: int = 64, device: str | torch.device = "cpu",
                  seed: int = 0) -> dict[str, Any]:
    """Encode ``view`` (clean and perturbed) with a frozen ``encoder`` and audit the features.

    Args:
        encoder: an encoder with ``forward_features``.
        view: the records to audit (a :class:`sslbench.splits.View`).
        modality: "signal" or "volume" (picks the default perturbation; guessed from the input rank).
        sfreq: sampling rate of signals (for baseline wander).
        perturb: a clinically irrelevant perturbation ``f(x, generator) -> x``; default by modality.
        features: precomputed clean features of ``view`` (skips one encoding pass).
        class_names, out_dir, name, k, method, seed: see :func:`audit_features`.
        batch_size: encoding batch size.
        device: where to encode.

    Returns:
        the dict of :func:`audit_features` with ``"invariance"``.
    """
    if perturb is None:
        if modality is None:
            modality = modality_of_shape(view.split.load(int(view.indices[0])).shape)
        perturb = default_perturbation(modality, sfreq)
    clean = features if features is not None else encode(encoder, view, batch_size, device)
    pert = perturbed_features(encoder, view, perturb, batch_size=batch_size, device=device, seed=seed)
    return audit_features(clean, view.labels, patients=view.patient_ids, meta=view.meta, perturbed=pert, k=k,
                          class_names=class_names, out_dir=out_dir, name=name, method=method, seed=seed)

"""What a signal model is given, after preprocessing and before windowing: the whole stored record, as traces.

Used by ``sslbench preview``: a PNG of every channel of the record (offset traces) and a one-line summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def preview_item(split: Any, i: int, out: Path, stem: str) -> str:
    """Write the record behind window ``i`` of ``split`` as ``stem.png`` under ``out``; return its summary line."""
    import matplotlib.pyplot as plt

    store = getattr(split, "store", None)
    if store is not None:
        rec = int(split.records[i])
        x = store.record(rec)
        row = store.index.iloc[rec]
        sfreq, names = float(store.sfreq), list(store.channels)
        native = float(row["native_sfreq"]) if "native_sfreq" in row else sfreq
        before = f"{row['path']} (record {row['record']}): before {native:g} Hz"
    else:  # generated signals (synthetic_ecg): the item as it is
        x = split.load(i).numpy()
        sfreq, names, before = float("nan"), [f"ch{k}" for k in range(x.shape[0])], f"item {i} (generated in memory)"
    c, t = x.shape
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.6 * c))
    scale = float(np.nanmax(np.abs(x))) or 1.0
    time = np.arange(t) / sfreq if np.isfinite(sfreq) else np.arange(t)
    for k in range(c):
        ax.plot(time, x[k] / scale - 2.2 * k, lw=0.5)
    ax.set_yticks([-2.2 * k for k in range(c)], names[:c], fontsize=7)
    ax.set_xlabel("s" if np.isfinite(sfreq) else "sample")
    ax.set_title(f"{stem}: {c} channel(s) x {t} samples at {sfreq:g} Hz, range [{x.min():.3g}, {x.max():.3g}]",
                 fontsize=9)
    fig.savefig(out / f"{stem}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return (f"{stem}  {before} -> after {c} channel(s) x {t} samples at {sfreq:g} Hz ({t / sfreq:.4g} s), "
            f"range [{x.min():.4g}, {x.max():.4g}]")


__all__ = ["preview_item"]

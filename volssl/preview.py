"""What a volume model is given, after preprocessing and before sampling: NIfTI, mid-slice PNG, one line each.

For a ``?patch=`` spec this is the whole preprocessed scan the patches are drawn from (the store's item), so
the same spec with and without ``patch=`` previews the same voxels. Used by ``sslbench preview``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _fmt(values: Any) -> str:
    """A shape or spacing as ``12x10x6``."""
    return "x".join(f"{float(v):.3g}" for v in values)


def _range(values: Any) -> str:
    """An intensity range as ``[-1024, 3071]`` (``?`` when not recorded)."""
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]" if len(values) else "?"


def preview_item(split: Any, i: int, out: Path, stem: str) -> str:
    """Write item ``i`` of ``split`` as ``stem.nii.gz`` and ``stem.png`` under ``out``; return its summary line."""
    import matplotlib.pyplot as plt
    import nibabel as nib

    source = getattr(split, "source", None)
    metas = getattr(source, "metas", None)
    if metas is not None:  # the store's whole item: what patches or whole-volume items are cut from
        row = int(split.rows[i])
        meta = metas[row]
        x = split.volume(i).numpy()
        affine = np.asarray(meta.get("affine", np.diag([*meta.get("spacing", [1, 1, 1]), 1.0])), dtype=np.float64)
        before = (f"{meta.get('path', '?')}: before {_fmt(meta.get('source_shape', [])[1:])} at "
                  f"{_fmt(meta.get('source_spacing', []))} mm ({meta.get('source_dtype', '?')}, "
                  f"range {_range(meta.get('source_range', []))})")
        spacing = meta.get("spacing", [1.0, 1.0, 1.0])
    else:  # generated volumes (synthetic_phantom3d): the item as it is
        x = split.load(i).numpy()
        affine, spacing = np.eye(4), [1.0, 1.0, 1.0]
        before = f"item {i} (generated in memory)"
    nib.save(nib.Nifti1Image(np.moveaxis(x, 0, -1) if x.shape[0] > 1 else x[0], affine), str(out / f"{stem}.nii.gz"))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    c, d, h, w = x.shape
    for ax, (img, name) in zip(axes, ((x[0, d // 2], f"axis 0 = {d // 2}"), (x[0, :, h // 2], f"axis 1 = {h // 2}"),
                                      (x[0, :, :, w // 2], f"axis 2 = {w // 2}")), strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=float(x.min()), vmax=float(x.max()))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{stem}: {d}x{h}x{w} at {_fmt(spacing)} mm, range [{x.min():.3g}, {x.max():.3g}]", fontsize=9)
    fig.savefig(out / f"{stem}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return (f"{stem}  {before} -> after {d}x{h}x{w} ({c} channel(s)) at {_fmt(spacing)} mm, "
            f"range [{x.min():.4g}, {x.max():.4g}]")


__all__ = ["preview_item"]

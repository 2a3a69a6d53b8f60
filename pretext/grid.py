"""The sliding grid of patches over a volume (or a signal), shared by the harness and exported bundles.

One definition of the grid, so that :mod:`volssl.sampling` (whole-scan features in the harness) and
:class:`pretext.bundle.networks.GridPooled` (a bundle's network on a whole scan) cut the same patches:
along each axis, windows of ``patch`` voxels step by ``max(1, int(patch * (1 - overlap)))`` (MONAI
``SlidingWindowInferer``'s overlap convention) and the last window is flush with the end; an axis shorter
than the patch gets one window starting at ``(size - patch) // 2`` (negative: the data are centred in a
padded patch).
"""

from __future__ import annotations

from collections.abc import Sequence


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start positions of a sliding window of ``patch`` over ``size`` voxels (the last flush with the end).

    A ``size`` smaller than ``patch`` gives one negative start: the volume is centred in the padded patch.
    """
    if size <= patch:
        return [(size - patch) // 2]
    step = max(1, int(patch * (1.0 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def grid_starts(shape: Sequence[int], patch: Sequence[int], overlap: float) -> list[list[int]]:
    """Per axis, the window starts of :func:`axis_starts`; the grid's corners are their product."""
    if len(shape) != len(patch):
        raise ValueError(f"shape {tuple(shape)} and patch {tuple(patch)} have different numbers of axes")
    return [axis_starts(int(n), int(p), overlap) for n, p in zip(shape, patch, strict=True)]


__all__ = ["axis_starts", "grid_starts"]

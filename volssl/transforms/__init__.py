"""Volume transforms, batched over ``(B, C, D, H, W)``, in the three layers of :mod:`pretext.transforms`.

Each transform is a ``Random*`` class that draws its parameters from a CPU generator
(``get_params(batch_shape, generator)``), the deterministic class holding them (``apply(x)`` on any
device), and the pure tensor function underneath. Voxel noise and block permutations are hashes of
drawn seeds (:mod:`volssl.transforms.hashing`), so one generator state gives the same views on CPU
and GPU. The Models Genesis transforms have a numba kernel for the CPU (``backend="auto"``) that
computes bit for bit what the tensor path (``backend="torch"``, the GPU path) computes.

* flips: RandomFlip -> Flip -> flip; rotations: RandomRotate90 -> Rotate90 -> rotate (:mod:`.spatial`);
* local pixel shuffle: RandomLocalPixelShuffle -> LocalPixelShuffle -> local_pixel_shuffle (:mod:`.shuffle`);
* Bezier remap: RandomBezierRemap -> BezierRemap -> remap_intensity (:mod:`.intensity`);
* painting: RandomInPaint / RandomOutPaint / RandomPainting (the chain's choice of either) -> InPaint /
  OutPaint -> in_paint_boxes / out_paint_boxes (:mod:`.painting`);
* slab order: RandomSlabOrder -> SlabOrder -> extract_slabs, permute_slabs (:mod:`.slabs`);
* MAE masking: RandomPatchMask -> PatchMask -> keep_tokens (:mod:`.masking`);
* audit perturbation: RandomIntensityJitter -> IntensityJitter -> jitter_intensity (:mod:`.intensity`).

Models Genesis (Zhou et al., MedIA 2021; defaults as the paper): flips, local pixel shuffle, Bezier
remap, in/out-painting (the chain is :func:`volssl.tasks.pixel_shuffle.genesis_corrupt`).
"""

from pretext.transforms import Chain, Compose, RandomTransform, Transform
from volssl.transforms.intensity import (
    BezierRemap,
    IntensityJitter,
    RandomBezierRemap,
    RandomIntensityJitter,
    bezier_curves,
    bezier_lut,
    jitter_intensity,
    perturb_volume,
    remap_intensity,
)
from volssl.transforms.masking import PatchMask, RandomPatchMask, keep_tokens, patchify, unpatchify
from volssl.transforms.painting import (
    InPaint,
    OutPaint,
    RandomInPaint,
    RandomOutPaint,
    RandomPainting,
    box_mask,
    in_paint_boxes,
    out_paint_boxes,
    sample_boxes,
)
from volssl.transforms.shuffle import (
    LocalPixelShuffle,
    RandomLocalPixelShuffle,
    block_geometry,
    block_permutation,
    local_pixel_shuffle,
)
from volssl.transforms.slabs import (
    RandomSlabOrder,
    SlabOrder,
    extract_slabs,
    permutation_set,
    permute_slabs,
    slab_geometry,
)
from volssl.transforms.spatial import Flip, RandomFlip, RandomRotate90, Rotate90, flip, rotate, rotation_group

__all__ = [
    "BezierRemap", "Chain", "Compose", "Flip", "InPaint", "IntensityJitter", "LocalPixelShuffle", "OutPaint",
    "PatchMask", "RandomBezierRemap", "RandomFlip", "RandomInPaint", "RandomIntensityJitter",
    "RandomLocalPixelShuffle", "RandomOutPaint", "RandomPainting", "RandomPatchMask", "RandomRotate90",
    "RandomSlabOrder", "RandomTransform", "Rotate90", "SlabOrder", "Transform", "bezier_curves", "bezier_lut",
    "block_geometry", "block_permutation", "box_mask", "extract_slabs", "flip", "in_paint_boxes",
    "jitter_intensity", "keep_tokens", "local_pixel_shuffle", "out_paint_boxes", "patchify", "permutation_set",
    "permute_slabs", "perturb_volume", "remap_intensity", "rotate", "rotation_group", "sample_boxes",
    "slab_geometry", "unpatchify",
]

"""Volume pretext tasks (registered on import): ``slice_order``, ``rotation``, ``pixel_shuffle``,
``mae3d`` and ``combined``."""

from volssl.tasks.combined import Combined
from volssl.tasks.mae3d import MAE3D
from volssl.tasks.pixel_shuffle import PixelShuffle
from volssl.tasks.rotation import Rotation
from volssl.tasks.slice_order import SliceOrder

__all__ = ["MAE3D", "Combined", "PixelShuffle", "Rotation", "SliceOrder"]

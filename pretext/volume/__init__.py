"""Volume pretext tasks (registered on import): ``slice_order``, ``rotation``, ``pixel_shuffle``,
``mae3d`` and ``combined``."""

from pretext.volume.combined import Combined
from pretext.volume.mae3d import MAE3D
from pretext.volume.pixel_shuffle import PixelShuffle
from pretext.volume.rotation import Rotation
from pretext.volume.slice_order import SliceOrder

__all__ = ["MAE3D", "Combined", "PixelShuffle", "Rotation", "SliceOrder"]

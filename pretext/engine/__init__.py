"""The mixed-precision training engine (on Lightning Fabric)."""

from pretext.engine.checkpoint import load_checkpoint, save_checkpoint
from pretext.engine.fabric import make_fabric
from pretext.engine.loop import FitResult, fit

__all__ = ["FitResult", "fit", "load_checkpoint", "make_fabric", "save_checkpoint"]

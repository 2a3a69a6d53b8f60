"""Signal encoders, all taking ``n_chans``, ``n_times``, ``sfreq``: xresnet1d18/34/50/101, cpc_encoder,
ribeiro_resnet and tsai models by name (``tsai_InceptionTimePlus``, ``tsai_XResNet1dPlus``, ``tsai_TSTPlus``, ...)."""

from signalssl.encoders import cpc, ribeiro, tsai, xresnet1d  # noqa: F401  (registers the encoders)
from signalssl.encoders.cpc import CPCEncoder
from signalssl.encoders.ribeiro import RibeiroResNet
from signalssl.encoders.tsai import TsaiEncoder
from signalssl.encoders.xresnet1d import XResNet1d

__all__ = ["CPCEncoder", "RibeiroResNet", "TsaiEncoder", "XResNet1d"]

"""Volume encoders (registered on import): ``resnet18_3d``, ``resnet50_3d``, ``vit_3d``, ``monai_net``."""

from volssl.encoders.decoder import UNetDecoder
from volssl.encoders.monai_net import MonaiNet, monai_net
from volssl.encoders.resnet import ResNet3D, resnet18_3d, resnet50_3d
from volssl.encoders.vit import ViT3D, sincos_pos_embed_3d, vit_3d

__all__ = ["MonaiNet", "ResNet3D", "UNetDecoder", "ViT3D", "monai_net", "resnet18_3d", "resnet50_3d",
           "sincos_pos_embed_3d", "vit_3d"]

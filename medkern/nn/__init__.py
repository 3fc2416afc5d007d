"""Drop-in modules built on medkern's fused ops."""

from .bias_act import BiasAct
from .conv_act import Conv1dAct, Conv2dAct, Conv3dAct, ConvAct, ConvNormAct, ConvTransposeNormAct
from .norm_act import NormAct

__all__ = ["BiasAct", "ConvAct", "Conv1dAct", "Conv2dAct", "Conv3dAct", "ConvNormAct", "ConvTransposeNormAct",
           "NormAct"]

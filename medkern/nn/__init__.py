"""Drop-in modules built on medkern's fused ops."""

from .bias_act import BiasAct
from .conv_act import Conv1dAct, Conv2dAct, Conv3dAct, ConvAct, ConvNormAct, ConvTransposeNormAct
from .equalized import EqualizedConv2d, EqualizedLinear
from .layer_norm_rnn import LayerNormGRU, LayerNormLSTM
from .linear_act import LinearAct
from .max_pool import MaxPool1d, MaxPool2d, MaxPool3d
from .minibatch_stddev import MinibatchStdDev
from .modulated_conv import ModulatedConv2d
from .norm_act import NormAct
from .pixel_norm import PixelNorm
from .resample import Blur, Downsample2d, Upfirdn2d, Upsample2d
from .rnn import GRU, LSTM, RNN

__all__ = ["BiasAct", "ConvAct", "Conv1dAct", "Conv2dAct", "Conv3dAct", "ConvNormAct", "ConvTransposeNormAct",
           "NormAct", "LinearAct", "MaxPool1d", "MaxPool2d", "MaxPool3d", "LSTM", "GRU", "RNN", "LayerNormLSTM", "LayerNormGRU",
           "Upfirdn2d", "Upsample2d", "Downsample2d", "Blur", "PixelNorm", "MinibatchStdDev",
           "EqualizedLinear", "EqualizedConv2d", "ModulatedConv2d"]

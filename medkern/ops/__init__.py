"""medkern's fused ops: each picks its implementation by medkern.use_backend."""

from .bias_act import bias_act
from .conv_act import conv_act, conv_transpose_act
from .max_pool import max_pool
from .minibatch_stddev import minibatch_stddev
from .modulate_weight import modulate_weight
from .modulated_conv2d import conv2d_resample, modulated_conv2d
from .norm_act import norm_act
from .pixel_norm import pixel_norm
from .upfirdn2d import downsample2d, filter2d, fir_filter, upfirdn2d, upsample2d

__all__ = ["bias_act", "conv_act", "conv_transpose_act", "max_pool", "minibatch_stddev", "modulate_weight", "norm_act",
           "pixel_norm", "upfirdn2d", "upsample2d", "downsample2d", "filter2d", "fir_filter", "modulated_conv2d",
           "conv2d_resample"]

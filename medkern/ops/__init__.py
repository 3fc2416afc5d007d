"""medkern's fused ops: each picks its implementation by medkern.use_backend."""

from .bias_act import bias_act
from .conv_act import conv_act, conv_transpose_act
from .norm_act import norm_act

__all__ = ["bias_act", "conv_act", "conv_transpose_act", "norm_act"]

"""Plain-PyTorch definitions of every medkern op: the test oracle and the fallback."""

from .bias_act import bias_act, bias_act_grad
from .minibatch_stddev import minibatch_stddev
from .pixel_norm import pixel_norm, pixel_norm_grad

__all__ = ["bias_act", "bias_act_grad", "minibatch_stddev", "pixel_norm", "pixel_norm_grad"]

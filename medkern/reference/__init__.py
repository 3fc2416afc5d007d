"""Plain-PyTorch definitions of every medkern op: the test oracle and the fallback."""

from .bias_act import bias_act, bias_act_grad

__all__ = ["bias_act", "bias_act_grad"]

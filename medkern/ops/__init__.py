"""medkern's fused ops: each picks its implementation by medkern.use_backend."""

from .bias_act import bias_act

__all__ = ["bias_act"]

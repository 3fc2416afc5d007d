"""Drop-in modules built on medkern's fused ops."""

from .bias_act import BiasAct

__all__ = ["BiasAct"]

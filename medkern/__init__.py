"""medkern: fused PyTorch kernels for medical-imaging deep learning.

Importing medkern never fails: without the compiled extension every op runs its plain-PyTorch
reference (a warning says so once), and Triton and CUDA are used only where present.
"""

__version__ = "0.1.0"

from . import _extension  # noqa: E402,F401  (loads medkern._C, or warns once)
from . import activations, backend, ops, reference  # noqa: E402
from .backend import use_backend  # noqa: E402
from .info import info  # noqa: E402
from . import data, gan, models, nn, train  # noqa: E402
from .swapping import swap, swap_report, verify  # noqa: E402

__all__ = ["__version__", "activations", "backend", "data", "gan", "info", "models", "nn", "ops", "reference", "swap", "swap_report", "train", "use_backend", "verify"]

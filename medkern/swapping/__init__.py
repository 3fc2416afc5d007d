"""medkern.swap, medkern.swap_report and medkern.verify: medkern for models users already have."""

from .report import Left, SwapReport, Swapped
from .swapper import swap, swap_report
from .verification import Comparison, VerifyResult, compare, verify

__all__ = ["swap", "swap_report", "verify", "compare", "SwapReport", "Swapped", "Left", "VerifyResult", "Comparison"]

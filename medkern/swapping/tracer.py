"""Tracing one module's own forward with torch.fx, for swap, and refusing what a trace would freeze.

The tracer looks through plain ``nn.Sequential`` containers (and subclasses that keep
Sequential's forward, such as MONAI's ``Convolution`` and ``ADN``), so a pattern spread over
nested containers (``conv`` -> ``adn.N`` -> ``adn.A``) is one chain of calls; every other
submodule is a leaf, traced on its own later.

A trace keeps only the tensor operations: fx replaces the arguments by proxies and runs the
Python code once. So a forward is left alone (its children are still visited) where that run
could differ from a real call. Every Python function the trace runs outside torch and the
standard library (the forward, its methods, module-level helpers) is inspected:
- a branch on ``self.training`` (or any module's): each module is traced in both modes and left
  alone if the two graphs differ;
- a test of what a value is (``x is None``, ``isinstance(x, Tensor)``, ``type(x)``, ...): a proxy is
  neither None nor a Tensor, so the trace could take a branch the real call does not;
- a ``with`` block or a call into torch's grad-mode or autocast context managers (``no_grad``,
  ``autocast``, also as decorators): the trace drops them;
- Python randomness, clocks and grad/autocast state reads (``random``, ``time``,
  ``is_grad_enabled``, ...): frozen at their traced value;
- keyword-only or variadic parameters of forward: the generated forward would bind them differently.
Python attributes of the module read as constants are guarded at run time instead
(``rewrite.SwappedForward`` falls back to the original forward if any changes).
"""

from __future__ import annotations

import dis
import inspect
import os
import sys
import sysconfig
from typing import Optional

import torch
from torch import fx, nn

from .patterns import has_hooks
from .rewrite import is_swapped


def is_transparent(module: nn.Module) -> bool:
    """A container whose forward only calls its children in order, with no hooks of its own."""
    return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
            and not is_swapped(module) and not has_hooks(module))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not is_transparent(module)


class NotTraceable(Exception):
    pass


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_STDLIB_DIR = sysconfig.get_paths()["stdlib"] + os.sep
_PACKAGE_DIRS = tuple({sysconfig.get_paths()[key] + os.sep for key in ("purelib", "platlib")})  # inside stdlib
_MEDKERN_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep
_CONTEXT_FILES = tuple(os.path.join(_TORCH_DIR, *parts) for parts in (
    ("autograd", "grad_mode.py"), ("utils", "_contextlib.py"), ("amp", "autocast_mode.py")))
# callables whose result depends on what an object is, not on tensor values
_IDENTITY_TESTS = {"isinstance", "is_tensor", "type", "hasattr", "callable", "is_nested", "is_sparse"}
# names whose values a trace would freeze: Python randomness, clocks, grad and autocast state
_FROZEN_READS = {"random", "randint", "uniform", "shuffle", "choice", "time", "perf_counter", "monotonic",
                 "is_grad_enabled", "is_autocast_enabled", "is_inference_mode_enabled", "get_autocast_dtype"}


def _is_user_code(filename: str) -> bool:
    """Code of the user's or a third-party library (MONAI, torchvision): not torch's, medkern's or
    the standard library's."""
    if filename.startswith((_TORCH_DIR, _MEDKERN_DIR, "<")):
        return False
    return filename.startswith(_PACKAGE_DIRS) or not filename.startswith(_STDLIB_DIR)


def _frozen_by_trace(code) -> Optional[str]:
    """What in ``code`` a trace would freeze or drop, if anything."""
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname in ("BEFORE_WITH", "SETUP_WITH", "BEFORE_ASYNC_WITH", "SETUP_ASYNC_WITH"):
            return "has a 'with' block (a trace drops no_grad/autocast contexts)"
        if ins.opname.startswith(("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD", "LOAD_NAME")):
            if ins.argval in _FROZEN_READS:
                return f"reads {ins.argval!r}, which a trace would freeze"
            if ins.argval in _IDENTITY_TESTS:
                for n in instructions[i + 1:i + 5]:
                    if n.opname == "LOAD_FAST" and n.argval != "self":
                        return f"tests {n.argval!r} with {ins.argval}()"
        if ins.opname == "LOAD_FAST" and ins.argval != "self":
            following = instructions[i + 1:i + 3]
            if following and ("IF_NONE" in following[0].opname or "IF_NOT_NONE" in following[0].opname):
                return f"tests whether {ins.argval!r} is None"
            if len(following) == 2 and following[0].opname == "LOAD_CONST" and following[0].argval is None \
                    and following[1].opname in ("IS_OP", "COMPARE_OP"):
                return f"tests whether {ins.argval!r} is None"
    return None


def _check_signature(module: nn.Module) -> None:
    code = getattr(type(module).forward, "__code__", None)
    if code is None or code.co_kwonlyargcount or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        raise NotTraceable("its forward has keyword-only or variadic parameters, which the generated forward "
                           "would bind differently")


def _trace_once(module: nn.Module) -> fx.Graph:
    """The graph, or NotTraceable naming what the traced run did that a trace cannot keep."""
    calls: dict = {}  # (code run, code that called it), in the order first run: reasons are deterministic

    def profile(frame, event, arg):
        if event == "call":
            calls.setdefault((frame.f_code, frame.f_back.f_code if frame.f_back else None), None)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        graph = _Tracer().trace(module)
    except Exception as error:  # any failure means: not traceable by fx, use the module tree
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise NotTraceable(f"torch.fx cannot trace its forward ({type(error).__name__}: {message[:160]})") from None
    finally:
        sys.setprofile(previous)
    for code, caller in calls:
        if caller is not None and _is_user_code(caller.co_filename) and code.co_filename in _CONTEXT_FILES:
            raise NotTraceable(f"{caller.co_name} enters a grad-mode or autocast context, which a trace drops")
        if _is_user_code(code.co_filename):
            frozen = _frozen_by_trace(code)
            if frozen is not None:
                raise NotTraceable(f"{code.co_name} {frozen}")
    return graph


def trace(module: nn.Module) -> fx.Graph:
    """The graph of ``module.forward``; NotTraceable if a trace could differ from a real call."""
    _check_signature(module)
    modes = {m: m.training for m in module.modules()}
    try:
        graph = _trace_once(module)
        for m in modes:
            m.training = not modes[module]
        other = _trace_once(module)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if graph.python_code("self").src != other.python_code("self").src:
        raise NotTraceable("its forward depends on train/eval mode as a Python value (traced once, it would not)")
    return graph

"""Tracing one module's own forward with torch.fx, for swap.

The tracer looks through plain ``nn.Sequential`` containers (and subclasses that keep
Sequential's forward, such as MONAI's ``Convolution`` and ``ADN``), so a pattern spread over
nested containers (``conv`` -> ``adn.N`` -> ``adn.A``) is one chain of calls; every other
submodule is a leaf, traced on its own later.

fx replaces the arguments by proxies and follows Python branches once, so a forward that
branches on something a trace freezes is left alone (its children are still visited):
- on ``self.training`` (or any module's): each module is traced in both modes and left alone if
  the two graphs differ;
- on what its arguments are (``x is None``, ``isinstance(x, Tensor)``, ``type(x)``, ...): a proxy
  is neither None nor a Tensor, so the trace would take a branch the real call may not. The
  bytecode of the module's own methods is checked for such tests.
"""

from __future__ import annotations

import dis
import inspect
from typing import Optional

from torch import fx, nn

from .rewrite import SwappedForward


def is_transparent(module: nn.Module) -> bool:
    """A container whose forward only calls its children in order, with no hooks of its own."""
    return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
            and not isinstance(module.__dict__.get("forward"), SwappedForward)
            and not (module._forward_hooks or module._forward_pre_hooks))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not is_transparent(module)


class NotTraceable(Exception):
    pass


# callables whose result depends on what an object is, not on tensor values
_IDENTITY_TESTS = {"isinstance", "is_tensor", "type", "hasattr", "callable", "is_nested", "is_sparse"}


def _tests_an_argument(code) -> Optional[str]:
    """The first argument of ``code`` tested for None-ness or type, if any."""
    count = code.co_argcount + code.co_kwonlyargcount
    arguments = set(code.co_varnames[1:count])  # not self
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname == "LOAD_FAST" and ins.argval in arguments:
            following = [n.opname for n in instructions[i + 1:i + 3]]
            after = instructions[i + 1] if i + 1 < len(instructions) else None
            if following and ("IF_NONE" in following[0] or "IF_NOT_NONE" in following[0]):
                return ins.argval
            if after is not None and after.opname == "LOAD_CONST" and after.argval is None and len(following) > 1 \
                    and following[1] in ("IS_OP", "COMPARE_OP"):
                return ins.argval
        if ins.argval in _IDENTITY_TESTS and ins.opname.startswith(("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD")):
            for n in instructions[i + 1:i + 5]:
                if n.opname == "LOAD_FAST" and n.argval in arguments:
                    return n.argval
    return None


def _methods_run_by_forward(module: nn.Module):
    """forward and the methods of module's own classes it calls by name (transitively), as functions."""
    cls, seen, pending, found = type(module), set(), ["forward"], []
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        value = inspect.getattr_static(cls, name, None)
        if not inspect.isfunction(value) or value.__module__.startswith("torch."):
            continue
        function = inspect.unwrap(value)
        found.append((name, function))
        pending += [n for n in function.__code__.co_names if n not in seen]
    return found


def _branches_on_arguments(module: nn.Module) -> Optional[str]:
    """'Class.method tests argument' for the first method run by forward doing so, if any."""
    for name, function in _methods_run_by_forward(module):
        argument = _tests_an_argument(function.__code__)
        if argument is not None:
            return f"{type(module).__name__}.{name} tests {argument!r}"
    return None


def _trace_once(module: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(module)
    except Exception as error:  # any failure means: not traceable by fx, use the module tree
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise NotTraceable(f"torch.fx cannot trace its forward ({type(error).__name__}: {message[:160]})") from None


def trace(module: nn.Module) -> fx.Graph:
    """The graph of ``module.forward``; NotTraceable if fx fails or the graph depends on the mode."""
    branching = _branches_on_arguments(module)
    if branching is not None:
        raise NotTraceable(f"its forward branches on what an argument is ({branching}), which a trace would freeze")
    modes = {m: m.training for m in module.modules()}
    try:
        graph = _trace_once(module)
        module.train(not module.training)
        other = _trace_once(module)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if graph.python_code("self").src != other.python_code("self").src:
        raise NotTraceable("its forward depends on train/eval mode as a Python value (traced once, it would not)")
    return graph

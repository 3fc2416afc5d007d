"""Replacing a module's forward by its rewritten fx graph, without touching its state.

The rewritten forward is Python source generated from the graph, run with ``self`` bound to the
module itself: submodules, parameters and buffers are looked up live on every call (so ``.to()``,
``load_state_dict`` and train/eval act on it as before). The fused blocks it calls are kept in the
module's ``__dict__`` under ``_medkern_fused_<i>`` (not registered as submodules: they share the
original modules, so ``state_dict``, ``parameters()`` and ``modules()`` stay the original's).

Two things the graph cannot see are checked on every call, and the original forward runs
instead when either changed since the swap: the module's own Python attributes (numbers,
strings, flags: a trace read them as constants, e.g. a fade-in ``alpha``), and hooks on any
module the rewritten forward no longer calls (a hook registered after the swap, or a global one).
"""

from __future__ import annotations

import copy
import importlib
import itertools
import linecache
import types

from torch import fx, nn
from torch.nn.modules import module as torch_module

from .patterns import has_hooks

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_SCALARS = (bool, int, float, complex, str, bytes, type(None))


def _plain(value) -> bool:
    return isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(_plain(v) for v in value))


def python_attributes(module: nn.Module) -> dict:
    """The module's own plain values (numbers, strings, flags, tuples of them), but its mode."""
    return {k: v for k, v in module.__dict__.items() if k != "training" and _plain(v)}


def is_swapped(module: nn.Module) -> bool:
    """module's forward was replaced by swap."""
    return isinstance(module.__dict__.get("forward"), SwappedForward)


def _global_hooks() -> bool:
    return any(getattr(torch_module, name, None) for name in _GLOBAL_HOOKS)

_counter = itertools.count()


def _compile(source: str, namespace: dict, name: str):
    filename = f"<medkern.swap forward #{next(_counter)} of {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # readable tracebacks
    scope = dict(namespace)
    exec(compile(source, filename, "exec"), scope)
    return scope["forward"]


class SwappedForward:
    """A module's forward replaced by a rewritten graph; picklable and deep-copyable with it.

    ``bypassed``: the modules the graph no longer calls itself (fused, or containers looked
    through); ``attributes``: the module's Python attributes when it was traced.
    """

    def __init__(self, module: nn.Module, source: str, namespace: dict, bypassed: list, attributes: dict):
        self.module, self.source, self.namespace = module, source, namespace
        self.bypassed, self.attributes = bypassed, attributes
        self._function = _compile(source, namespace, type(module).__name__)

    def __call__(self, *args, **kwargs):
        module = self.module
        if (python_attributes(module) != self.attributes or _global_hooks()
                or any(has_hooks(m) for m in self.bypassed)):
            return type(module).forward(module, *args, **kwargs)  # what the trace could not see changed
        return self._function(module, *args, **kwargs)

    def __reduce__(self):
        # the namespace holds Python modules (torch, operator, ...), which pickle by name only
        names = {k: (v.__name__, True) if isinstance(v, types.ModuleType) else (v, False)
                 for k, v in self.namespace.items()}
        return _unpickle, (self.module, self.source, names, self.bypassed, self.attributes)

    def __deepcopy__(self, memo):
        copied = object.__new__(SwappedForward)
        memo[id(self)] = copied
        copied.module = copy.deepcopy(self.module, memo)
        copied.bypassed = copy.deepcopy(self.bypassed, memo)
        copied.source, copied.namespace, copied._function = self.source, self.namespace, self._function
        copied.attributes = dict(self.attributes)
        return copied


def _unpickle(module: nn.Module, source: str, names: dict, bypassed: list, attributes: dict) -> SwappedForward:
    namespace = {k: importlib.import_module(v) if is_module else v for k, (v, is_module) in names.items()}
    return SwappedForward(module, source, namespace, bypassed, attributes)


def install(module: nn.Module, graph: fx.Graph, fused: dict, bypassed: list) -> None:
    """Makes ``graph`` (whose call_module targets include the keys of ``fused``) module's forward."""
    graph.lint()
    code = graph.python_code(root_module="self")
    for name, block in fused.items():
        object.__setattr__(module, name, block)  # bypasses nn.Module registration on purpose
    attributes = python_attributes(module)
    object.__setattr__(module, "forward", SwappedForward(module, code.src, code.globals, bypassed, attributes))

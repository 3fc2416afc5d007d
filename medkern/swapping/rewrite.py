"""Replacing a module's forward by its rewritten fx graph, without touching its state.

The rewritten forward is Python source generated from the graph, run with ``self`` bound to the
module itself: submodules, parameters and buffers are looked up live on every call (so ``.to()``,
``load_state_dict`` and train/eval act on it as before). The fused blocks it calls are kept in the
module's ``__dict__`` under ``_medkern_fused_<i>`` (not registered as submodules: they share the
original modules, so ``state_dict``, ``parameters()`` and ``modules()`` stay the original's).
"""

from __future__ import annotations

import copy
import importlib
import itertools
import linecache
import types

from torch import fx, nn

_counter = itertools.count()


def _compile(source: str, namespace: dict, name: str):
    filename = f"<medkern.swap forward #{next(_counter)} of {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # readable tracebacks
    scope = dict(namespace)
    exec(compile(source, filename, "exec"), scope)
    return scope["forward"]


class SwappedForward:
    """A module's forward replaced by a rewritten graph; picklable and deep-copyable with it."""

    def __init__(self, module: nn.Module, source: str, namespace: dict):
        self.module, self.source, self.namespace = module, source, namespace
        self._function = _compile(source, namespace, type(module).__name__)

    def __call__(self, *args, **kwargs):
        return self._function(self.module, *args, **kwargs)

    def __reduce__(self):
        # the namespace holds Python modules (torch, operator, ...), which pickle by name only
        names = {k: (v.__name__, True) if isinstance(v, types.ModuleType) else (v, False)
                 for k, v in self.namespace.items()}
        return _unpickle, (self.module, self.source, names)

    def __deepcopy__(self, memo):
        copied = object.__new__(SwappedForward)
        memo[id(self)] = copied
        copied.module = copy.deepcopy(self.module, memo)
        copied.source, copied.namespace, copied._function = self.source, self.namespace, self._function
        return copied


def _unpickle(module: nn.Module, source: str, names: dict) -> SwappedForward:
    namespace = {k: importlib.import_module(v) if is_module else v for k, (v, is_module) in names.items()}
    return SwappedForward(module, source, namespace)


def install(module: nn.Module, graph: fx.Graph, fused: dict) -> None:
    """Makes ``graph`` (whose call_module targets include the keys of ``fused``) module's forward."""
    graph.lint()
    code = graph.python_code(root_module="self")
    for name, block in fused.items():
        object.__setattr__(module, name, block)  # bypasses nn.Module registration on purpose
    object.__setattr__(module, "forward", SwappedForward(module, code.src, code.globals))

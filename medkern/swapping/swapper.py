"""medkern.swap: run the supported patterns of an existing model on medkern, state untouched.

Each module's own forward is traced with torch.fx (looking through nn.Sequential containers).
In its graph, a chain of calls where each output feeds only the next call is a pattern:

    Conv -> Norm [-> Act]              ConvNormAct           (1d/2d/3d; Batch/Instance/GroupNorm)
    ConvTranspose -> Norm [-> Act]     ConvTransposeNormAct
    Conv -> Act                        ConvAct
    Norm -> Act                        NormAct
    Linear -> Act                      LinearAct
    act(x + self.bias)                 BiasAct           (bias_pattern.py)
    act(F.conv*d / F.linear / F.batch_norm, F.instance_norm, F.group_norm(...))
                                       ConvAct, LinearAct, NormAct  (functional_pattern.py)

(activations as modules or as functional calls; Identity and Dropout(p=0) between them are
skipped). The module's forward is replaced by the rewritten graph, which calls a medkern block
sharing the original conv/norm modules: no parameter, buffer or key of the model changes, so
checkpoints load both ways. nn.LSTM/GRU/RNN and nn.MaxPool1d/2d/3d become their medkern.nn
subclasses, which only replace forward, and F.max_pool*d calls medkern.nn's functions. A module
fx cannot trace keeps its forward; its children are still visited.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from typing import Iterable, Optional, Union

from torch import fx, nn

from .. import nn as medkern_nn
from ..layout import model_to_channels_last
from ..nn.max_pool import FUNCTIONAL_TWINS as MAX_POOL_TWINS
from .bias_pattern import BiasActCall, match_bias_add
from .functional_pattern import fused_call, match_functional
from .patterns import Unsupported, consumes_without_aliasing, has_hooks, is_no_op, is_norm, node_act, producer_kind
from .report import Left, SwapReport, Swapped
from .rewrite import install, is_swapped
from .tracer import NotTraceable, is_transparent, trace

REPORT_ATTRIBUTE = "_medkern_swap_report"
# torch modules that become a medkern subclass adding no state (only forward changes)
_SUBCLASS_BLOCKS = {nn.LSTM: medkern_nn.LSTM, nn.GRU: medkern_nn.GRU, nn.RNN: medkern_nn.RNN,
                    nn.MaxPool1d: medkern_nn.MaxPool1d, nn.MaxPool2d: medkern_nn.MaxPool2d,
                    nn.MaxPool3d: medkern_nn.MaxPool3d}


class _Selector:
    """include/exclude: module paths (or their parents), fnmatch patterns of paths, or block names."""

    def __init__(self, include, exclude):
        self.include = self._entries(include, "include")
        self.exclude = self._entries(exclude, "exclude") or []

    @staticmethod
    def _entries(value, name) -> Optional[list[str]]:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        entries = list(value)
        if not all(isinstance(entry, str) for entry in entries):
            raise TypeError(f"medkern.swap: {name} must be a string or an iterable of strings (module paths, "
                            f"fnmatch patterns of paths, or block names such as 'ConvNormAct')")
        return entries

    @staticmethod
    def _matches(entry: str, paths: tuple[str, ...], block: str) -> bool:
        return entry.lower() == block.lower() or any(
            path == entry or path.startswith(entry + ".") or fnmatchcase(path, entry) for path in paths)

    def why_not(self, paths: tuple[str, ...], block: str) -> Optional[str]:
        for entry in self.exclude:
            if self._matches(entry, paths, block):
                return f"excluded (exclude={entry!r})"
        if self.include is not None and not any(self._matches(e, paths, block) for e in self.include):
            return "not included (include=...)"
        return None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _plain_call(node: fx.Node, source: fx.Node) -> bool:
    """node is a module call taking exactly ``source`` and nothing else."""
    return node.op == "call_module" and node.args == (source,) and not node.kwargs


def _takes_first(node: fx.Node, source: fx.Node) -> bool:
    """node applies a function to ``source`` (its first argument, used nowhere else in the call)."""
    rest = list(node.args[1:]) + list(node.kwargs.values())
    return node.args[:1] == (source,) and all(arg is not source for arg in rest)


class _Swapper:
    def __init__(self, report: SwapReport, selector: _Selector, memory_saving: bool):
        self.report, self.selector, self.memory_saving = report, selector, memory_saving
        self.visited: set[int] = set()  # a module registered under several names is swapped once

    def visit(self, module: nn.Module, path: str) -> None:
        if id(module) in self.visited:
            return
        self.visited.add(id(module))
        if type(module) in _SUBCLASS_BLOCKS:
            self._swap_class(module, path)
            return
        # torch's own modules hold no patterns of their own; medkern's run fused ops already
        library = type(module).__module__.startswith(("torch.nn.", "medkern."))
        traced = False
        if not library or is_transparent(module):
            try:
                graph = trace(module)
            except NotTraceable as error:
                self.report.leave(Left((path or "<model>",), str(error)))
            else:
                self._rewrite(module, path, graph)
                traced = True
        for child, child_path in self._children(module, path, traced):
            self.visit(child, child_path)

    def _children(self, module: nn.Module, path: str, traced: bool):
        """Direct children; through the transparent containers the traced forward looked into."""
        for name, child in module.named_children():
            if traced and is_transparent(child):
                yield from self._children(child, _join(path, name), True)
            else:
                yield child, _join(path, name)

    def _swap_class(self, module: nn.Module, path: str) -> None:
        block = _SUBCLASS_BLOCKS[type(module)]
        reason = self.selector.why_not((path,), block.__name__)
        if reason:
            self.report.leave(Left((path,), reason))
            return
        module.__class__ = block  # a subclass adding no state: same parameters, only forward changes
        self.report.swapped.append(Swapped((path or "<model>",), f"medkern.nn.{block.__name__}"))

    # --- patterns in one traced forward ---

    def _rewrite(self, module: nn.Module, path: str, graph: fx.Graph) -> None:
        modules = dict(module.named_modules())
        fused: dict[str, nn.Module] = {}
        erased: set[fx.Node] = set()
        retargeted = False
        for node in list(graph.nodes):
            if node in erased:
                continue
            if node.op == "call_function":
                self._swap_bias_act(module, node, modules, path, graph, fused, erased)
                if node not in erased:
                    self._swap_functional(node, modules, path, graph, fused, erased)
                if node not in erased:
                    retargeted |= self._swap_functional_pool(node)
                continue
            if node.op != "call_module":
                continue
            target = modules.get(node.target)
            if target is None or not (producer_kind(target) or is_norm(target)):
                continue
            pattern = self._pattern(node, modules, path)
            if pattern is None:
                continue
            nodes, calls, block_class, build = pattern
            paths = tuple(_join(path, n.target) for n in calls if n.op == "call_module")
            block_name = block_class.__name__
            if self._left(paths, block_name, nodes, modules):
                continue
            try:
                block = build(self._may_keep_output(nodes[-1], modules))
            except (TypeError, ValueError) as error:
                self.report.leave(Left(paths, str(error)))
                continue
            self._replace_chain(block, (node.args[0],), nodes, paths, block_name, graph, fused, erased)
        if fused or retargeted:
            bypassed = [modules[n.target] for n in erased if n.op == "call_module"]
            bypassed += [m for _, m in module.named_modules() if m is not module and is_transparent(m)]
            install(module, graph, fused, list({id(m): m for m in bypassed}.values()))

    def _swap_bias_act(self, module: nn.Module, node: fx.Node, modules: dict, path: str, graph: fx.Graph,
                       fused: dict, erased: set) -> None:
        """``act(x + bias)`` (see bias_pattern.py) -> one BiasActCall taking x and the bias."""
        match = match_bias_add(node, module)
        if match is None:
            return
        x, bias, shape, replaced = match
        nxt, skipped, source = self._follow(replaced[-1], modules)
        here = (_join(path, bias.target),)
        act = self._act(nxt, source, modules, here, path)
        if act is None:
            return
        paths = here + ((_join(path, nxt.target),) if nxt.op == "call_module" else ())
        if self._left(paths, "BiasAct", skipped + [nxt], modules):
            return
        self._replace_chain(BiasActCall(shape, act.name, act.alpha), (x, bias), replaced + skipped + [nxt], paths,
                            "BiasAct", graph, fused, erased)

    def _swap_functional(self, node: fx.Node, modules: dict, path: str, graph: fx.Graph, fused: dict,
                         erased: set) -> None:
        """``act(F.conv*d / F.linear / F.*_norm(x, ...))`` (see functional_pattern.py) -> one medkern call."""
        call = match_functional(node)
        if call is None:
            return
        attributes = [n for n in node.all_input_nodes if n.op == "get_attr"]
        here = tuple(_join(path, n.target) for n in attributes) or (f"{node.name} (functional)",)
        if len(node.users) > 1 and any(node_act(u, modules) is not None for u in node.users):
            self.report.leave(Left(here, "its output is also used elsewhere, so it must be kept"))
            return
        nxt, skipped, source = self._follow(node, modules)
        act = self._act(nxt, source, modules, here, path)
        if act is None:
            return
        paths = here + ((_join(path, nxt.target),) if nxt.op == "call_module" else ())
        if isinstance(call, Unsupported):
            self.report.leave(Left(paths, call.reason))
            return
        if self._left(paths, call.block, skipped + [nxt], modules):
            return
        block = fused_call(call, act.name, act.alpha, self._may_keep_output(nxt, modules))
        self._replace_chain(block, (call.x, *call.tensors), [node] + skipped + [nxt], paths, call.block, graph, fused,
                            erased)

    def _swap_functional_pool(self, node: fx.Node) -> bool:
        """``F.max_pool1d/2d/3d(...)`` (or ``torch.max_poolNd``) -> medkern.nn's function of the same
        signature, in place; returns whether the node now calls it."""
        twin = MAX_POOL_TWINS.get(node.target) if callable(node.target) else None
        if twin is None:
            return False
        here = (f"{node.name} (functional)",)
        if self._left(here, "MaxPool" + twin.__name__.removeprefix("max_pool"), [], {}):
            return False
        node.target = twin
        self.report.swapped.append(Swapped(here, f"medkern.nn.{twin.__name__}"))
        return True

    def _may_keep_output(self, last: fx.Node, modules: dict) -> bool:
        """memory_saving for a block ending at ``last``: it may keep its output for backward only if
        every consumer is a call that cannot overwrite it (not an in-place op, not a caller that
        gets it back: it is kept only inside the graph)."""
        return self.memory_saving and all(consumes_without_aliasing(u, modules) for u in last.users)

    def _left(self, paths: tuple, block_name: str, calls: list, modules: dict) -> bool:
        """Reports and returns True if the selection or a hook on one of ``calls`` leaves the pattern."""
        reason = self.selector.why_not(paths, block_name)
        if reason is None and any(has_hooks(modules[n.target]) for n in calls if n.op == "call_module"):
            reason = "a module has hooks, which a fused call would skip"
        if reason is not None:
            self.report.leave(Left(paths, reason))
        return reason is not None

    def _replace_chain(self, block: nn.Module, inputs: tuple, chain: list, paths: tuple, block_name: str,
                       graph: fx.Graph, fused: dict, erased: set) -> None:
        """Makes one call of ``block`` on ``inputs`` stand for ``chain`` (its nodes in graph order)."""
        name = f"_medkern_fused_{len(fused)}"
        fused[name] = block
        with graph.inserting_after(chain[-1]):
            replacement = graph.call_module(name, inputs)
        chain[-1].replace_all_uses_with(replacement)
        for old in reversed(chain):
            graph.erase_node(old)
        erased.update(chain)
        self.report.swapped.append(Swapped(paths, block_name))

    def _follow(self, node: fx.Node, modules: dict) -> tuple[Optional[fx.Node], list[fx.Node], fx.Node]:
        """(the one call consuming node's output, the no-op calls skipped on the way, the node whose
        output that call takes: node itself or the last no-op)."""
        skipped = []
        while len(node.users) == 1:
            user = next(iter(node.users))
            if _plain_call(user, node) and is_no_op(modules[user.target]):
                skipped.append(user)
                node = user
                continue
            return user, skipped, node
        return None, skipped, node

    def _act(self, node: fx.Node, source: fx.Node, modules: dict, paths_so_far: tuple, path: str):
        """node's activation if it applies one to ``source`` exactly (else None, reporting why)."""
        if node is None:
            return None
        act = node_act(node, modules)
        if act is None:
            return None
        if (node.op == "call_module" and not _plain_call(node, source)) or not _takes_first(node, source):
            return None
        if isinstance(act, Unsupported):
            label = _join(path, node.target) if node.op == "call_module" else f"{node.name} (functional)"
            self.report.leave(Left(paths_so_far + (label,), act.reason))
            return None
        return act

    def _pattern(self, start: fx.Node, modules: dict, path: str):
        """(nodes to replace, the calls they make, a builder of the fused block) or None."""
        first = modules[start.target]
        if len(start.args) != 1 or start.kwargs:
            return None
        kind = producer_kind(first) or "norm"
        nodes, calls = [start], [start]
        here = (_join(path, start.target),)
        if len(start.users) > 1 and any(self._is_norm_or_act(u, modules) for u in start.users):
            self.report.leave(Left(here, "its output is also used elsewhere, so it must be kept"))
            return None
        nxt, skipped, source = self._follow(start, modules)
        norm = None
        if kind in ("conv", "conv_transpose") and nxt is not None and _plain_call(nxt, source) \
                and is_norm(modules[nxt.target]):
            norm = modules[nxt.target]
            nodes += skipped + [nxt]
            calls.append(nxt)
            here += (_join(path, nxt.target),)
            if len(nxt.users) > 1 and any(self._is_norm_or_act(u, modules) for u in nxt.users):
                self.report.leave(Left(here, "the norm's output is also used elsewhere"))
            nxt, skipped, source = self._follow(nxt, modules)
        act = self._act(nxt, source, modules, here, path)
        if act is not None:
            nodes += skipped + [nxt]
            calls.append(nxt)
        name, alpha = (act.name, act.alpha) if act else ("linear", None)
        if norm is not None:
            conv = first
            cls = medkern_nn.ConvNormAct if kind == "conv" else medkern_nn.ConvTransposeNormAct
            return nodes, calls, cls, lambda saving: cls(conv, norm, name, alpha, saving)
        if act is None or kind == "conv_transpose":
            return None
        if kind == "conv":
            return nodes, calls, medkern_nn.ConvAct, lambda saving: medkern_nn.ConvAct(first, name, alpha)
        if kind == "linear":
            return nodes, calls, medkern_nn.LinearAct, lambda saving: medkern_nn.LinearAct(first, name, alpha)
        return nodes, calls, medkern_nn.NormAct, lambda saving: medkern_nn.NormAct(first, name, alpha, saving)

    @staticmethod
    def _is_norm_or_act(node: fx.Node, modules: dict) -> bool:
        return (node.op == "call_module" and is_norm(modules[node.target])) or node_act(node, modules) is not None


def swap(model: nn.Module, inplace: bool = False, include: Union[str, Iterable[str], None] = None,
         exclude: Union[str, Iterable[str], None] = None, memory_saving: bool = True,
         channels_last: bool = False) -> nn.Module:
    """``model`` with every supported pattern run by medkern's fused ops (see the module docstring).

    Args:
        model: any torch.nn.Module (MONAI, torchvision, your own).
        inplace: rewrite ``model`` itself (keeping its parameter objects, e.g. for an optimizer
            already built) instead of a deep copy.
        include, exclude: restrict the swap to (or exclude from it) patterns touching these module
            paths (a path covers its submodules; fnmatch patterns such as ``"decoder.*"`` work) or
            block names (``"ConvNormAct"``, ``"NormAct"``, ``"LinearAct"``, ``"LSTM"``, ...).
        memory_saving: as ``medkern.nn.NormAct``'s; False keeps second-order gradients (R1, WGAN-GP).
        channels_last: also lay out the whole model's 4-D and 5-D parameters and buffers
            channels-last (channels_last_3d for 3-D convolutions), as ``ipex.optimize`` does. A
            convolution follows its weight's layout, so the model then runs channels-last even on
            a default-layout input, and its convolutional outputs come out channels-last (same
            values; ``.view`` on them, or on those parameters, may need ``.reshape``; dropout
            draws its mask in memory order, so the same seed drops other elements). ``medkern
            bench --filter swap_channels_last`` measures what it gives a model. Values and keys of
            the state_dict are unchanged.

    Returns the swapped model; ``medkern.swap_report(result)`` says what was swapped and what was
    left and why. Its ``state_dict`` has exactly the original's keys, shapes and values.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"medkern.swap: model must be a torch.nn.Module, got {type(model).__name__}")
    if not all(isinstance(flag, bool) for flag in (inplace, memory_saving, channels_last)):
        raise TypeError("medkern.swap: inplace, memory_saving and channels_last must be bools, got "
                        f"{type(inplace).__name__}, {type(memory_saving).__name__}, {type(channels_last).__name__}")
    if REPORT_ATTRIBUTE in model.__dict__ or any(is_swapped(m) for m in model.modules()):
        raise ValueError("medkern.swap: model was swapped already; swap the original model instead")
    selector = _Selector(include, exclude)
    target = model if inplace else copy.deepcopy(model)
    report = SwapReport()
    _Swapper(report, selector, memory_saving).visit(target, "")
    if channels_last:
        model_to_channels_last(target)
        report.channels_last = True
    object.__setattr__(target, REPORT_ATTRIBUTE, report)
    return target


def swap_report(model: nn.Module) -> SwapReport:
    """What ``medkern.swap`` did to ``model`` (the model it returned)."""
    report = model.__dict__.get(REPORT_ATTRIBUTE) if isinstance(model, nn.Module) else None
    if report is None:
        raise ValueError("medkern.swap_report: model was not returned by medkern.swap")
    return report

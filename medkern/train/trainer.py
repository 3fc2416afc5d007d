"""``Trainer``: fit, evaluate and predict for classification, segmentation and sequence models.

What it does that a hand-written loop usually gets subtly wrong:
- **exact resume**: a checkpoint holds the model, optimizer, grad scaler, LR scheduler, early
  stopping, history, every random generator, and the position in the epoch (see ``loop.py``);
- **gradient accumulation** divides each micro-batch's loss by the size of its group, the last
  group of an epoch included, so the accumulated gradient is the mean over the group's batches
  (for a loader without ``len`` the last group's size is not known ahead: it is divided by the full
  group size);
- **mixed precision**: ``precision="fp16"`` autocasts and scales the loss (skipping steps whose
  gradients overflowed), ``"bf16"`` autocasts without a scaler; gradient clipping unscales first;
- **epoch metrics are exact**: metric objects accumulate over the epoch (a plain function is fed
  the concatenated epoch), never an average of batch values.

Batches: a tensor or a 1-tuple (inputs only), a tuple/list ``(*inputs, target)``, or a dict with ``"input"``,
``"target"`` and extra keyword arguments for the model; or pass ``unpack(batch) -> (args, kwargs,
target)``. A model that returns a list (deep supervision) is given to ``loss_fn`` as it is; metrics
and ``predict`` use its first element.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from . import distributed
from .batches import batch_size, default_unpack, primary_output, to_device
from .early_stopping import EarlyStopping
from .._args import check_positive_int
from ..layout import model_to_channels_last
from .loop import EpochLoop, in_eval_mode

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
SCHEDULER_INTERVALS = ("epoch", "step")
_OP = "medkern.train.Trainer"


def _fail(argument: str, expected: str, got) -> ValueError:
    return ValueError(f"{_OP}: {argument} must be {expected}, got {got!r}")


def check_precision(owner: str, precision: str, allowed=tuple(PRECISIONS)) -> torch.dtype | None:
    if precision not in allowed:
        raise ValueError(f"{owner}: precision must be one of {allowed}, got {precision!r}")
    return PRECISIONS[precision]


def build_optimizer(owner: str, optimizer, model: nn.Module, swapped: bool) -> torch.optim.Optimizer:
    """``optimizer`` as given (it must hold only the model's parameters) or built by a factory."""
    if isinstance(optimizer, torch.optim.Optimizer):
        owned = {id(p) for p in model.parameters()}
        stray = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in owned]
        if stray:
            hint = " (with swap=True, pass the optimizer as a factory: params -> Optimizer)" if swapped else ""
            raise ValueError(f"{owner}: optimizer holds {len(stray)} parameter(s) that are not the model's{hint}")
        return optimizer
    if callable(optimizer):
        return optimizer(model.parameters())
    raise TypeError(f"{owner}: optimizer must be a torch.optim.Optimizer or a function params -> Optimizer, "
                    f"got {type(optimizer).__name__}")


def prepare_model(owner: str, model: nn.Module, device: torch.device, channels_last: bool, swap: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{owner}: the model must be a torch.nn.Module, got {type(model).__name__}")
    if swap:
        from ..swapping import swap as swap_model
        model = swap_model(model, inplace=True)
    model = model.to(device)
    return model_to_channels_last(model) if channels_last else model


def default_device(model) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu")) if isinstance(model, nn.Module) \
        else torch.device("cpu")


class _ConcatenatingMetric:
    """A plain metric function fed the whole epoch at once, so its value is exact."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.reset()

    def reset(self):
        self.preds, self.targets = [], []

    def update(self, preds, target):
        self.preds.append(preds.detach().cpu())
        self.targets.append(target.detach().cpu())

    def compute(self):
        return self.fn(torch.cat(self.preds), torch.cat(self.targets))


def _as_metric(name: str, metric):
    if all(callable(getattr(metric, m, None)) for m in ("update", "compute", "reset")):
        return metric
    if callable(metric):
        return _ConcatenatingMetric(metric)
    raise TypeError(f"{_OP}: metric {name!r} must have update/compute/reset or be a function "
                    f"(preds, target) -> value, got {type(metric).__name__}")


def _flatten(name: str, value) -> dict:
    """Scalars stay; per-class tensors become name_0, name_1...; dicts become name_key."""
    if isinstance(value, dict):
        return {k2: v2 for k, v in value.items() for k2, v2 in _flatten(f"{name}_{k}", v).items()}
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return {name: value.item()}
        return {f"{name}_{i}": v for i, v in enumerate(value.flatten().tolist())}
    return {name: float(value)}


class Trainer(EpochLoop):
    """Trains ``model`` with ``optimizer`` (an Optimizer, or ``params -> Optimizer``) on ``loss_fn(output, target)``.

    ``scheduler``: an LR scheduler or ``optimizer -> scheduler``, stepped every epoch or every
    optimizer step (``scheduler_interval``); ReduceLROnPlateau is given the early-stopping monitor
    (or ``val_loss``). ``swap=True`` runs the model through :func:`medkern.swap` first (the state
    dict is unchanged, so checkpoints stay loadable into the original model); pass the optimizer
    as a factory then, or one built on the same parameters. ``checkpoint_dir`` gets ``last.pt``
    after every epoch (and every ``checkpoint_every`` optimizer steps) and ``best.pt`` when the
    early-stopping monitor improves. ``log_dir`` gets ``metrics.csv``/``metrics.json``.
    """

    owner = _OP

    def __init__(self, model: nn.Module, optimizer, loss_fn: Callable, *, metrics: dict | None = None,
                 scheduler=None, scheduler_interval: str = "epoch", device=None, precision: str = "fp32",
                 accumulate_grad_batches: int = 1, clip_grad_norm: float | None = None,
                 channels_last: bool = False, compile: bool = False, swap: bool = False,
                 early_stopping: EarlyStopping | None = None, unpack: Callable | None = None, **loop_options):
        self.amp_dtype = check_precision(_OP, precision)
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise _fail("scheduler_interval", f"one of {SCHEDULER_INTERVALS}", scheduler_interval)
        check_positive_int(_OP, "accumulate_grad_batches", accumulate_grad_batches)
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise _fail("clip_grad_norm", "a number > 0 or None", clip_grad_norm)
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"{_OP}: early_stopping must be a medkern.train.EarlyStopping")
        super().__init__(**loop_options)  # seeds before the optimizer and scheduler are built

        self.device = torch.device(device) if device is not None else default_device(model)
        self.channels_last = channels_last
        self.model = prepare_model(_OP, model, self.device, channels_last, swap)
        self.optimizer = build_optimizer(_OP, optimizer, self.model, swap)
        self.scheduler = scheduler(self.optimizer) if callable(scheduler) and not hasattr(scheduler, "step") else scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = loss_fn
        self.metrics = {name: _as_metric(name, m) for name, m in (metrics or {}).items()}
        self.precision = precision
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.accumulate = accumulate_grad_batches
        self.clip_grad_norm = clip_grad_norm
        self.parallel_model = distributed.wrap(self.model, self.device)  # DDP under torchrun
        self.forward_model = torch.compile(self.parallel_model) if compile else self.parallel_model
        # evaluation and prediction skip DDP, whose forward is a collective (it broadcasts buffers)
        self.eval_model = self.forward_model if self.parallel_model is self.model else (
            torch.compile(self.model) if compile else self.model)
        self.early_stopping = early_stopping
        self.unpack = unpack or default_unpack

    # --- one batch --------------------------------------------------------------------------

    def _forward(self, batch, training: bool = False):
        args, kwargs, target = self.unpack(batch)
        args, kwargs, target = (to_device(v, self.device, self.channels_last) for v in (args, kwargs, target))
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            output = (self.forward_model if training else self.eval_model)(*args, **kwargs)
            loss = self.loss_fn(output, target) if target is not None else None
        return output, loss, target, batch_size(target, args)

    def _optimizer_step(self) -> None:
        if self.clip_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    def _train_batch(self, batch, batch_index: int, total: int | None) -> bool:
        if not self.model.training:  # evaluate() restores the mode; this is for a model given in eval mode
            self.model.train()
        if total is None and self.parallel_model is not self.model:
            raise ValueError(f"{_OP}: under DistributedDataParallel the training loader must have a length "
                             "(the last accumulation group of an epoch is found from it)")
        group_start = batch_index - batch_index % self.accumulate
        group = self.accumulate if total is None else min(self.accumulate, total - group_start)
        last_of_group = batch_index + 1 - group_start == group
        # DDP: gradients are averaged across processes once per group, not after every micro-batch
        no_sync = getattr(self.parallel_model, "no_sync", None)
        with no_sync() if no_sync is not None and not last_of_group else contextlib.nullcontext():
            output, loss, target, size = self._forward(batch, training=True)
            if loss is None:
                raise ValueError(f"{_OP}: a training batch has no target")
            scaled = loss / group
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self._add("loss", loss.item(), size)
        if not last_of_group:
            return False
        self._optimizer_step()
        return True

    def _finish_epoch(self, total: int | None) -> None:
        if total is None and self.batches_done % self.accumulate:  # no len: the last group was cut short
            self._optimizer_step()

    # --- the end of an epoch ----------------------------------------------------------------

    def _epoch_row(self, val_loader) -> dict:
        row = {f"val_{k}": v for k, v in self.evaluate(val_loader).items()} if val_loader is not None else {}
        return {**row, "lr": self.optimizer.param_groups[0]["lr"]}

    def _after_epoch(self, row: dict) -> tuple[bool, bool]:
        monitor = self.early_stopping.monitor if self.early_stopping is not None else "val_loss"
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if monitor not in row:
                    raise ValueError(f"{_OP}: ReduceLROnPlateau needs {monitor!r} in the epoch's metrics "
                                     f"(give fit a val_loader); have {sorted(row)}")
                self.scheduler.step(row[monitor])
            else:
                self.scheduler.step()
        if self.early_stopping is None:
            return False, False
        return self.early_stopping.update(row), self.early_stopping.should_stop

    MODEL_OPTIMIZERS = (("model", "optimizer"),)

    def _stateful(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scaler": self.scaler,
                "scheduler": self.scheduler, "early_stopping": self.early_stopping}

    def _finished(self) -> bool:
        return self.early_stopping is not None and self.early_stopping.should_stop

    def _settings(self) -> dict:
        return {"precision": self.precision, "accumulate_grad_batches": self.accumulate}

    # --- evaluation and prediction ----------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict:
        """Mean loss and every metric over ``loader``, in eval mode. Under DDP every process runs
        the whole loader (so all see the same metrics and stop together): not a sharded one."""
        if distributed.is_distributed() and distributed.uses_distributed_sampler(loader):
            raise ValueError(f"{_OP}.evaluate: every process evaluates the whole validation set; give it a "
                             "loader without a DistributedSampler")
        for metric in self.metrics.values():
            metric.reset()
        loss_sum, count = 0.0, 0
        with in_eval_mode(self.model):
            for batch in loader:
                output, loss, target, size = self._forward(batch)
                if loss is None:
                    raise ValueError(f"{_OP}.evaluate: a batch has no target")
                loss_sum += loss.item() * size
                count += size
                for metric in self.metrics.values():
                    metric.update(primary_output(output).float(), target)
        result = {"loss": loss_sum / count if count else math.nan}
        for name, metric in self.metrics.items():
            result.update(_flatten(name, metric.compute()))
        return result

    @torch.no_grad()
    def predict(self, loader: Iterable) -> torch.Tensor:
        """The model's (first) output for every batch, concatenated, on the CPU."""
        with in_eval_mode(self.model):
            outputs = [primary_output(self._forward(batch)[0]).float().cpu() for batch in loader]
        return torch.cat(outputs) if outputs else torch.empty(0)

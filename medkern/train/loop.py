"""The epoch loop that Trainer and GANTrainer share: where the run is, exact resume, checkpoints, logs.

A subclass says how to train on one batch (``_train_batch``), what to add to an epoch's row
(``_epoch_row``), which objects carry state (``_stateful``) and which settings a checkpoint must
have been made with (``_settings``). Everything about resuming lives here:

A checkpoint records the epochs finished, the optimizer steps, the batches seen in the current
epoch, every random generator as the epoch began and as it is now, and the history. Resuming
puts the epoch-start generators back so the loader yields the same order, skips the batches
already trained on (they are loaded, not used), then puts back the generators as they were at
the checkpoint, so the run continues bit for bit as the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from .._args import check_positive_int
from ..status_line import StatusLine
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .logger import MetricsLogger
from .rng import capture_rng, deterministic_mode, loader_generators, restore_rng, seed_everything


def check_optional_count(owner: str, name: str, value) -> None:
    if value is not None:
        check_positive_int(owner, name, value)


@contextlib.contextmanager
def in_eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode while the block runs, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class EpochLoop:
    owner = "medkern.train"  # the class name errors start with

    def __init__(self, *, checkpoint_dir=None, checkpoint_every: int | None = None, log_dir=None,
                 tensorboard: bool = False, progress: bool = True, seed: int | None = None,
                 deterministic: bool = False):
        check_optional_count(self.owner, "checkpoint_every", checkpoint_every)
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError(f"{self.owner}: checkpoint_every needs checkpoint_dir")
        if seed is not None:
            seed_everything(seed)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        lead = distributed.rank() == 0  # the process that logs and writes checkpoints
        self.logger = MetricsLogger(log_dir, tensorboard) if log_dir is not None and lead else None
        self.status = StatusLine(enabled=progress and lead)
        self.deterministic = deterministic

        self.epoch = 0  # epochs finished
        self.global_step = 0  # optimizer steps (a GAN counts discriminator steps)
        self.batches_done = 0  # batches trained on in the current epoch
        self.history: list[dict] = []
        self._sums: dict[str, list[float]] = {}  # name -> [sum of value x batch size, samples], this epoch
        self._epoch_rng = None  # every generator as the current epoch began
        self._resume_rng = None  # generators to put back once a resumed epoch has replayed its order
        self._generators: list[torch.Generator] = []  # those the training loader owns

    # --- what a subclass provides -----------------------------------------------------------

    def _train_batch(self, batch, batch_index: int, total: int | None) -> bool:
        """Train on one batch (adding to the running means with ``_add``); True if an optimizer step
        was taken, so a checkpoint may be written here."""
        raise NotImplementedError

    def _finish_epoch(self, total: int | None) -> None:
        """Anything left at the end of the epoch's batches (a cut-short accumulation group)."""

    def _epoch_row(self, val_loader) -> dict:
        """Validation results and the like, added to the epoch's row."""
        return {}

    def _after_epoch(self, row: dict) -> tuple[bool, bool]:
        """(improved, stop) once the row is complete: scheduler and early stopping go here."""
        return False, False

    def _finished(self) -> bool:
        """True if the run has ended on its own (early stopping), so fit has nothing left to do."""
        return False

    def _stateful(self) -> dict:
        """name -> object with state_dict/load_state_dict (or None where absent)."""
        raise NotImplementedError

    # (model, its optimizer) among the _stateful names: a model sharded by FSDP is saved with its
    # optimizer as full state dicts (distributed.full_state; the Trainer's, as GANTrainer runs in
    # one process)
    MODEL_OPTIMIZERS: tuple[tuple[str, str], ...] = ()

    def _sharded(self, parts: dict) -> list[tuple[str, str]]:
        return [(m, o) for m, o in self.MODEL_OPTIMIZERS if parts[m] is not None and distributed.is_sharded(parts[m])]

    def _settings(self) -> dict:
        """Settings a resumed run must share with the checkpoint (compared on load)."""
        return {}

    # --- the loop ---------------------------------------------------------------------------

    def _add(self, name: str, value: float, size: int) -> None:
        total = self._sums.setdefault(name, [0.0, 0])
        total[0] += value * size
        total[1] += size

    def _means(self, over_processes: bool = False) -> dict:
        sums = distributed.sum_over_processes(self._sums) if over_processes else self._sums
        return {f"train_{name}": s / n for name, (s, n) in sums.items() if n}

    def _epoch_batches(self, loader):
        sampler = getattr(loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):  # DistributedSampler shuffles by epoch
            sampler.set_epoch(self.epoch)
        resume_rng, self._resume_rng = self._resume_rng, None
        if resume_rng is not None and self.batches_done:
            restore_rng(self._epoch_rng, self._generators)
        else:
            if resume_rng is not None:
                restore_rng(resume_rng, self._generators)
            self._epoch_rng = capture_rng(self._generators)
        iterator = iter(loader)
        for _ in range(self.batches_done):
            next(iterator)
        if resume_rng is not None and self.batches_done:
            restore_rng(resume_rng, self._generators)
        return iterator

    def _train_epoch(self, loader, epochs: int, max_steps: int | None) -> bool:
        """Train until the epoch ends (True) or ``max_steps`` optimizer steps are reached (False)."""
        try:
            total = len(loader)
        except TypeError:  # an iterable, or a DataLoader over an IterableDataset
            total = None
        started, first = time.perf_counter(), self.batches_done
        for batch in self._epoch_batches(loader):
            stepped = self._train_batch(batch, self.batches_done, total)
            self.batches_done += 1
            if stepped:
                if self.checkpoint_every and self.global_step % self.checkpoint_every == 0:
                    self.save_checkpoint(self.checkpoint_dir / "last.pt")
                if max_steps is not None and self.global_step >= max_steps:
                    return False
            if not self.status.in_place:  # batch counters are shown only on a terminal: skip the work
                continue
            rate = (self.batches_done - first) / max(time.perf_counter() - started, 1e-9)
            means = " ".join(f"{k[6:]} {v:.4g}" for k, v in self._means().items())
            self.status.show(f"epoch {self.epoch + 1}/{epochs} batch {self.batches_done}/{total or '?'} {means} "
                             f"{rate:.1f} it/s", transient=True)
        self._finish_epoch(total)
        return True

    def fit(self, train_loader: Iterable, val_loader: Iterable | None = None, epochs: int = 1,
            resume=None, max_steps: int | None = None) -> list[dict]:
        """Train for ``epochs`` epochs in all (a resumed run counts the epochs it already did); stop
        after ``max_steps`` optimizer steps in all. Returns the per-epoch history."""
        check_positive_int(self.owner, "epochs", epochs)
        check_optional_count(self.owner, "max_steps", max_steps)
        if resume is not None:
            self.load_checkpoint(resume)
        self._generators = loader_generators(train_loader)
        if self.batches_done and self._resume_rng is None:
            # fit again after max_steps stopped mid-epoch: continue that epoch as a resume would
            self._resume_rng = capture_rng(self._generators)
        with deterministic_mode(self.deterministic):
            while self.epoch < epochs and not self._finished():
                if not self._train_epoch(train_loader, epochs, max_steps):
                    if self.checkpoint_dir is not None:  # stopped mid-epoch: keep the place
                        self.save_checkpoint(self.checkpoint_dir / "last.pt")
                    break
                if self._end_epoch(val_loader):
                    break
        self.status.clear()
        return self.history

    def _end_epoch(self, val_loader) -> bool:
        """Complete the epoch's row, checkpoint and log; True if training should stop."""
        row = {"epoch": self.epoch + 1, "step": self.global_step, **self._means(over_processes=True),
               **self._epoch_row(val_loader)}
        # every process acts on rank 0's row, so schedulers, best checkpoints (a collective) and
        # early stopping cannot diverge where validation differs by rounding between devices
        row = distributed.broadcast(row)
        self.history.append(row)
        improved, stop = self._after_epoch(row)
        self.epoch += 1
        self.batches_done = 0
        self._sums = {}
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir / "last.pt")
            if improved:
                self.save_checkpoint(self.checkpoint_dir / "best.pt")
        if self.logger is not None:
            self.logger.write(self.history)
        self.status.show(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        return stop

    # --- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        parts = self._stateful()
        sharded = self._sharded(parts)
        gathered = {name for pair in sharded for name in pair}
        state = {name: part.state_dict() if part is not None else None for name, part in parts.items()
                 if name not in gathered}
        for model, optimizer in sharded:
            state[model], state[optimizer] = distributed.full_state(parts[model], parts[optimizer])
        return {
            **state,
            "sharded": [model for model, _ in sharded],
            "settings": self._settings(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "sums": {name: list(total) for name, total in self._sums.items()},
            "history": self.history,
            # one entry per process, in rank order: each resumes with its own generators
            "epoch_rng": distributed.gather(self._epoch_rng),
            "rng": distributed.gather(capture_rng(self._generators)),
        }

    def save_checkpoint(self, path) -> Path:
        """Every process must call this (the random states are gathered); rank 0 writes, and all
        wait for the file, so any process may read it next."""
        state = self.state_dict()
        if distributed.rank() == 0:
            save_checkpoint(state, path)
        distributed.barrier()
        return Path(path)

    def load_checkpoint(self, path) -> None:
        """Restore a run from ``path`` (or a state dict); the random state is put back when
        training continues, so :meth:`fit` resumes exactly."""
        state = path if isinstance(path, dict) else load_checkpoint(path)
        for name, value in self._settings().items():
            if state["settings"].get(name) != value:
                raise ValueError(f"{self.owner}: the checkpoint was made with {name}={state['settings'].get(name)!r}, "
                                 f"this run has {name}={value!r}")
        if len(state["rng"]) != distributed.world_size():
            raise ValueError(f"{self.owner}: the checkpoint was made by {len(state['rng'])} process(es), this run has "
                             f"{distributed.world_size()}; an exact resume needs the same number")
        parts = self._stateful()
        for name, part in parts.items():
            if (state[name] is None) != (part is None):
                raise ValueError(f"{self.owner}: the checkpoint {'has no' if state[name] is None else 'has'} {name} "
                                 f"state and this run {'has no' if part is None else 'has a'} {name}")
        sharded = self._sharded(parts)
        if state.get("sharded", []) != [model for model, _ in sharded]:
            raise ValueError(f"{self.owner}: the checkpoint was made with {state.get('sharded', []) or 'no model'} "
                             f"sharded by FSDP, this run shards {[m for m, _ in sharded] or 'none'}; resume with the "
                             "same sharding")
        gathered = {name for pair in sharded for name in pair}
        for name, part in parts.items():
            if part is not None and name not in gathered:
                part.load_state_dict(state[name])
        for model, optimizer in sharded:
            distributed.load_full_state(parts[model], parts[optimizer], state[model], state[optimizer])
        self.epoch, self.global_step, self.batches_done = state["epoch"], state["global_step"], state["batches_done"]
        self._sums = {name: list(total) for name, total in state["sums"].items()}
        self.history = list(state["history"])
        self._epoch_rng, self._resume_rng = state["epoch_rng"][distributed.rank()], state["rng"][distributed.rank()]

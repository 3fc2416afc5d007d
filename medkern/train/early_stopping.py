"""Stop training when a monitored validation value has not improved for ``patience`` epochs."""

from __future__ import annotations

import math

from .._args import check_positive_int


class EarlyStopping:
    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"medkern.train.EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        check_positive_int("medkern.train.EarlyStopping", "patience", patience)
        if not min_delta >= 0:
            raise ValueError(f"medkern.train.EarlyStopping: min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, float(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, metrics: dict) -> bool:
        """Record this epoch's metrics; True if the monitored value improved (a new best)."""
        if self.monitor not in metrics:
            raise ValueError(f"medkern.train.EarlyStopping: monitor {self.monitor!r} is not among the "
                             f"epoch's metrics {sorted(metrics)}")
        value = float(metrics[self.monitor])
        if self.improved(value):
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])

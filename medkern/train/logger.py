"""Per-epoch metrics written to ``metrics.csv`` and ``metrics.json`` (and TensorBoard if asked).

Both files are rewritten whole from the run's history at every epoch: the history is part of a
checkpoint, so after a resume the files hold exactly the epochs of the resumed run, and a column
that appears late (a validation metric) still gets a header.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path


def _json_value(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLogger:
    def __init__(self, log_dir: str | os.PathLike, tensorboard: bool = False):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("medkern.train: tensorboard=True needs the tensorboard package "
                                  "(pip install tensorboard)") from error
            self._writer = SummaryWriter(str(self.log_dir / "tensorboard"))

    def write(self, history: list[dict]) -> None:
        columns = list(dict.fromkeys(key for row in history for key in row))
        with open(self.log_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        with open(self.log_dir / "metrics.json", "w") as f:
            json.dump([{k: _json_value(v) for k, v in row.items()} for row in history], f, indent=1)
        if self._writer is not None and history:
            row = history[-1]
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, row["epoch"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

"""One progress line on stderr while the suite runs (rewritten in place on a terminal)."""

from __future__ import annotations

import sys
from typing import TextIO

from ..status_line import StatusLine


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True):
        self._line = StatusLine(stream, enabled)

    def show(self, case_index: int, case_count: int, case_name: str, step: str, transient: bool = False) -> None:
        """``transient`` steps (round counters) are shown only where the line is rewritten in place."""
        self._line.show(f"[{case_index + 1}/{case_count}] {case_name}: {step}", transient)

    def done(self) -> None:
        self._line.clear()

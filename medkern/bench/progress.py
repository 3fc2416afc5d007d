"""One progress line on stderr while the suite runs (rewritten in place on a terminal)."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self.in_place = enabled and stream.isatty()
        self._width = 0

    def show(self, case_index: int, case_count: int, case_name: str, step: str, transient: bool = False) -> None:
        """``transient`` steps (round counters) are shown only where the line is rewritten in place."""
        if not self.enabled or (transient and not self.in_place):
            return
        line = f"[{case_index + 1}/{case_count}] {case_name}: {step}"
        if self.in_place:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.in_place and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0

"""One status line on a stream: rewritten in place on a terminal, printed line by line elsewhere."""

from __future__ import annotations

import sys
from typing import TextIO


class StatusLine:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.in_place = enabled and self.stream.isatty()
        self._width = 0

    def show(self, line: str, transient: bool = False) -> None:
        """``transient`` lines (counters) are shown only where the line is rewritten in place, so a
        log file gets the lines that matter and not one per batch."""
        if not self.enabled or (transient and not self.in_place):
            return
        if self.in_place:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.in_place and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0

"""What medkern.swap did to a model: the patterns it fused and what it left, with reasons."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Swapped:
    """A pattern now run by medkern: the module paths it spans, in call order, and the block used."""

    modules: tuple[str, ...]
    block: str

    def __str__(self) -> str:
        return f"{self.block:<22} {' -> '.join(self.modules)}"


@dataclass(frozen=True)
class Left:
    """Something swap did not fuse, and why: a pattern it could not fuse exactly, or an untraced module."""

    modules: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return f"{' -> '.join(self.modules) or '<model>'}: {self.reason}"


@dataclass
class SwapReport:
    swapped: list[Swapped] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)
    channels_last: bool = False  # the model's 4-D and 5-D weights were laid out channels-last

    def leave(self, entry: Left) -> None:
        """Records what was left, once: the same module left for the same reason is one entry
        (an activation seen from its conv's pattern and again from its norm's)."""
        if not any(e.modules[-1:] == entry.modules[-1:] and e.reason == entry.reason for e in self.left):
            self.left.append(entry)

    def counts(self) -> dict[str, int]:
        """How many patterns of each block were swapped."""
        return dict(Counter(entry.block for entry in self.swapped))

    def __str__(self) -> str:
        layout = ", weights laid out channels-last" if self.channels_last else ""
        lines = [f"medkern.swap: {len(self.swapped)} patterns swapped, {len(self.left)} left{layout}"]
        lines += [f"  swapped  {entry}" for entry in self.swapped]
        lines += [f"  left     {entry}" for entry in self.left]
        return "\n".join(lines)

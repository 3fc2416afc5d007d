"""results.png: speed-up vs eager per case and contender, forward and forward+backward side by side.

Drawn on a bare matplotlib Figure with the Agg canvas, so no pyplot state or display backend
is touched; matplotlib is optional (the ``bench`` extra) and its absence is reported, not raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .case import EAGER
from .suite import FWD, FWD_BWD, MODE_LABELS

_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3")
_PANEL_TITLES = {FWD: "forward (no grad)", FWD_BWD: "forward + backward"}


def write_chart(document: dict, path: Path) -> Optional[str]:
    """Writes the PNG; returns None, or why no chart was written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed (pip install 'medkern[bench]')"
    cases = [case for case in document["cases"] if case.get("contenders")]
    if not cases:
        return "no case produced timings"
    contenders = list(dict.fromkeys(name for case in cases for name in case["contenders"] if name != EAGER))
    if not contenders:
        return "no contender other than eager ran"

    band = 0.8 / len(contenders)  # height of one bar within a case's slot of height 0.8
    height = 2.0 + 0.35 * len(cases) * len(contenders) + 0.3 * len(cases)  # inches
    figure = Figure(figsize=(13, height), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, mode in zip(axes, (FWD, FWD_BWD)):
        _draw_panel(ax, mode, cases, contenders, band)
    axes[0].set_yticks(range(len(cases)), [case["name"] for case in cases])
    axes[0].invert_yaxis()  # first case on top, as in the tables
    legend = {}  # label -> handle, once each across both panels
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))
    figure.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), frameon=False)
    figure.suptitle(_title(document), fontsize=11)
    figure.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.4 / height))  # room for legend and title
    figure.savefig(path)
    return None


def _draw_panel(ax, mode: str, cases: list[dict], contenders: list[str], band: float) -> None:
    top = 1.0
    for slot, case in enumerate(cases):
        for k, name in enumerate(contenders):
            y = slot - 0.4 + band * (k + 0.5)
            speedup = case["contenders"].get(name, {}).get(mode, {}).get("speedup_vs_eager")
            color = _COLORS[k % len(_COLORS)]
            ax.barh(y, speedup or 0, height=band * 0.9, color=color, label=name)
            text = "failed" if speedup is None else f"{speedup:.2f}x"
            ax.annotate(text, (speedup or 0, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
            top = max(top, speedup or 0)
        for target in _speedup_targets(case, mode):
            minimum = target["minimum"]
            ax.plot([minimum] * 2, [slot - 0.45, slot + 0.45], color="black", linestyle=":", linewidth=1.5,
                    label=f"target: {target['target']}")
            top = max(top, minimum)
    ax.axvline(1.0, color="gray", linewidth=1)
    ax.set_xlim(0, top * 1.18)
    ax.set_title(_PANEL_TITLES[mode])
    ax.set_xlabel(f"{MODE_LABELS[mode]} speed-up vs eager (eager = 1, higher is better)")
    ax.grid(axis="x", alpha=0.3)


def _speedup_targets(case: dict, mode: str) -> list[dict]:
    """The case's minimum speed-ups vs eager in ``mode`` (the only targets on this axis), once
    each (there is one entry per medkern contender)."""
    targets = [t for t in case.get("targets", []) if t["metric"] == [mode, "speedup_vs_eager"] and t["minimum"]]
    return list({t["target"]: t for t in targets}.values())


def _title(document: dict) -> str:
    run = "quick run, small shapes" if document["quick"] else f"{document['dtype']}"
    return (
        f"medkern bench on {document['device']} ({document['device_name']}, {document['threads']} threads) - "
        f"torch {document['torch']}, {run}"
    )

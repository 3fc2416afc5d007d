"""Writing results: results.json (everything), results.md (tables), results.png (chart), and
the plain-text table and target summary printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from . import chart
from .contention import NOISY_FRACTION
from .suite import CLONE, FWD, FWD_BWD, Settings

COLUMNS = (
    "case", "contender", "fwd ms", "fwd vs eager", "fwd / clone",
    "fwd+bwd ms", "fwd+bwd vs eager", "fwd+bwd vs compile", "saved for bwd",
)
LEGEND = (
    "Times are medians over interleaved rounds, in ms (lower is better). "
    '"vs eager" and "vs compile" are that contender\'s time divided by this one\'s (> 1: this one is faster). '
    "fwd runs under torch.no_grad(); fwd+bwd is a forward with grad plus torch.autograd.grad w.r.t. every "
    'input that requires grad. "fwd / clone" is the forward time over the time of x.clone() '
    "(1.0: the op runs at copy bandwidth). \"saved for bwd\" counts the storages autograd keeps for backward."
)


def build_document(environment: dict, settings: Settings, cases: list[dict]) -> dict:
    return {
        **environment,
        "quick": settings.quick,
        "dtype": str(settings.dtype).removeprefix("torch."),
        "repeats": settings.timed_rounds,
        "warmup": settings.warmup_rounds,
        "cases": cases,
    }


def write_all(document: dict, out_dir: Path) -> dict[str, Optional[Path]]:
    """Writes results.json, results.png (if matplotlib is there) and results.md into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Optional[Path]] = {
        "json": out_dir / "results.json",
        "png": out_dir / "results.png",
        "md": out_dir / "results.md",
    }
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    chart_problem = chart.write_chart(document, paths["png"])
    if chart_problem is not None:
        paths["png"] = None
    paths["md"].write_text(markdown(document, chart_problem))
    return paths


# --- tables -----------------------------------------------------------------------------------


def table_rows(document: dict) -> list[list[str]]:
    """One row per contender of each case (plus the clone yardstick), case name on the first."""
    rows = []
    for case in document["cases"]:
        case_rows = [_contender_row(name, results) for name, results in case.get("contenders", {}).items()]
        if case.get("clone_ms") is not None:
            case_rows.append([CLONE, _ms(case["clone_ms"]), "", "1.00", "", "", "", ""])
        if "error" in case:
            case_rows.append(["", f"case failed: {_short(case['error'])}", *[""] * 6])
        for i, row in enumerate(case_rows):
            rows.append([case["name"] if i == 0 else "", *row])
    return rows


def _contender_row(name: str, results: dict) -> list[str]:
    if "error" in results:
        return [name, f"error: {_short(results['error'])}", *[""] * 6]
    fwd, fwd_bwd = results[FWD], results[FWD_BWD]
    mark = "" if results.get("matches_eager", True) else " (!)"  # output differs from eager's
    return [
        name + mark,
        _ms(fwd["median_ms"]),
        _ratio(fwd["speedup_vs_eager"]),
        _ratio(results.get("fwd_over_clone"), suffix=""),
        _ms(fwd_bwd["median_ms"]),
        _ratio(fwd_bwd["speedup_vs_eager"]),
        _ratio(fwd_bwd["speedup_vs_compile"]),
        _bytes(results["saved_bytes"]),
    ]


def target_rows(document: dict) -> list[list[str]]:
    rows = []
    for case in document["cases"]:
        for entry in case.get("targets", []):
            rows.append([
                {True: "PASS", False: "FAIL", None: "n/a (quick shapes)"}[entry["passed"]],
                case["name"],
                entry["contender"] or "(no medkern contender ran)",
                entry["target"],
                _ratio(entry["value"]),
            ])
    return rows


def missed_targets(document: dict) -> list[list[str]]:
    return [row for row in target_rows(document) if row[0] == "FAIL"]


def contention_warnings(document: dict) -> list[str]:
    return [
        f"{case['name']}: other processes used {case['other_cpu_fraction']:.0%} of the CPU while it ran; "
        "its CPU timings are not reliable"
        for case in document["cases"]
        if document["device"] == "cpu" and (case.get("other_cpu_fraction") or 0) > NOISY_FRACTION
    ]


def text_summary(document: dict) -> str:
    """The results table and the targets, aligned for a terminal."""
    parts = [_aligned(list(COLUMNS), table_rows(document))]
    parts += [f"WARNING: {warning}" for warning in contention_warnings(document)]
    targets = target_rows(document)
    if targets:
        parts.append("Targets:\n" + _aligned(["", "case", "contender", "target", "value"], targets))
        missed = missed_targets(document)
        if missed:
            lines = [f"  {case} {contender}: {target}, got {value}" for _, case, contender, target, value in missed]
            parts.append(f"MISSED {len(missed)} TARGET(S):\n" + "\n".join(lines))
        else:
            parts.append("All targets met.")
    return "\n\n".join(parts)


def markdown(document: dict, chart_problem: Optional[str]) -> str:
    env = document
    commit = env.get("commit")
    commit_text = "unknown" if commit is None else commit[:12]
    if env.get("commit_dirty"):
        commit_text += " (with uncommitted changes)"
    lines = [
        "# medkern bench",
        "",
        f"- device: {env['device']} ({env['device_name']}), CPU capability {env['cpu_capability']}, {env['threads']} threads",
        f"- torch {env['torch']}, medkern {env['medkern']}, triton {env['triton']}, commit {commit_text}",
        f"- {env['date']}; dtype {env['dtype']}; {env['repeats']} timed rounds after {env['warmup']} warm-up"
        + ("; quick run (small shapes)" if env["quick"] else ""),
        f"- other processes' share of the CPU while a case ran: at most {_percent(_most_other_cpu(document))}"
        f" (load average after the run: {env.get('load_average')})",
        "",
        LEGEND,
        "",
        *_markdown_table(list(COLUMNS), table_rows(document)),
    ]
    targets = target_rows(document)
    if targets:
        lines += ["", "## Targets", "", *_markdown_table(["result", "case", "contender", "target", "value"], targets)]
    lines += ["", "## Chart", ""]
    lines.append("![speed-up vs eager](results.png)" if chart_problem is None else f"No chart: {chart_problem}.")
    notes = _notes(document)
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def _notes(document: dict) -> list[str]:
    notes = [f"**Warning**: {warning}" for warning in contention_warnings(document)]
    skipped: dict[tuple[str, str], list[str]] = {}  # (contender, reason) -> cases: said once
    for case in document["cases"]:
        for name, reason in case.get("skipped", {}).items():
            skipped.setdefault((name, reason), []).append(case["name"])
    for (name, reason), cases in skipped.items():
        where = "any case" if len(cases) == len(document["cases"]) else ", ".join(cases)
        notes.append(f"{name} not run for {where}: {reason}")
    for case in document["cases"]:
        for name, results in case.get("contenders", {}).items():
            if "error" in results:
                notes.append(f"{case['name']}: {name} failed: {results['error']}")
            elif not results.get("matches_eager", True):
                notes.append(f"{case['name']}: {name} (!) output differs from eager's (max |diff| {results['max_abs_diff']:.3g})")
    return notes


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


# --- number formats ---------------------------------------------------------------------------


def _ms(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def _most_other_cpu(document: dict) -> Optional[float]:
    shares = [case["other_cpu_fraction"] for case in document["cases"] if case.get("other_cpu_fraction") is not None]
    return max(shares, default=None)


def _percent(value: Optional[float]) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def _ratio(value: Optional[float], suffix: str = "x") -> str:
    return "" if value is None else f"{value:.2f}{suffix}"


def _bytes(count: Optional[int]) -> str:
    if count is None:
        return ""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _short(text: str, limit: int = 60) -> str:
    first_line = text.splitlines()[0] if text else ""
    return first_line if len(first_line) <= limit else first_line[: limit - 3] + "..."


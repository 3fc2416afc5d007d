"""The examples run end to end in their quick mode and write what they promise."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example -> (pictures it draws, test metrics it reports)
PROMISES = {
    "classifier": (["roc.png"], ["loss", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "auroc"]),
    "sequence": (["roc_afib.png"], ["loss", "accuracy", "macro_f1"] + [f"sensitivity_{i}" for i in range(4)] + [
                                    "confusion_matrix"]),
    "unet": (["overlay.png"], ["loss", "lesion_dice", "lesion_iou"]),
    "dcgan": (["samples.png", "real.png"], []),
}


def run_example(name: str, out: Path, *flags: str) -> dict:
    command = [sys.executable, str(EXAMPLES / f"train_{name}.py"), "--quick", "--out", str(out), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_example_quick_run_writes_its_results(name, tmp_path):
    summary = run_example(name, tmp_path)
    pictures, metrics = PROMISES[name]
    for picture in pictures:
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert sorted(summary["test"]) == sorted(metrics)
    for key in metrics:
        value = summary["test"][key]
        assert isinstance(value, dict) or (value is not None and math.isfinite(value)), key
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(1, summary["epochs"] + 1))
    losses = ["train_d_loss", "train_g_loss"] if name == "dcgan" else ["train_loss", "val_loss"]
    assert all(math.isfinite(float(row[key])) for row in rows for key in losses)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert summary["layers"] == "medkern"


def test_sequence_confusion_matrix_counts_every_test_signal(tmp_path):
    matrix = run_example("sequence", tmp_path)["test"]["confusion_matrix"]
    assert matrix["rows_true_columns_predicted"] == ["normal", "afib", "brady", "tachy"]
    assert sum(map(sum, matrix["counts"])) == 120 - int(120 * 0.7) - int(120 * 0.15)


def test_reference_twin_runs_the_same_example(tmp_path):
    """--reference trains the plain-torch twin (that the twins train alike, step for step, is
    tests/test_train_twins.py's job: here float32 with Adam drifts apart over epochs)."""
    torch_run = run_example("classifier", tmp_path, "--reference")
    assert torch_run["layers"].startswith("torch")
    assert math.isfinite(torch_run["test"]["loss"])

"""The benchmark harness: timer, saved-bytes counter, a quick `medkern bench` run and its files."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import medkern
from medkern import _extension, cli
from medkern.bench import cases as registry
from medkern.bench import contention, report, suite
from medkern.bench.case import is_medkern
from medkern.bench.environment import environment
from medkern.bench.memory import peak_allocated_bytes, saved_tensor_bytes
from medkern.bench.progress import Progress
from medkern.bench.suite import Settings, run_case
from medkern.bench.timing import time_interleaved

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPEATS = 3
CASE_NAMES = [case.name for case in registry.all_cases()]
NO_COMPILE_CASES = [case.name for case in registry.all_cases() if case.no_compile is not None]


# --- timing -----------------------------------------------------------------------------------


def test_contenders_run_interleaved_warmup_included():
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in "abc"}
    timings = time_interleaved(calls, repeats=3, warmup=2)
    assert log == ["a", "b", "c"] * 5
    assert [len(timings[name].samples_ms) for name in "abc"] == [3, 3, 3]


def test_median_and_min_of_the_timed_calls_only():
    now = [0.0]
    durations_ms = {"a": [100.0, 5.0, 1.0, 3.0], "b": [100.0, 2.0, 8.0, 2.0]}  # first: warm-up

    def contender(name):
        def call():
            now[0] += durations_ms[name].pop(0) / 1e3

        return call

    timings = time_interleaved({name: contender(name) for name in "ab"}, repeats=3, warmup=1, clock=lambda: now[0])
    assert timings["a"].samples_ms == pytest.approx((5.0, 1.0, 3.0))
    assert timings["a"].median_ms == pytest.approx(3.0)
    assert timings["a"].min_ms == pytest.approx(1.0)
    assert timings["b"].median_ms == pytest.approx(2.0)


def test_round_callback_and_bad_repeats():
    rounds = []
    time_interleaved({"a": lambda: None}, repeats=2, warmup=0, on_round=lambda i, n: rounds.append((i, n)))
    assert rounds == [(0, 2), (1, 2)]
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, repeats=0)


# --- memory -----------------------------------------------------------------------------------


def test_product_saves_both_inputs_exactly():
    x = torch.randn(10, 20, requires_grad=True)
    y = torch.randn(10, 20, dtype=torch.float64, requires_grad=True)
    assert saved_tensor_bytes(lambda: x * y) == 10 * 20 * 4 + 10 * 20 * 8


def test_relu_saves_its_output_only():
    x = torch.randn(1000, requires_grad=True)
    assert saved_tensor_bytes(lambda: torch.relu(x * 1.0)) == 1000 * 4  # x * scalar saves nothing


def test_a_storage_counts_once_and_whole():
    x = torch.randn(256, requires_grad=True)
    assert saved_tensor_bytes(lambda: x * x) == 256 * 4
    base = torch.randn(100)
    view = base[:10].requires_grad_()  # saving a view keeps its whole storage alive
    assert saved_tensor_bytes(lambda: view * view.detach().clone().requires_grad_()) == 100 * 4 + 10 * 4


def test_nothing_saved_without_grad_and_no_peak_on_cpu():
    x = torch.randn(100, requires_grad=True)
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: x * x) == 0
    assert peak_allocated_bytes(lambda: x * 2, torch.device("cpu")) is None


def test_other_cpu_fraction_is_the_share_of_the_machine_others_used(monkeypatch):
    monkeypatch.setattr(contention.os, "cpu_count", lambda: 2)
    start = contention.CpuSnapshot(machine_busy_s=10.0, own_cpu_s=2.0, wall_s=100.0)
    end = contention.CpuSnapshot(machine_busy_s=14.0, own_cpu_s=3.0, wall_s=102.0)
    assert contention.other_cpu_fraction(start, end) == pytest.approx(0.75)  # 3 s of 4 core-seconds
    assert contention.other_cpu_fraction(None, end) is None


# --- a quick run of the whole suite ------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["bench", "--quick", "--device", "cpu", "--repeats", str(REPEATS), "--out", str(out)])
    document = json.loads((out / "results.json").read_text())
    return code, stdout.getvalue(), out, document


def test_bench_exits_zero_and_prints_table_and_targets(quick_run):
    code, stdout, out, _ = quick_run
    assert code == 0
    for name in CASE_NAMES:
        assert name in stdout
    assert "Targets:" in stdout
    assert str(out / "results.json") in stdout


def test_json_describes_the_run(quick_run):
    document = quick_run[3]
    for key in ("device", "device_name", "cpu_capability", "threads", "torch", "medkern", "triton", "commit", "date", "cases"):
        assert key in document
    assert document["device"] == "cpu"
    assert document["quick"] is True
    assert document["repeats"] == REPEATS
    assert document["torch"] == torch.__version__
    assert document["medkern"] == medkern.__version__
    assert document["threads"] == torch.get_num_threads()
    assert [case["name"] for case in document["cases"]] == CASE_NAMES


def test_every_case_times_every_contender(quick_run):
    for case in quick_run[3]["cases"]:
        contenders = case["contenders"]
        baselines = ["eager", "compile"]
        if "compile" in case["skipped"]:  # a case that says why torch.compile cannot run it
            assert case["name"] in NO_COMPILE_CASES and "double backward" in case["skipped"]["compile"]
            baselines = ["eager"]
        assert set(baselines) <= set(contenders), case["name"]
        if _extension.has_kernel("bias_act", "CPU"):
            assert "medkern[cpu]" in contenders
        assert any(is_medkern(name) for name in contenders)
        # the copy yardstick is timed for bandwidth-bound cases only
        assert (case["clone_ms"] > 0) if case["bandwidth_bound"] else case["clone_ms"] is None
        assert case["other_cpu_fraction"] is None or 0 <= case["other_cpu_fraction"] <= 1
        for name, results in contenders.items():
            assert "error" not in results, (case["name"], name, results.get("error"))
            assert results["matches_eager"], (case["name"], name)
            assert results["saved_bytes"] > 0
            for mode in ("fwd", "fwd_bwd"):
                timing = results[mode]
                assert len(timing["samples_ms"]) == REPEATS
                assert 0 < timing["min_ms"] <= timing["median_ms"]
                for baseline in baselines:
                    expected = contenders[baseline][mode]["median_ms"] / timing["median_ms"]
                    assert timing[f"speedup_vs_{baseline}"] == pytest.approx(expected)
            if case["bandwidth_bound"]:
                assert results["fwd_over_clone"] == pytest.approx(results["fwd"]["median_ms"] / case["clone_ms"])
            else:
                assert results["fwd_over_clone"] is None


def test_channels_last_stays_channels_last(quick_run):
    case = next(case for case in quick_run[3]["cases"] if case["name"] == "bias_act/lrelu_channels_last")
    assert case["inputs"][0]["layout"] == "channels_last"
    assert case["output"]["layout"] == "channels_last"


def test_saved_bytes_of_the_fused_op_and_eager(quick_run):
    case = quick_run[3]["cases"][0]  # lrelu_gain_clamp: x, b
    x_shape, b_shape = (entry["shape"] for entry in case["inputs"])
    x_bytes, b_bytes = 4 * torch.Size(x_shape).numel(), 4 * torch.Size(b_shape).numel()
    # eager keeps x + b (for lrelu) and the scaled activation (for clamp)
    assert case["contenders"]["eager"]["saved_bytes"] == 2 * x_bytes
    for name in filter(is_medkern, case["contenders"]):
        assert case["contenders"][name]["saved_bytes"] == x_bytes + b_bytes  # the op saves x and b only


def test_acceptance_case_reports_each_target(quick_run):
    case = quick_run[3]["cases"][0]
    assert case["name"] == "bias_act/lrelu_gain_clamp"
    labels = {entry["target"] for entry in case["targets"]}
    assert labels == {"fwd+bwd >= 2.5x eager", "fwd+bwd >= 1x compile", "fwd <= 1.3x clone"}
    for entry in case["targets"]:
        assert entry["value"] is not None and entry["value"] > 0
        assert entry["passed"] is None, "targets are stated for the full shapes, not judged on quick ones"


def test_targets_are_judged_on_full_runs():
    from medkern.bench.case import clone_target, speedup_target
    from medkern.bench.suite import evaluate_targets

    case = registry.select("lrelu_gain_clamp")[0]
    results = {"medkern[cpu]": {"fwd_bwd": {"speedup_vs_eager": 3.0, "speedup_vs_compile": 0.9}, "fwd_over_clone": 1.2}}
    entries = {e["target"]: e["passed"] for e in evaluate_targets(case, results)}
    assert entries == {"fwd+bwd >= 2.5x eager": True, "fwd+bwd >= 1x compile": False, "fwd <= 1.3x clone": True}
    assert speedup_target("fwd_bwd", "eager", 2.5).label in entries and clone_target(1.3).label in entries


def test_markdown_and_png(quick_run):
    out = quick_run[2]
    markdown = (out / "results.md").read_text()
    for name in CASE_NAMES:
        assert f"| {name} |" in markdown
    assert "## Targets" in markdown
    pytest.importorskip("matplotlib")
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)
    assert "![speed-up vs eager](results.png)" in markdown


def test_without_matplotlib_the_chart_is_skipped_and_said(quick_run, tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes any matplotlib import fail
    paths = report.write_all(quick_run[3], tmp_path)
    assert paths["png"] is None and not (tmp_path / "results.png").exists()
    assert "No chart: matplotlib is not installed" in (tmp_path / "results.md").read_text()


# --- failures are reported, not raised ----------------------------------------------------------


def test_a_compile_failure_is_recorded_and_the_rest_still_timed(monkeypatch, tmp_path):
    def broken_compile(fn, *args, **kwargs):
        def call(*inputs):
            raise RuntimeError("no compiler here")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    case = registry.select("lrelu_gain_clamp")[0]
    settings = Settings(torch.device("cpu"), quick=True, repeats=2, warmup=0)
    result = run_case(case, settings, lambda *a, **k: None)
    assert result["contenders"]["compile"] == {"error": "RuntimeError: no compiler here"}
    assert result["contenders"]["eager"]["fwd"]["median_ms"] > 0
    assert result["contenders"]["eager"]["fwd"]["speedup_vs_compile"] is None
    versus_compile = [entry for entry in result["targets"] if entry["metric"] == ["fwd_bwd", "speedup_vs_compile"]]
    assert versus_compile and not any(entry["passed"] for entry in versus_compile)

    document = report.build_document(environment(settings.device), settings, [result])
    assert "error: RuntimeError: no compiler here" in report.text_summary(document)
    report.write_all(document, tmp_path)  # every output copes with the failed contender
    assert "compile failed: RuntimeError: no compiler here" in (tmp_path / "results.md").read_text()


def test_progress_lines_on_a_pipe_skip_round_counters():
    stream = io.StringIO()  # not a terminal: one line a step, no in-place counters
    progress = Progress(stream)
    progress.show(0, 2, "family/case", "eager: first calls")
    progress.show(0, 2, "family/case", "timing fwd, round 1/5", transient=True)
    progress.done()
    assert stream.getvalue() == "[1/2] family/case: eager: first calls\n"


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["bench", "--filter", "no-such-case"], ["bench", "--repeats", "0"], ["bench", "--dtype", "int8"], ["frobnicate"], []],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_bench_list(capsys):
    assert cli.main(["bench", "--list", "--filter", "lrelu"]) == 0
    listed = capsys.readouterr().out
    assert "bias_act/lrelu_gain_clamp" in listed and "bias_act/gelu" not in listed


def test_info(capsys):
    assert cli.main(["info"]) == 0
    printed = capsys.readouterr().out
    assert medkern.__version__ in printed and torch.__version__ in printed


def test_python_dash_m_medkern():
    done = subprocess.run([sys.executable, "-m", "medkern", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert medkern.__version__ in done.stdout


def test_a_case_may_judge_its_output_by_the_tolerance_table():
    expected = torch.linspace(-1, 1, 100)
    off = expected + 1e-3  # a long recurrence's float32 rounding, far past assert_close's defaults
    assert not suite._close(off, expected)
    assert suite._close(off, expected, ("rnn_long", "forward"))
    assert not suite._close(expected + 1e-2, expected, ("rnn_long", "forward"))
    # a dtype the entry lacks falls back to the defaults
    assert not suite._close((expected + 5e-3).half(), expected.half(), ("rnn_long", "forward"))


# --- medkern bench --model: any model, as it is and swapped -------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_bench_model_times_any_model_swapped_against_itself(tmp_path, monkeypatch, channels_last):
    module = type(sys)("medkern_bench_test_models")
    # dropout draws its mask in memory order: a channels-last twin would drop other elements
    module.small = lambda: torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Dropout(0.0 if channels_last else 0.5), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2), torch.nn.Tanh())
    monkeypatch.setitem(sys.modules, module.__name__, module)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["bench", "--model", "medkern_bench_test_models:small", "--input-shape", "2,3,8,8",
                         "--device", "cpu", "--repeats", "2", "--warmup", "0", "--out", str(tmp_path)]
                        + (["--channels-last"] if channels_last else []))
    assert code == 0
    cases = json.loads((tmp_path / "results.json").read_text())["cases"]
    assert [case["name"] for case in cases] == ["model/medkern_bench_test_models:small"] + (
        ["model/medkern_bench_test_models:small_swap_channels_last"] if channels_last else [])
    for case in cases:
        assert case["inputs"][0]["shape"] == [2, 3, 8, 8] and case["inputs"][0]["layout"] == "contiguous"
        assert {"eager", "compile"} <= set(case["contenders"]) and any(map(is_medkern, case["contenders"]))
        for name, results in case["contenders"].items():
            assert results["matches_eager"], name  # dropout draws the same mask in every call
            assert len(results["fwd_bwd"]["samples_ms"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_module_here:f", "--input-shape", "1,2"], "No module named 'no_such_module_here'"),
    (["--model", "torch.nn", "--input-shape", "1,2"], "--model must be 'package.module:factory'"),
    (["--model", "torch.nn:Conv2d"], "--model and --input-shape go together"),
    (["--model", "torch.nn:Identity", "--input-shape", "2,x"], "expected comma-separated sizes"),
    (["--channels-last"], "--channels-last goes with --model"),
])
def test_bench_model_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# --- python -m medkern.bench.epoch: a training epoch of the U-Net twins --------------------------


def test_epoch_benchmark_times_both_twins_and_writes_its_json(tmp_path, capsys):
    from medkern.bench import epoch

    assert epoch.main(["--quick", "--rounds", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "epoch.json").read_text())
    assert result["name"] == "train/unet3d_epoch" and result["passed"] is None  # quick runs are not judged
    assert [len(result["seconds"][name]) for name in ("torch", "medkern")] == [2, 2]
    assert result["per_round_speedup"] == [t / m for t, m in zip(result["seconds"]["torch"], result["seconds"]["medkern"])]
    # the twins trained alike: same data, same initial weights
    assert result["last_train_loss"]["medkern"] == pytest.approx(result["last_train_loss"]["torch"], rel=1e-4)
    assert "train/unet3d_epoch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        epoch.main(["--rounds", "0"])


# --- python -m medkern.bench.ceiling: the speed-up fusion can reach around the library convolution --


def test_ceiling_reports_the_convolution_share_of_cases_whose_medkern_call_convolves(tmp_path, capsys):
    from medkern.bench import ceiling

    assert ceiling.main(["--quick", "--rounds", "1", "--filter", "cnn/resnet_block", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ceiling.json").read_text())["rows"]
    assert [(r["case"], r["mode"], r["target"]) for r in rows] == [
        ("cnn/resnet_block", "fwd_bwd", 1.2), ("cnn/resnet_block_eval", "fwd", 1.3)]
    for r in rows:
        assert 0 < r["convolution_ms"] < r["eager_ms_profiled"] and 0 < r["medkern_convolution_ms"]
        assert r["convolution_share"] == pytest.approx(r["convolution_ms"] / r["eager_ms_profiled"])
        assert r["ceiling"] == pytest.approx(1 / r["convolution_share"])
        assert r["target_above_ceiling"] == (r["target"] > r["ceiling"])
        assert r["convolution_gflops_per_s"] > 0  # the FLOP counter saw the convolutions
    assert "| cnn/resnet_block | fwd+bwd |" in capsys.readouterr().out
    # medkern's upfirdn2d replaces its reference's convolution: no ceiling to report
    assert ceiling.run(quick=True, rounds=1, name_filter="gan/upfirdn2d_up2") == []
    with pytest.raises(SystemExit):
        ceiling.main(["--rounds", "0"])


def test_ceiling_counts_library_convolutions_only():
    from medkern.bench.ceiling import is_convolution

    assert all(map(is_convolution, ("aten::convolution_backward", "aten::mkldnn_convolution",
                                    "aten::slow_conv_transpose2d", "mkldnn::_convolution_pointwise")))
    assert not any(map(is_convolution, ("aten::native_batch_norm", "medkern::norm_act", "aten::add_")))


def test_ceiling_times_model_cases_against_their_convolution_only_twin():
    from medkern.bench import ceiling

    (row,) = ceiling.run(quick=True, rounds=1, name_filter="model/resnet18_step_channels_last")
    assert row["direct_ceiling"] == pytest.approx(row["eager_ms"] / row["conv_only_ms"])
    assert row["medkern_speedup"] == pytest.approx(row["eager_ms"] / row["medkern_step_ms"])
    assert row["target_above_ceiling"] == (row["target"] > row["direct_ceiling"])


def test_convolution_only_twin_keeps_the_convolutions_and_shapes_only():
    """Norms, activations and dropout become Identity, pools strided slices of the pool's output
    shape; the convolutions are the model's own parameters, and the model is untouched."""
    from torchvision.models import resnet18

    from medkern.bench.conv_only import StridedSlice, conv_only_twin

    model = resnet18(num_classes=3)
    twin = conv_only_twin(model)
    kinds = {type(m).__name__ for m in twin.modules()}
    assert not kinds & {"BatchNorm2d", "ReLU", "MaxPool2d"} and "StridedSlice" in kinds
    assert twin.conv1.weight is model.conv1.weight and twin.fc.weight is model.fc.weight
    assert type(model.bn1).__name__ == "BatchNorm2d"  # a copy was changed, not the model
    x = torch.randn(2, 3, 64, 64)
    assert twin(x).shape == model(x).shape
    steps = [name for name, m in twin.named_modules() if isinstance(m, StridedSlice)]
    assert steps == ["maxpool"]
    with pytest.raises(ValueError, match="does not have the shape of"):
        StridedSlice(nn.MaxPool2d(3, 2))(torch.randn(1, 1, 8, 8))  # no padding: 3 outputs, the slice has 4


def test_swap_channels_last_case_differentiates_each_twins_own_weights():
    """model/resnet18_step_swap_channels_last: the original keeps the default layout, medkern.swap(...,
    channels_last=True) its own channels-last copy of the same values; each step computes every
    gradient of its own parameters and none of the other's."""
    case = next(c for c in registry.all_cases() if c.name == "model/resnet18_step_swap_channels_last")
    inputs = case.setup(torch.device("cpu"), torch.float32, True)
    x, parameters = inputs[0], inputs[1:]
    n = len(parameters) // 2
    assert x.is_contiguous() and not x.requires_grad and len(parameters) == 2 * n
    for a, b in zip(parameters[:n], parameters[n:]):
        assert a is not b and torch.equal(a, b)
        if a.dim() == 4:
            assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(case.fused(*inputs), case.reference(*inputs))
        upstream = torch.randn_like(case.reference(*inputs))
    assert not case.shared_parameters
    for step, own in ((case.reference, slice(0, n)), (case.fused, slice(n, 2 * n))):
        grads = suite._grad_call(step, inputs, upstream, allow_unused=True)()
        assert [g is not None for g in grads] == [own.start <= i < own.stop for i in range(2 * n)]
        with pytest.raises(RuntimeError, match="not have been used in the graph"):
            suite._grad_call(step, inputs, upstream)()  # strict unless the case says otherwise
    # its speed-up includes the layout change's: the convolution ceiling does not bound it
    from medkern.bench import ceiling

    assert ceiling.run(quick=True, rounds=1, name_filter="_swap_channels_last") == []

"""``medkern check`` and the tolerance test it applies."""

import contextlib
import io

import pytest
import torch

from medkern import check, cli, tolerances
import medkern
from medkern.testing import bias_act as bias_act_testing
from medkern.testing import max_pool as max_pool_testing
from medkern.testing import minibatch_stddev as minibatch_stddev_testing
from medkern.testing import norm_act as norm_act_testing
from medkern.testing import pixel_norm as pixel_norm_testing
from medkern.testing import rnn as rnn_testing
from medkern.testing import upfirdn2d as upfirdn2d_testing


def _run_cli(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["check", *args])
    return code, out.getvalue()


def test_check_passes_on_this_machine_and_names_what_it_ran():
    code, out = _run_cli("--device", "cpu", "--backend", "cpu")
    assert code == 0, out
    for op in check.CHECKS:
        for dtype in ("float32", "float64", "float16", "bfloat16"):
            assert f"{op:<12} cpu    cpu       {dtype:<9}" in out, (op, dtype)
    assert "FAIL" not in out and "checks passed" in out


def test_the_command_line_offers_every_checked_op():
    assert cli.CHECKED_OPS == tuple(check.CHECKS)


@pytest.mark.parametrize("op,testing,target", [("norm_act", norm_act_testing, "run"),
                                                ("rnn_sequence", rnn_testing, "outputs_and_grads"),
                                                ("upfirdn2d", upfirdn2d_testing, "run"),
                                                ("pixel_norm", pixel_norm_testing, "run"),
                                                ("max_pool", max_pool_testing, "run"),
                                                ("minibatch_stddev", minibatch_stddev_testing, "run")])
def test_check_catches_a_wrong_kernel_of_every_op(monkeypatch, op, testing, target):
    real = getattr(testing, target)

    def off_by_a_little(*args, **kwargs):
        outputs = list(real(*args, **kwargs))
        if medkern.backend.active() == "cpu" or args[0] == "cpu":
            outputs[0] = outputs[0] * 1.01
        return outputs

    monkeypatch.setattr(testing, target, off_by_a_little)
    code, out = _run_cli("--device", "cpu", "--backend", "cpu", "--dtype", "float64", "--op", op)
    assert code == 1
    assert f"{op:<12} cpu    cpu       float64" in out and "FAIL" in out
    assert "bias_act" not in out.split("FAILED")[0]


def test_check_of_max_pool_catches_wrong_window_positions(monkeypatch):
    real = max_pool_testing.argmax
    monkeypatch.setattr(max_pool_testing, "argmax", lambda *args: real(*args).flip(-1))
    code, out = _run_cli("--device", "cpu", "--backend", "cpu", "--dtype", "float32", "--op", "max_pool")
    assert code == 1
    assert "max_pool cpu cpu float32 nchw-k3x3: argmax: error inf" in " ".join(out.split())


def test_check_of_the_modules_catches_a_wrong_fused_block(monkeypatch):
    import medkern.nn.norm_act as norm_act_module

    real = norm_act_module.norm_act
    monkeypatch.setattr(norm_act_module, "norm_act", lambda *args, **kwargs: real(*args, **kwargs) * 1.001)
    code, out = _run_cli("--device", "cpu", "--backend", "cpu", "--dtype", "float64", "--op", "modules")
    assert code == 1
    assert "modules      cpu    cpu       float64" in out and "FAIL" in out
    assert "conv2d-batchnorm-lrelu: output[0]: error" in out
    assert "conv2d-sigmoid" not in out.split("FAILED")[1]  # no norm in it: still passes


def test_check_fails_when_a_kernel_is_wrong(monkeypatch):
    real_run = bias_act_testing.run

    def off_by_a_little(backend_name, *args, **kwargs):
        outputs = real_run(backend_name, *args, **kwargs)
        if backend_name == "cpu":
            outputs[0] = outputs[0] * 1.01  # the forward, 1% off
        return outputs

    monkeypatch.setattr(bias_act_testing, "run", off_by_a_little)
    code, out = _run_cli("--device", "cpu", "--backend", "cpu", "--dtype", "float32")
    assert code == 1
    assert "FAIL" in out and ": y: error" in out


def test_check_reports_a_crash_as_a_failure(monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(bias_act_testing, "run", crash)
    code, out = _run_cli("--device", "cpu", "--backend", "cpu", "--dtype", "float64")
    assert code == 1
    assert "RuntimeError: kernel exploded" in out


def test_unavailable_backends_are_listed_not_run(monkeypatch):
    monkeypatch.setattr(check.backend, "_why_not", lambda name, op, device: "not built here" if name == "cpu" else None)
    runnable, skipped = check.targets(["cpu"])
    assert ("cpu", "cpu") not in runnable
    assert ("cpu", "cpu", "not built here") in skipped
    results, skipped = check.run_check(["cpu"], ["cpu"], ops=["bias_act"])
    assert results == [] and skipped == [("bias_act", "cpu", "cpu", "not built here")]
    assert "(not run: bias_act with the cpu backend on cpu: not built here)" in check.summary(results, skipped)


def test_within_matches_assert_close():
    expected = torch.tensor([1.0, -2.0, float("nan"), float("inf")], dtype=torch.float64)
    worst, ok = tolerances.within(expected.clone(), expected, "bias_act", "forward", torch.float32)
    assert ok and worst == 0.0
    rtol, atol = tolerances.bounds(expected, "bias_act", "forward", torch.float32)
    nudged = expected + torch.tensor([0.5 * (atol + rtol), 0.0, 0.0, 0.0])
    worst, ok = tolerances.within(nudged, expected, "bias_act", "forward", torch.float32)
    assert ok and worst == pytest.approx(0.5, rel=1e-3)
    tolerances.assert_close(nudged, expected, "bias_act", "forward", torch.float32)
    too_far = expected + torch.tensor([3 * (atol + rtol), 0.0, 0.0, 0.0])
    worst, ok = tolerances.within(too_far, expected, "bias_act", "forward", torch.float32)
    assert not ok and worst == pytest.approx(3.0, rel=1e-3)
    with pytest.raises(AssertionError):
        tolerances.assert_close(too_far, expected, "bias_act", "forward", torch.float32)

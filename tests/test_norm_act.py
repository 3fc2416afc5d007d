"""medkern.ops.norm_act: every implementation against the reference, running statistics, gradients,
what autograd keeps, tracing, bad and empty input.

Each kernel test runs on every ``kernel_targets()`` param. Triton's interpreter (the
cpu-triton_interpreter param) costs ~20 ms per program per launch, so it runs a spread of each
test's cases on small shapes (``with_targets``); a GPU runs them all.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import medkern
from medkern import activations, tolerances
from medkern.ops.norm_act import MEMORY_SAVING_ACTS, RECOVERY_MAX_SHIFT, keeps_output
from medkern.testing.norm_act import Case, Options, assert_matches, make_inputs, oracle, run

from conftest import kernel_targets

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
ALPHAS = {"lrelu": 0.2, "elu": 0.7}
INVERTIBLE = MEMORY_SAVING_ACTS  # y is kept for these with memory_saving
ACT_OPTIONS = [Options(act, ALPHAS.get(act), saving)
               for act in activations.NAMES for saving in ((True, False) if act in INVERTIBLE else (True,))]
INTERPRETER = "cpu-triton_interpreter"


def interpreted(target) -> bool:
    """Whether ``target`` runs in Triton's interpreter (slow: small shapes, fast gradcheck)."""
    return target == ("cpu", "triton")


def kinds(name, shape, num_groups, make="contiguous", only=("batch", "instance", "group")):
    """The case ``shape``/``make`` for each kind in ``only`` (group norm with ``num_groups``)."""
    return [Case(name, shape, kind, num_groups if kind == "group" else None, make) for kind in only]


def tiny(case, shape=(1, 4, 1, 3)):
    """``case`` at a size Triton's interpreter runs quickly: channels_last, one program per sample."""
    return replace(case, shape=shape, make="channels_last")


def _id(value):
    if isinstance(value, (Case, Options)):
        return value.id
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return str(value)


def with_targets(cases, interpreter_cases=None):
    """pytest params (target, *case) for every kernel target and case; Triton's interpreter runs
    ``interpreter_cases`` instead (default: the same cases)."""
    params = []
    for target in kernel_targets():
        chosen = cases if interpreter_cases is None or target.id != INTERPRETER else interpreter_cases
        for case in chosen:
            values = case if isinstance(case, tuple) else (case,)
            params.append(pytest.param(target.values[0], *values, marks=target.marks,
                                       id="-".join([target.id, *map(_id, values)])))
    return params


def check_parity(target, case, dtype, options, **make):
    """Forward, gradients and running statistics of ``target`` equal the oracle's; y and dx are
    laid out as x (contiguous or channels_last), else contiguous."""
    device, backend = target
    inputs = make_inputs(case, dtype, device, options, **make)
    got = run(backend, case, inputs, options)
    assert_matches(got, oracle(case, inputs, options), inputs, f"{backend} {case.id} {options.id} {dtype}")
    x, y, dx = inputs.x, got[0], got[1]
    dense = x.is_contiguous() or x.movedim(1, -1).is_contiguous()
    assert y.stride() == x.stride() if dense else y.is_contiguous(), f"y strides {y.stride()}, x's {x.stride()}"
    assert dx.stride() == y.stride(), f"dx strides {dx.stride()}, y's {y.stride()}"
    return inputs, got


# --- parity with the reference ---------------------------------------------------------------

ACT_CASES = kinds("4d", (2, 6, 3, 4), 3) + [Case("4d", (2, 6, 3, 4), "group", 1), Case("4d", (2, 6, 3, 4), "group", 6)]
# the interpreter: each activation once, kinds, dtypes and both layouts in turn, few programs
_SMALL = [kinds("cl", (2, 6, 2, 3), 3, "channels_last") + [Case("cl", (2, 6, 2, 3), "group", 6, "channels_last")],
          kinds("planar", (1, 6, 5), 2) + [Case("planar", (1, 6, 5), "group", 1)]]
ACT_INTERPRETER = [(DTYPES[i % 4], options, _SMALL[i % 2][i % 4]) for i, options in enumerate(ACT_OPTIONS)]


@pytest.mark.parametrize("target,dtype,options,case", with_targets(
    [(d, o, c) for d in DTYPES for o in ACT_OPTIONS for c in ACT_CASES], ACT_INTERPRETER))
def test_every_activation_matches_reference(target, dtype, options, case):
    check_parity(target, case, dtype, options)


LAYOUT_CASES = [
    *kinds("3d", (2, 5, 7), 5),
    *kinds("4d", (2, 6, 5, 3), 2),
    *kinds("5d", (2, 4, 3, 2, 3), 2),
    *kinds("channels_last", (2, 6, 5, 3), 3, "channels_last"),
    *kinds("channels_last_3d", (2, 4, 3, 2, 3), 2, "channels_last_3d"),
    *kinds("2d", (7, 6), 2, only=("batch", "group")),  # (N, C): one position, interleaved
    *kinds("sliced", (2, 4, 6), 2, "sliced"),  # not dense: copied
    *kinds("transposed", (3, 4, 5), 4, "transposed"),  # dense, neither contiguous nor channels_last
    *kinds("odd", (1, 3, 7), 3),  # N = 1, C = 3, S = 7
    *kinds("long_planes", (2, 3, 4100), 1),  # S past one 4096-element segment
    # a segment of rows holds kNormRowBlockCpu = 32768 elements on CPU, kNormSegment = 4096 on CUDA
    # (csrc/common/norm_act.h). CPU: 32768 // 3 = 10922 rows, two segments, the last of two rows;
    # CUDA: 1365 rows a segment, the last of four rows
    *kinds("long_rows", (1, 3, 2, 5462), 3, "channels_last"),
    # C > 4096 (CUDA) and C > 32768 (CPU): a segment is one row of channels
    *kinds("many_channels", (2, 4097, 1, 3), 17, "channels_last"),
    # (N = 2, batch groups of 6 values: 32769 groups of 3 drew a few so ill-conditioned, |mean| far
    # above std, that float32 missed the tolerance in 2 of 98307 elements)
    *kinds("more_channels", (2, 32769, 1, 3), 3, "channels_last", only=("batch", "group")),
    # rows of full vectors and a partial one, summed in four accumulators plus a tail (15 rows)
    *kinds("wide_rows", (2, 20, 3, 5), 4, "channels_last"),
]
LAYOUT_OPTIONS = [Options("lrelu", 0.2), Options("silu")]  # y kept, x kept: each for every other case
LAYOUT_INTERPRETER = [
    (torch.float32, LAYOUT_OPTIONS[0], Case("channels_last", (1, 4, 2, 3), "group", 2, "channels_last")),
    (torch.float64, LAYOUT_OPTIONS[1], Case("channels_last_3d", (1, 4, 2, 1, 2), "instance", None, "channels_last_3d")),
    (torch.bfloat16, LAYOUT_OPTIONS[0], Case("5d", (1, 2, 2, 2, 2), "batch")),
    (torch.float16, LAYOUT_OPTIONS[1], Case("2d", (5, 3), "batch")),
    (torch.float32, LAYOUT_OPTIONS[1], Case("sliced", (1, 3, 6), "instance", None, "sliced")),
    (torch.float64, LAYOUT_OPTIONS[0], Case("transposed", (2, 2, 3), "group", 1, "transposed")),
    (torch.float32, LAYOUT_OPTIONS[0], Case("long_planes", (1, 2, 4100), "batch")),
    (torch.float32, LAYOUT_OPTIONS[1], Case("many_channels", (1, 130, 1, 2), "group", 5, "channels_last")),
]


@pytest.mark.parametrize("target,dtype,options,case", with_targets(
    [(d, LAYOUT_OPTIONS[i % 2], c) for d in DTYPES for i, c in enumerate(LAYOUT_CASES)], LAYOUT_INTERPRETER))
def test_every_layout_matches_reference(target, dtype, options, case):
    check_parity(target, case, dtype, options)


AFFINE = [(False, True), (True, False), (False, False)]
AFFINE_CASES = [(o, c, a) for o in (Options("lrelu", 0.2), Options("gelu")) for c in kinds("3d", (3, 4, 5), 2)
                for a in AFFINE]


@pytest.mark.parametrize("target,options,case,affine", with_targets(
    AFFINE_CASES, [(o, tiny(c), a) for o, c, a in AFFINE_CASES[::4]]))
def test_without_weight_or_bias(target, options, case, affine):
    weight, bias = affine
    check_parity(target, case, torch.float64, options, weight=weight, bias=bias)
    check_parity(target, case, torch.float32, options, weight=weight, bias=bias)


# --- running statistics ----------------------------------------------------------------------

TORCH_NORMS = {"batch": F.batch_norm, "instance": F.instance_norm}  # same positional arguments


@pytest.mark.parametrize("target,kind,momentum,dtype", with_targets(
    [(k, m, d) for k in TORCH_NORMS for m in (0.1, 0.6) for d in (torch.float64, torch.float32)],
    [("batch", 0.6, torch.float32), ("instance", 0.1, torch.float64)]))
def test_running_statistics_follow_torch(target, kind, momentum, dtype):
    """Three training steps update the running statistics as torch's functional norms do."""
    device, backend = target
    case = Case("4d", (3, 4, 2, 3), kind)
    case = tiny(case, (2, 4, 1, 3)) if interpreted(target) else case
    options = Options("lrelu", 0.2, momentum=momentum)
    running = make_inputs(case, dtype, device, options, running=True)
    mean, var = running.running_mean, running.running_var
    initial, want_mean, want_var = mean.clone(), mean.clone(), var.clone()
    for _ in range(3):
        inputs = make_inputs(case, dtype, device, options)
        x = inputs.x
        with torch.no_grad(), medkern.use_backend(backend):
            medkern.ops.norm_act(x, kind, inputs.weight, inputs.bias, mean, var, True, momentum, act="lrelu", alpha=0.2)
        TORCH_NORMS[kind](x, want_mean, want_var, None, None, True, momentum, 1e-5)
        tolerances.assert_close(mean, want_mean, "norm_act", "forward", dtype, "running_mean")
        tolerances.assert_close(var, want_var, "norm_act", "forward", dtype, "running_var")
    assert not torch.equal(mean, initial), "the running statistics were updated"


EVAL_CASES = [(c, o) for c in kinds("4d", (2, 4, 3, 3), None, only=("batch", "instance"))
              + kinds("channels_last", (2, 4, 3, 3), None, "channels_last", only=("batch", "instance"))
              for o in (Options("lrelu", 0.2, training=False), Options("gelu", training=False))]


@pytest.mark.parametrize("target,case,options", with_targets(EVAL_CASES, [(tiny(c), o) for c, o in EVAL_CASES[1::3]]))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=_id)
def test_eval_uses_running_statistics(target, case, options, dtype):
    """Eval mode normalizes by the running statistics (forward, dx, dweight, dbias from them) and
    leaves them unchanged."""
    inputs, got = check_parity(target, case, dtype, options)
    assert torch.equal(got[4], inputs.running_mean) and torch.equal(got[5], inputs.running_var)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=_id)
def test_eval_output_survives_a_training_step_before_backward(target, dtype):
    """Eval forward, a training step updating the same running statistics in place, then the eval
    output's backward (torch allows this): what autograd kept must not be the running statistics."""
    device, backend = target
    case = Case("small", (2, 3, 4), "batch")
    case = tiny(case, (2, 3, 1, 2)) if interpreted(target) else case
    options = Options("gelu", training=False)
    inputs = make_inputs(case, dtype, device, options)
    want = run("reference", case, inputs, options)
    x = inputs.x.detach().clone().requires_grad_()
    args = (inputs.weight, inputs.bias, inputs.running_mean, inputs.running_var)
    with medkern.use_backend(backend):
        y = medkern.ops.norm_act(x, "batch", *args, training=False, act="gelu")
        medkern.ops.norm_act(inputs.x + 1, "batch", *args, training=True, act="gelu")
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y)
        (dx,) = torch.autograd.grad(y, x, g)
    tolerances.assert_close(dx, want[1], "norm_act", "grad", dtype, "dx")


@pytest.mark.parametrize("target,case", with_targets(kinds("4d", (2, 4, 3, 3), None, only=("batch",)),
                                                     [Case("cl", (2, 4, 1, 2), "batch", None, "channels_last")]))
def test_eval_without_running_statistics_uses_batch_statistics(target, case):
    device, backend = target
    options = Options("lrelu", 0.2, training=False)
    inputs = make_inputs(case, torch.float64, device, options, running=False)
    got = run(backend, case, inputs, options)
    assert_matches(got, run("reference", case, inputs, options.with_(training=True)), inputs, "eval, no running")


@pytest.mark.parametrize("target,kind", with_targets(list(TORCH_NORMS), ["batch"]))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=_id)
def test_half_input_with_float32_parameters_and_statistics(target, kind, dtype):
    """Half x, float32 weight, bias and running statistics: a training step, then eval. The
    statistics are accumulated in float32 from x's exact values, so they are as float32's."""
    device, _ = target
    case = Case("cl", (2, 4, 2, 3), kind, None, "channels_last")
    for options in (Options("lrelu", 0.2), Options("lrelu", 0.2, training=False)):
        inputs, got = check_parity(target, case, dtype, options, param_dtype=torch.float32, running=True)
        want = oracle(case, inputs, options)
        for name, i in (("running_mean", 4), ("running_var", 5)):
            assert got[i].dtype == torch.float32
            tolerances.assert_close(got[i], want[i], "norm_act", "forward", torch.float32, name)


# --- gradients -----------------------------------------------------------------------------------

GRAD_OPTIONS = [Options("lrelu", 0.2), Options("lrelu", 0.2, memory_saving=False), Options("elu", 0.7),
                Options("elu", 0.7, memory_saving=False), Options("linear"), Options("tanh"), Options("gelu")]
GRAD_KINDS = kinds("small", (2, 4, 3), 2)
GRADCHECK_CASES = [(c, o) for c in GRAD_KINDS for o in GRAD_OPTIONS] + [
    (Case("small", (2, 4, 3), kind), Options("lrelu", 0.2, training=False)) for kind in ("batch", "instance")]
GRADCHECK_INTERPRETER = [(tiny(c, (2, 4, 1, 2)), o) for c, o in GRADCHECK_CASES[::8]]


def _differentiable(case, options, device):
    inputs = make_inputs(case, torch.float64, device, options, scale=1.0)
    tensors = [t.requires_grad_() for t in (inputs.x, inputs.weight, inputs.bias)]

    def fn(x, weight, bias):
        # running statistics are read, not updated, in eval; in training each call updates a copy
        running = [t.clone() if t is not None else None for t in (inputs.running_mean, inputs.running_var)]
        return medkern.ops.norm_act(x, case.kind, weight, bias, *running, options.training, options.momentum,
                                    options.eps, options.act, options.alpha, case.num_groups, options.memory_saving)

    return fn, tensors


@pytest.mark.parametrize("target,case,options", with_targets(GRADCHECK_CASES, GRADCHECK_INTERPRETER))
def test_gradcheck(target, case, options):
    device, backend = target
    fn, tensors = _differentiable(case, options, device)
    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, tensors, fast_mode=interpreted(target))


GRADGRAD_CASES = [(c, o.with_(memory_saving=False)) for c in GRAD_KINDS
                  for o in (Options("elu", 0.7), Options("gelu"), Options("lrelu", 0.2))] + [
    (Case("small", (2, 4, 3), "batch"), Options("tanh", memory_saving=False, training=False))]


@pytest.mark.parametrize("target,case,options", with_targets(
    GRADGRAD_CASES, [(tiny(c, (2, 4, 1, 2)), o) for c, o in GRADGRAD_CASES[2::5]]))
def test_gradgradcheck(target, case, options):
    """Second order runs through the reference on the kept x (memory_saving=False). Fast mode (random
    projections): the slow one makes hundreds of kernel calls, and test_gradcheck checks every
    first-order entry."""
    device, backend = target
    fn, tensors = _differentiable(case, options, device)
    with medkern.use_backend(backend):
        assert torch.autograd.gradgradcheck(fn, tensors, fast_mode=True)


def _second_order(backend, case, inputs, options):
    x = inputs.x.detach().clone().requires_grad_()
    with medkern.use_backend(backend):
        y = medkern.ops.norm_act(x, case.kind, inputs.weight, inputs.bias, act=options.act, alpha=options.alpha,
                                 num_groups=case.num_groups, memory_saving=options.memory_saving)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y) + x.detach(), create_graph=True)
        return torch.autograd.grad(gx.square().sum(), x)[0]


@pytest.mark.parametrize("target", kernel_targets())
def test_second_order_through_memory_saving_is_a_clear_error(target):
    device, backend = target
    case = Case("small", (2, 3, 4), "batch")
    case = tiny(case, (2, 3, 1, 2)) if interpreted(target) else case
    for options in (Options("lrelu", 0.2), Options("linear")):  # y kept: no x to differentiate again
        inputs = make_inputs(case, torch.float64, device, options)
        with pytest.raises(RuntimeError, match="second-order gradients need x.*memory_saving=False"):
            _second_order(backend, case, inputs, options)
    options = Options("relu")  # x kept anyway: second order works
    inputs = make_inputs(case, torch.float64, device, options)
    tolerances.assert_close(_second_order(backend, case, inputs, options),
                            _second_order("reference", case, inputs, options), "norm_act", "grad", torch.float64)


@pytest.mark.parametrize("target,case,grad_layout", with_targets(
    [(c, g) for c in kinds("cl", (2, 4, 3, 2), 2, "channels_last") for g in ("expanded", "contiguous")],
    [(Case("cl", (1, 4, 1, 2), "instance", None, "channels_last"), "contiguous")]))
def test_upstream_gradient_in_another_layout(target, case, grad_layout):
    """y.sum().backward() hands backward an expanded gradient; a later op may hand it another layout."""
    device, backend = target
    options = Options("lrelu", 0.2)
    inputs = make_inputs(case, torch.float32, device, options)
    shape = inputs.x.shape
    g = torch.ones((), device=device).expand(shape) if grad_layout == "expanded" else torch.randn(shape, device=device)

    def grads(backend_name):
        x, w = (t.detach().clone().requires_grad_() for t in (inputs.x, inputs.weight))
        with medkern.use_backend(backend_name):
            y = medkern.ops.norm_act(x, case.kind, w, inputs.bias, act="lrelu", alpha=0.2, num_groups=case.num_groups)
            assert y.stride() != g.stride() or backend_name == "reference"
            return torch.autograd.grad(y, (x, w), g)

    for got, want in zip(grads(backend), grads("reference")):
        tolerances.assert_close(got, want, "norm_act", "grad", torch.float32)


# --- opcheck ---------------------------------------------------------------------------------------

OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]  # Triton's interpreter cannot be traced
OPCHECK_CASES = [  # (case, options, weight, bias)
    (Case("4d", (2, 4, 3, 3), "batch"), Options("lrelu", 0.2), True, True),
    (Case("4d", (2, 4, 3, 3), "group", 2), Options("gelu"), True, False),
    (Case("4d", (2, 4, 3, 3), "instance"), Options("elu", 0.7, training=False), True, True),
    (Case("cl", (2, 4, 3, 3), "batch", None, "channels_last"), Options("silu"), False, False),
]
# float64: running statistics in the statistics' own dtype, which must still come out as new tensors
OPCHECK_DTYPES = [torch.float32, torch.float32, torch.float64, torch.float64]


def _op_pair(backend):
    if backend == "triton":
        import medkern.triton.norm_act as triton_norm_act

        return triton_norm_act.forward_op(), triton_norm_act.backward_op()
    return torch.ops.medkern.norm_act.default, torch.ops.medkern.norm_act_backward.default


@pytest.mark.parametrize("target,case,options,weight,bias,dtype", with_targets(
    [(*c, d) for c, d in zip(OPCHECK_CASES, OPCHECK_DTYPES)],
    [(Case("cl", (1, 4, 1, 2), "batch", None, "channels_last"), Options("elu", 0.7), True, True, torch.float32)]))
def test_opcheck(target, case, options, weight, bias, dtype):
    """torch.library.opcheck of the forward and backward ops: schema (no output aliases another or an
    input), autograd registration, fake kernels, AOT dispatch with dynamic shapes."""
    device, backend = target
    forward, backward = _op_pair(backend)
    utils = OPCHECK_INTERPRETED if interpreted(target) else OPCHECK_ALL
    x, w, b, rm, rv = make_inputs(case, dtype, device, options, weight=weight, bias=bias).tensors()
    alpha = options.resolved_alpha()
    batch_stats = options.training or rm is None
    keep = keeps_output(options.act, alpha, w, b, options.memory_saving)
    groups = case.num_groups or 1
    args = (x, case.kind, w, b, rm, rv, batch_stats, options.eps, options.act, alpha, groups, keep)
    torch.library.opcheck(forward, _requiring_grad(args, (0, 2, 3)), test_utils=utils)  # x, weight, bias
    y, mean, var = forward(*args)
    saved = y if keep else x
    g = torch.randn_like(saved)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        args = (g, saved, keep, mean, var, w, b, case.kind, batch_stats, options.eps, options.act, alpha, groups, mask)
        # differentiating the backward needs x: from a kept y it is an error (test_second_order_...)
        torch.library.opcheck(backward, args if keep else _requiring_grad(args, (0, 1, 5, 6)), test_utils=utils)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("kind,training", [("batch", True), ("instance", False), ("group", True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=_id)  # bfloat16: converted to float first
def test_ops_read_strided_channel_vectors(target, kind, training, dtype):
    """Per-channel vectors (weight, bias, running statistics) and the backward's mean and var given as
    strided views give the ops' results for their contiguous copies."""
    device, backend = target
    forward, backward = _op_pair(backend)
    x = torch.randn(2, 4, 3, 5, device=device).to(dtype=dtype, memory_format=torch.channels_last)
    every_other = lambda t: torch.stack([t, torch.full_like(t, float("nan"))], 1).flatten()[::2]  # noqa: E731
    w, b = torch.rand(4, dtype=x.dtype, device=device) + 0.5, torch.randn(4, dtype=x.dtype, device=device)
    rm, rv = (None, None) if kind == "group" else (torch.randn(4, dtype=x.dtype, device=device),
                                                   torch.rand(4, dtype=x.dtype, device=device) + 0.5)
    groups = 2 if kind == "group" else 1
    options = (training or rm is None, 1e-5, "lrelu", 0.2, groups)
    strided = [None if t is None else every_other(t) for t in (w, b, rm, rv)]
    assert not strided[0].is_contiguous()
    y, mean, var = forward(x, kind, w, b, rm, rv, *options, False)
    y_s, mean_s, var_s = forward(x, kind, *strided, *options, False)
    torch.testing.assert_close((y_s, mean_s, var_s), (y, mean, var), rtol=0, atol=0)
    g, mask = torch.randn_like(x), [True, True, True]
    grads = backward(g, x, False, mean, var, w, b, kind, *options[:-1], groups, mask)
    grads_s = backward(g, x, False, every_other(mean), every_other(var), *strided[:2], kind, *options[:-1], groups,
                       mask)
    torch.testing.assert_close(grads_s, grads, rtol=0, atol=0)


def _requiring_grad(args, positions):
    """args with the tensors at ``positions`` as fresh leaves requiring grad."""
    return tuple(a.detach().clone().requires_grad_() if i in positions and a is not None else a
                 for i, a in enumerate(args))


# --- what autograd keeps ---------------------------------------------------------------------------


def _saved_tensors(fn):
    """(fn's result, the tensors autograd saved while it ran)."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return fn(), saved


def _medium(kind, num_groups=None):
    """A case whose x-sized tensors stand out from the per-channel and per-group ones."""
    return Case("m", (2, 4, 5, 6), kind, num_groups)


KEEPS = [  # (case, options, weight, what is kept)
    (_medium("batch"), Options("linear"), True, "y"),
    (_medium("instance"), Options("lrelu", 0.2), True, "y"),
    (_medium("group", 2), Options("elu", 0.7), True, "x"),  # ELU keeps x (saturation)
    (_medium("batch"), Options("lrelu", 0.2, training=False), True, "y"),
    (_medium("instance"), Options("lrelu", 0.1), False, "y"),  # no weight: always recoverable
    (_medium("batch"), Options("elu", 0.7, memory_saving=False), True, "x"),
    (_medium("group", 4), Options("lrelu", 0.0), True, "x"),  # alpha 0: not invertible
    (_medium("batch"), Options("lrelu", -0.1), True, "x"),  # nor is a negative slope
    (_medium("instance"), Options("relu"), True, "x"),
    (_medium("group", 1), Options("gelu"), True, "x"),
]


@pytest.mark.parametrize("target,case,options,weight,kept", with_targets(
    KEEPS, [(tiny(k[0]), *k[1:]) for k in KEEPS[::3]]))
def test_keeps_one_x_sized_tensor(target, case, options, weight, kept):
    """Autograd keeps y (invertible activation, memory_saving) or x, never both, plus small tensors."""
    device, backend = target
    inputs = make_inputs(case, torch.float32, device, options, weight=weight)
    x = inputs.x.requires_grad_()
    with medkern.use_backend(backend):
        y, saved = _saved_tensors(lambda: medkern.ops.norm_act(
            x, case.kind, inputs.weight, inputs.bias, inputs.running_mean, inputs.running_var, options.training,
            act=options.act, alpha=options.alpha, num_groups=case.num_groups, memory_saving=options.memory_saving))
    large = [t for t in saved if t.numel() >= x.numel()]
    assert len(large) == 1, f"kept {[tuple(t.shape) for t in saved]}"
    assert large[0].data_ptr() == {"y": y, "x": x}[kept].data_ptr(), f"expected {kept} to be kept"
    assert all(t.numel() <= x.shape[0] * x.shape[1] for t in saved if t is not large[0])


@pytest.mark.parametrize("target,kind", with_targets(["batch", "instance", "group"], ["instance"]))
def test_small_weight_keeps_x_and_gradients_stay_exact(target, kind):
    """|bias| > RECOVERY_MAX_SHIFT * |weight| in one channel: recovering xhat = (y - bias) / weight
    from y would lose log2(|bias| / |weight|) ~ 18 bits there (dweight 10-200x the tolerance when
    forced), so x is kept instead."""
    device, backend = target
    case = Case("w", (1, 3, 8) if interpreted(target) else (4, 3, 16), kind, 3 if kind == "group" else None)
    options = Options("lrelu", 0.2)
    inputs = make_inputs(case, torch.float32, device, options)
    inputs.weight = torch.tensor([1e-5, 1.0, -1.0], device=device)
    inputs.bias = torch.tensor([2.0, -0.2, 0.1], device=device)
    x = inputs.x.requires_grad_()
    with medkern.use_backend(backend):
        _, saved = _saved_tensors(lambda: medkern.ops.norm_act(x, kind, inputs.weight, inputs.bias, act="lrelu",
                                                               alpha=0.2, num_groups=case.num_groups))
    assert any(t.data_ptr() == x.data_ptr() for t in saved), "x is kept"
    assert_matches(run(backend, case, inputs, options), oracle(case, inputs, options), inputs, "small weight")


SATURATING_BIAS = {torch.float32: -20.0, torch.float16: -9.0, torch.bfloat16: -7.0}


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", list(SATURATING_BIAS), ids=_id)
def test_saturating_elu_gradients_are_finite_and_exact(target, dtype):
    """ELU saturates: y = alpha * (exp(z) - 1) rounds to -alpha where exp(z) is below y's rounding
    (z < -17 in float32, -8 in float16, -6 in bfloat16), and z = log1p(y / alpha) cannot be
    recovered from it (-inf; many digits lost near there). Here |bias| <= 16 |weight|, so the
    weight test alone would keep y; the gradients must still be the reference's."""
    device, backend = target
    case = Case("saturating", (4, 2, 16), "batch")
    case = tiny(case, (2, 2, 1, 8)) if interpreted(target) else case
    options = Options("elu", 1.0)  # continuous derivative at 0: no kink to avoid
    inputs = make_inputs(case, dtype, device, options)
    inputs.weight = torch.tensor([2.0, 1.0], dtype=dtype, device=device)
    inputs.bias = torch.tensor([SATURATING_BIAS[dtype], 0.0], dtype=dtype, device=device)
    assert_matches(run(backend, case, inputs, options), oracle(case, inputs, options), inputs, "saturating elu")


@pytest.mark.parametrize(
    "weight,bias,keeps",
    [([1.0, -2.0], [16.0, -32.0], True), ([1.0, -2.0], [16.0, -33.0], False), ([0.0, 1.0], [0.0, 0.0], False),
     ([0.0, 1.0], None, False), (None, [100.0, 0.0], True), ([1e-30, 1.0], None, True)],
)
def test_keeps_output_only_where_recoverable(weight, bias, keeps):
    """y is kept while |bias| <= RECOVERY_MAX_SHIFT * |weight| and weight != 0 in every channel."""
    assert RECOVERY_MAX_SHIFT == 16.0
    w, b = (torch.tensor(v) if v is not None else None for v in (weight, bias))
    assert keeps_output("lrelu", 0.2, w, b) is keeps
    assert keeps_output("lrelu", 0.2, w, b, memory_saving=False) is False
    assert keeps_output("relu", 0.0, w, b) is False


# --- bad input -------------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(kind="layer"), ValueError, "unknown kind='layer'"),
    (dict(kind="group", num_groups=4), ValueError, "num_groups must be a positive int dividing the 6 channels"),
    (dict(kind="group"), ValueError, "num_groups must be a positive int"),
    (dict(kind="group", num_groups=0), ValueError, "num_groups must be a positive int"),
    (dict(kind="group", num_groups=2.0), ValueError, "num_groups must be a positive int"),
    (dict(num_groups=2), ValueError, "num_groups is for kind='group' only"),
    (dict(weight=torch.randn(5)), ValueError, r"weight must be 1-d with x.shape\[1\] = 6"),
    (dict(weight=torch.randn(6, 1)), ValueError, "weight must be 1-d"),
    (dict(weight=torch.randn(6).double()), TypeError, "weight must have dtype torch.float32"),
    (dict(weight=torch.randn(6, device="meta")), ValueError, r"weight must be on cpu \(the device of x\), got meta"),
    (dict(weight=[1.0] * 6), TypeError, "weight must be a torch.Tensor or None"),
    (dict(bias=torch.randn(7)), ValueError, "bias must be 1-d"),
    (dict(x=torch.randn(2, 6, 3).half(), weight=torch.randn(6).double()), TypeError,
     "weight must have dtype torch.float16 .* or float32"),
    (dict(running_mean=torch.zeros(6)), ValueError, "running_mean and running_var must be given together"),
    (dict(running_var=torch.ones(6)), ValueError, "running_mean and running_var must be given together"),
    (dict(running_mean=torch.zeros(5), running_var=torch.ones(5)), ValueError, "running_mean must be 1-d"),
    (dict(kind="group", num_groups=2, running_mean=torch.zeros(6), running_var=torch.ones(6)), ValueError,
     "group norm keeps no running statistics"),
    (dict(x=torch.randn(6)), ValueError, "x must be .* at least 2 dims"),
    (dict(x=torch.randint(0, 3, (2, 6, 3))), TypeError, "x must be float32"),
    (dict(x=[[1.0] * 6] * 2), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.randn(1, 6)), ValueError, "more than 1 value per channel"),
    (dict(x=torch.randn(1, 6, 1)), ValueError, "more than 1 value per channel"),
    (dict(kind="instance", x=torch.randn(4, 6, 1)), ValueError, "more than 1 spatial element"),
    (dict(act="swishy"), ValueError, "unknown activation act='swishy'"),
    (dict(act=None), TypeError, "act must be a string"),
    (dict(act="relu", alpha=0.1), ValueError, "act='relu' takes no alpha"),
    (dict(act="lrelu", alpha="0.1"), TypeError, "alpha must be a real number"),
    (dict(eps=-1e-5), ValueError, "eps must be >= 0"),
    (dict(eps=float("nan")), TypeError, "eps must be a finite real number"),
    (dict(momentum="0.1"), TypeError, "momentum must be a finite real number"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:32] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(x=torch.randn(2, 6, 3), kind="batch", weight=torch.randn(6), bias=torch.randn(6), act="linear")
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.norm_act(**args)
    assert "medkern.ops.norm_act" in str(info.value)


def _bad_op_calls(device):
    def t(*shape, dtype=torch.float32):
        return torch.randn(shape, device=device).to(dtype)

    x = t(2, 6, 3)
    fwd = dict(x=x, kind="batch", weight=None, bias=None, running_mean=None, running_var=None, batch_stats=True,
               eps=1e-5, act="relu", alpha=0.0, num_groups=1, keep_output=False)
    stats = (t(6, dtype=torch.float64), t(6, dtype=torch.float64).abs())
    bwd = dict(grad=x, saved=x, saved_is_output=False, mean=stats[0], var=stats[1], weight=None, bias=None,
               kind="batch", batch_stats=True, eps=1e-5, act="relu", alpha=0.0, num_groups=1,
               output_mask=[True, True, True])
    return [
        ("forward", fwd, dict(kind="layer"), "unknown kind='layer'"),
        ("forward", fwd, dict(kind="group", num_groups=4), "num_groups must be"),
        ("forward", fwd, dict(kind="group", num_groups=0), "num_groups must be"),
        ("forward", fwd, dict(weight=t(5)), "weight must be 1-d"),
        ("forward", fwd, dict(bias=t(6, dtype=torch.float64)), "bias must have dtype"),
        ("forward", fwd, dict(x=t(6)), "x must be"),
        ("forward", fwd, dict(x=torch.ones(2, 6, 3, dtype=torch.int32, device=device)), "x must be"),
        ("forward", fwd, dict(keep_output=True), "keep_output needs an activation"),
        ("forward", fwd, dict(batch_stats=False), "running_mean and running_var are required"),
        ("forward", fwd, dict(batch_stats=False, running_mean=t(5), running_var=t(5)), "running_mean must be 1-d"),
        ("forward", fwd, dict(kind="group", batch_stats=False, running_mean=t(6), running_var=t(6)), "group norm"),
        ("forward", fwd, dict(eps=-1.0), "eps must be"),
        ("forward", fwd, dict(act="nope"), "nope"),
        ("backward", bwd, dict(grad=t(2, 6, 4)), "grad must have the shape"),
        ("backward", bwd, dict(grad=t(2, 6, 3, dtype=torch.float64)), "grad must have dtype"),
        ("backward", bwd, dict(mean=stats[0][:5]), "mean must be 1-d with 6 elements"),
        ("backward", bwd, dict(kind="instance"), "mean must be 1-d with 12 elements"),
        ("backward", bwd, dict(saved_is_output=True), "saved_is_output needs an activation"),
        ("backward", bwd, dict(kind="group", num_groups=5), "num_groups must be"),
    ]


_BAD_OP_IDS = [f"{c[0]}-{'-'.join(c[2])}" for c in _bad_op_calls("cpu")]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("index", range(len(_BAD_OP_IDS)), ids=_BAD_OP_IDS)
def test_ops_check_their_arguments(target, index):
    """Direct torch.ops calls are checked in the op itself (TORCH_CHECK in C++), naming op and argument."""
    device, backend = target
    which, defaults, change, message = _bad_op_calls(device)[index]
    op = _op_pair(backend)[which == "backward"]
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message) as info:
        op(**{**defaults, **change})
    name = ("triton_" if backend == "triton" else "") + ("norm_act_backward" if which == "backward" else "norm_act")
    assert f"medkern::{name}:" in str(info.value)


# --- empty input, threads, torch.compile -----------------------------------------------------------

EMPTY = [((0, 3, 4), "batch"), ((2, 3, 0), "batch"), ((0, 3), "batch"), ((0, 3, 0), "batch"),
         ((0, 3, 4), "instance"), ((2, 3, 0), "instance"), ((0, 3), "instance"),
         ((0, 3, 4), "group"), ((2, 3, 0), "group"), ((0, 3), "group")]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape,kind", EMPTY, ids=[f"{k}-{'x'.join(map(str, s))}" for s, k in EMPTY])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_empty_input_behaves_like_torch(target, shape, kind, training, affine):
    """As the reference (torch's functional norms): an empty y, zero weight and bias gradients, the
    running statistics untouched, or an error where torch raises one."""
    device, backend = target
    case = Case("empty", shape, kind, 3 if kind == "group" else None)
    options = Options("elu", 0.7, training=training)
    inputs = make_inputs(case, torch.float32, device, options, weight=affine, bias=affine,
                         running=case.has_running_stats)
    try:
        want = run("reference", case, inputs, options)
    except IndexError:
        # torch's instance norm of an empty batch with weight or bias indexes its (empty) repeated
        # weight; medkern does what torch does without them: an empty y and zero gradients
        assert kind == "instance" and shape[0] == 0 and affine
        want = [torch.empty(shape), torch.empty(shape), torch.zeros(3), torch.zeros(3), None, None]
    except (ValueError, RuntimeError) as error:
        with pytest.raises(ValueError, match=f"medkern.ops.norm_act: .*{shape}") as info:
            run(backend, case, inputs, options)
        assert type(info.value) is ValueError, f"torch raises {error!r}"
        return
    if want[4] is None or (kind == "instance" and shape[0] == 0 and training):
        # torch's instance norm averages the statistics of no samples into its running statistics (NaN);
        # medkern leaves them untouched, as torch's batch norm does
        want[4:] = [inputs.running_mean, inputs.running_var]
    assert_matches(run(backend, case, inputs, options), want, inputs, "empty")


# big enough for several tasks per thread in both layouts (rows: three 4096-row blocks per sample)
THREAD_CASES = [Case("planes", (2, 3, 9000), "batch"), Case("planes", (2, 3, 9000), "instance"),
                Case("rows", (2, 8, 100, 100), "group", 2, "channels_last"),
                Case("rows", (2, 8, 100, 100), "batch", None, "channels_last")]


@pytest.mark.parametrize("case", THREAD_CASES, ids=_id)
@pytest.mark.parametrize("options", [Options("elu", 0.7), Options("gelu")], ids=_id)
def test_results_do_not_depend_on_the_thread_count(case, options):
    inputs = make_inputs(case, torch.float32, "cpu", options, running=case.has_running_stats)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(run("cpu", case, inputs, options))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert (one is None and many is None) or torch.equal(one, many)


@pytest.mark.parametrize("case", [Case("4d", (2, 4, 5, 5), "batch"), Case("cl", (2, 4, 5, 5), "group", 2,
                                                                          "channels_last")], ids=_id)
def test_torch_compile_fullgraph_forward_and_backward(case):
    """The cpu backend under torch.compile(fullgraph=True): forward, gradients and the running
    statistics' update match eager."""
    options = Options("lrelu", 0.2)
    inputs = make_inputs(case, torch.float32, "cpu", options, running=case.has_running_stats)

    def block(x, weight, bias, running_mean, running_var):
        y = medkern.ops.norm_act(x, case.kind, weight, bias, running_mean, running_var, act="lrelu", alpha=0.2,
                                 num_groups=case.num_groups)
        return y.square().mean()

    def step(fn):
        x, w, b = (t.detach().clone().requires_grad_() for t in inputs.tensors()[:3])
        running = [t.clone() if t is not None else None for t in inputs.tensors()[3:]]
        loss = fn(x, w, b, *running)
        return [loss, *torch.autograd.grad(loss, (x, w, b)), *running]

    with medkern.use_backend("cpu"):
        torch._dynamo.reset()
        got = step(torch.compile(block, fullgraph=True))
        want = step(block)
    for a, b in zip(got, want):
        if b is not None:
            tolerances.assert_close(a, b, "norm_act", "grad", torch.float32)


def test_triton_interpreter_refuses_torch_compile():
    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(lambda x: medkern.ops.norm_act(x, "batch"), fullgraph=True)(torch.randn(2, 3, 4))

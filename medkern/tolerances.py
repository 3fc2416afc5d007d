"""The one tolerance table: how close a kernel must come to the reference.

The oracle for float16 and bfloat16 inputs is the reference computed in float32 on the same
(upcast) inputs and rounded to the input dtype, since the kernels compute in float32 inside;
for float32 and float64 it is the reference in the same dtype.

Tolerances start from torch.testing.assert_close's defaults (float32: rtol 1.3e-6,
atol 1e-5; float16: 1e-3, 1e-5; bfloat16: 1.6e-2, 1e-5), tightened for float64, where the
kernels and torch evaluate the same formulas. ``atol`` is relative to the largest finite magnitude
in the expected tensor (at least 1): sums over many elements (bias gradients) carry rounding
error in proportion to their size, not to each element.

``grad2`` (second-order gradients) is looser for half types: the upstream product of two
gradients is rounded to the input dtype before the kernel sees it, as autograd does.
"""

from __future__ import annotations

import torch

# upfirdn2d: its gradient is the op again, so one entry serves both kinds (measured below)
_UPFIRDN2D = {
    torch.float64: (1e-12, 1e-16),
    torch.float32: (1e-5, 5e-7),
    torch.float16: (1e-3, 1e-7),
    torch.bfloat16: (8e-3, 1e-7),
}

# modulated_conv2d: one entry for forward and gradients (measured where it is used below)
_MODULATED_CONV2D = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (1e-5, 2e-6),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3.2e-2, 3.2e-2),
}

# medkern.verify: a swapped float32/half model may be off by this many times the original model's
# own error (both against a float64 run of the original), tensor by tensor
TORCH_ERROR_FACTOR = 4.0

# (family, kind) -> dtype -> (rtol, atol)
TOLERANCES = {
    # whole models after medkern.swap (medkern.verify, tests/test_swap*.py): the fused blocks' own
    # errors (norm_act, conv_act, rnn above) carried through many layers. Normwise (see
    # medkern/swapping/verification.py); below float64 judged against a float64 run, also allowing
    # TORCH_ERROR_FACTOR x torch's own error. Measured: see tests/test_swap_models.py.
    ("swapped_model", "forward"): {
        torch.float64: (1e-10, 1e-11),
        torch.float32: (1e-3, 1e-6),
        torch.float16: (3e-2, 1e-4),
        torch.bfloat16: (2e-1, 1e-3),
    },
    ("swapped_model", "grad"): {
        torch.float64: (1e-10, 1e-11),
        torch.float32: (1e-3, 1e-6),
        torch.float16: (3e-2, 1e-4),
        torch.bfloat16: (2e-1, 1e-3),
    },
    # medkern.models against their reference=True twins (tests/test_models_*.py): losses of 3
    # SGD-with-momentum steps, then every state_dict entry and the eval-mode output. The fused
    # blocks' rounding (norm_act, conv_act, rnn above) carried through the layers and the steps,
    # largest where instance norm normalizes tiny groups (4 positions at a small UNet's bottom).
    # Needed atol at rtol 0 (against max(1, largest value)), worst over 16 seeds x the test
    # configurations, CPU kernels: float64 classifier 8.8e-16, sequence 2.2e-16, UNet 3.4e-14;
    # float32 (smooth activations only, see KINKS in medkern/testing/models.py) classifier
    # 1.2e-6, sequence 2.1e-7, UNet 9.1e-6, where torch's own float32 run is off its float64 run
    # by 5.3e-7, 1.1e-7 and 1.2e-5. The atols leave about 5x (float64: 10x).
    # medkern bench's model cases (medkern/bench/cases/models.py): a whole model's output, swapped
    # (or compiled) against eager, judged elementwise. Measured float32 max |diff| on the DynUNet
    # step (2x1x48^3): medkern 1.1e-5, torch.compile 2.6e-5 (benchmarks/results/
    # cpu-2026-12-02-models-layouts); ResNet-18: below 1e-5. The atol leaves about 4x.
    ("model_step", "forward"): {
        torch.float64: (1e-10, 1e-11),
        torch.float32: (1e-5, 1e-4),
    },
    ("reference_model", "train"): {
        torch.float64: (1e-12, 3e-13),
        torch.float32: (1e-5, 5e-5),
    },
    ("bias_act", "forward"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1.3e-6, 1e-5),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    ("bias_act", "grad"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1.3e-6, 1e-5),
        torch.float16: (2e-3, 1e-3),
        torch.bfloat16: (1.6e-2, 8e-3),
    },
    ("bias_act", "grad2"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3.2e-2, 3.2e-2),
    },
    # norm_act (tests/test_norm_act.py, tests/test_cnn_modules.py). The kernels fold statistics and
    # affine into y = act(x * scale + shift), accumulate per segment (4096 elements, 32768 in the
    # CPU's channels-last blocks) in the op-math type and combine in float64; torch normalizes
    # (x - mean) * rstd. Both lose digits as |mean| / std grows, most in tiny statistics groups (instance norm of 3 positions, whose std
    # can be far below the channel offset), and the input gradient subtracts two group means from
    # dpre (cancellation), so errors are bounded against the largest value (atol's scale), not
    # each element. Half gradients are looser still: with memory_saving, xhat is recovered from y
    # rounded to the half dtype (one ulp, times up to 1 + |bias / weight|), and dweight and dbias
    # sum that over a channel. The half forward is one rounding of the output dtype from the
    # oracle's (rtol: one ulp, 2**-10 and 2**-7). Worst needed atol at these rtols over 10 seeds
    # of every parity case of the CPU kernels (ELU's memory-saving mode excluded: see
    # test_saturating_elu_gradients_are_finite_and_exact):
    #   forward  float64 2.1e-15, float32 3.3e-6 (instance norm of 3), float16 4.3e-7, bfloat16 5.7e-7
    #   grad     float64 2.4e-15 (9.3e-15: module parity vs torch over several steps),
    #            float32 4.7e-5 (instance norm of 3), float16 1.7e-3, bfloat16 1.0e-2 (lrelu's recovery)
    # The atols leave about 2x of that (float64: 10x, for GPUs' summation orders).
    ("norm_act", "forward"): {
        torch.float64: (1e-12, 2e-14),
        torch.float32: (1e-5, 8e-6),
        torch.float16: (1e-3, 1e-6),
        torch.bfloat16: (8e-3, 2e-6),
    },
    ("norm_act", "grad"): {
        torch.float64: (1e-12, 1e-13),
        torch.float32: (1e-5, 1e-4),
        torch.float16: (2e-3, 4e-3),
        torch.bfloat16: (1.6e-2, 2e-2),
    },
    # medkern::triton_conv_act (the triton backend of medkern.ops.conv_act) against the reference
    # (torch's convolution, then the epilogue). The kernel sums the K = C_in/groups * prod(kernel)
    # products in its own order (input-channel tiles per kernel tap, on tl.dot with float32
    # accumulation, IEEE products for float32) and the library in another: the sums differ by
    # rounding growing with K, typically sqrt(K) * eps of the sum of |products|, which can exceed
    # the output's largest magnitude (the scale of atol) where terms cancel. So float32 is looser
    # than a one-pass op's: 5e-6 leaves a margin of over 10x on the worst error seen over seeds
    # at K = 216 (about 2e-7 of the scale); float64 keeps 1e-12 (seen: 5e-16). float16 and
    # bfloat16 keep bias_act's forward tolerances: products of half inputs are exact in float32
    # and summed there, so the output is one rounding to the input dtype away from the oracle's,
    # at most one ulp (2**-10, 2**-7 relative) where the two sums straddle a rounding boundary.
    ("conv_act", "forward"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (3e-6, 5e-6),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    # Gradients: dz = grad * act'(z) at the kernel's z (its rounding above, scaled by act''/act'),
    # then the library's convolution backward sums dz against x or the weight over N * out_spatial
    # (weight) or C_out/groups * prod(kernel) (input) terms; the bias gradient sums dz. For float16
    # and bfloat16, dz is rounded to the input dtype before those sums (as autograd through the
    # library convolution does) while the oracle runs in float32 throughout: one rounding (2**-11,
    # 2**-8) per term, which after summing terms of either sign is bounded against the largest
    # gradient (atol's scale) rather than each element: atol = rtol = 2 ulps (worst seen: about
    # half of it).
    ("conv_act", "grad"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (3e-6, 5e-6),
        torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1.6e-2, 1.6e-2),
    },
    # rnn_sequence (tests/test_rnn.py, tests/test_rnn_triton.py, the RNN modules) against the
    # reference. float64/float32: the same formulas, per-step GEMMs summing in the library's
    # order; errors grow with the steps through the recurrence and, for gradients, through the
    # weight-gradient sums over T * B. float16/bfloat16: the kernels round h to the input dtype
    # at every step (as torch's half RNNs do; the cell state stays float32), the oracle keeps
    # float32 states, so each step adds half an ulp that later steps carry on (and the recurrent
    # layer norm scales up); the gradients also sum rounded products. Worst seen, against the
    # largest value (atol's scale), over the 16 cases of medkern/testing/rnn.py x 4 seeds on the
    # CPU kernels: forward float64 7.2e-16, float32 5.9e-7, float16 1.2e-3, bfloat16 1.9e-2;
    # grad float64 7.7e-15, float32 6.4e-6, float16 6.7e-3, bfloat16 5.1e-2. The atols leave
    # 1.5-4x of that (float64: 10x, for GPUs' summation orders).
    ("rnn", "forward"): {
        torch.float64: (1e-12, 1e-14),
        torch.float32: (1e-5, 2e-6),
        torch.float16: (1e-3, 2.5e-3),
        torch.bfloat16: (8e-3, 3e-2),
    },
    ("rnn", "grad"): {
        torch.float64: (1e-12, 1e-13),
        torch.float32: (1e-5, 2e-5),
        torch.float16: (2e-3, 1.2e-2),
        torch.bfloat16: (1.6e-2, 8e-2),
    },
    # Recurrent modules (tests/test_rnn_modules.py): medkern.nn.LSTM/GRU/RNN against torch's
    # modules with the same weights, and LayerNormLSTM/GRU against a per-step loop of their
    # formulas; outputs, h_n, c_n ("forward") and the gradients of the input, h0, c0 and every
    # parameter ("grad"), through up to 3 layers, 2 directions and 7 steps, float64 and float32.
    # Both sides evaluate the same formulas with different GEMM groupings (torch adds
    # x W_ih^T + b_ih + h W_hh^T + b_hh in its own order) and transcendental implementations, and
    # the differences travel through the recurrence, so atol (relative to the largest magnitude)
    # carries them. Worst needed atol at rtol 0, over 7 seeds x the 40 random configurations of
    # the module tests, cpu and reference backends: forward float64 3.5e-16, float32 1.8e-7; grad
    # float64 7.0e-16, float32 5.1e-7. The atols leave about 10x (float64) and 5x (float32).
    # Benchmark sequences (medkern/bench/cases/rnn.py: 100 steps, hidden 256), each output against
    # eager torch's. Rounding differences grow through a long recurrence, fastest in the
    # layer-norm LSTM (at random initialization its recurrence expands them about tenfold per
    # 30 steps): against a float64 run of its reference, float32 eager torch is off by 1.0e-3
    # after 100 steps, torch.compile by 6.2e-4, medkern by 8.3e-4, and medkern against eager by
    # 6.3e-4 (LSTM and GRU: 2.4e-7). float32 allows 3e-3; float64 the same growth from 1e-16.
    ("rnn_long", "forward"): {
        torch.float64: (1e-12, 1e-11),
        torch.float32: (1e-5, 3e-3),
    },
    ("rnn_module", "forward"): {
        torch.float64: (1e-12, 5e-15),
        torch.float32: (1e-5, 1e-6),
    },
    ("rnn_module", "grad"): {
        torch.float64: (1e-12, 1e-14),
        torch.float32: (1e-5, 3e-6),
    },
    # upfirdn2d (tests/test_upfirdn2d.py): each output sums at most taps_h * taps_w products, and
    # so does each gradient (the op again). The kernels multiply by the 2-d taps (a separable
    # filter's outer product, times gain, rounded once), the reference filters the zero-inserted
    # image in two passes: the sums differ by a few ulps of the sum of |products|, bounded against
    # the largest output (atol's scale). Half types: the kernels sum in float32 and round once, at
    # most one ulp (2**-10, 2**-7) from the rounded oracle. Needed atol at these rtols, worst over
    # the test cases, 10 seeds, forward and gradients, CPU kernel: float64 5.3e-18, float32 7.8e-8,
    # float16 1.8e-8, bfloat16 0. The atols leave over 5x of that (GPUs sum in other orders).
    ("upfirdn2d", "forward"): _UPFIRDN2D,
    ("upfirdn2d", "grad"): _UPFIRDN2D,
    # modulated_conv2d (tests/test_modulated_conv2d.py): modulate_weight, a grouped conv2d and
    # upfirdn2d composed, against the reference composition (float32 oracle for half types). Half
    # types round the modulated weight and the resampled image before the convolution, so errors
    # grow with the taps summed. Worst needed atol at rtol 0 (against the largest value), 3 seeds,
    # every resampling and demodulate case, forward / gradients: float64 0 / 4.0e-16, float32
    # 2.1e-7 / 2.4e-7, float16 8.5e-4 / 1.2e-3, bfloat16 6.9e-3 / 9.7e-3. 3x margin or more.
    ("modulated_conv2d", "forward"): _MODULATED_CONV2D,
    ("modulated_conv2d", "grad"): _MODULATED_CONV2D,
    # max_pool (tests/test_max_pool.py) against torch's max_pool: the forward copies an input value,
    # so it is exact. The gradient of an input sums the upstream gradients of the outputs whose
    # maximum it is (up to 9 of them in the test cases) in output order, as torch's CPU kernel
    # does, in float32 for half types, rounded once; the second order gathers. All measured exact
    # (0) in every dtype on the cpu and triton-interpreter backends; the entries allow one ulp of
    # rounding (rtol), for a GPU's torch that sums in another order.
    ("max_pool", "forward"): {dtype: (0.0, 0.0) for dtype in (torch.float64, torch.float32, torch.float16,
                                                               torch.bfloat16)},
    ("max_pool", "grad"): {
        torch.float64: (2.3e-16, 0.0),
        torch.float32: (1.2e-7, 0.0),
        torch.float16: (1e-3, 0.0),
        torch.bfloat16: (7.9e-3, 0.0),
    },
    ("max_pool", "grad2"): {dtype: (0.0, 0.0) for dtype in (torch.float64, torch.float32, torch.float16,
                                                             torch.bfloat16)},
    # pixel_norm and minibatch_stddev (tests/test_pixel_norm.py, tests/test_minibatch_stddev.py)
    # against the reference: one pass of the same formulas, sums in another order (channel order
    # per position; per-chunk partial sums for the minibatch statistics). float16/bfloat16 are
    # computed in float32 and rounded once, so the forward is at most one ulp of the input dtype
    # from the rounded oracle (rtol 2**-10, 2**-7 with margin); gradients sum products of rounded
    # inputs. Second-order gradients run through the reference (float32 for half types) on top
    # of the kernel, so they match it exactly here. Worst needed atol at rtol 0 (against the
    # largest value), over 4 seeds of every parity case (medkern/testing/pixel_norm.py,
    # minibatch_stddev.py), cpu and triton-interpreter backends:
    #   pixel_norm       forward float64 4.4e-16, float32 1.2e-7, float16 5.7e-5, bfloat16 7.5e-3
    #                    grad    float64 7.8e-16, float32 3.0e-7, float16 2.4e-7, bfloat16 2.0e-3
    #   minibatch_stddev forward float64 1.3e-16, float32 6.4e-8, float16 0,      bfloat16 0
    #                    grad    float64 1.7e-15, float32 9.0e-7, float16 9.9e-6, bfloat16 7.0e-3
    #   grad2 (both)     0 in every dtype
    # and at the rtols below, every needed atol is 0 except float32 grads (3.0e-7, 1.2e-8).
    # The atols leave 5x or more of that (float64: 50x, for GPUs' summation orders).
    ("pixel_norm", "forward"): {
        torch.float64: (1e-12, 1e-14),
        torch.float32: (1.3e-6, 1e-6),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    ("pixel_norm", "grad"): {
        torch.float64: (1e-12, 1e-13),
        torch.float32: (1e-5, 2e-6),
        torch.float16: (2e-3, 1e-4),
        torch.bfloat16: (1.6e-2, 1e-3),
    },
    ("pixel_norm", "grad2"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3.2e-2, 3.2e-2),
    },
    ("minibatch_stddev", "forward"): {
        torch.float64: (1e-12, 1e-14),
        torch.float32: (1.3e-6, 1e-6),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    ("minibatch_stddev", "grad"): {
        torch.float64: (1e-12, 1e-13),
        torch.float32: (1e-5, 2e-6),
        torch.float16: (2e-3, 1e-4),
        torch.bfloat16: (1.6e-2, 1e-3),
    },
    ("minibatch_stddev", "grad2"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3.2e-2, 3.2e-2),
    },
    # modulate_weight (tests/test_modulate_weight.py) against the reference: per (n, o) row one
    # sum of u^2 (and of g * u) in another order than torch's; gW sums over n, gs over (o, k).
    # float16/bfloat16 are computed in float32 and rounded once (forward: within one ulp of the
    # rounded oracle). Worst needed atol at rtol 0 (against max(1, largest value)) over 4 seeds
    # of every case of medkern/testing/modulate_weight.py, cpu and triton-interpreter backends:
    #   forward float64 2.2e-16, float32 1.2e-7, float16 0 (medkern check: one ulp), bfloat16 7.5e-3 (one ulp)
    #   grad    float64 5.6e-16, float32 3.0e-7, float16 1.4e-5, bfloat16 7.2e-3 (one ulp)
    #   grad2   0 in every dtype (through the reference on top of the kernel)
    # The entries are pixel_norm's: 5x or more of that for float64/float32/float16, and for
    # bfloat16 its rtol 2**-6, two ulps.
    ("modulate_weight", "forward"): {
        torch.float64: (1e-12, 1e-14),
        torch.float32: (1.3e-6, 1e-6),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    ("modulate_weight", "grad"): {
        torch.float64: (1e-12, 1e-13),
        torch.float32: (1e-5, 2e-6),
        torch.float16: (2e-3, 1e-4),
        torch.bfloat16: (1.6e-2, 1e-3),
    },
    ("modulate_weight", "grad2"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3.2e-2, 3.2e-2),
    },
}


def tolerance(family: str, kind: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing ``family``'s ``kind`` outputs of ``dtype``."""
    try:
        return TOLERANCES[(family, kind)][dtype]
    except KeyError:
        raise KeyError(f"no tolerance for {family} {kind} {dtype}; add it to medkern/tolerances.py") from None


def oracle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference runs in to judge a kernel of ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute difference, in float64."""
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def bounds(expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing with ``expected``: the table's, atol scaled as described above."""
    rtol, atol = tolerance(family, kind, dtype)
    finite = expected[torch.isfinite(expected)]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    return rtol, atol * scale


def assert_close(actual: torch.Tensor, expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype, msg=""):
    """torch.testing.assert_close with the table's tolerances (atol scaled as described above)."""
    rtol, atol = bounds(expected, family, kind, dtype)
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, rtol=rtol, atol=atol, equal_nan=True,
        msg=lambda default: f"{msg}: {default}" if msg else default,
    )


def within(actual: torch.Tensor, expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype):
    """(largest error as a fraction of what is allowed, ok): assert_close's test as values.

    A fraction above 1 fails; NaN where both are NaN, and equal infinities, count as equal.
    """
    rtol, atol = bounds(expected, family, kind, dtype)
    a, e = actual.to(expected.dtype).double(), expected.double()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    ratio = torch.where(same, torch.zeros_like(a), (a - e).abs() / (atol + rtol * e.abs()))
    worst = ratio.max().item() if ratio.numel() else 0.0
    return worst, bool(worst <= 1.0)

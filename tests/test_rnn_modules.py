"""medkern.nn's recurrent layers: LSTM, GRU and RNN against torch's modules with the same weights
(outputs, final states and every gradient, over randomized configurations), state_dict round
trips, inter-layer dropout, and LayerNormLSTM / LayerNormGRU against a per-step loop written here
from their documented formulas (zoneout, recurrent dropout, packing, both directions)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import medkern
from medkern import tolerances
from medkern.nn import GRU, LSTM, RNN, LayerNormGRU, LayerNormLSTM

BACKENDS = ["cpu", "reference"]
DTYPES = [torch.float64, torch.float32]
TORCH_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
MEDKERN_CLASSES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
INPUTS = ("padded", "unbatched", "packed_sorted", "packed_unsorted")

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: more threads only add synchronization, which multiplied this file's
    time by 20 while other work shared the machine (medkern's results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Config:
    kind: str  # lstm, gru, rnn (torch's modules) or ln_lstm, ln_gru (medkern's layer-norm ones)
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    dropout: float = 0.0
    proj_size: int = 0
    nonlinearity: str = "tanh"
    inputs: str = "padded"
    given_state: bool = False
    steps: int = 5
    batch: int = 3
    zoneout: float = 0.0
    recurrent_dropout: float = 0.0

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_size(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def has_cell(self) -> bool:
        return self.kind in ("lstm", "ln_lstm")

    def __str__(self):
        return "-".join(f"{k}={v}" for k, v in vars(self).items())


def random_configs(count: int, seed: int) -> list[Config]:
    """Seeded configurations of torch's three modules, every option drawn independently."""
    rng = random.Random(seed)
    configs = []
    for _ in range(count):
        kind = rng.choice(["lstm", "lstm", "gru", "rnn"])
        hidden = rng.randint(5, 9)
        layers = rng.randint(1, 3)
        configs.append(Config(
            kind=kind, input_size=rng.randint(2, 6), hidden_size=hidden, num_layers=layers,
            bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.4, bias=rng.random() < 0.75,
            dropout=0.3 if layers > 1 and rng.random() < 0.3 else 0.0,
            proj_size=rng.randint(1, hidden - 1) if kind == "lstm" and rng.random() < 0.4 else 0,
            nonlinearity=rng.choice(["tanh", "relu"]) if kind == "rnn" else "tanh",
            inputs=rng.choice(INPUTS), given_state=rng.random() < 0.5, steps=rng.randint(1, 7),
            batch=rng.randint(1, 4)))
    return configs


CONFIGS = random_configs(40, seed=2024)


def _module_kwargs(cfg: Config) -> dict:
    kwargs = dict(num_layers=cfg.num_layers, bias=cfg.bias, batch_first=cfg.batch_first, dropout=cfg.dropout,
                  bidirectional=cfg.bidirectional)
    if cfg.kind == "lstm":
        kwargs["proj_size"] = cfg.proj_size
    if cfg.kind == "rnn":
        kwargs["nonlinearity"] = cfg.nonlinearity
    return kwargs


def torch_module(cfg: Config, dtype=torch.float64) -> nn.Module:
    return TORCH_CLASSES[cfg.kind](cfg.input_size, cfg.hidden_size, **_module_kwargs(cfg), dtype=dtype)


def medkern_module(cfg: Config, dtype=torch.float64) -> nn.Module:
    return MEDKERN_CLASSES[cfg.kind](cfg.input_size, cfg.hidden_size, **_module_kwargs(cfg), dtype=dtype)


def make_inputs(cfg: Config, dtype, generator_seed: int = 0):
    """(module input maker, input leaf, hx or None, state leaves, lengths or None) for ``cfg``.

    The maker packs packed input afresh from a padded leaf (so each run has its own graph and the
    gradient is the padded tensor's; padded positions get none). Lengths of packed batches run
    from 1 to ``steps`` (the longest is there).
    """
    g = torch.Generator().manual_seed(generator_seed)
    T, B, I = cfg.steps, cfg.batch, cfg.input_size
    unbatched = cfg.inputs == "unbatched"
    shape = (T, I) if unbatched else ((B, T, I) if cfg.batch_first else (T, B, I))
    leaf = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    make_input, lengths = (lambda: leaf), None
    if cfg.inputs.startswith("packed"):
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[torch.randint(0, B, (1,), generator=g)] = T
        if cfg.inputs == "packed_sorted":
            lengths = lengths.sort(descending=True).values
        make_input = lambda: pack_padded_sequence(leaf, lengths, batch_first=cfg.batch_first,  # noqa: E731
                                                  enforce_sorted=cfg.inputs == "packed_sorted")
    stacked = cfg.num_layers * cfg.directions
    lead = (stacked,) if unbatched else (stacked, B)
    states = []
    if cfg.given_state:
        states.append(torch.randn(*lead, cfg.state_size, generator=g, dtype=dtype).requires_grad_())
        if cfg.has_cell:
            states.append(torch.randn(*lead, cfg.hidden_size, generator=g, dtype=dtype).requires_grad_())
    hx = None if not states else (tuple(states) if cfg.has_cell else states[0])
    return make_input, leaf, hx, states, lengths


def outputs_of(result) -> list[torch.Tensor]:
    """[output tensor (a PackedSequence's data), h_n, (c_n)] of a module's result."""
    output, hidden = result
    output = output.data if isinstance(output, PackedSequence) else output
    return [output] + (list(hidden) if isinstance(hidden, tuple) else [hidden])


def run_with_grads(module: nn.Module, make_input, leaf, hx, states, upstream_seed: int = 1):
    """(outputs, gradients by name, result) of sum(output * u) over outputs, for the input, states and
    parameters."""
    result = module(make_input(), hx)
    outs = outputs_of(result)
    g = torch.Generator().manual_seed(upstream_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    named = dict(module.named_parameters())
    wrt = {"input": leaf, **{f"hx[{i}]": s for i, s in enumerate(states)}, **named}
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    grads = {k: (torch.zeros_like(v) if gr is None else gr) for (k, v), gr in zip(wrt.items(), grads)}
    return [o.detach() for o in outs], grads, result


def assert_same(got_outs, got_grads, want_outs, want_grads, dtype, what=""):
    names = ["output", "h_n", "c_n"]
    assert len(got_outs) == len(want_outs)
    for name, got, want in zip(names, got_outs, want_outs):
        assert got.shape == want.shape, f"{what} {name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        tolerances.assert_close(got, want, "rnn_module", "forward", dtype, f"{what} {name}")
    assert list(got_grads) == list(want_grads)
    for name in want_grads:
        tolerances.assert_close(got_grads[name], want_grads[name], "rnn_module", "grad", dtype, f"{what} grad of {name}")


# --- LSTM, GRU, RNN against torch --------------------------------------------------------------


def test_configurations_cover_every_option():
    seen = lambda pred: any(pred(c) for c in CONFIGS)  # noqa: E731
    for inputs in INPUTS:
        assert seen(lambda c: c.inputs == inputs)
    assert seen(lambda c: c.proj_size and c.bidirectional) and seen(lambda c: c.proj_size and c.num_layers > 1)
    assert seen(lambda c: c.kind == "rnn" and c.nonlinearity == "relu") and seen(lambda c: not c.bias)
    assert seen(lambda c: c.dropout > 0) and seen(lambda c: c.num_layers == 3 and c.bidirectional)
    assert seen(lambda c: c.batch_first and c.inputs.startswith("packed")) and seen(lambda c: c.steps == 1)
    for kind in TORCH_CLASSES:
        assert seen(lambda c: c.kind == kind and c.given_state) and seen(lambda c: c.kind == kind and not c.given_state)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{i:02d}-{c.kind}" for i, c in enumerate(CONFIGS)])
def test_matches_torch_module(cfg, dtype, backend):
    """Outputs, h_n, c_n and the gradients of the input, h0, c0 and every parameter equal torch's."""
    reference = torch_module(cfg, dtype).eval()  # dropout > 0: off in eval, as torch's
    module = MEDKERN_CLASSES[cfg.kind].from_torch(reference)
    assert type(module) is MEDKERN_CLASSES[cfg.kind] and not module.training
    make_input, leaf, hx, states, _ = make_inputs(cfg, dtype)
    want_outs, want_grads, want = run_with_grads(reference, make_input, leaf, hx, states)
    with medkern.use_backend(backend):
        got_outs, got_grads, got = run_with_grads(module, make_input, leaf, hx, states)
    if isinstance(want[0], PackedSequence):
        assert isinstance(got[0], PackedSequence)
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            a, b = getattr(got[0], field), getattr(want[0], field)
            assert (a is None and b is None) or torch.equal(a, b), field
    assert_same(got_outs, got_grads, want_outs, want_grads, dtype, str(cfg))


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{i:02d}-{c.kind}" for i, c in enumerate(CONFIGS)])
def test_matches_torch_module_with_each_cpu_gemm(cfg, rnn_cpu_gemm):
    """The float32 parity above with each choice of the CPU's GEMMs, whichever this CPU picks."""
    reference = torch_module(cfg, torch.float32).eval()
    module = MEDKERN_CLASSES[cfg.kind].from_torch(reference)
    make_input, leaf, hx, states, _ = make_inputs(cfg, torch.float32)
    want_outs, want_grads, _ = run_with_grads(reference, make_input, leaf, hx, states)
    with medkern.use_backend("cpu"):
        got_outs, got_grads, _ = run_with_grads(module, make_input, leaf, hx, states)
    assert_same(got_outs, got_grads, want_outs, want_grads, torch.float32, f"{rnn_cpu_gemm} {cfg}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_inter_layer_dropout_in_training_is_f_dropout_of_each_layer_output(backend):
    """In training, layer k + 1 reads F.dropout(output of layer k) (the same draws, by seeding);
    the last layer's output is not dropped."""
    torch.manual_seed(3)
    module = LSTM(4, 6, num_layers=3, dropout=0.4, bidirectional=True, proj_size=3, dtype=torch.float64)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    layers = []
    for k in range(3):
        layer = nn.LSTM(4 if k == 0 else 6, 6, bidirectional=True, proj_size=3, dtype=torch.float64)
        layer.load_state_dict({name.replace(f"_l{k}", "_l0"): value for name, value in module.state_dict().items()
                               if f"_l{k}" in name})
        layers.append(layer)
    with medkern.use_backend(backend):
        torch.manual_seed(11)
        y, (h_n, c_n) = module.train()(x)
        y_eval, _ = module.eval()(x)
    torch.manual_seed(11)
    h, hs, cs = x, [], []
    for k, layer in enumerate(layers):
        h, (hk, ck) = layer(h)
        hs.append(hk)
        cs.append(ck)
        if k < 2:
            h = F.dropout(h, 0.4, training=True)
    tolerances.assert_close(y, h, "rnn_module", "forward", torch.float64, "output")
    tolerances.assert_close(h_n, torch.cat(hs), "rnn_module", "forward", torch.float64, "h_n")
    tolerances.assert_close(c_n, torch.cat(cs), "rnn_module", "forward", torch.float64, "c_n")
    assert (y - y_eval).abs().max() > 1e-3  # dropout did something in training
    torch.manual_seed(12)
    with medkern.use_backend(backend):
        y_other, _ = module.train()(x)
    assert not torch.equal(y_other, y)  # fresh draws each call


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_without_dropout_equals_eval(backend):
    module = GRU(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with medkern.use_backend(backend):
        assert all(torch.equal(a, b) for a, b in zip(outputs_of(module.train()(x)), outputs_of(module.eval()(x))))


# --- state_dict, from_torch, to_torch ----------------------------------------------------------


STATE_DICT_CASES = [
    Config("lstm", 3, 6, num_layers=2, bidirectional=True, proj_size=2),
    Config("lstm", 3, 6, bias=False, proj_size=4),
    Config("gru", 4, 5, num_layers=3, bidirectional=True, bias=False),
    Config("rnn", 2, 5, num_layers=2, nonlinearity="relu", bidirectional=True),
]


@pytest.mark.parametrize("cfg", STATE_DICT_CASES, ids=[f"{i}-{c.kind}" for i, c in enumerate(STATE_DICT_CASES)])
def test_state_dict_round_trips_both_ways(cfg):
    torch.manual_seed(5)
    theirs = torch_module(cfg)
    torch.manual_seed(5)
    ours = medkern_module(cfg)  # torch's constructor: same parameters, names, order and initialization
    assert list(ours.state_dict()) == list(theirs.state_dict()) == theirs._flat_weights_names
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]  # torch's extra_repr
    torch.manual_seed(6)
    theirs = torch_module(cfg)
    ours_loaded, theirs_loaded = medkern_module(cfg), torch_module(cfg)
    ours_loaded.load_state_dict(theirs.state_dict(), strict=True)  # torch -> medkern
    theirs_loaded.load_state_dict(ours_loaded.state_dict(), strict=True)  # medkern -> torch
    x = torch.randn(4, 2, cfg.input_size, dtype=torch.float64)
    want = outputs_of(theirs(x))
    for module in (ours_loaded, theirs_loaded, ours_loaded.to_torch(), MEDKERN_CLASSES[cfg.kind].from_torch(theirs)):
        for got, ref in zip(outputs_of(module(x)), want):
            tolerances.assert_close(got, ref, "rnn_module", "forward", torch.float64, type(module).__module__)


def test_from_torch_and_to_torch_copy_everything_and_leave_the_rng_alone():
    theirs = nn.LSTM(3, 6, num_layers=2, proj_size=2, dtype=torch.float64).train(False)
    theirs.weight_hh_l1.requires_grad_(False)
    rng = torch.random.get_rng_state()
    ours = LSTM.from_torch(theirs)
    back = ours.to_torch()
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert type(back) is nn.LSTM and type(ours) is LSTM
    for module in (ours, back):
        assert not module.training and module.proj_size == 2 and module.num_layers == 2
        for (name, p), (_, q) in zip(module.named_parameters(), theirs.named_parameters()):
            assert p.dtype == torch.float64 and p.device == q.device and torch.equal(p, q)
            assert p.data_ptr() != q.data_ptr() and p.requires_grad == q.requires_grad, name
        assert len(module._flat_weights) == len(theirs._flat_weights)
    assert RNN.from_torch(nn.RNN(2, 3, nonlinearity="relu")).nonlinearity == "relu"
    with pytest.raises(TypeError, match=r"medkern.nn.GRU.from_torch: expected a torch.nn.GRU, got LSTM"):
        GRU.from_torch(theirs)


def test_module_moves_with_to():
    module = LSTM(3, 4, bidirectional=True).double()
    assert module._flat_weights[0].dtype == torch.float64
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for got, ref in zip(outputs_of(module(x)), outputs_of(module.to_torch()(x))):
        tolerances.assert_close(got, ref, "rnn_module", "forward", torch.float64)


# --- bad input ---------------------------------------------------------------------------------


def _bad_calls():
    h = torch.zeros(2, 3, 4)
    return [
        ("LSTM", lambda m: m(torch.randn(5, 3, 7)), RuntimeError, r"medkern.nn.LSTM: input must have input_size = 6"),
        ("LSTM", lambda m: m(torch.randn(5, 3, 6, 1)), ValueError, r"medkern.nn.LSTM: input must be 3-D .* or 2-D"),
        ("LSTM", lambda m: m(torch.randn(5, 3, 6), (h, h)), RuntimeError,
         r"medkern.nn.LSTM: hx\[0\] \(h_0\) must have shape \(4, 3, 4\)"),
        ("LSTM", lambda m: m(torch.randn(5, 3, 6), h), TypeError, r"medkern.nn.LSTM: hx must be a \(h_0, c_0\) pair"),
        ("LSTM", lambda m: m(torch.randn(5, 6), (torch.zeros(4, 3, 4), torch.zeros(4, 3, 4))), RuntimeError,
         r"medkern.nn.LSTM: hx\[0\] \(h_0\) must be 2-D for unbatched 2-D input"),
        ("LSTM", lambda m: m(torch.randn(5, 3, 6).double()), ValueError,
         r"medkern.nn.LSTM: input has dtype torch.float64, the module's weights torch.float32"),
        ("GRU", lambda m: m(torch.randn(5, 3, 6), torch.zeros(4, 2, 4)), RuntimeError,
         r"medkern.nn.GRU: hx must have shape \(4, 3, 4\)"),
        ("GRU", lambda m: m(torch.randn(5, 3, 6), torch.zeros(4, 3, 4).double()), ValueError,
         r"medkern.nn.GRU: hx has dtype torch.float64, the input torch.float32"),
        ("RNN", lambda m: m(torch.randn(5, 6), torch.zeros(4, 1, 4)), RuntimeError,
         r"medkern.nn.RNN: hx must be 2-D for unbatched 2-D input"),
        ("RNN", lambda m: m(pack_padded_sequence(torch.randn(5, 2, 3), [5, 2])), RuntimeError,
         r"medkern.nn.RNN: input \(a PackedSequence\) data must have input_size = 6"),
        ("LayerNormLSTM", lambda m: m(torch.randn(5, 3, 6), (h, torch.zeros(4, 3, 5))), RuntimeError,
         r"medkern.nn.LayerNormLSTM: hx\[0\] \(h_0\) must have shape \(4, 3, 4\)"),
        ("LayerNormGRU", lambda m: m([1, 2]), TypeError, r"medkern.nn.LayerNormGRU: input must be a tensor"),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("kind, call, error, message", BAD_CALLS, ids=[f"{i}-{c[0]}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_names_the_module_and_argument(kind, call, error, message):
    module = getattr(medkern.nn, kind)(6, 4, num_layers=2, bidirectional=True)
    with pytest.raises(error, match=message):
        call(module)


def test_layer_norm_modules_reject_bad_arguments_at_construction():
    for kwargs, message in [(dict(zoneout=1.5), "zoneout must be a probability in \\[0, 1\\]"),
                            (dict(recurrent_dropout=1.0), "recurrent_dropout must be a probability in \\[0, 1\\)"),
                            (dict(dropout=-0.1), "dropout must be"), (dict(eps=0.0), "eps must be"),
                            (dict(num_layers=0), "num_layers must be an int >= 1"),
                            (dict(bias=1), "bias must be a bool")]:
        with pytest.raises((ValueError, TypeError), match=f"medkern.nn.LayerNormLSTM: {message}"):
            LayerNormLSTM(3, 4, **kwargs)


# --- LayerNormLSTM, LayerNormGRU against their formulas ------------------------------------------


def _ln(v, weight, bias, eps):
    mean = v.mean(-1, keepdim=True)
    var = (v - mean).square().mean(-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + eps) * weight + (0 if bias is None else bias)


def _ln_step(lstm: bool, p: dict, x, h, c, eps, m, d_h, d_c):
    """One step of the formulas in LayerNormLSTM's / LayerNormGRU's docstrings (vectors of one sequence)."""
    a = _ln(p["weight_ih"] @ x, p["norm_x_weight"], p["norm_x_bias"], eps)
    b = _ln(p["weight_hh"] @ h, p["norm_h_weight"], p["norm_h_bias"], eps)
    if lstm:
        i, f, g, o = (a + b).chunk(4)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * (m * torch.tanh(g))
        h_new = torch.sigmoid(o) * torch.tanh(_ln(c_new, p["norm_c_weight"], p["norm_c_bias"], eps))
        return d_h * h + (1 - d_h) * h_new, d_c * c + (1 - d_c) * c_new
    (a_r, a_z, a_n), (b_r, b_z, b_n) = a.chunk(3), b.chunk(3)
    r, z = torch.sigmoid(a_r + b_r), torch.sigmoid(a_z + b_z)
    n = m * torch.tanh(a_n + r * b_n)
    return d_h * h + (1 - d_h) * ((1 - z) * n + z * h), None


PARAMETER_KEYS = ("weight_ih", "weight_hh", "norm_x_weight", "norm_x_bias", "norm_h_weight", "norm_h_bias",
                  "norm_c_weight", "norm_c_bias")


def ln_loop(module, x, lengths, h0, c0, masks):
    """(y (T, B, D*H), h_n, c_n) of a LayerNorm module from its formulas, one sequence and step at a
    time. x (T, B, I) padded; masks[(layer, direction)] = (d_h, d_c, m), each (T, B, H) by step."""
    lstm, eps, H = isinstance(module, LayerNormLSTM), module.eps, module.hidden_size
    T, B = x.shape[:2]
    D = 2 if module.bidirectional else 1
    lengths = [T] * B if lengths is None else [int(n) for n in lengths]
    layer_input, h_n, c_n = x, [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(D):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            p = {key: getattr(module, key + suffix, None) for key in PARAMETER_KEYS}  # None: bias=False
            d_h, d_c, m = masks.get((layer, direction), (None, None, None))
            k = layer * D + direction
            ys, hs, cs = [], [], []
            for b in range(B):
                h, c = h0[k, b], (c0[k, b] if lstm else None)
                y = [x.new_zeros(H)] * T
                for s in range(lengths[b]):
                    t = lengths[b] - 1 - s if direction else s
                    h, c = _ln_step(lstm, p, layer_input[t, b], h, c, eps, 1.0 if m is None else m[s, b],
                                    0.0 if d_h is None else d_h[s, b], 0.0 if d_c is None else d_c[s, b])
                    y[t] = h
                ys.append(torch.stack(y))
                hs.append(h)
                cs.append(c)
            outputs.append(torch.stack(ys, 1))
            h_n.append(torch.stack(hs))
            c_n.append(torch.stack(cs) if lstm else None)
        layer_input = torch.cat(outputs, 2)
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if lstm else None)


def draw_masks(module, steps, batch, dtype):
    """The masks a module in training draws, in the documented order (medkern/nn/layer_norm_rnn.py)."""
    masks, shape = {}, (steps, batch, module.hidden_size)
    p, q = module.zoneout, module.recurrent_dropout
    for layer in range(module.num_layers):
        for direction in range(2 if module.bidirectional else 1):
            d_h = torch.bernoulli(torch.full(shape, p, dtype=dtype)) if p > 0 else None
            d_c = torch.bernoulli(torch.full(shape, p, dtype=dtype)) if p > 0 and isinstance(module, LayerNormLSTM) \
                else None
            m = torch.bernoulli(torch.full(shape, 1 - q, dtype=dtype)) / (1 - q) if q > 0 else None
            masks[(layer, direction)] = (d_h, d_c, m)
    return masks


def expectation_masks(module, steps, batch, dtype):
    full = torch.full((steps, batch, module.hidden_size), module.zoneout, dtype=dtype)
    return {(layer, d): (full, full if isinstance(module, LayerNormLSTM) else None, None)
            for layer in range(module.num_layers) for d in range(2 if module.bidirectional else 1)}


def _randomize_norms(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("norm_"):
                p.copy_(torch.rand_like(p) + 0.5 if "_weight_" in name else torch.randn_like(p) * 0.3)
    return module


LN_CASES = [
    Config("ln_lstm", 3, 5, num_layers=2, bidirectional=True, inputs="packed_unsorted", given_state=True, zoneout=0.2),
    Config("ln_lstm", 4, 6, batch_first=True, bias=False, inputs="padded", recurrent_dropout=0.3),
    Config("ln_lstm", 3, 5, bidirectional=True, inputs="unbatched", given_state=True, zoneout=0.3,
           recurrent_dropout=0.2),
    Config("ln_gru", 3, 5, num_layers=2, bidirectional=True, inputs="packed_sorted", batch_first=True, zoneout=0.2),
    Config("ln_gru", 2, 6, bias=False, given_state=True, inputs="packed_unsorted", recurrent_dropout=0.25),
    Config("ln_gru", 3, 5, num_layers=2, inputs="unbatched", zoneout=0.1, recurrent_dropout=0.1),
]


def _ln_module(cfg: Config, dtype):
    cls = LayerNormLSTM if cfg.kind == "ln_lstm" else LayerNormGRU
    return _randomize_norms(cls(cfg.input_size, cfg.hidden_size, num_layers=cfg.num_layers, bias=cfg.bias,
                                batch_first=cfg.batch_first, bidirectional=cfg.bidirectional, zoneout=cfg.zoneout,
                                recurrent_dropout=cfg.recurrent_dropout, dtype=dtype))


def _padded_view(cfg, leaf, states):
    """The loop's inputs: x (T, B, I), h0, c0 with a batch dimension."""
    x = leaf.unsqueeze(1) if cfg.inputs == "unbatched" else (leaf.transpose(0, 1) if cfg.batch_first else leaf)
    B = x.shape[1]
    stacked = cfg.num_layers * cfg.directions
    if not states:
        states = [x.new_zeros(stacked, B, cfg.hidden_size)] * (2 if cfg.has_cell else 1)
    elif cfg.inputs == "unbatched":
        states = [s.unsqueeze(1) for s in states]
    return x, states[0], (states[1] if cfg.has_cell else None)


def _loop_outputs(cfg, module, leaf, states, lengths, masks):
    """The loop's results shaped as the module's: [output (packed data), h_n, (c_n)]."""
    x, h0, c0 = _padded_view(cfg, leaf, states)
    y, h_n, c_n = ln_loop(module, x, lengths, h0, c0, masks)
    if lengths is not None:  # packed as the module's input was
        y = pack_padded_sequence(y, lengths, enforce_sorted=cfg.inputs == "packed_sorted").data
    elif cfg.inputs == "unbatched":
        y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), (None if c_n is None else c_n.squeeze(1))
    elif cfg.batch_first:
        y = y.transpose(0, 1)
    return [y, h_n] + ([c_n] if c_n is not None else [])


def _loop_with_grads(cfg, module, leaf, states, lengths, masks):
    outs = _loop_outputs(cfg, module, leaf, states, lengths, masks)
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    wrt = {"input": leaf, **{f"hx[{i}]": s for i, s in enumerate(states)}, **dict(module.named_parameters())}
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    return [o.detach() for o in outs], {k: (torch.zeros_like(v) if gr is None else gr)
                                        for (k, v), gr in zip(wrt.items(), grads)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("cfg", LN_CASES, ids=[f"{i}-{c.kind}-{c.inputs}" for i, c in enumerate(LN_CASES)])
def test_layer_norm_modules_match_their_formulas(cfg, training, backend):
    """Outputs and every gradient equal the per-step loop of the docstrings': in eval with zoneout's
    expectation, in training with the masks drawn in the documented order (same seed)."""
    dtype = torch.float64
    module = _ln_module(cfg, dtype).train(training)
    make_input, leaf, hx, states, lengths = make_inputs(cfg, dtype)
    T, B = cfg.steps, (1 if cfg.inputs == "unbatched" else cfg.batch)
    torch.manual_seed(7)
    masks = draw_masks(module, T, B, dtype) if training else expectation_masks(module, T, B, dtype)
    want_outs, want_grads = _loop_with_grads(cfg, module, leaf, states, lengths, masks)
    torch.manual_seed(7)
    with medkern.use_backend(backend):
        got_outs, got_grads, _ = run_with_grads(module, make_input, leaf, hx, states)
    assert_same(got_outs, got_grads, want_outs, want_grads, dtype, str(cfg))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["ln_lstm", "ln_gru"])
def test_zoneout_edge_cases(kind, backend):
    """zoneout = 0 in training is no zoneout; zoneout = 1 in training never changes the state."""
    cfg = Config(kind, 3, 5, num_layers=2, bidirectional=True, inputs="packed_unsorted", given_state=True)
    make_input, leaf, hx, states, lengths = make_inputs(cfg, torch.float64)
    plain = _ln_module(cfg, torch.float64)
    with medkern.use_backend(backend):
        want = outputs_of(plain.eval()(make_input(), hx))
        got = outputs_of(plain.train()(make_input(), hx))  # zoneout = recurrent_dropout = dropout = 0
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        frozen = _ln_module(replace(cfg, zoneout=1.0), torch.float64).train()
        output, hidden = frozen(make_input(), hx)
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    assert torch.equal(h_n, states[0])
    if isinstance(hidden, tuple):
        assert torch.equal(hidden[1], states[1])
    # every valid step outputs the initial state of its layer and direction
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(output)
    valid = (torch.arange(cfg.steps).view(-1, 1) < lengths.view(1, -1)).unsqueeze(-1)
    last = states[0][-2:].permute(1, 0, 2).reshape(1, cfg.batch, -1)  # layer 1, both directions
    assert torch.equal(padded, torch.where(valid, last.expand_as(padded), torch.zeros_like(padded)))


def test_recurrent_dropout_keeps_the_expectation():
    """The candidate mask has mean 1 (kept elements scaled by 1 / (1 - q)): one step from a zero
    state of many copies of one sequence averages to eval's output."""
    module = LayerNormGRU(3, 8, recurrent_dropout=0.5, dtype=torch.float64)
    x = torch.randn(1, 1, 3, dtype=torch.float64).expand(1, 4000, 3)
    with medkern.use_backend("reference"):
        train_mean = module.train()(x)[0].mean(1)
        want = module.eval()(x)[0][:, 0]
    torch.testing.assert_close(train_mean, want, rtol=0.08, atol=1e-3)  # 5 sigma: m is 0 or 2, n = 4000


def test_layer_norm_parameters_names_init_and_state_dict():
    torch.manual_seed(0)
    module = LayerNormLSTM(3, 4, num_layers=2, bidirectional=True)
    names = [n for n, _ in module.named_parameters()]
    assert names[:8] == ["weight_ih_l0", "weight_hh_l0", "norm_x_weight_l0", "norm_x_bias_l0", "norm_h_weight_l0",
                         "norm_h_bias_l0", "norm_c_weight_l0", "norm_c_bias_l0"]
    assert names[8] == "weight_ih_l0_reverse" and names[-1] == "norm_c_bias_l1_reverse" and len(names) == 32
    assert module.weight_ih_l1.shape == (16, 8) and module.weight_hh_l0.shape == (16, 4)
    assert module.norm_c_weight_l0.shape == (4,) and module.norm_x_bias_l1_reverse.shape == (16,)
    assert module.weight_ih_l0.abs().max() <= 0.5 and module.weight_ih_l0.std() > 0.1
    assert torch.equal(module.norm_h_weight_l0, torch.ones(16)) and torch.equal(module.norm_h_bias_l0, torch.zeros(16))
    gru = LayerNormGRU(3, 4, bias=False)
    assert [n for n, _ in gru.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "norm_x_weight_l0",
                                                        "norm_h_weight_l0"]
    copy = LayerNormLSTM(3, 4, num_layers=2, bidirectional=True)
    copy.load_state_dict(_randomize_norms(module).state_dict(), strict=True)
    x = torch.randn(5, 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(outputs_of(copy(x)), outputs_of(module(x))))
    assert "zoneout=0.1" in repr(LayerNormGRU(3, 4, zoneout=0.1))


# --- torch.compile -------------------------------------------------------------------------------


def test_torch_compile_forward_and_backward():
    """One graph with Dynamo's allow_rnn (Dynamo breaks the graph at any nn.LSTM otherwise; then
    the layers still compile and the result is the same)."""
    torch.manual_seed(0)
    module = LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    x = torch.randn(4, 2, 3, requires_grad=True)

    def step(fn):
        y, (h, c) = fn(x)
        loss = y.square().sum() + h.sum() + c.sum()
        return (loss, *torch.autograd.grad(loss, [x, *module.parameters()]))

    with medkern.use_backend("cpu"):
        want = step(module)
        torch._dynamo.reset()
        with torch._dynamo.config.patch(allow_rnn=True):
            got = step(torch.compile(module, fullgraph=True))
        torch._dynamo.reset()
        got_with_breaks = step(torch.compile(module, backend="aot_eager"))
        torch._dynamo.reset()
    for a, b, c in zip(got, got_with_breaks, want):
        tolerances.assert_close(a, c, "rnn_module", "grad", torch.float32, "fullgraph")
        tolerances.assert_close(b, c, "rnn_module", "grad", torch.float32, "with graph breaks")

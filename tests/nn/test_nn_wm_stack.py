"""WMLSTM's torch.nn.LSTM features (contract §2.2): num_layers, bidirectional,
dropout, batch_first, unbatched and packed input.

The layer is compared with the same stack composed here independently from
the float64 reference op (``reference.wm_lstm_sequence``): layer by layer, the
reverse direction run row by row on ``x[:L_b, b]`` flipped — outputs, final
states and every gradient (input, state, each parameter), on the reference and
cpu backends. Then: one fused op call per layer-direction, unbatched input,
dropout, parameter names, per-step capacity in the reverse direction, errors.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import wmkernels
from wmkernels import ops, reference
from wmkernels.nn.wm_lstm import layer_suffix
from wmkernels.testing import rel_err

T, B, I, H, S, D = 5, 3, 4, 3, 3, 2
LENGTHS = torch.tensor([3, T, 1])  # unsorted, max = T
TOL64 = 1e-9


def stacked_default(layer, batch, dtype):
    """The state=None of a stacked layer, written out: zeros, M = each m0 (gated) or zeros."""
    LD = layer.num_layers * layer.num_directions
    h = torch.zeros(LD, batch, H, dtype=dtype)
    if layer.write_mode == "fifo":
        return h, h.clone(), torch.zeros(LD, batch, S, D, dtype=dtype)
    suffixes = [layer_suffix(k // layer.num_directions, k % layer.num_directions) for k in range(LD)]
    return h, h.clone(), torch.stack([getattr(layer, "m0" + s).expand(batch, S, D) for s in suffixes])


def composed(layer, x, state, lengths, capacity=None):
    """The stack from the float64 reference op, written out: x [T, B, I], state
    stacked [L·dirs, B, ...], capacity [T, B] or None -> (y [T, B, dirs·(H+D)], stacked state)."""
    steps, batch = x.shape[:2]
    rows = lengths.tolist() if lengths is not None else [steps] * batch
    layer_in, finals = x, []
    for layer_index in range(layer.num_layers):
        outputs = []
        for direction in range(layer.num_directions):
            k = layer_index * layer.num_directions + direction
            params = layer.params(layer_index, direction)
            initial = tuple(t[k] for t in state)
            if direction == 0:
                y, final = reference.wm_lstm_sequence(layer_in, initial, params, layer.write_mode, lengths, capacity)
            else:
                ys, parts = [], []
                for b, L in enumerate(rows):  # each row alone, from its last element back
                    cap = None if capacity is None else capacity[:L, b:b + 1].flip(0)
                    y_b, s_b = reference.wm_lstm_sequence(layer_in[:L, b:b + 1].flip(0),
                                                          tuple(t[b:b + 1] for t in initial), params,
                                                          layer.write_mode, None, cap)
                    ys.append(torch.cat([y_b.flip(0), y_b.new_zeros(steps - L, 1, y_b.shape[2])]))
                    parts.append(s_b)
                y, final = torch.cat(ys, 1), tuple(torch.cat(p) for p in zip(*parts))
            outputs.append(y)
            finals.append(final)
        layer_in = torch.cat(outputs, 2)
    return layer_in, tuple(torch.stack(p) for p in zip(*finals))


def layer_call(layer, x, lengths, how):
    """What the layer gets for time-major x: padded, batch-first or packed."""
    if how == "packed":
        return pack_padded_sequence(x, lengths, enforce_sorted=False)
    return x.transpose(0, 1) if how == "batch_first" else x


def padded_time_major(y, how):
    if isinstance(y, PackedSequence):
        return pad_packed_sequence(y, total_length=T)[0]
    return y.transpose(0, 1) if how == "batch_first" else y


def gradients(outputs, upstream, leaves):
    loss = sum((o * u).sum() for o, u in zip(outputs, upstream))
    return torch.autograd.grad(loss, leaves, allow_unused=True)


COMBOS = list(itertools.product(("fifo", "gated"), (1, 2), (False, True), ("padded", "batch_first", "packed"),
                                (False, True)))


@pytest.mark.parametrize("backend", ("reference", "cpu"))
@pytest.mark.parametrize("mode,num_layers,bidirectional,how,with_state", COMBOS,
                         ids=[f"{m}-L{n}-{'bi' if bi else 'uni'}-{how}-{'state' if s else 'nostate'}"
                              for m, n, bi, how, s in COMBOS])
def test_matches_the_stack_composed_from_the_float64_reference(backend, mode, num_layers, bidirectional, how,
                                                                with_state):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, num_layers=num_layers, bidirectional=bidirectional,
                                batch_first=how == "batch_first", dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    lengths = LENGTHS if how == "packed" else None
    stacked = layer.num_layers * layer.num_directions > 1
    full = stacked_default(layer, B, torch.float64)  # state=None: m0 gets its gradient through it
    if with_state:
        full = tuple(torch.randn_like(t, requires_grad=True) for t in full)
    given = (full if stacked else tuple(t[0] for t in full)) if with_state else None
    with wmkernels.use_backend(backend):
        y, state_n = layer(layer_call(layer, x, lengths, how), given)
    y = padded_time_major(y, how)
    if not stacked:
        assert all(t.shape[0] == B for t in state_n)  # the op's own state: no leading dimension
        state_n = tuple(t.unsqueeze(0) for t in state_n)
    y_ref, state_ref = composed(layer, x, full, lengths)
    assert y.shape == (T, B, layer.num_directions * (H + D))
    assert rel_err(y, y_ref) <= TOL64
    for got, want in zip(state_n, state_ref):
        assert got.shape == want.shape and rel_err(got, want) <= TOL64

    upstream = [torch.randn_like(t) for t in (y_ref, *state_ref)]
    leaves = [x, *(full if with_state else ()), *layer.parameters()]
    got = gradients((y, *state_n), upstream, leaves)
    want = gradients((y_ref, *state_ref), upstream, leaves)
    names = ["x"] + (["h0", "c0", "M0"] if with_state else []) + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, got, want):
        if name.startswith("m0") and with_state:  # the given state replaces m0: no gradient either way
            assert a is None and b is None, name
            continue
        assert a is not None and rel_err(a, b) <= TOL64, f"{name}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("mode", ("fifo", "gated"))
def test_float32_cpu_backend_matches_the_float64_reference(mode):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    with wmkernels.use_backend("cpu"):
        y, state = layer(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))
    y = pad_packed_sequence(y, total_length=T)[0]
    double = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, num_layers=2, bidirectional=True,
                                 dtype=torch.float64)
    double.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    y_ref, state_ref = composed(double, x.double(), stacked_default(double, B, torch.float64), LENGTHS)
    assert rel_err(y, y_ref) <= 1e-5
    for a, b in zip(state, state_ref):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("bidirectional", (False, True))
def test_each_layer_direction_is_one_fused_op_call(monkeypatch, bidirectional):
    """No Python loop over steps: L·dirs calls of ops.wm_lstm_sequence, no per-step op."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, num_layers=3, bidirectional=bidirectional)
    calls = []
    real = ops.wm_lstm_sequence

    def counting(x, *args, **kwargs):
        calls.append(x.shape)
        return real(x, *args, **kwargs)

    def per_step(*args, **kwargs):
        raise AssertionError("a per-step op ran")

    monkeypatch.setattr(ops, "wm_lstm_sequence", counting)
    for name in ("lstm_cell", "wm_read", "wm_write", "wm_shift_write"):
        monkeypatch.setattr(ops, name, per_step)
    y, _ = layer(torch.randn(T, B, I))
    dirs = 2 if bidirectional else 1
    assert len(calls) == 3 * dirs
    assert calls[:dirs] == [(T, B, I)] * dirs and calls[dirs:] == [(T, B, dirs * (H + D))] * (2 * dirs)
    assert y.shape == (T, B, dirs * (H + D))


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", (False, True))
def test_unbatched_input_is_a_batch_of_one(num_layers, bidirectional, batch_first):
    """[T, I] input (whatever batch_first) and states without B, as torch.nn.LSTM takes them."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated", num_layers=num_layers,
                                bidirectional=bidirectional, batch_first=batch_first)
    LD = num_layers * (2 if bidirectional else 1)
    lead = (LD,) if LD > 1 else ()
    x = torch.randn(T, I)
    state = tuple(torch.randn(*lead, *shape) for shape in ((H,), (H,), (S, D)))
    y, state_n = layer(x, state)
    batch_dim = len(lead)
    one = layer(x.unsqueeze(0 if batch_first else 1), tuple(t.unsqueeze(batch_dim) for t in state))
    assert torch.equal(y, one[0].squeeze(0 if batch_first else 1))
    assert y.shape == (T, (LD // num_layers) * (H + D))
    for got, want, given in zip(state_n, one[1], state):
        assert got.shape == given.shape and torch.equal(got, want.squeeze(batch_dim))
    y_default, state_default = layer(x)
    assert y_default.shape == y.shape and [t.shape for t in state_default] == [t.shape for t in state]
    capacity = torch.arange(1, T + 1).clamp(max=S)  # per step, [T]
    got = layer(x, state, capacity)[0]
    want = layer(x.unsqueeze(0 if batch_first else 1), tuple(t.unsqueeze(batch_dim) for t in state),
                 capacity.unsqueeze(0 if batch_first else 1))[0]
    assert torch.equal(got, want.squeeze(0 if batch_first else 1))
    with pytest.raises(ValueError, match=r"capacity' of unbatched input must have shape \[\] or \[T\]"):
        layer(x, state, capacity.view(1, 1, T))


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    layer = wmkernels.nn.WMLSTM(I, H, S, D, num_layers=2, dropout=0.5, write_mode="gated")
    plain = wmkernels.nn.WMLSTM(I, H, S, D, num_layers=2, write_mode="gated")
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, I)
    layer.eval()
    assert torch.equal(layer(x)[0], plain(x)[0])  # eval: no dropout
    layer.train()
    a, b = layer(x)[0], layer(x)[0]
    assert not torch.allclose(a, b)  # a fresh mask per call
    # Between layers only: with p = 1 layer 1 runs on zeros, as a one-layer WMLSTM with its weights does.
    layer.dropout = 1.0
    second = wmkernels.nn.WMLSTM(H + D, H, S, D, write_mode="gated")
    second.load_state_dict({k.replace("_l1", ""): v for k, v in layer.state_dict().items() if "_l1" in k})
    assert torch.equal(layer(x)[0], second(torch.zeros(T, B, H + D))[0])
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        wmkernels.nn.WMLSTM(I, H, S, D, dropout=0.2)


def test_parameter_names_shapes_and_params():
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated", num_layers=2, bidirectional=True)
    names = dict(layer.named_parameters())
    for suffix in ("", "_l0_reverse", "_l1", "_l1_reverse"):
        assert names["m0" + suffix].shape == (S, D)
        width = I if suffix in ("", "_l0_reverse") else 2 * (H + D)
        assert names["w_ih" + suffix].shape == (4 * H, width)
        assert names["w_e" + suffix].shape == (D, H)
    assert len(names) == 4 * 11
    assert layer.params(1, 1)["w_ih"] is layer.w_ih_l1_reverse and set(layer.params(1, 1)) == set(layer.params())
    for bad in ((2, 0), (0, 2), (True, 0)):
        with pytest.raises(ValueError, match="params"):
            layer.params(*bad)
    one = wmkernels.nn.WMLSTM(I, H, S, D)
    assert "w_ih" in dict(one.named_parameters()) and not any("_l" in n for n, _ in one.named_parameters())
    assert "num_layers=2" in repr(layer) and "bidirectional=True" in repr(layer)


@pytest.mark.parametrize("mode", ("fifo", "gated"))
def test_per_step_capacity_is_reversed_with_the_input_in_the_reverse_direction(mode):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, num_layers=2, bidirectional=True,
                                batch_first=True, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    capacity = torch.randint(1, S + 1, (T, B))
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    y, state = layer(packed, None, capacity)  # packed: capacity is [T, B] whatever batch_first
    y_ref, state_ref = composed(layer, x, stacked_default(layer, B, torch.float64), LENGTHS, capacity)
    assert rel_err(pad_packed_sequence(y, total_length=T)[0], y_ref) <= TOL64
    for a, b in zip(state, state_ref):
        assert rel_err(a, b) <= TOL64
    padded = layer(x.transpose(0, 1), None, capacity.t())[0]  # batch_first: [B, T]
    padded_ref = composed(layer, x, stacked_default(layer, B, torch.float64), None, capacity)[0]
    assert rel_err(padded.transpose(0, 1), padded_ref) <= TOL64
    with pytest.raises(ValueError, match=r"WMLSTM: argument 'capacity' must lie in \[1, S=3\]"):
        layer(x.transpose(0, 1), None, torch.full((B, T), S + 1))


BAD_SHAPES = {
    "input width": lambda layer: layer(torch.randn(T, B, I + 1)),
    "input 4D": lambda layer: layer(torch.randn(T, B, I, 1)),
    "h of one layer given to two": lambda layer: layer(torch.randn(T, B, I), (torch.randn(B, H), torch.randn(B, H),
                                                                              torch.randn(B, S, D))),
    "M of the wrong layer count": lambda layer: layer(torch.randn(T, B, I), (torch.randn(4, B, H),
                                                                             torch.randn(4, B, H),
                                                                             torch.randn(2, B, S, D))),
    "batched state for unbatched input": lambda layer: layer(torch.randn(T, I), (torch.randn(4, B, H),
                                                                                 torch.randn(4, B, H),
                                                                                 torch.randn(4, B, S, D))),
}


@pytest.mark.parametrize("bad", list(BAD_SHAPES))
def test_shape_errors_are_torchs_runtime_error_and_name_the_argument(bad):
    """As torch.nn.LSTM raises RuntimeError for a bad shape, so does WMLSTM (also
    the ValueError of contract §5, naming the argument) — and before any dtype error."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, num_layers=2, bidirectional=True)
    with pytest.raises(RuntimeError) as error:
        BAD_SHAPES[bad](layer)
    assert isinstance(error.value, ValueError) and "WMLSTM" in str(error.value)
    with pytest.raises(RuntimeError):
        BAD_SHAPES[bad](layer.double())  # the float32 inputs are now the wrong dtype too: the shape is named
    message = str(pytest.raises(ValueError, BAD_SHAPES["M of the wrong layer count"], layer).value)
    assert "state[2] (M)" in message and "(4, 3, 3, 2), got [2, 3, 3, 2]" in message
    assert "[num_layers*num_directions, B, S, D]" in message


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers=1.5), TypeError, "num_layers"),
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(dropout=True), ValueError, "dropout"),
    (dict(bidirectional=1), TypeError, "bidirectional"),
    (dict(batch_first="yes"), TypeError, "batch_first"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wmkernels.nn.WMLSTM(I, H, S, D, **kwargs)


def test_stacked_layer_compiles_fullgraph():
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got, want = compiled(x), layer(x)
    assert rel_err(got[0], want[0]) <= 1e-6
    assert all(rel_err(a, b) <= 1e-6 for a, b in zip(got[1], want[1]))
    got_grad = torch.autograd.grad(got[0].sum(), x)[0]
    assert rel_err(got_grad, torch.autograd.grad(want[0].sum(), x)[0]) <= 1e-5


def test_stacked_layer_traces_and_exports(tmp_path):
    """torch.jit.trace and torch.export record the stack on the reference, as for one layer."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    want = layer(x)[0]
    torch.jit.trace(layer, (x,)).save(str(tmp_path / "wm.pt"))
    assert rel_err(torch.jit.load(str(tmp_path / "wm.pt"))(x)[0], want) <= 1e-6
    exported = torch.export.export(layer, (x,)).module()
    assert rel_err(exported(x)[0], want) <= 1e-6


def test_stacked_layer_passes_gradgradcheck():
    layer = wmkernels.nn.WMLSTM(2, 2, 2, 1, write_mode="gated", num_layers=2, bidirectional=True).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))


def test_a_layer_pickled_before_layers_existed_loads_as_one_layer():
    """A WMLSTM saved whole (torch.save(model)) before num_layers existed has none of
    the new attributes in its __dict__; it loads and computes as the layer it was."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated")
    x = torch.randn(T, B, I)
    want = layer(x)
    for name in ("num_layers", "num_directions", "_suffixes", "dropout", "bidirectional", "batch_first"):
        del layer.__dict__[name]
    got = layer(x)
    assert torch.equal(got[0], want[0]) and all(torch.equal(a, b) for a, b in zip(got[1], want[1]))


@pytest.mark.parametrize("backend", ("reference", "cpu"))
def test_nan_reaches_only_its_own_row(backend):
    """A NaN in row 0 at one step reaches every h of row 0 after two bidirectional
    layers (a read at a direction's first step sees only m0), and nothing of the
    other rows (nor do the padding's values of a packed row)."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    x[2, 0, 1] = float("nan")
    x[LENGTHS[2]:, 2] = float("nan")  # row 2's padding (length 1)
    with wmkernels.use_backend(backend):
        y, (h, c, M) = layer(x)
        packed, (h_p, _, _) = layer(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))
    assert torch.isnan(y[:, 0, :H]).all() and torch.isnan(y[:, 0, H + D:2 * H + D]).all()
    assert torch.isfinite(y[:, 1]).all()
    assert torch.isnan(h[:, 0]).all() and torch.isfinite(h[:, 1]).all() and torch.isfinite(M[:, 1]).all()
    y_p = pad_packed_sequence(packed, total_length=T)[0]
    assert torch.isfinite(y_p[:, 1:]).all() and torch.isfinite(h_p[:, 1:]).all()

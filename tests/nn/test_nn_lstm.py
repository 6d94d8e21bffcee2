"""wmkernels.nn.LSTM and LSTMCell against torch.nn.LSTM / LSTMCell (contract §2).

Parity: for every combination of num_layers ∈ {1, 2}, bidirectional,
batch_first, bias, packed or padded input and with or without an initial
state, both layers are loaded from one state_dict and run on the same float32
input; outputs and final states must agree to 2e-5 (relative norm), input and
parameter gradients to 1e-4. Then: proj_size, unbatched input, dropout,
state_dict both ways, initialisation, argument errors, and LSTMCell.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import wmkernels
from wmkernels.testing import rel_err

OUT_TOL, GRAD_TOL = 2e-5, 1e-4
T, B, I, H = 5, 4, 3, 5


def twins(**kwargs):
    """(torch.nn.LSTM, wmkernels.nn.LSTM) with the weights of the first."""
    ours = wmkernels.nn.LSTM(I, H, **kwargs)
    theirs = torch.nn.LSTM(I, H, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def make_input(batch_first: bool, packed: bool):
    """A leaf input and a function giving what the layers get: x itself (padded
    [T, B, I] / [B, T, I]) or a fresh packing of it (unsorted lengths)."""
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    x.requires_grad_(True)
    if not packed:
        return x, lambda: x
    lengths = torch.tensor([3, T, 1, 3])  # unsorted, with a tie, max = T
    return x, lambda: pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)


def run(layer, layer_input, hx, upstream):
    """Forward, then backward of a random weighting of every output."""
    out, (h_n, c_n) = layer(layer_input(), hx)
    data = out.data if isinstance(out, PackedSequence) else out
    if upstream is None:
        upstream = [torch.randn_like(t) for t in (data, h_n, c_n)]
    loss = sum((t * u).sum() for t, u in zip((data, h_n, c_n), upstream))
    loss.backward()
    return out, h_n, c_n, upstream


def assert_parity(theirs, ours, x, layer_input, hx=None):
    """Outputs, states, input grads and parameter grads of ``ours`` equal ``theirs``'."""
    leaves = [x] + (list(hx) if hx is not None else [])
    out_t, h_t, c_t, upstream = run(theirs, layer_input, hx, None)
    grads_t = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    out_o, h_o, c_o, _ = run(ours, layer_input, hx, upstream)
    if isinstance(out_t, PackedSequence):
        assert isinstance(out_o, PackedSequence)
        assert torch.equal(out_o.batch_sizes, out_t.batch_sizes)
        assert torch.equal(out_o.sorted_indices, out_t.sorted_indices)
        assert torch.equal(out_o.unsorted_indices, out_t.unsorted_indices)
        out_t, out_o = out_t.data, out_o.data
    for name, a, b in (("output", out_o, out_t), ("h_n", h_o, h_t), ("c_n", c_o, c_t)):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= OUT_TOL, f"{name}: {rel_err(a, b):.2e}"
    for k, (leaf, expected) in enumerate(zip(leaves, grads_t)):
        assert rel_err(leaf.grad, expected) <= GRAD_TOL, f"input grad {k}: {rel_err(leaf.grad, expected):.2e}"
    ours_params = dict(ours.named_parameters())
    assert list(ours_params) == [n for n, _ in theirs.named_parameters()]
    for name, p in theirs.named_parameters():
        err = rel_err(ours_params[name].grad, p.grad)
        assert err <= GRAD_TOL, f"grad of {name}: {err:.2e}"


COMBOS = list(itertools.product((1, 2), (False, True), (False, True), (False, True),
                                (False, True), (False, True)))


@pytest.mark.parametrize(
    "num_layers,bidirectional,batch_first,bias,packed,with_state", COMBOS,
    ids=[f"L{n}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}-{'bias' if b else 'nobias'}-"
         f"{'packed' if p else 'padded'}-{'hx' if s else 'nohx'}" for n, bi, bf, b, p, s in COMBOS])
def test_matches_torch_lstm(num_layers, bidirectional, batch_first, bias, packed, with_state):
    theirs, ours = twins(num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, bias=bias)
    x, layer_input = make_input(batch_first, packed)
    hx = None
    if with_state:
        n = num_layers * (2 if bidirectional else 1)
        hx = (torch.randn(n, B, H, requires_grad=True), torch.randn(n, B, H, requires_grad=True))
    assert_parity(theirs, ours, x, layer_input, hx)


@pytest.mark.parametrize("bidirectional", (False, True))
@pytest.mark.parametrize("packed", (False, True))
def test_proj_size_matches_torch(bidirectional, packed):
    theirs, ours = twins(num_layers=2, bidirectional=bidirectional, proj_size=2)
    x, layer_input = make_input(False, packed)
    n = 2 * (2 if bidirectional else 1)
    hx = (torch.randn(n, B, 2, requires_grad=True), torch.randn(n, B, H, requires_grad=True))
    assert_parity(theirs, ours, x, layer_input, hx)


@pytest.mark.parametrize("train", (True, False))
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_proj_size_is_one_torch_lstm_call_with_no_loop_over_steps(monkeypatch, train):
    """proj_size > 0 runs torch's own LSTM (aten), one torch._VF.lstm call for the
    whole stack, for training and inference: outputs and every gradient bitwise
    torch.nn.LSTM's, and no wmkernels op (no Python loop over steps) runs."""
    theirs, ours = twins(num_layers=2, bidirectional=True, proj_size=2)
    calls = []
    real_lstm = torch._VF.lstm

    def counting_lstm(*args):
        calls.append(len(args))
        return real_lstm(*args)

    def no_op(*args, **kwargs):
        raise AssertionError("a wmkernels op ran for proj_size > 0")

    x = torch.randn(T, B, I, requires_grad=train)
    hx = tuple(torch.randn(4, B, n, requires_grad=train) for n in (2, H))
    calls_of = {"padded": lambda: (x, hx),
                "packed": lambda: (pack_padded_sequence(x, torch.tensor([3, T, 1, 3]), enforce_sorted=False), None),
                "unbatched": lambda: (x[:, 0], tuple(t[:, 0] for t in hx))}
    for how, call in calls_of.items():
        results = []
        for layer in (theirs, ours):
            with monkeypatch.context() as patched:
                patched.setattr(torch._VF, "lstm", counting_lstm)
                for name in ("lstm_cell", "lstm_sequence"):
                    patched.setattr(wmkernels.ops, name, no_op)
                with torch.set_grad_enabled(train):
                    out, (h_n, c_n) = layer(*call())
            data = out.data if isinstance(out, PackedSequence) else out
            weights = [data, h_n * torch.arange(H - 2, H), c_n]  # h_n, c_n weighted apart from the output
            grads = torch.autograd.grad(sum((w * (k + 1)).sum() for k, w in enumerate(weights)),
                                        [x, *hx, *layer.parameters()], allow_unused=True) if train else ()
            results.append((data, h_n, c_n, *grads))
        assert calls == [calls[0]] * 2, (how, calls)  # one call each, the same call
        calls.clear()
        assert all(torch.equal(a, b) for a, b in zip(*results) if a is not None or b is not None), how


def test_proj_size_is_explained_and_no_other_backend_takes_it():
    choice = wmkernels.explain("lstm_sequence", proj_size=2, T=T, B=B, I=I, H=H)
    assert choice.backend == "aten" and "proj_size > 0" in choice.reason, str(choice)
    plain = wmkernels.explain("lstm_sequence", proj_size=0, T=T, B=B, I=I, H=H)  # as without proj_size
    assert "proj_size" not in plain.reason
    assert plain.backend == wmkernels.explain("lstm_sequence", T=T, B=B, I=I, H=H).backend
    for device in ("cpu", "cuda"):
        assert "aten" in str(wmkernels.explain("lstm_sequence", device=device, inference=True, proj_size=2))
    named = wmkernels.explain("lstm_sequence", backend="cpu", proj_size=2)
    assert named.backend is None and "proj_size" in named.reason
    ours = wmkernels.nn.LSTM(I, H, proj_size=2)
    with wmkernels.use_backend("reference"), pytest.raises(wmkernels.BackendUnavailableError, match="proj_size"):
        ours(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="proj_size applies to lstm_sequence only"):
        wmkernels.explain("lstm_cell", proj_size=2)


@pytest.mark.parametrize("batch_first", (False, True))
def test_unbatched_input(batch_first):
    theirs, ours = twins(num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(T, I, requires_grad=True)
    hx = (torch.randn(4, H, requires_grad=True), torch.randn(4, H, requires_grad=True))
    assert_parity(theirs, ours, x, lambda: x, hx)
    out, (h_n, c_n) = ours(x)
    assert out.shape == (T, 2 * H) and h_n.shape == (4, H) and c_n.shape == (4, H)


def test_packed_reverse_starts_at_each_rows_last_element():
    """Row b of the reverse direction sees x[L_b-1], …, x[0]: equal to running that row alone."""
    ours = wmkernels.nn.LSTM(I, H, bidirectional=True)
    x = torch.randn(T, 3, I)
    lengths = torch.tensor([2, T, 4])
    out, (h_n, _) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    for b, L in enumerate(lengths.tolist()):
        alone, (h_alone, _) = ours(x[:L, b:b + 1])
        assert rel_err(padded[:L, b:b + 1], alone) <= OUT_TOL
        assert rel_err(h_n[:, b], h_alone[:, 0]) <= OUT_TOL
        assert torch.all(padded[L:, b] == 0)


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    ours = wmkernels.nn.LSTM(I, H, num_layers=2, dropout=0.5)
    theirs = torch.nn.LSTM(I, H, num_layers=2, dropout=0.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    ours.eval()
    theirs.eval()
    assert rel_err(ours(x)[0], theirs(x)[0]) <= OUT_TOL  # eval: no dropout
    ours.train()
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.allclose(a, b)  # a fresh mask per call
    # Dropout acts between layers only: layer 0's output feeds layer 1 through it,
    # and with p = 1 layer 1 sees zeros, i.e. runs on its biases alone.
    ours.dropout = 1.0
    zero_input = wmkernels.nn.LSTM(H, H)
    zero_input.load_state_dict({k.replace("_l1", "_l0"): v for k, v in ours.state_dict().items() if "_l1" in k})
    expected = zero_input(torch.zeros(T, B, H))[0]
    assert rel_err(ours(x)[0], expected) <= OUT_TOL


def test_state_dict_both_ways_and_same_init():
    kwargs = dict(num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(7)
    theirs = torch.nn.LSTM(I, H, **kwargs)
    torch.manual_seed(7)
    ours = wmkernels.nn.LSTM(I, H, **kwargs)
    # Same names, shapes, order and initial values (uniform ±1/√H drawn in the same order).
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
           [(n, p.shape) for n, p in theirs.named_parameters()]
    for (_, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(a, b)
        assert a.abs().max() <= 1 / H ** 0.5
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())  # ours -> torch
    back = wmkernels.nn.LSTM(I, H, **kwargs)
    back.load_state_dict(theirs.state_dict())  # torch -> ours
    for (_, a), (_, b) in zip(back.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b)
    assert repr(ours).replace("wmkernels.nn.", "") == repr(theirs)
    before = [p.clone() for p in ours.parameters()]
    ours.flatten_parameters()  # torch.nn.LSTM's own (it packs weights for cuDNN only)
    assert all(torch.equal(a, b) for a, b in zip(before, ours.parameters()))
    assert [[p.shape for p in ws] for ws in ours.all_weights] == \
           [[p.shape for p in ws] for ws in theirs.all_weights]


def test_the_layers_are_torch_layers():
    """isinstance checks, a user's init loop, torch's flat-weight bookkeeping,
    parametrizations (weight norm) and torch.func.functional_call all see ours
    as torch's own layers."""
    theirs, ours = twins(num_layers=2)
    assert isinstance(ours, torch.nn.LSTM) and isinstance(ours, torch.nn.RNNBase)
    assert isinstance(wmkernels.nn.LSTMCell(I, H), torch.nn.LSTMCell)
    assert ours._flat_weights_names == theirs._flat_weights_names

    for model in (theirs, ours):
        torch.manual_seed(0)
        for m in torch.nn.Sequential(model).modules():  # the usual recurrent init
            if isinstance(m, torch.nn.LSTM):
                for name, p in m.named_parameters():
                    if "weight_hh" in name:
                        torch.nn.init.orthogonal_(p)
    assert torch.equal(ours.weight_hh_l1, theirs.weight_hh_l1)
    w = ours.weight_hh_l1  # [4H, H], orthogonal columns
    assert torch.allclose(w.t() @ w, torch.eye(H), atol=1e-5)

    x, layer_input = make_input(batch_first=False, packed=False)
    from torch.nn.utils.parametrizations import weight_norm
    for model in (theirs, ours):
        weight_norm(model, "weight_hh_l0")
        with torch.no_grad():
            model.parametrizations.weight_hh_l0.original0.mul_(1.5)
    assert_parity(theirs, ours, x, layer_input)
    assert ours.parametrizations.weight_hh_l0.original0.grad is not None

    swapped = {name: torch.randn_like(p) for name, p in ours.named_parameters()}
    got = torch.func.functional_call(ours, swapped, (x,))[0]
    want = torch.func.functional_call(theirs, swapped, (x,))[0]
    assert rel_err(got, want) <= OUT_TOL


def test_float64_and_t_zero():
    theirs, ours = twins(num_layers=2, bidirectional=True)
    theirs.double()
    ours.double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert rel_err(ours(x)[0], theirs(x)[0]) <= 1e-12
    empty = ours(torch.randn(0, B, I, dtype=torch.float64))
    assert empty[0].shape == (0, B, 2 * H) and empty[1][0].shape == (4, B, H)
    assert torch.all(empty[1][0] == 0)
    projected = wmkernels.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    hx = (torch.randn(4, B, 2), torch.randn(4, B, H))
    out, (h_n, c_n) = projected(torch.randn(0, B, I), hx)  # no backend runs, no step loop
    assert out.shape == (0, B, 4) and torch.equal(h_n, hx[0]) and torch.equal(c_n, hx[1])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(dropout=True), ValueError, "dropout"),
    (dict(proj_size=H), ValueError, "proj_size"),
    (dict(proj_size=-1), ValueError, "proj_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(bias=1), TypeError, "bias"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wmkernels.nn.LSTM(I, H, **kwargs)
    with pytest.raises(TypeError, match="hidden_size"):
        wmkernels.nn.LSTM(I, 2.0)


def test_bad_forward_arguments():
    lstm = wmkernels.nn.LSTM(I, H, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size\. Expected 3, got 4"):
        lstm(torch.randn(T, B, 4))
    with pytest.raises(ValueError, match="2D or 3D, got 4D"):
        lstm(torch.randn(1, T, B, I))
    with pytest.raises(ValueError, match=r"h0.*\(2, 4, 5\), got \[1, 4, 5\]"):
        lstm(torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(2, B, H)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c0\) to be 3D"):
        lstm(torch.randn(T, B, I), (torch.randn(2, B, H), torch.randn(B, H)))
    with pytest.raises(ValueError, match="tuple of 2"):
        lstm(torch.randn(T, B, I), torch.randn(2, B, H))
    with pytest.raises(ValueError, match="dtype"):
        lstm(torch.randn(T, B, I, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        lstm(torch.ones(T, B, I, dtype=torch.int64))


# ----------------------------------------------------------------------------- LSTMCell

@pytest.mark.parametrize("bias", (True, False))
@pytest.mark.parametrize("batched", (True, False))
@pytest.mark.parametrize("with_state", (True, False))
def test_cell_matches_torch(bias, batched, with_state):
    theirs = torch.nn.LSTMCell(I, H, bias=bias)
    ours = wmkernels.nn.LSTMCell(I, H, bias=bias)
    ours.load_state_dict(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, requires_grad=True)
    hx = (torch.randn(*lead, H, requires_grad=True), torch.randn(*lead, H, requires_grad=True)) \
        if with_state else None
    leaves = [x] + (list(hx) if hx else [])
    upstream = [torch.randn(*lead, H), torch.randn(*lead, H)]
    results = []
    for layer in (theirs, ours):
        h, c = layer(x, hx)
        sum((t * u).sum() for t, u in zip((h, c), upstream)).backward()
        results.append(((h, c), [t.grad.clone() for t in leaves]))
        for t in leaves:
            t.grad = None
    for a, b in zip(results[0][0], results[1][0]):
        assert a.shape == b.shape and rel_err(b, a) <= OUT_TOL
    for a, b in zip(results[0][1], results[1][1]):
        assert rel_err(b, a) <= GRAD_TOL
    for (name, p), q in zip(theirs.named_parameters(), ours.parameters()):
        assert rel_err(q.grad, p.grad) <= GRAD_TOL, name


def test_cell_bad_arguments():
    cell = wmkernels.nn.LSTMCell(I, H)
    with pytest.raises(ValueError, match="input_size: got 4 expected 3"):
        cell(torch.randn(B, 4))
    with pytest.raises(ValueError, match="hidden0 has inconsistent hidden_size: got 6, expected 5"):
        cell(torch.randn(B, I), (torch.randn(B, H + 1), torch.randn(B, H)))
    with pytest.raises(ValueError, match="Input batch size 4 doesn't match hidden1 batch size 3"):
        cell(torch.randn(B, I), (torch.randn(B, H), torch.randn(B - 1, H)))
    with pytest.raises(ValueError, match=r"hx\[0\] to be 2D for 2D input, got 1D"):
        cell(torch.randn(B, I), (torch.randn(H), torch.randn(B, H)))
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(torch.randn(1, B, I))


FLAGS = list(itertools.product((1, 2), (False, True), (False, True), (0, 2), (True, False), (False, True)))


@pytest.mark.parametrize("layers, bidirectional, batch_first, proj_size, bias, train", FLAGS,
                         ids=["-".join(map(str, f)) for f in FLAGS])
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_on_aten_the_layer_is_torch_lstm_exactly(layers, bidirectional, batch_first, proj_size, bias, train):
    """Where lstm_sequence runs on aten (auto's choice on CUDA), the layer is one
    torch._VF.lstm call: bitwise torch.nn.LSTM, dropout masks and packed input included."""
    theirs, ours = twins(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                         proj_size=proj_size, bias=bias, dropout=0.5 if layers > 1 else 0.0)
    theirs.train(train)
    ours.train(train)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    packed = pack_padded_sequence(x, torch.tensor([3, T, 1, 3]), batch_first=batch_first, enforce_sorted=False)
    with wmkernels.use_backend("aten"):
        for given in (x, packed, x[0] if not batch_first else x[:, 0]):
            torch.manual_seed(7)
            want, (h_want, c_want) = theirs(given)
            torch.manual_seed(7)
            got, (h_got, c_got) = ours(given)
            if isinstance(given, PackedSequence):
                assert torch.equal(got.batch_sizes, want.batch_sizes)
                assert torch.equal(got.unsorted_indices, want.unsorted_indices)
                got, want = got.data, want.data
            assert torch.equal(got, want) and torch.equal(h_got, h_want) and torch.equal(c_got, c_want)


def test_autocast_gives_the_dtype_torch_gives():
    """Under torch.autocast the layer computes as torch.nn.LSTM does (CPU: bfloat16)."""
    theirs, ours = twins(num_layers=2)
    x = torch.randn(T, B, I, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, (h_want, _) = theirs(x)
        got, (h_got, _) = ours(x)
    assert got.dtype == want.dtype == torch.bfloat16 and h_got.dtype == h_want.dtype
    assert torch.equal(got, want)
    got.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32


def test_jit_trace_saves_and_loads(tmp_path):
    """torch.jit.trace records torch's LSTM (TorchScript holds no Python autograd
    Function): the traced layer saves, loads and computes what torch.nn.LSTM does."""
    theirs, ours = twins(num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    traced = torch.jit.trace(ours, (x,))
    traced.save(str(tmp_path / "lstm.pt"))
    loaded = torch.jit.load(str(tmp_path / "lstm.pt"))
    assert torch.equal(loaded(x)[0], theirs(x)[0])


def test_exported_layer_runs_with_grad():
    theirs, ours = twins(num_layers=2)
    x = torch.randn(T, B, I)
    module = torch.export.export(ours, (x,)).module()
    leaf = x.clone().requires_grad_()
    out, _ = module(leaf)
    out.sum().backward()
    want = x.clone().requires_grad_()
    theirs(want)[0].sum().backward()
    assert torch.equal(out, theirs(x)[0]) and torch.allclose(leaf.grad, want.grad)


BAD_CALLS = {
    "input 4D": lambda layer: layer(torch.randn(T, B, I, 1)),
    "input width": lambda layer: layer(torch.randn(T, B, I + 1)),
    "h0 shape": lambda layer: layer(torch.randn(T, B, I), (torch.randn(1, B + 1, H), torch.randn(1, B, H))),
    "c0 shape": lambda layer: layer(torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H + 1))),
}


@pytest.mark.parametrize("bad", list(BAD_CALLS))
def test_shape_errors_are_what_torch_raises_and_name_the_argument(bad):
    """Our error for a bad shape is an instance of the type torch.nn.LSTM raises
    (RuntimeError or ValueError), and the ValueError naming the argument that contract §5 asks for."""
    theirs, ours = twins()
    with pytest.raises(Exception) as torch_error:
        BAD_CALLS[bad](theirs)
    with pytest.raises(ValueError) as info:
        BAD_CALLS[bad](ours)
    assert isinstance(info.value, type(torch_error.value)) and "LSTM" in str(info.value)


@pytest.mark.parametrize("proj_size", (0, 2))
def test_state_size_errors_read_as_torchs(proj_size):
    """Code matching torch's message ("Expected hidden[k] size (…), got […]", as
    PyTorch's own tests do) matches ours, which also names hx and the shape."""
    ours = wmkernels.nn.LSTM(I, H, proj_size=proj_size)
    h_size = proj_size or H
    good = (torch.randn(1, B, h_size), torch.randn(1, B, H))
    for k in (0, 1):
        bad = list(good)
        bad[k] = torch.randn(1, B, bad[k].shape[2] + 1)
        with pytest.raises(RuntimeError, match=rf"Expected hidden\[{k}\] .*size.*got") as info:
            ours(torch.randn(T, B, I), tuple(bad))
        assert f"hx[{k}]" in str(info.value)


@pytest.mark.parametrize("batched", (True, False))
def test_cell_on_aten_is_torch_lstmcell_exactly(batched):
    """Where lstm_cell's backend is aten (auto's choice on CUDA), the layer runs
    torch.nn.LSTMCell's own forward: outputs and gradients bitwise equal."""
    theirs, ours = torch.nn.LSTMCell(I, H), wmkernels.nn.LSTMCell(I, H)
    ours.load_state_dict(theirs.state_dict())
    shape = (B, I) if batched else (I,)
    x = torch.randn(shape, requires_grad=True)
    hx = tuple(torch.randn(shape[:-1] + (H,), requires_grad=True) for _ in range(2))
    results = []
    for layer in (theirs, ours):
        with wmkernels.use_backend("aten"):
            h, c = layer(x, hx)
        grads = torch.autograd.grad((h * 2 + c).sum(), (x, *hx, *layer.parameters()))
        results.append((h, c, *grads))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_cell_under_autocast_gives_what_torch_gives():
    theirs, ours = torch.nn.LSTMCell(I, H), wmkernels.nn.LSTMCell(I, H)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = theirs(x), ours(x)
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(got, want))


def test_cell_shape_error_is_what_torch_raises():
    theirs, ours = torch.nn.LSTMCell(I, H), wmkernels.nn.LSTMCell(I, H)
    for layer in (theirs, ours):
        with pytest.raises(RuntimeError):
            layer(torch.randn(B, I + 1))


def test_layers_pass_gradgradcheck():
    """Second derivatives through the layers (float64, parameters wanting grad so
    the kernels run): torch.autograd.gradgradcheck, as PyTorch checks nn.LSTM."""
    lstm = wmkernels.nn.LSTM(2, 3, num_layers=2, bidirectional=True).double()
    cell = wmkernels.nn.LSTMCell(2, 3).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradgradcheck(lambda x, h, c: lstm(x, (h, c))[0], (x, h, c))
    assert torch.autograd.gradgradcheck(lambda x, h, c: cell(x, (h, c)), (x[0], h[0], c[0]))


# Two things wrong at once: the error is the one torch's layer raises first
# (shapes before dtypes: torch.nn.LSTMCell checks sizes in C++ before any
# arithmetic; torch.nn.LSTM checks ranks, then the input's dtype, then sizes).
MIXED_ERRORS = {
    "cell: float64 input of the wrong width": (
        lambda: torch.nn.LSTMCell(3, 4), lambda: torch.randn(2, 5, dtype=torch.float64), None,
        "input has inconsistent input_size: got 5 expected 3"),
    "cell: float64 state of the wrong width": (
        lambda: torch.nn.LSTMCell(3, 4), lambda: torch.randn(2, 3),
        lambda: (torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)),
        "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    "cell: float64 input, state of another batch": (
        lambda: torch.nn.LSTMCell(3, 4), lambda: torch.randn(2, 3, dtype=torch.float64),
        lambda: (torch.randn(3, 4), torch.randn(3, 4)), "Input batch size 2 doesn't match hidden0 batch size 3"),
    "lstm: float64 input of the wrong width": (
        lambda: torch.nn.LSTM(3, 4), lambda: torch.randn(5, 2, 5, dtype=torch.float64), None, "dtype"),
    "lstm: float64 state of the wrong size": (
        lambda: torch.nn.LSTM(3, 4), lambda: torch.randn(5, 2, 3),
        lambda: (torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)),
        r"Expected hidden\[0\].*size \(1, 2, 4\), got \[1, 2, 5\]"),
    "lstm: float64 input, state of the wrong rank": (
        lambda: torch.nn.LSTM(3, 4), lambda: torch.randn(5, 2, 3, dtype=torch.float64),
        lambda: (torch.randn(2, 4), torch.randn(2, 4)), "3"),
}


@pytest.mark.parametrize("case", list(MIXED_ERRORS))
def test_errors_come_in_torchs_order(case):
    """PyTorch's test_errors_LSTMCell_cpu_float64 among them: our layer raises
    the error torch's raises (its type, and the message it matches), not a
    dtype error where torch reports a size."""
    make, make_input, make_state, message = MIXED_ERRORS[case]
    theirs = make()
    ours = {torch.nn.LSTM: wmkernels.nn.LSTM, torch.nn.LSTMCell: wmkernels.nn.LSTMCell}[type(theirs)](
        theirs.input_size, theirs.hidden_size)
    x, state = make_input(), make_state() if make_state else None
    with pytest.raises(Exception, match=message) as torch_error:
        theirs(x, state)
    with pytest.raises(type(torch_error.value), match=message):
        ours(x, state)

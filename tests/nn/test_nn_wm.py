"""wmkernels.nn.WMLSTM, WMLSTMCell and WorkingMemory (contract §2, §1.3, §1.4).

WMLSTM is ops.wm_lstm_sequence on layer.params() (its parameters but m0; the same
numbers, exactly) and matches the float64 reference; packed input equals
running each row alone; WMLSTMCell stepped over a sequence equals WMLSTM
(outputs, states and every gradient); WorkingMemory is the ops of 1.3.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import wmkernels
from wmkernels import ops, reference
from wmkernels.testing import rel_err

T, B, I, H, S, D = 5, 3, 4, 6, 3, 5
MODES = ("fifo", "gated")


def random_state(batch=B, dtype=torch.float32, requires_grad=False):
    return tuple(torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)
                 for shape in ((batch, H), (batch, H), (batch, S, D)))


@pytest.mark.parametrize("mode", MODES)
def test_parameters_are_the_spec_keys(mode):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    params = dict(layer.named_parameters())
    expected = set(reference.WM_PARAM_KEYS) - (set() if mode == "gated" else set(reference.WM_GATED_ONLY_KEYS))
    assert set(params) == expected | ({"m0"} if mode == "gated" else set())
    assert set(layer.params()) == expected
    if mode == "gated":  # the learned initial memory: uniform ±1, distinct slots
        m0 = params.pop("m0")
        assert m0.shape == (S, D) and m0.abs().max() <= 1 and m0.abs().max() > 1 / H ** 0.5
    for key, p in params.items():
        labels = ops.WM_PARAM_SHAPES[key]
        sizes = {"I": I, "H": H, "4H": 4 * H, "D": D}
        assert p.shape == tuple(sizes[label] for label in labels), key
        assert p.abs().max() <= 1 / H ** 0.5 and p.std() > 0, key  # uniform ±1/√H, not constant


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", (False, True))
@pytest.mark.parametrize("with_state", (False, True))
def test_wmlstm_is_the_op_on_its_named_parameters(mode, batch_first, with_state):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, batch_first=batch_first)
    x = torch.randn(T, B, I)
    state = random_state() if with_state else None
    y, (h, c, M) = layer(x.transpose(0, 1) if batch_first else x, state)
    default = tuple(torch.zeros_like(t) for t in random_state())
    if mode == "gated":  # state=None starts the gated memory at m0 in every row
        default = (*default[:2], layer.m0.expand(B, S, D))
    y_op, (h_op, c_op, M_op) = ops.wm_lstm_sequence(x, state or default, layer.params(), mode)
    assert torch.equal(y.transpose(0, 1) if batch_first else y, y_op)
    for a, b in ((h, h_op), (c, c_op), (M, M_op)):
        assert torch.equal(a, b)
    assert y.shape == ((B, T, H + D) if batch_first else (T, B, H + D))


@pytest.mark.parametrize("mode", MODES)
def test_wmlstm_matches_float64_reference(mode):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    x, state = torch.randn(T, B, I), random_state()
    y, state_n = layer(x, state)
    params64 = {k: p.detach().double() for k, p in layer.named_parameters()}
    y_ref, state_ref = reference.wm_lstm_sequence(x.double(), tuple(t.double() for t in state), params64, mode)
    assert rel_err(y, y_ref) <= 1e-5
    for a, b in zip(state_n, state_ref):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_packed_input_equals_each_row_alone(mode):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = random_state(dtype=torch.float64)
    lengths = torch.tensor([2, T, 1])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    y, (h, c, M) = layer(packed, state)
    assert torch.equal(y.batch_sizes, packed.batch_sizes)
    assert torch.equal(y.sorted_indices, packed.sorted_indices)
    padded, out_lengths = pad_packed_sequence(y)
    assert torch.equal(out_lengths, lengths)
    for b, L in enumerate(lengths.tolist()):
        alone, (h_b, c_b, M_b) = layer(x[:L, b:b + 1], tuple(t[b:b + 1] for t in state))
        assert rel_err(padded[:L, b:b + 1], alone) <= 1e-12
        for a, e in ((h[b], h_b[0]), (c[b], c_b[0]), (M[b], M_b[0])):
            assert rel_err(a, e) <= 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_cell_stepped_equals_the_sequence_layer(mode, dtype, tol):
    seq = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode, dtype=dtype)
    cell = wmkernels.nn.WMLSTMCell(I, H, S, D, write_mode=mode, dtype=dtype)
    cell.load_state_dict(seq.state_dict())
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    state = random_state(dtype=dtype, requires_grad=True)
    upstream = [torch.randn(T, B, H + D, dtype=dtype)] + [torch.randn_like(t) for t in state]

    def grads(outputs, module):
        loss = sum((o * u).sum() for o, u in zip(outputs, upstream))
        leaves = [x, *state, *module.params().values()]  # m0 is unused: the state is given
        return torch.autograd.grad(loss, leaves)

    y, state_n = seq(x, state)
    expected = grads([y, *state_n], seq)
    ys, s = [], state
    for t in range(T):
        y_t, s = cell(x[t], s)
        ys.append(y_t)
    got = grads([torch.stack(ys), *s], cell)
    assert rel_err(torch.stack(ys), y) <= tol
    for a, b in zip(s, state_n):
        assert rel_err(a, b) <= tol
    for k, (a, b) in enumerate(zip(got, expected)):
        assert rel_err(a, b) <= 10 * tol, f"gradient {k}"


def test_cell_zero_state_by_default():
    cell = wmkernels.nn.WMLSTMCell(I, H, S, D)
    x = torch.randn(B, I)
    y, (h, c, M) = cell(x)
    y0, _ = cell(x, tuple(torch.zeros_like(t) for t in random_state()))
    assert torch.equal(y, y0) and y.shape == (B, H + D) and M.shape == (B, S, D)


def test_fifo_is_unchanged_by_the_gated_initial_memory():
    """fifo draws exactly the weights it drew before m0 existed (the contract §1.4 keys in
    order, uniform ±1/√H) and starts from zeros; gated draws the same weights, then m0."""
    torch.manual_seed(7)
    fifo = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="fifo")
    torch.manual_seed(7)
    gated = wmkernels.nn.WMLSTM(I, H, S, D, write_mode="gated")
    torch.manual_seed(7)
    bound = 1 / H ** 0.5
    for key, p in fifo.params().items():
        assert torch.equal(p, torch.empty_like(p).uniform_(-bound, bound)), key
        assert torch.equal(p, getattr(gated, key)), key
    x = torch.randn(T, B, I)
    zeros = tuple(torch.zeros_like(t) for t in random_state())
    assert torch.equal(fifo(x)[0], ops.wm_lstm_sequence(x, zeros, fifo.params(), "fifo")[0])


def slot_spread(M):
    """Largest distance of a slot from its row's mean slot."""
    return (M - M.mean(dim=1, keepdim=True)).abs().amax().item()


@pytest.mark.parametrize("layer_type", (wmkernels.nn.WMLSTM, wmkernels.nn.WMLSTMCell))
def test_gated_default_state_can_use_its_memory(layer_type):
    """From state=None the gated memory's slots differ and stay apart, the read
    attention depends on the query, and w_q, b_q get a gradient as large as the
    other weights' (from the zero memory: spread 0 and gradients of 1e-9)."""
    torch.manual_seed(0)
    layer = layer_type(I, H, S, D, write_mode="gated")
    x = torch.randn(T, B, I)
    if layer_type is wmkernels.nn.WMLSTM:
        y, (_, _, M) = layer(x)
    else:
        ys, state = [], None
        for t in range(T):
            y_t, state = layer(x[t], state)
            ys.append(y_t)
        y, M = torch.stack(ys), state[2]
    assert slot_spread(M) > 0.1
    y.square().sum().backward()
    scale = layer.w_v.grad.norm()
    assert layer.w_q.grad.norm() > 1e-2 * scale and layer.b_q.grad.norm() > 1e-2 * scale
    assert layer.m0.grad.norm() > 1e-2 * scale


@pytest.mark.parametrize("layer_type", (wmkernels.nn.WMLSTM, wmkernels.nn.WMLSTMCell))
def test_a_degenerate_gated_memory_warns(layer_type):
    layer = layer_type(I, H, S, D, write_mode="gated")
    x = torch.randn(T, B, I) if layer_type is wmkernels.nn.WMLSTM else torch.randn(B, I)
    h, c, M = random_state()
    M[1] = 0.5  # row 1: every slot equal
    with pytest.warns(UserWarning, match=r"all 3 slots equal in 1 of 3 rows \(first: row 1\).*w_q, b_q"):
        layer(x, (h, c, M))
    with pytest.warns(UserWarning, match="slots equal in 3 of 3 rows"):
        layer(x, (h, c, torch.zeros_like(M)))
    quiet = [(h, c, random_state()[2]), None]
    fifo = layer_type(I, H, S, D, write_mode="fifo")
    one_slot = layer_type(I, H, 1, D, write_mode="gated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for state in quiet:
            layer(x, state)
        fifo(x, (h, c, torch.zeros_like(M)))  # fifo's shift tells the slots apart
        one_slot(x, (h, c, torch.zeros(B, 1, D)))  # one slot: nothing to tell apart
        layer(x[..., :0, :] if x.dim() == 3 else x[:0], (h[:0], c[:0], M[:0]))  # an empty batch


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip_between_the_layers(mode, tmp_path):
    """WMLSTM and WMLSTMCell save and load each other's state_dict, m0 included,
    and then compute the same from the default state."""
    seq = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    torch.save(seq.state_dict(), tmp_path / "wm.pt")
    cell = wmkernels.nn.WMLSTMCell(I, H, S, D, write_mode=mode)
    cell.load_state_dict(torch.load(tmp_path / "wm.pt"))
    assert ("m0" in cell.state_dict()) == (mode == "gated")
    x = torch.randn(T, B, I)
    y, state = seq(x)
    ys, s = [], None
    for t in range(T):
        y_t, s = cell(x[t], s)
        ys.append(y_t)
    assert rel_err(torch.stack(ys), y) <= 1e-5 and rel_err(s[2], state[2]) <= 1e-5
    back = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    back.load_state_dict(cell.state_dict())
    assert torch.equal(back(x)[0], y)


@pytest.mark.parametrize("layer_type", (wmkernels.nn.WMLSTM, wmkernels.nn.WMLSTMCell))
def test_bad_arguments(layer_type):
    with pytest.raises(ValueError, match="write_mode"):
        layer_type(I, H, S, D, write_mode="lru")
    with pytest.raises(ValueError, match="memory_slots"):
        layer_type(I, H, 0, D)
    with pytest.raises(TypeError, match="memory_dim"):
        layer_type(I, H, S, 2.5)
    layer = layer_type(I, H, S, D)
    x = torch.randn(T, B, I) if layer_type is wmkernels.nn.WMLSTM else torch.randn(B, I)
    with pytest.raises(ValueError, match="I=4"):
        layer(x[..., :3])
    bad_state = random_state()
    bad_state = (bad_state[0], bad_state[1], torch.randn(B, S + 1, D))
    with pytest.raises(ValueError, match=r"state\[2\] \(M\).*\(3, 3, 5\), got \[3, 4, 5\]"):
        layer(x, bad_state)
    with pytest.raises(ValueError, match="tuple"):
        layer(x, random_state()[:2])
    with pytest.raises(ValueError, match="dtype"):
        layer(x.double())
    with pytest.raises(ValueError, match="I=4"):  # the width before the dtype, as torch's layers
        layer(x[..., :3].double())
    with pytest.raises(ValueError, match=r"state\[2\] \(M\).*\(3, 3, 5\), got \[3, 4, 5\]"):
        layer(x, tuple(t.double() for t in bad_state))


# ------------------------------------------------------------------------- WorkingMemory

def test_working_memory_is_the_memory_ops():
    memory = wmkernels.nn.WorkingMemory(S, D)
    assert list(memory.parameters()) == []
    M = memory.empty(B)
    assert M.shape == (B, S, D) and torch.all(M == 0)
    M = torch.randn(B, S, D)
    q, v, e, a, w = (torch.randn(B, D), torch.randn(B, D), torch.rand(B, D), torch.randn(B, D),
                     torch.rand(B, S))
    mask = torch.rand(B, S) > 0.3
    for got, expected in zip(memory.read(M, q, mask, 0.7), ops.wm_read(M, q, mask, 0.7)):
        assert torch.equal(got, expected)
    assert torch.equal(memory(M, q)[0], ops.wm_read(M, q)[0])
    written = memory.write(M, v)
    assert torch.equal(written[:, :S - 1], M[:, 1:]) and torch.equal(written[:, S - 1], v)
    assert torch.equal(memory.update(M, w, e, a), ops.wm_write(M, w, e, a))
    assert memory.empty(2, dtype=torch.float64).dtype == torch.float64


def test_working_memory_bad_arguments():
    memory = wmkernels.nn.WorkingMemory(S, D)
    with pytest.raises(ValueError, match=r"\[B, S=3, D=5\], got \[3, 4, 5\]"):
        memory.read(torch.randn(B, S + 1, D), torch.randn(B, D))
    with pytest.raises(ValueError, match="3D"):
        memory.write(torch.randn(S, D), torch.randn(B, D))
    with pytest.raises(ValueError, match="slots"):
        wmkernels.nn.WorkingMemory(0, D)
    with pytest.raises(ValueError, match="batch"):
        memory.empty(-1)


@pytest.mark.parametrize("mode", MODES)
def test_jit_trace_and_export_record_plain_pytorch(mode, tmp_path):
    """torch.jit.trace and torch.export record the reference (TorchScript holds no
    Python autograd Function, an exported program differentiates none): the traced
    layer saves, loads and computes what the layer does; the exported one runs
    forward and backward equal to the layer's."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    x, state = torch.randn(T, B, I), random_state()
    want = layer(x, state)[0]

    torch.jit.trace(layer, (x, state)).save(str(tmp_path / "wm.pt"))
    assert rel_err(torch.jit.load(str(tmp_path / "wm.pt"))(x, state)[0], want) <= 1e-6

    exported = torch.export.export(layer, (x, state)).module()
    leaf, eager_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = exported(leaf, state)[0]
    upstream = torch.randn_like(got)
    (got * upstream).sum().backward()
    (layer(eager_leaf, state)[0] * upstream).sum().backward()
    assert rel_err(got, want) <= 1e-6 and rel_err(leaf.grad, eager_leaf.grad) <= 1e-5


def test_a_kernel_backend_asked_for_by_name_cannot_be_recorded():
    layer = wmkernels.nn.WMLSTM(I, H, S, D)
    with wmkernels.use_backend("cpu"), pytest.raises(wmkernels.BackendUnavailableError,
                                                     match="torch.jit.trace and torch.export"):
        torch.jit.trace(layer, (torch.randn(T, B, I),))


@pytest.mark.parametrize("mode", MODES)
def test_wmlstm_passes_gradgradcheck(mode):
    layer = wmkernels.nn.WMLSTM(2, 3, 2, 2, write_mode=mode).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64),
             torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradgradcheck(lambda x, M: layer(x, (state[0], state[1], M))[0], (x, state[2]))


@pytest.mark.parametrize("mode", MODES)
def test_autocast_leaves_the_layers_in_their_dtype(mode):
    """The fused ops compute in their inputs' dtype under torch.autocast (autocast
    would recast the matrix products inside some backends and not others), and
    WMLSTMCell, a step of WMLSTM, does the same: results equal those without autocast."""
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    cell = wmkernels.nn.WMLSTMCell(I, H, S, D, write_mode=mode)
    cell.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    want = layer(x)[0]
    want_step = cell(x[0])[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)[0]
        got_step = cell(x[0])[0]
        got.sum().backward()  # backward inside the block as well
    assert got.dtype == got_step.dtype == torch.float32
    assert torch.equal(got, want) and torch.equal(got_step, want_step) and x.grad is not None

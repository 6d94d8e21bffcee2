"""Tests of the pure-PyTorch reference (``wmkernels.reference``), in float64.

The reference is the source of truth every backend is compared with, so it is
checked here against independent ground truth: ``torch.nn.LSTM`` /
``torch.nn.LSTMCell``, small cases worked out by hand with literal numbers,
a hand-rolled loop of the contract §1.4 equations, and ``torch.autograd.gradcheck``.
Inputs are random (never zeros) and drawn afresh per test (conftest seeds).
"""
import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from wmkernels import reference

DT = torch.float64


# --------------------------------------------------------------------------- helpers

def rel_err(a, b):
    """‖a − b‖ / ‖b‖ (the absolute ‖a − b‖ when b is all zero or empty)."""
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    diff = (a - b).norm().item()
    nb = b.norm().item()
    return diff / nb if nb > 0 else diff


def assert_close(a, b, tol=1e-12, what="output"):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert not torch.isnan(a).any(), f"{what}: NaN"
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def rnd(*shape, scale=1.0, requires_grad=False):
    """Random float64 tensor, never zeros."""
    t = torch.randn(*shape, dtype=DT) * scale
    return t.requires_grad_(requires_grad)


def T_(values):
    """A literal float64 tensor."""
    return torch.tensor(values, dtype=DT)


def make_wm_params(I, H, D, gated=True, scale=0.5):
    p = {
        "w_ih": rnd(4 * H, I, scale=scale), "w_hh": rnd(4 * H, H, scale=scale),
        "w_rh": rnd(4 * H, D, scale=scale), "b": rnd(4 * H, scale=scale),
        "w_q": rnd(D, H, scale=scale), "b_q": rnd(D, scale=scale),
        "w_v": rnd(D, H, scale=scale), "b_v": rnd(D, scale=scale),
    }
    if gated:
        p["w_e"] = rnd(D, H, scale=scale)
        p["b_e"] = rnd(D, scale=scale)
    return p


def make_wm_state(B, H, S, D):
    return rnd(B, H), rnd(B, H), rnd(B, S, D)


def make_lstm(I, H, bias=True):
    """A float64 torch.nn.LSTM with random (normal, not tiny) weights."""
    lstm = torch.nn.LSTM(I, H, num_layers=1, bias=bias, dtype=DT)
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.randn_like(p) * 0.6)
    return lstm


def lstm_weights(lstm):
    """(w_ih, w_hh, b_ih, b_hh) of a 1-layer nn.LSTM, biases None when absent."""
    b_ih = getattr(lstm, "bias_ih_l0", None) if lstm.bias else None
    b_hh = getattr(lstm, "bias_hh_l0", None) if lstm.bias else None
    return lstm.weight_ih_l0, lstm.weight_hh_l0, b_ih, b_hh


def detached_leaves(tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def noncontig(t):
    """Same values, a non-contiguous view (transposed copy transposed back)."""
    if t.dim() < 2:
        out = torch.stack([t, t], dim=-1)[..., 0]
    else:
        out = t.transpose(0, 1).contiguous().transpose(0, 1)
    assert not out.is_contiguous() or t.numel() <= 1
    assert torch.equal(out, t)
    return out


# --------------------------------------------------------------------------- 1. lstm_cell

@pytest.mark.parametrize("H", [1, 3, 65])
@pytest.mark.parametrize("B", [1, 5])
def test_lstm_cell_matches_torch_lstmcell(B, H):
    I = 4
    cell = torch.nn.LSTMCell(I, H, dtype=DT)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.6)
    x, h0, c0 = rnd(B, I), rnd(B, H), rnd(B, H)
    gates = x @ cell.weight_ih.t() + cell.bias_ih + h0 @ cell.weight_hh.t() + cell.bias_hh
    gates_before, c0_before = gates.clone(), c0.clone()
    h, c = reference.lstm_cell(gates, c0)
    h_ref, c_ref = cell(x, (h0, c0))
    assert h.shape == (B, H) and c.shape == (B, H)
    assert_close(h, h_ref, 1e-12, "h")
    assert_close(c, c_ref, 1e-12, "c")
    assert torch.equal(gates, gates_before) and torch.equal(c0, c0_before)


# --------------------------------------------------------------------------- 2. lstm_sequence

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("H", [1, 3, 17])
@pytest.mark.parametrize("I", [1, 3])
@pytest.mark.parametrize("B", [1, 2, 5])
@pytest.mark.parametrize("T", [1, 7])
def test_lstm_sequence_matches_torch_lstm(T, B, I, H, bias):
    lstm = make_lstm(I, H, bias)
    x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H)
    w_ih, w_hh, b_ih, b_hh = lstm_weights(lstm)
    if not bias:
        assert b_ih is None and b_hh is None
    y, h_n, c_n = reference.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y_ref, (h_ref, c_ref) = lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
    assert y.shape == (T, B, H)
    assert_close(y, y_ref, 1e-12, "y")
    assert_close(h_n, h_ref[0], 1e-12, "h_n")
    assert_close(c_n, c_ref[0], 1e-12, "c_n")


def test_lstm_sequence_t0_returns_initial_state():
    B, I, H = 3, 2, 4
    lstm = make_lstm(I, H)
    x, h0, c0 = rnd(0, B, I), rnd(B, H), rnd(B, H)
    y, h_n, c_n = reference.lstm_sequence(x, h0, c0, *lstm_weights(lstm))
    assert y.shape == (0, B, H) and y.dtype == DT
    assert torch.equal(h_n, h0) and torch.equal(c_n, c0)
    # outputs are new tensors, not the inputs themselves
    assert h_n.data_ptr() != h0.data_ptr() and c_n.data_ptr() != c0.data_ptr()


@pytest.mark.parametrize("T", [0, 4])
def test_lstm_sequence_empty_batch(T):
    I, H = 3, 5
    lstm = make_lstm(I, H)
    x, h0, c0 = rnd(T, 0, I), rnd(0, H), rnd(0, H)
    y, h_n, c_n = reference.lstm_sequence(x, h0, c0, *lstm_weights(lstm))
    assert y.shape == (T, 0, H) and h_n.shape == (0, H) and c_n.shape == (0, H)
    lengths = torch.zeros(0, dtype=torch.int64)
    y2, h2, c2 = reference.lstm_sequence(x, h0, c0, *lstm_weights(lstm), lengths=lengths)
    assert y2.shape == (T, 0, H) and h2.shape == (0, H) and c2.shape == (0, H)


# --------------------------------------------------------------------------- 3. lengths

def _packed_lstm(lstm, x, h0, c0, lengths):
    T = x.shape[0]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed, (h0.unsqueeze(0), c0.unsqueeze(0)))
    y, _ = pad_packed_sequence(out, total_length=T)
    return y, h_n[0], c_n[0]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,lengths", [
    (7, [3, 7, 1, 5, 7]),
    (5, [2, 5, 4]),
    (1, [1, 1]),
    (6, [6]),
    (6, "random"),
])
def test_lstm_sequence_lengths_match_packed_lstm(T, lengths, bias):
    if lengths == "random":
        lengths = torch.randint(1, T + 1, (4,)).tolist()
    B, I, H = len(lengths), 3, 4
    lengths = torch.tensor(lengths, dtype=torch.int64)
    lstm = make_lstm(I, H, bias)
    x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H)
    w = lstm_weights(lstm)

    # reference on separate leaves (the same values)
    xr, h0r, c0r, *wr = detached_leaves([x, h0, c0, *w])
    y, h_n, c_n = reference.lstm_sequence(xr, h0r, c0r, *wr, lengths=lengths)

    xl, h0l, c0l = detached_leaves([x, h0, c0])
    y_ref, h_ref, c_ref = _packed_lstm(lstm, xl, h0l, c0l, lengths)

    assert y.shape == (T, B, H)
    assert_close(y, y_ref, 1e-12, "y")
    assert_close(h_n, h_ref, 1e-12, "h_n")
    assert_close(c_n, c_ref, 1e-12, "c_n")
    for b in range(B):  # zeros past each length, exactly
        assert torch.all(y[lengths[b]:, b] == 0)

    # backward through both with the same upstream gradient
    gy, gh, gc = rnd(T, B, H), rnd(B, H), rnd(B, H)
    ((y * gy).sum() + (h_n * gh).sum() + (c_n * gc).sum()).backward()
    ((y_ref * gy).sum() + (h_ref * gh).sum() + (c_ref * gc).sum()).backward()
    assert_close(xr.grad, xl.grad, 1e-10, "x.grad")
    assert_close(h0r.grad, h0l.grad, 1e-10, "h0.grad")
    assert_close(c0r.grad, c0l.grad, 1e-10, "c0.grad")
    names = ["w_ih", "w_hh", "b_ih", "b_hh"]
    for name, mine, theirs in zip(names, wr, w):
        if theirs is None:
            assert mine is None
            continue
        assert_close(mine.grad, theirs.grad, 1e-10, f"{name}.grad")


def test_lstm_sequence_lengths_all_full_equals_no_lengths():
    T, B, I, H = 5, 3, 2, 4
    lstm = make_lstm(I, H)
    x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H)
    w = lstm_weights(lstm)
    full = reference.lstm_sequence(x, h0, c0, *w, lengths=torch.full((B,), T, dtype=torch.int64))
    plain = reference.lstm_sequence(x, h0, c0, *w)
    for a, b, n in zip(full, plain, ["y", "h_n", "c_n"]):
        assert_close(a, b, 1e-14, n)


def test_lstm_sequence_zero_length_row():
    T, I, H = 4, 3, 5
    lengths = torch.tensor([3, 0, 4, 0, 1], dtype=torch.int64)
    B = len(lengths)
    lstm = make_lstm(I, H)
    x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H)
    w = lstm_weights(lstm)
    y, h_n, c_n = reference.lstm_sequence(x, h0, c0, *w, lengths=lengths)
    zero = lengths == 0
    assert torch.all(y[:, zero] == 0)
    assert torch.equal(h_n[zero], h0[zero]) and torch.equal(c_n[zero], c0[zero])
    # the other rows agree with nn.LSTM on the packed non-empty rows
    keep = ~zero
    with torch.no_grad():
        y_ref, h_ref, c_ref = _packed_lstm(lstm, x[:, keep], h0[keep], c0[keep], lengths[keep])
    assert_close(y[:, keep], y_ref, 1e-12, "y")
    assert_close(h_n[keep], h_ref, 1e-12, "h_n")
    assert_close(c_n[keep], c_ref, 1e-12, "c_n")
    # no NaN / sensible gradients through the frozen rows: h0 of a zero-length
    # row receives exactly the upstream gradient of h_n
    h0g = h0.clone().requires_grad_(True)
    gh = rnd(B, H)
    _, h_n2, _ = reference.lstm_sequence(x, h0g, c0, *[t.detach() if t is not None else None for t in w],
                                         lengths=lengths)
    (h_n2 * gh).sum().backward()
    assert torch.equal(h0g.grad[zero], gh[zero])


# --------------------------------------------------------------------------- 4. memory ops by hand

def test_wm_read_by_hand_explicit_scale():
    # scores = 0.5 * M·q = [0, ln 3] -> attn [1/4, 3/4]
    ln3 = math.log(3.0)
    M = T_([[[2.0, 4.0], [1.0, 3.0]]])
    q = T_([[-4 * ln3, 2 * ln3]])
    r, attn = reference.wm_read(M, q, scale=0.5)
    assert_close(attn, T_([[0.25, 0.75]]), 1e-14, "attn")
    assert_close(r, T_([[1.25, 3.25]]), 1e-14, "r")  # 0.25*[2,4] + 0.75*[1,3]


def test_wm_read_by_hand_default_scale():
    # M·q = [0, sqrt(2) ln 3]; default scale 1/sqrt(D) = 1/sqrt(2) -> [0, ln 3]
    a = math.log(3.0) / math.sqrt(2.0)
    M = T_([[[1.0, -1.0], [1.0, 1.0]]])
    q = T_([[a, a]])
    r, attn = reference.wm_read(M, q)
    assert_close(attn, T_([[0.25, 0.75]]), 1e-14, "attn")
    assert_close(r, T_([[1.0, 0.5]]), 1e-14, "r")  # 0.25*[1,-1] + 0.75*[1,1]


def test_wm_read_by_hand_mask_and_empty_row():
    ln3 = math.log(3.0)
    # row 0: slot 1 would dominate (score 7 ln 3) but is masked out; the others
    # score [0, ln 3] -> [1/4, 0, 3/4]. row 1: no readable slot -> zeros.
    M = T_([[[1.0, 0.0], [7.0, 7.0], [0.0, 1.0]],
            [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]).requires_grad_(True)
    q = T_([[0.0, ln3], [0.3, -0.7]]).requires_grad_(True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    r, attn = reference.wm_read(M, q, mask=mask, scale=1.0)
    assert_close(attn, T_([[0.25, 0.0, 0.75], [0.0, 0.0, 0.0]]), 1e-14, "attn")
    assert_close(r, T_([[0.25, 0.75], [0.0, 0.0]]), 1e-14, "r")
    assert attn[0, 1] == 0 and torch.all(attn[1] == 0) and torch.all(r[1] == 0)
    # backward through it: no NaN, nothing flows to masked slots / the empty row
    gr, ga = rnd(2, 2), rnd(2, 3)
    ((r * gr).sum() + (attn * ga).sum()).backward()
    assert torch.isfinite(M.grad).all() and torch.isfinite(q.grad).all()
    assert torch.all(M.grad[0, 1] == 0)
    assert torch.all(M.grad[1] == 0) and torch.all(q.grad[1] == 0)
    assert M.grad[0, 0].abs().sum() > 0 and q.grad[0].abs().sum() > 0


def test_wm_read_all_masked_random_no_nan():
    B, S, D = 3, 4, 5
    M, q = rnd(B, S, D, requires_grad=True), rnd(B, D, requires_grad=True)
    mask = torch.zeros(B, S, dtype=torch.bool)
    r, attn = reference.wm_read(M, q, mask=mask)
    assert torch.all(r == 0) and torch.all(attn == 0)
    (r.sum() + attn.sum()).backward()
    assert torch.all(M.grad == 0) and torch.all(q.grad == 0)


def test_wm_read_full_mask_equals_no_mask():
    B, S, D = 4, 5, 3
    M, q = rnd(B, S, D), rnd(B, D)
    r1, a1 = reference.wm_read(M, q)
    r2, a2 = reference.wm_read(M, q, mask=torch.ones(B, S, dtype=torch.bool))
    assert_close(r2, r1, 1e-14, "r")
    assert_close(a2, a1, 1e-14, "attn")
    assert_close(a1.sum(1), torch.ones(B, dtype=DT), 1e-14, "attn row sums")


def test_wm_shift_write_by_hand():
    M = T_([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
            [[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]])
    v = T_([[7.0, 8.0], [-7.0, -8.0]])
    M_before = M.clone()
    out = reference.wm_shift_write(M, v)
    expected = T_([[[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
                   [[-3.0, -4.0], [-5.0, -6.0], [-7.0, -8.0]]])
    assert torch.equal(out, expected)
    assert torch.equal(M, M_before)


def test_wm_shift_write_single_slot():
    M = T_([[[1.0, 2.0]]])
    v = T_([[9.0, 8.0]])
    out = reference.wm_shift_write(M, v)
    assert torch.equal(out, T_([[[9.0, 8.0]]]))
    assert torch.equal(M, T_([[[1.0, 2.0]]]))


def test_wm_write_by_hand_one_hot():
    M = T_([[[1.0, 2.0], [3.0, 4.0]]])
    w = T_([[1.0, 0.0]])
    e = T_([[1.0, 0.5]])
    a = T_([[2.0, 3.0]])
    out = reference.wm_write(M, w, e, a)
    # slot 0: [1*(1-1)+2, 2*(1-0.5)+3] = [2, 4]; slot 1 untouched (w = 0)
    assert_close(out, T_([[[2.0, 4.0], [3.0, 4.0]]]), 1e-15, "M_new")
    assert torch.equal(M, T_([[[1.0, 2.0], [3.0, 4.0]]]))


def test_wm_write_by_hand_fractional():
    M = T_([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    w = T_([[0.5, 0.25], [0.0, 1.0]])
    e = T_([[1.0, 0.5], [0.5, 0.0]])
    a = T_([[2.0, 4.0], [10.0, 20.0]])
    out = reference.wm_write(M, w, e, a)
    expected = T_([
        # w=0.5: [1*(1-0.5)+1, 2*(1-0.25)+2]; w=0.25: [3*(1-0.25)+0.5, 4*(1-0.125)+1]
        [[1.5, 3.5], [2.75, 4.5]],
        # w=0: unchanged; w=1: [1*(1-0.5)+10, 1*(1-0)+20]
        [[1.0, 1.0], [10.5, 21.0]],
    ])
    assert_close(out, expected, 1e-15, "M_new")


# --------------------------------------------------------------------------- 5. wm_lstm_sequence

def manual_wm_lstm(x, state, p, write_mode):
    """contract §1.4 written out with torch primitives only (no reference helpers)."""
    h, c, M = state
    H, D = h.shape[1], M.shape[2]
    ys = []
    for t in range(x.shape[0]):
        q = h @ p["w_q"].t() + p["b_q"]
        scores = (M * q[:, None, :]).sum(dim=2) / math.sqrt(D)
        ex = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        alpha = ex / ex.sum(dim=1, keepdim=True)
        r = (alpha[:, :, None] * M).sum(dim=1)
        g = x[t] @ p["w_ih"].t() + h @ p["w_hh"].t() + r @ p["w_rh"].t() + p["b"]
        i_g = torch.sigmoid(g[:, 0:H])
        f_g = torch.sigmoid(g[:, H:2 * H])
        g_g = torch.tanh(g[:, 2 * H:3 * H])
        o_g = torch.sigmoid(g[:, 3 * H:4 * H])
        c = f_g * c + i_g * g_g
        h = o_g * torch.tanh(c)
        v = torch.tanh(h @ p["w_v"].t() + p["b_v"])
        if write_mode == "fifo":
            M_new = torch.empty_like(M)
            M_new[:, :-1] = M[:, 1:]
            M_new[:, -1] = v
            M = M_new
        else:
            e = torch.sigmoid(h @ p["w_e"].t() + p["b_e"])
            we = alpha[:, :, None] * e[:, None, :]
            M = M - we * M + alpha[:, :, None] * v[:, None, :]
        y = torch.empty(h.shape[0], H + D, dtype=h.dtype)
        y[:, :H] = h
        y[:, H:] = r
        ys.append(y)
    y = torch.stack(ys) if ys else torch.zeros(0, h.shape[0], H + D, dtype=h.dtype)
    return y, (h, c, M)


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_matches_hand_loop(write_mode):
    T, B, I, H, S, D = 3, 2, 3, 5, 4, 3
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"), scale=0.7)
    x, state = rnd(T, B, I), make_wm_state(B, H, S, D)
    before = [t.clone() for t in (x, *state)]
    y, (h, c, M) = reference.wm_lstm_sequence(x, state, p, write_mode=write_mode)
    y_m, (h_m, c_m, M_m) = manual_wm_lstm(x, state, p, write_mode)
    assert y.shape == (T, B, H + D)
    assert_close(y, y_m, 1e-12, "y")
    assert_close(h, h_m, 1e-12, "h_T")
    assert_close(c, c_m, 1e-12, "c_T")
    assert_close(M, M_m, 1e-12, "M_T")
    for a, b in zip(before, (x, *state)):
        assert torch.equal(a, b), "an input was modified"


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("B", [0, 3])
def test_wm_lstm_sequence_t0(write_mode, B):
    I, H, S, D = 2, 4, 3, 5
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"))
    state = make_wm_state(B, H, S, D)
    y, (h, c, M) = reference.wm_lstm_sequence(rnd(0, B, I), state, p, write_mode=write_mode)
    assert y.shape == (0, B, H + D) and y.dtype == DT
    assert torch.equal(h, state[0]) and torch.equal(c, state[1]) and torch.equal(M, state[2])
    if B > 0:
        assert h.data_ptr() != state[0].data_ptr() and M.data_ptr() != state[2].data_ptr()


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_empty_batch(write_mode):
    T, I, H, S, D = 3, 2, 4, 3, 5
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"))
    y, (h, c, M) = reference.wm_lstm_sequence(rnd(T, 0, I), make_wm_state(0, H, S, D), p,
                                              write_mode=write_mode)
    assert y.shape == (T, 0, H + D) and h.shape == (0, H) and c.shape == (0, H)
    assert M.shape == (0, S, D)


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_lengths_match_per_row_runs(write_mode):
    T, I, H, S, D = 5, 3, 4, 3, 2
    lengths = torch.tensor([5, 2, 0, 3, 1], dtype=torch.int64)
    B = len(lengths)
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"))
    x, (h0, c0, M0) = rnd(T, B, I), make_wm_state(B, H, S, D)
    y, (h, c, M) = reference.wm_lstm_sequence(x, (h0, c0, M0), p, write_mode, lengths=lengths)
    assert y.shape == (T, B, H + D)
    for b in range(B):
        L = int(lengths[b])
        row = slice(b, b + 1)
        y_b, (h_b, c_b, M_b) = reference.wm_lstm_sequence(
            x[:L, row], (h0[row], c0[row], M0[row]), p, write_mode)
        # also against the hand loop, so the per-row runs are themselves checked
        y_m, (h_m, c_m, M_m) = manual_wm_lstm(x[:L, row], (h0[row], c0[row], M0[row]), p, write_mode)
        assert_close(y_b, y_m, 1e-12, f"row {b} y (hand loop)")
        assert_close(M_b, M_m, 1e-12, f"row {b} M (hand loop)")
        assert_close(y[:L, row], y_b, 1e-13, f"row {b} y")
        assert torch.all(y[L:, b] == 0), f"row {b}: y not zero past its length"
        assert_close(h[row], h_b, 1e-13, f"row {b} h")
        assert_close(c[row], c_b, 1e-13, f"row {b} c")
        assert_close(M[row], M_b, 1e-13, f"row {b} M")
    zero = lengths == 0
    assert torch.equal(h[zero], h0[zero]) and torch.equal(c[zero], c0[zero])
    assert torch.equal(M[zero], M0[zero])


@pytest.mark.parametrize("T", [4, 6])
def test_wm_lstm_fifo_memory_is_last_s_written_vectors(T):
    B, I, H, S, D = 1, 3, 5, 4, 3
    p = make_wm_params(I, H, D, gated=False)
    x, state = rnd(T, B, I), make_wm_state(B, H, S, D)
    y, (h, c, M) = reference.wm_lstm_sequence(x, state, p, "fifo")
    hs = y[:, :, :H]                                        # h_t, t = 1..T
    assert_close(hs[-1], h, 1e-15, "y[-1, :, :H] vs h_T")
    v = torch.tanh(hs @ p["w_v"].t() + p["b_v"])           # [T, B, D]
    expected = v[T - S:].transpose(0, 1)                    # [B, S, D], oldest first
    assert_close(M, expected, 1e-13, "M_T")


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_extra_param_keys_ignored(write_mode):
    T, B, I, H, S, D = 3, 2, 3, 4, 3, 2
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"))
    x, state = rnd(T, B, I), make_wm_state(B, H, S, D)
    y, st = reference.wm_lstm_sequence(x, state, p, write_mode)
    p_extra = dict(p, junk=rnd(7, 7), w_zz=rnd(4 * H, I), bias=rnd(4 * H))
    y2, st2 = reference.wm_lstm_sequence(x, state, p_extra, write_mode)
    assert torch.equal(y, y2)
    for a, b in zip(st, st2):
        assert torch.equal(a, b)


def test_wm_lstm_fifo_ignores_gated_keys():
    T, B, I, H, S, D = 3, 2, 3, 4, 3, 2
    p_gated = make_wm_params(I, H, D, gated=True)
    p_fifo = {k: v for k, v in p_gated.items() if k not in ("w_e", "b_e")}
    x, state = rnd(T, B, I), make_wm_state(B, H, S, D)
    y1, st1 = reference.wm_lstm_sequence(x, state, p_fifo, "fifo")
    y2, st2 = reference.wm_lstm_sequence(x, state, p_gated, "fifo")
    assert torch.equal(y1, y2)
    for a, b in zip(st1, st2):
        assert torch.equal(a, b)
    # ...whereas gated mode does depend on them
    y3, _ = reference.wm_lstm_sequence(x, state, p_gated, "gated")
    assert rel_err(y3, y1) > 1e-6


# --------------------------------------------------------------------------- 6. gradcheck

def gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_gradcheck_lstm_cell():
    B, H = 2, 3
    gradcheck(reference.lstm_cell, (rnd(B, 4 * H, requires_grad=True), rnd(B, H, requires_grad=True)))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lengths", [None, [3, 1, 0]])
def test_gradcheck_lstm_sequence(lengths, bias):
    T, B, I, H = 3, 3, 2, 2
    lengths_t = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    inputs = [rnd(T, B, I), rnd(B, H), rnd(B, H), rnd(4 * H, I, scale=0.6), rnd(4 * H, H, scale=0.6)]
    if bias:
        inputs += [rnd(4 * H, scale=0.6), rnd(4 * H, scale=0.6)]
    inputs = tuple(t.requires_grad_(True) for t in inputs)

    def fn(*args):
        return reference.lstm_sequence(*args, lengths=lengths_t)

    gradcheck(fn, inputs)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale", [None, 0.7])
def test_gradcheck_wm_read(masked, scale):
    B, S, D = 3, 3, 2
    M, q = rnd(B, S, D, requires_grad=True), rnd(B, D, requires_grad=True)
    mask = None
    if masked:
        mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])

    def fn(M, q):
        return reference.wm_read(M, q, mask=mask, scale=scale)

    gradcheck(fn, (M, q))


def test_gradcheck_wm_read_with_fully_masked_row():
    B, S, D = 3, 3, 2
    M, q = rnd(B, S, D, requires_grad=True), rnd(B, D, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, True]])
    gradcheck(lambda M, q: reference.wm_read(M, q, mask=mask), (M, q))


def test_gradcheck_wm_shift_write():
    B, S, D = 2, 3, 2
    gradcheck(reference.wm_shift_write, (rnd(B, S, D, requires_grad=True), rnd(B, D, requires_grad=True)))


def test_gradcheck_wm_write():
    B, S, D = 2, 3, 2
    inputs = (rnd(B, S, D, requires_grad=True), torch.rand(B, S, dtype=DT).requires_grad_(True),
              torch.rand(B, D, dtype=DT).requires_grad_(True), rnd(B, D, requires_grad=True))
    gradcheck(reference.wm_write, inputs)


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("lengths", [None, [3, 1, 0]])
def test_gradcheck_wm_lstm_sequence(write_mode, lengths):
    T, I, H, S, D = 3, 2, 2, 2, 2               # T > S: the fifo memory wraps
    B = 2 if lengths is None else len(lengths)
    lengths_t = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"), scale=0.7)
    keys = sorted(p)
    x, (h0, c0, M0) = rnd(T, B, I), make_wm_state(B, H, S, D)
    inputs = tuple(t.requires_grad_(True) for t in [x, h0, c0, M0] + [p[k] for k in keys])

    def fn(x, h0, c0, M0, *ps):
        params = dict(zip(keys, ps))
        y, (h, c, M) = reference.wm_lstm_sequence(x, (h0, c0, M0), params, write_mode,
                                                  lengths=lengths_t)
        return y, h, c, M

    gradcheck(fn, inputs)


# --------------------------------------------------------------------------- 7. non-contiguous

def test_noncontiguous_lstm_cell():
    B, H = 3, 4
    big = rnd(B, 8 * H)
    gates = big[:, ::2]                      # a strided slice
    c0 = noncontig(rnd(B, H))
    assert not gates.is_contiguous()
    h1, c1 = reference.lstm_cell(gates, c0)
    h2, c2 = reference.lstm_cell(gates.contiguous(), c0.contiguous())
    assert_close(h1, h2, 1e-14, "h")
    assert_close(c1, c2, 1e-14, "c")


@pytest.mark.parametrize("with_lengths", [False, True])
def test_noncontiguous_lstm_sequence(with_lengths):
    T, B, I, H = 5, 3, 3, 4
    lengths = torch.tensor([5, 2, 4], dtype=torch.int64) if with_lengths else None
    x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H)
    w = [rnd(4 * H, I), rnd(4 * H, H), rnd(4 * H), rnd(4 * H)]
    nc = [noncontig(t) for t in [x, h0, c0] + w]
    assert not nc[0].is_contiguous() and not nc[3].is_contiguous()
    out_c = reference.lstm_sequence(x, h0, c0, *w, lengths=lengths)
    out_n = reference.lstm_sequence(*nc, lengths=lengths)
    for a, b, n in zip(out_n, out_c, ["y", "h_n", "c_n"]):
        assert_close(a, b, 1e-13, n)


def test_noncontiguous_memory_ops():
    B, S, D = 3, 4, 5
    M_big = rnd(B, S + 2, 2 * D)
    M = M_big[:, 1:S + 1, ::2]               # a slice, not contiguous
    q, v, e, a = noncontig(rnd(B, D)), noncontig(rnd(B, D)), noncontig(rnd(B, D)), noncontig(rnd(B, D))
    w = torch.rand(B, 2 * S, dtype=DT)[:, ::2]
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    assert not M.is_contiguous() and not w.is_contiguous() and not q.is_contiguous()
    Mc = M.contiguous()
    for m in (None, mask):
        r1, a1 = reference.wm_read(M, q, mask=m)
        r2, a2 = reference.wm_read(Mc, q.contiguous(), mask=m)
        assert_close(r1, r2, 1e-14, "r")
        assert_close(a1, a2, 1e-14, "attn")
    assert_close(reference.wm_shift_write(M, v), reference.wm_shift_write(Mc, v.contiguous()), 1e-15,
                 "wm_shift_write")
    assert_close(reference.wm_write(M, w, e, a),
                 reference.wm_write(Mc, w.contiguous(), e.contiguous(), a.contiguous()), 1e-15,
                 "wm_write")
    assert torch.equal(M_big[:, 1:S + 1, ::2], Mc)  # the input view was not written


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_noncontiguous_wm_lstm_sequence(write_mode):
    T, B, I, H, S, D = 4, 3, 3, 4, 3, 2
    lengths = torch.tensor([4, 1, 3], dtype=torch.int64)
    p = make_wm_params(I, H, D, gated=(write_mode == "gated"))
    x, (h0, c0, M0) = rnd(T, B, I), make_wm_state(B, H, S, D)
    M0_nc = rnd(B, S + 1, 2 * D)[:, :S, :D]
    M0_nc.copy_(M0)
    assert not M0_nc.is_contiguous()
    p_nc = {k: noncontig(v) for k, v in p.items()}
    for L in (None, lengths):
        y1, st1 = reference.wm_lstm_sequence(noncontig(x), (noncontig(h0), noncontig(c0), M0_nc),
                                             p_nc, write_mode, lengths=L)
        y2, st2 = reference.wm_lstm_sequence(x, (h0, c0, M0), p, write_mode, lengths=L)
        assert_close(y1, y2, 1e-13, "y")
        for a, b, n in zip(st1, st2, ["h", "c", "M"]):
            assert_close(a, b, 1e-13, n)

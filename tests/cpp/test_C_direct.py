"""Direct calls of the C++ ops, bypassing wmkernels.ops and its Python checks:
every bad argument must raise RuntimeError (TORCH_CHECK), never crash or read
out of bounds, and good arguments must give the LSTM cell math in float64.
"""
import os

import pytest
import torch

if os.environ.get("WMKERNELS_ALLOW_NO_EXTENSION") == "1":
    _C = pytest.importorskip("wmkernels._C", reason="wmkernels._C not built (pip install -e .)")
else:
    import wmkernels._C as _C  # built by the README's install step: failing to load is a failure

fwd = torch.ops.wmkernels.lstm_cell_forward
bwd = torch.ops.wmkernels.lstm_cell_backward
D = torch.float64


def _formula(gates, c_prev):
    gi, gf, gg, go = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
    c = f * c_prev + i * g
    h = o * torch.tanh(c)
    return h, c, torch.cat([i, f, g, o], dim=1)


def _rel(out, ref):
    if ref.numel() == 0:
        return 0.0
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


# ---- bad input -------------------------------------------------------------

def _good(B=3, H=4, dtype=D):
    return torch.randn(B, 4 * H, dtype=dtype), torch.randn(B, H, dtype=dtype)


@pytest.mark.parametrize("gates_shape,c_shape", [
    ((3, 15), (3, 4)),        # width not 4H
    ((3, 4), (3, 4)),         # width H, not 4H
    ((3, 16), (2, 4)),        # mismatched B
    ((3, 16), (3, 5)),        # mismatched H
    ((3, 16), (3, 4, 1)),     # c_prev rank 3
    ((3, 4, 4), (3, 4)),      # gates rank 3
    ((16,), (4,)),            # rank 1
    ((), ()),                 # rank 0
])
def test_forward_bad_shapes(gates_shape, c_shape):
    with pytest.raises(RuntimeError):
        fwd(torch.randn(gates_shape, dtype=D), torch.randn(c_shape, dtype=D))


@pytest.mark.parametrize("dtypes", [
    (torch.int32, torch.int32), (torch.int64, torch.int64), (torch.bool, torch.bool),
    (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
    (torch.complex64, torch.complex64),
    (torch.float32, torch.float64), (torch.float64, torch.float32),
])
def test_forward_bad_dtypes(dtypes):
    gates, c_prev = _good()
    with pytest.raises(RuntimeError):
        fwd(gates.to(dtypes[0]), c_prev.to(dtypes[1]))


def test_forward_meta_tensors_give_meta_outputs():
    """Meta tensors reach the fake kernel (registered for torch.compile by
    wmkernels.backends.cpu), which allocates nothing and reads no data."""
    gates, c_prev = _good()
    h, c, act = fwd(gates.to("meta"), c_prev.to("meta"))
    assert all(t.device.type == "meta" for t in (h, c, act))
    assert h.shape == c.shape == (3, 4) and act.shape == (3, 16)


def _bwd_args(B=3, H=4, dtype=D):
    gates, c_prev = _good(B, H, dtype)
    h, c, act = fwd(gates, c_prev)
    return dict(grad_h=torch.randn_like(h), grad_c=torch.randn_like(c), act=act,
                c_prev=c_prev, c=c)


@pytest.mark.parametrize("name,bad", [
    ("grad_h", lambda a: torch.randn(3, 5, dtype=D)),
    ("grad_h", lambda a: torch.randn(2, 4, dtype=D)),
    ("grad_c", lambda a: torch.randn(3, 4, 1, dtype=D)),
    ("grad_c", lambda a: torch.randn(12, dtype=D)),
    ("act", lambda a: torch.randn(3, 15, dtype=D)),
    ("act", lambda a: torch.randn(3, 4, dtype=D)),
    ("act", lambda a: torch.randn(4, 16, dtype=D)),
    ("c_prev", lambda a: torch.randn(3, 5, dtype=D)),
    ("c", lambda a: torch.randn(2, 4, dtype=D)),
    ("c", lambda a: a["c"].float()),
    ("act", lambda a: a["act"].float()),
    ("grad_h", lambda a: a["grad_h"].to(torch.int64)),
    ("c_prev", lambda a: a["c_prev"].to(torch.int32)),
])
def test_backward_bad_arguments(name, bad):
    args = _bwd_args()
    args[name] = bad(args)
    with pytest.raises(RuntimeError):
        bwd(args["grad_h"], args["grad_c"], args["act"], args["c_prev"], args["c"])


def test_backward_int_everything():
    args = {k: v.to(torch.int32) for k, v in _bwd_args().items()}
    with pytest.raises(RuntimeError):
        bwd(args["grad_h"], args["grad_c"], args["act"], args["c_prev"], args["c"])


# ---- good input --------------------------------------------------------------

@pytest.mark.parametrize("B,H", [(1, 1), (5, 1), (4, 65), (17, 3), (2, 257)])
def test_forward_matches_formula_float64(B, H):
    gates, c_prev = _good(B, H)
    gates = gates * 4  # reach the saturated ends of the sigmoids
    h, c, act = fwd(gates, c_prev)
    rh, rc, ract = _formula(gates, c_prev)
    for out, ref in ((h, rh), (c, rc), (act, ract)):
        assert out.dtype == D and out.shape == ref.shape
        assert _rel(out, ref) <= 1e-12


@pytest.mark.parametrize("B,H", [(1, 1), (4, 65), (6, 3)])
def test_backward_matches_autograd_float64(B, H):
    gates, c_prev = _good(B, H)
    gates.requires_grad_(True)
    c_prev.requires_grad_(True)
    rh, rc, _ = _formula(gates, c_prev)
    grad_h, grad_c = torch.randn_like(rh), torch.randn_like(rc)
    ref_gg, ref_gcp = torch.autograd.grad((rh, rc), (gates, c_prev), (grad_h, grad_c))
    with torch.no_grad():
        h, c, act = fwd(gates, c_prev)
        gg, gcp = bwd(grad_h, grad_c, act, c_prev, c)
    assert gg.shape == gates.shape and gcp.shape == c_prev.shape
    assert _rel(gg, ref_gg) <= 1e-12
    assert _rel(gcp, ref_gcp) <= 1e-12


def test_float32_close_to_float64():
    gates, c_prev = _good(7, 33)
    h64, c64, _ = fwd(gates, c_prev)
    h32, c32, act32 = fwd(gates.float(), c_prev.float())
    assert h32.dtype == torch.float32 and act32.dtype == torch.float32
    assert _rel(h32.double(), h64) <= 1e-6
    assert _rel(c32.double(), c64) <= 1e-6


def test_non_contiguous_inputs():
    gates = torch.randn(16, 5, dtype=D).t()  # [5, 16], H = 4
    c_prev = torch.randn(4, 5, dtype=D).t()
    assert not gates.is_contiguous() and not c_prev.is_contiguous()
    h, c, act = fwd(gates, c_prev)
    rh, rc, ract = _formula(gates, c_prev)
    assert _rel(h, rh) <= 1e-12 and _rel(c, rc) <= 1e-12 and _rel(act, ract) <= 1e-12
    args = dict(grad_h=torch.randn(4, 5, dtype=D).t(), grad_c=torch.randn(4, 5, dtype=D).t())
    gg, gcp = bwd(args["grad_h"], args["grad_c"], act.t().contiguous().t(), c_prev, c)
    gg2, gcp2 = bwd(args["grad_h"].contiguous(), args["grad_c"].contiguous(), act,
                    c_prev.contiguous(), c)
    assert torch.equal(gg, gg2) and torch.equal(gcp, gcp2)


def test_large_inputs_finite():
    gates = torch.tensor([[100.0, -100.0, 100.0, -100.0], [-100.0, 100.0, -100.0, 100.0]])
    c_prev = torch.tensor([[100.0], [-100.0]])
    for dtype in (torch.float32, torch.float64):
        h, c, act = fwd(gates.to(dtype), c_prev.to(dtype))
        gg, gcp = bwd(torch.ones_like(h), torch.ones_like(c), act, c_prev.to(dtype), c)
        for t in (h, c, act, gg, gcp):
            assert torch.isfinite(t).all()


def test_inputs_not_modified():
    gates, c_prev = _good(3, 5)
    g0, c0 = gates.clone(), c_prev.clone()
    h, c, act = fwd(gates, c_prev)
    bwd(torch.ones_like(h), torch.ones_like(c), act, c_prev, c)
    assert torch.equal(gates, g0) and torch.equal(c_prev, c0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_batch(dtype):
    h, c, act = fwd(torch.empty(0, 12, dtype=dtype), torch.empty(0, 3, dtype=dtype))
    assert h.shape == (0, 3) and c.shape == (0, 3) and act.shape == (0, 12)
    assert h.dtype == dtype
    e = torch.empty(0, 3, dtype=dtype)
    gg, gcp = bwd(e, e, torch.empty(0, 12, dtype=dtype), e, e)
    assert gg.shape == (0, 12) and gcp.shape == (0, 3)


# ---- lstm_sequence ----------------------------------------------------------------

seq_fwd = torch.ops.wmkernels.lstm_sequence_forward
seq_bwd = torch.ops.wmkernels.lstm_sequence_backward


def _seq_args(T=3, B=2, I=4, H=5, dtype=D):
    return dict(x=torch.randn(T, B, I, dtype=dtype), h0=torch.randn(B, H, dtype=dtype),
                c0=torch.randn(B, H, dtype=dtype), w_ih=torch.randn(4 * H, I, dtype=dtype),
                w_hh=torch.randn(4 * H, H, dtype=dtype), b_ih=torch.randn(4 * H, dtype=dtype),
                b_hh=torch.randn(4 * H, dtype=dtype), lengths=torch.tensor([3, 1]))


def test_sequence_good_arguments_run():
    y, h_n, c_n, act, cs = seq_fwd(**_seq_args())
    assert y.shape == (3, 2, 5) and act.shape == (3, 2, 20) and cs.shape == (3, 2, 5)


@pytest.mark.parametrize("name,bad", [
    ("x", lambda a: a["x"][0]),                                   # rank 2
    ("x", lambda a: a["x"].float()),                              # dtype differs
    ("x", lambda a: a["x"].to(torch.int64)),
    ("h0", lambda a: torch.randn(3, 5, dtype=D)),                 # B
    ("h0", lambda a: torch.randn(2, 6, dtype=D)),                 # H
    ("c0", lambda a: torch.randn(2, 4, dtype=D)),
    ("c0", lambda a: a["c0"].half()),
    ("w_ih", lambda a: torch.randn(20, 3, dtype=D)),              # I
    ("w_ih", lambda a: torch.randn(19, 4, dtype=D)),              # 4H
    ("w_hh", lambda a: torch.randn(20, 4, dtype=D)),
    ("w_hh", lambda a: torch.randn(20, 5, 1, dtype=D)),
    ("b_ih", lambda a: torch.randn(19, dtype=D)),
    ("b_hh", lambda a: torch.randn(4, 5, dtype=D)),
    ("b_hh", lambda a: a["b_hh"].float()),
    ("lengths", lambda a: torch.tensor([4, 1])),                  # > T
    ("lengths", lambda a: torch.tensor([-1, 1])),                 # < 0
    ("lengths", lambda a: torch.tensor([1, 1, 1])),               # not [B]
    ("lengths", lambda a: torch.tensor([[1, 1]])),
    ("lengths", lambda a: torch.tensor([1, 1], dtype=torch.int32)),
    ("lengths", lambda a: torch.tensor([1.0, 1.0])),
])
def test_sequence_forward_bad_arguments(name, bad):
    args = _seq_args()
    args[name] = bad(args)
    with pytest.raises(RuntimeError):
        seq_fwd(**args)


def test_sequence_meta_tensors_give_meta_outputs():
    args = {k: v.to("meta") for k, v in _seq_args().items()}
    y, h_n, c_n, act, cs = seq_fwd(**args)
    assert all(t.device.type == "meta" for t in (y, h_n, c_n, act, cs))
    assert y.shape == cs.shape == (3, 2, 5) and act.shape == (3, 2, 20) and h_n.shape == (2, 5)
    bargs = {k: v.to("meta") for k, v in _seq_bwd_args().items()}
    shapes = [tuple(g.shape) for g in seq_bwd(**bargs)]
    assert shapes == [(3, 2, 4), (2, 5), (2, 5), (20, 4), (20, 5), (20,)]


def _seq_bwd_args():
    a = _seq_args()
    y, h_n, c_n, act, cs = seq_fwd(**a)
    return dict(grad_y=torch.randn_like(y), grad_h_n=torch.randn_like(h_n),
                grad_c_n=torch.randn_like(c_n), x=a["x"], h0=a["h0"], c0=a["c0"],
                w_ih=a["w_ih"], w_hh=a["w_hh"], act=act, cs=cs, y=y, lengths=a["lengths"])


@pytest.mark.parametrize("name,bad", [
    ("grad_y", lambda a: a["grad_y"][:2]),                        # T
    ("grad_y", lambda a: a["grad_y"].float()),
    ("grad_h_n", lambda a: torch.randn(2, 4, dtype=D)),
    ("grad_c_n", lambda a: torch.randn(5, dtype=D)),
    ("act", lambda a: a["act"][..., :19]),                        # not 4H
    ("act", lambda a: a["act"][:, :1]),                           # B
    ("cs", lambda a: a["cs"][1:]),
    ("cs", lambda a: a["cs"].to(torch.int32)),
    ("y", lambda a: a["y"][..., :4]),
    ("x", lambda a: torch.randn(3, 2, 3, dtype=D)),               # I vs w_ih
    ("w_hh", lambda a: torch.randn(20, 4, dtype=D)),
    ("lengths", lambda a: torch.tensor([7, 0])),
    ("lengths", lambda a: torch.tensor([1])),
])
def test_sequence_backward_bad_arguments(name, bad):
    args = _seq_bwd_args()
    args[name] = bad(args)
    with pytest.raises(RuntimeError):
        seq_bwd(**args)


def test_sequence_backward_good_arguments_run():
    grads = seq_bwd(**_seq_bwd_args())
    assert [tuple(g.shape) for g in grads] == [(3, 2, 4), (2, 5), (2, 5), (20, 4), (20, 5), (20,)]

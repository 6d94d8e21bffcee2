"""The cpu backend's LSTM kernels (lstm_cell, lstm_sequence): gradcheck in
float64, awkward sizes and lengths against the float64 reference, non-
contiguous inputs, the size of what lstm_sequence saves for backward, and the
per-instruction-set copies of the vectorized kernels.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wmkernels import ops, testing
from wmkernels.testing import saved_bytes
from wmkernels.backends import BACKENDS

pytestmark = pytest.mark.skipif(BACKENDS["cpu"].device_reason(torch.device("cpu")) is not None,
                                reason="wmkernels._C not built")
ROOT = Path(__file__).resolve().parents[2]
D = torch.float64


def _sequence_inputs(T, B, I, H, bias=True, dtype=D):
    w = H ** -0.5
    tensors = [torch.randn(T, B, I, dtype=dtype), torch.randn(B, H, dtype=dtype),
               torch.randn(B, H, dtype=dtype), torch.randn(4 * H, I, dtype=dtype) * w,
               torch.randn(4 * H, H, dtype=dtype) * w]
    if bias:
        tensors += [torch.randn(4 * H, dtype=dtype) * w, torch.randn(4 * H, dtype=dtype) * w]
    return [t.requires_grad_() for t in tensors]


def _assert_all_pass(rows):
    bad = [f"{r.name}={r.error:.2e} (tol {r.tolerance:.0e})" for r in rows if not r.passed]
    assert not bad, bad


# ---- gradcheck -----------------------------------------------------------------

def test_gradcheck_lstm_cell():
    gates = (torch.randn(3, 4 * 5, dtype=D) * 2).requires_grad_()
    c_prev = torch.randn(3, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, c: ops.lstm_cell(g, c, backend="cpu"),
                                    (gates, c_prev))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lengths", [None, [4, 0, 2, 1]])
def test_gradcheck_lstm_sequence(bias, lengths):
    T, B, I, H = 4, 4, 3, 5
    inputs = _sequence_inputs(T, B, I, H, bias)
    if lengths is not None:
        lengths = torch.tensor(lengths)

    def fn(x, h0, c0, w_ih, w_hh, *b):
        b_ih, b_hh = b if b else (None, None)
        return ops.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, backend="cpu")

    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_lstm_sequence_one_bias():
    x, h0, c0, w_ih, w_hh, b_ih, _ = _sequence_inputs(3, 2, 3, 4)
    fn = lambda x, h0, c0, w_ih, w_hh, b: ops.lstm_sequence(  # noqa: E731
        x, h0, c0, w_ih, w_hh, None, b, backend="cpu")
    assert torch.autograd.gradcheck(fn, (x, h0, c0, w_ih, w_hh, b_ih))


# ---- awkward sizes against the float64 reference ----------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", [
    dict(T=3, B=2, I=5, H=1), dict(T=4, B=3, I=2, H=3), dict(T=3, B=2, I=9, H=65),
    dict(T=2, B=3, I=4, H=257), dict(T=6, B=1, I=3, H=17), dict(T=1, B=4, I=3, H=33),
    dict(T=1, B=1, I=1, H=1)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_sequence_awkward_sizes(dtype, sizes, with_lengths):
    case = testing.random_case("lstm_sequence", **sizes, with_lengths=with_lengths,
                               with_bias=not with_lengths)
    _assert_all_pass(testing.compare(case, "cpu", dtype))


@pytest.mark.parametrize("H", [1, 3, 65, 257])
def test_lstm_cell_awkward_sizes(H):
    for dtype in (torch.float64, torch.float32):
        _assert_all_pass(testing.compare(testing.random_case("lstm_cell", B=3, H=H), "cpu", dtype))


def test_lengths_all_zero_and_all_full():
    T, B = 4, 3
    for lengths in (torch.zeros(B, dtype=torch.int64), torch.full((B,), T, dtype=torch.int64)):
        case = testing.random_case("lstm_sequence", T=T, B=B, I=3, H=5)
        case.extras["lengths"] = lengths
        _assert_all_pass(testing.compare(case, "cpu", torch.float64))


@pytest.mark.parametrize("T,B", [(0, 3), (3, 0), (0, 0)])
def test_empty_sequence_or_batch(T, B):
    inputs = _sequence_inputs(T, B, 3, 4)
    y, h, c = ops.lstm_sequence(*inputs, backend="cpu")
    assert y.shape == (T, B, 4) and h.shape == (B, 4) and c.shape == (B, 4)
    assert torch.equal(h, inputs[1].detach()) and torch.equal(c, inputs[2].detach())
    (y.sum() + h.sum() + 2 * c.sum()).backward()
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
    assert torch.equal(h0.grad, torch.ones_like(h0)) and torch.equal(c0.grad, 2 * torch.ones_like(c0))
    for t in (x, w_ih, w_hh, b_ih, b_hh):
        assert t.grad.shape == t.shape and not t.grad.any()


# ---- layouts -----------------------------------------------------------------------

def test_non_contiguous_inputs():
    T, B, I, H = 5, 3, 4, 6
    base = _sequence_inputs(T, B, I, H)
    # Same values, other strides: x as a transposed buffer, states and weights
    # as transposes, biases as strided slices.
    x = base[0].detach().transpose(0, 1).contiguous().transpose(0, 1)
    h0, c0 = (t.detach().t().contiguous().t() for t in base[1:3])
    w_ih, w_hh = (t.detach().t().contiguous().t() for t in base[3:5])
    b_ih, b_hh = (torch.stack([t.detach(), t.detach()], 1)[:, 0] for t in base[5:])
    strided = [t.requires_grad_() for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
    assert not any(t.is_contiguous() for t in (x, w_ih, w_hh, b_ih, b_hh))
    lengths = torch.tensor([5, 0, 3])
    out_a = ops.lstm_sequence(*strided, lengths=lengths, backend="cpu")
    out_b = ops.lstm_sequence(*base, lengths=lengths, backend="cpu")
    upstream = [torch.randn_like(o) for o in out_a]
    grads_a = torch.autograd.grad(out_a, strided, upstream)
    grads_b = torch.autograd.grad(out_b, base, upstream)
    for a, b in zip(out_a + grads_a, out_b + grads_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bias_grads_do_not_share_storage():
    inputs = _sequence_inputs(3, 2, 3, 4)
    y, h, c = ops.lstm_sequence(*inputs, backend="cpu")
    y.sum().backward()
    b_ih, b_hh = inputs[5:]
    torch.testing.assert_close(b_ih.grad, b_hh.grad, rtol=0, atol=0)
    assert b_ih.grad.data_ptr() != b_hh.grad.data_ptr()


# ---- memory ------------------------------------------------------------------------

@pytest.mark.parametrize("with_lengths", [False, True])
def test_saved_tensors_are_T_B_5H(with_lengths):
    """lstm_sequence keeps the activated gates and c per step (T·B·5H values)
    beyond the inputs and outputs, and nothing per step of size I or 4H·H."""
    T, B, I, H = 7, 3, 11, 6
    inputs = _sequence_inputs(T, B, I, H, dtype=torch.float32)
    lengths = torch.tensor([7, 0, 4]) if with_lengths else None
    forward = lambda backend: ops.lstm_sequence(*inputs, lengths=lengths, backend=backend)  # noqa: E731
    owned = inputs + ([lengths] if with_lengths else [])
    cpu = saved_bytes(lambda: forward("cpu"), owned)
    assert cpu == T * B * 5 * H * 4
    assert saved_bytes(lambda: forward("reference"), owned) > cpu


# ---- instruction sets ----------------------------------------------------------------

_CAPABILITY_SCRIPT = """
import torch, wmkernels
from wmkernels import testing
print(torch.ops.wmkernels.cpu_capability())
for case in (testing.random_case("lstm_sequence", T=4, B=3, I=5, H=37, with_lengths=True),
             testing.random_case("lstm_cell", B=2, H=19)):
    for dtype in (torch.float64, torch.float32):
        bad = [r for r in testing.compare(case, "cpu", dtype) if not r.passed]
        assert not bad, (dtype, bad)
print("ok")
"""


def test_cpu_capability_known():
    assert torch.ops.wmkernels.cpu_capability() in ("default", "avx2", "avx512", "avx512_bf16")


@pytest.mark.parametrize("wanted", ["default", "avx2"])
def test_each_instruction_set_copy(wanted):
    """WMKERNELS_CPU_CAPABILITY lowers the copy in use (never raises it); every
    copy this CPU can run gives the reference's results. ("avx512", the
    default choice on an AVX-512 CPU, is what the rest of the suite runs.)"""
    order = ["default", "avx2", "avx512", "avx512_bf16"]
    best = torch.ops.wmkernels.cpu_capability()
    env = {**os.environ, "WMKERNELS_CPU_CAPABILITY": wanted,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CAPABILITY_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    used, verdict = proc.stdout.split()[-2:]
    assert used == order[min(order.index(wanted), order.index(best))]
    assert verdict == "ok"


def _near_zero_cell_inputs(B: int, H: int):
    """Gates that make c ≈ c_prev (i ≈ 0, f ≈ 1) and o ≈ 1, with c_prev within
    ±1e-2, so h ≈ tanh(c) is evaluated near 0, where tanh formulas cancel."""
    gates = torch.empty(B, 4 * H, dtype=torch.float64)
    gates[:, :H], gates[:, H:2 * H], gates[:, 3 * H:] = -30.0, 30.0, 30.0
    gates[:, 2 * H:3 * H] = torch.randn(B, H, dtype=torch.float64)
    c_prev = (torch.rand(B, H, dtype=torch.float64) * 2 - 1) * 1e-2
    return gates, c_prev


def test_float32_tanh_is_accurate_element_by_element_near_zero():
    """Every element of h, not just the norm: a one-element output (B = H = 1)
    is held to the float32 tolerance too."""
    gates, c_prev = _near_zero_cell_inputs(64, 67)
    h_ref, _ = ops.lstm_cell(gates, c_prev, backend="reference")
    h, _ = ops.lstm_cell(gates.float(), c_prev.float(), backend="cpu")
    relative = ((h.double() - h_ref).abs() / h_ref.abs()).max().item()
    assert relative < 1e-5, relative

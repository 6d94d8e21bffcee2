"""The cpu backend's working-memory kernels (csrc/cpu/memory_ops.cpp,
csrc/cpu/wm_lstm_sequence.cpp): gradcheck in float64, awkward sizes, the
all-masked read row, empty batches, direct calls of the C++ entry points with
bad arguments (TORCH_CHECK -> RuntimeError), the fake kernels, and the memory
wm_lstm_sequence keeps for backward. Agreement with the reference at the
sizes of tests/test_ops.py is tested there (it covers every implemented op).
"""
from __future__ import annotations

import os

import pytest
import torch

from wmkernels import ops, testing

if os.environ.get("WMKERNELS_ALLOW_NO_EXTENSION") == "1":
    pytest.importorskip("wmkernels._C", reason="wmkernels._C not built")
else:
    import wmkernels._C  # noqa: F401  (built by the README's install step)

W = torch.ops.wmkernels
F64 = torch.float64


def gradcheck_case(case: testing.Case) -> None:
    """torch.autograd.gradcheck of the public op on the cpu backend, every output."""
    inputs = [t.detach().clone().requires_grad_() for t in case.tensors.values()]
    assert torch.autograd.gradcheck(lambda *ts: case.run(ts, "cpu"), inputs, eps=1e-6,
                                    atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- memory ops

MEMORY_CASES = [
    ("read-B3S5D6", "wm_read", dict(B=3, S=5, D=6)),
    ("read-B4S7D9-mask", "wm_read", dict(B=4, S=7, D=9, with_mask=True)),
    ("read-B1S1D1", "wm_read", dict(B=1, S=1, D=1)),
    ("read-B2S3D33-mask", "wm_read", dict(B=2, S=3, D=33, with_mask=True)),
    ("shift-B3S5D6", "wm_shift_write", dict(B=3, S=5, D=6)),
    ("shift-B2S1D1", "wm_shift_write", dict(B=2, S=1, D=1)),
    ("write-B3S5D6", "wm_write", dict(B=3, S=5, D=6)),
    ("write-B1S1D1", "wm_write", dict(B=1, S=1, D=1)),
    ("write-B2S3D17", "wm_write", dict(B=2, S=3, D=17)),
]


@pytest.mark.parametrize("op, kw", [pytest.param(op, kw, id=i) for i, op, kw in MEMORY_CASES])
def test_gradcheck_memory_ops(op, kw):
    gradcheck_case(testing.random_case(op, **kw))


@pytest.mark.parametrize("S, D", [(1, 1), (5, 6), (3, 17), (8, 64)])
def test_read_all_masked_rows_read_zeros(S, D):
    """A row with no readable slot: attn = 0, r = 0, zero gradients, never NaN."""
    B = 3
    M = torch.randn(B, S, D, dtype=F64, requires_grad=True)
    q = torch.randn(B, D, dtype=F64, requires_grad=True)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1] = False
    r, attn = ops.wm_read(M, q, mask, backend="cpu")
    assert torch.equal(attn[1], torch.zeros(S, dtype=F64)) and torch.equal(r[1], torch.zeros(D, dtype=F64))
    (r.sum() + (attn * torch.randn_like(attn)).sum()).backward()
    assert torch.isfinite(M.grad).all() and torch.isfinite(q.grad).all()
    assert torch.count_nonzero(M.grad[1]) == 0 and torch.count_nonzero(q.grad[1]) == 0
    r_ref, attn_ref = ops.wm_read(M, q, mask, backend="reference")
    assert testing.rel_err(r, r_ref) <= 1e-12 and testing.rel_err(attn, attn_ref) <= 1e-12


def test_read_scale_and_large_scores():
    """An explicit scale is used, and huge scores stay finite (max-shifted softmax)."""
    M = torch.randn(2, 4, 3, dtype=F64) * 100
    q = torch.randn(2, 3, dtype=F64) * 100
    for scale in (0.5, 3.0):
        r, attn = ops.wm_read(M, q, scale=scale, backend="cpu")
        r_ref, attn_ref = ops.wm_read(M, q, scale=scale, backend="reference")
        assert torch.isfinite(attn).all() and testing.rel_err(attn, attn_ref) <= 1e-12
        assert testing.rel_err(r, r_ref) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_memory_ops_empty_batch(dtype):
    M = torch.randn(0, 4, 3, dtype=dtype, requires_grad=True)
    vec = torch.randn(0, 3, dtype=dtype, requires_grad=True)
    w = torch.rand(0, 4, dtype=dtype, requires_grad=True)
    r, attn = ops.wm_read(M, vec, backend="cpu")
    assert r.shape == (0, 3) and attn.shape == (0, 4)
    shifted = ops.wm_shift_write(M, vec, backend="cpu")
    written = ops.wm_write(M, w, vec, vec, backend="cpu")
    assert shifted.shape == written.shape == (0, 4, 3)
    (r.sum() + attn.sum() + shifted.sum() + written.sum()).backward()
    assert M.grad.shape == M.shape and vec.grad.shape == vec.shape and w.grad.shape == w.shape


def test_memory_ops_fake_kernels():
    """The fake (meta) kernels agree with the real ones (torch.library.opcheck)."""
    M, q = torch.randn(3, 5, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    mask = torch.rand(3, 5) < 0.5
    w, e, a = torch.rand(3, 5, dtype=F64), torch.rand(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    r, attn = W.wm_read_forward(M, q, mask, 0.5)
    for op, args in [
        (W.wm_read_forward, (M, q, mask, 0.5)), (W.wm_read_forward, (M, q, None, 0.5)),
        (W.wm_read_backward, (torch.randn_like(r), torch.randn_like(attn), M, q, attn, 0.5)),
        (W.wm_shift_write_forward, (M, q)), (W.wm_shift_write_backward, (M,)),
        (W.wm_write_forward, (M, w, e, a)), (W.wm_write_backward, (M.clone(), M, w, e, a)),
    ]:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def _memory_args(B=3, S=5, D=4, dtype=F64):
    return dict(M=torch.randn(B, S, D, dtype=dtype), q=torch.randn(B, D, dtype=dtype),
                S_vec=torch.rand(B, S, dtype=dtype), mask=torch.rand(B, S) < 0.5)


def _bad_memory_calls():
    """(id, callable) pairs of direct calls that must raise RuntimeError."""
    g = _memory_args()
    M, q, w, mask = g["M"], g["q"], g["S_vec"], g["mask"]
    r, attn = W.wm_read_forward(M, q, mask, 0.5)
    f32 = torch.float32
    return [
        ("read-M-rank2", lambda: W.wm_read_forward(M[0], q, None, 0.5)),
        ("read-q-D", lambda: W.wm_read_forward(M, q[:, :3], None, 0.5)),
        ("read-q-B", lambda: W.wm_read_forward(M, q[:2], None, 0.5)),
        ("read-S0", lambda: W.wm_read_forward(M[:, :0], q, None, 0.5)),
        ("read-D0", lambda: W.wm_read_forward(M[:, :, :0], q[:, :0], None, 0.5)),
        ("read-mixed-dtype", lambda: W.wm_read_forward(M, q.to(f32), None, 0.5)),
        ("read-int", lambda: W.wm_read_forward(M.long(), q.long(), None, 0.5)),
        ("read-half", lambda: W.wm_read_forward(M.half(), q.half(), None, 0.5)),
        ("read-mask-shape", lambda: W.wm_read_forward(M, q, mask[:, :4], 0.5)),
        ("read-mask-dtype", lambda: W.wm_read_forward(M, q, mask.to(torch.uint8), 0.5)),
        ("read-bwd-attn-shape", lambda: W.wm_read_backward(r, attn[:, :4], M, q, attn, 0.5)),
        ("read-bwd-grad_r", lambda: W.wm_read_backward(r[:, :2], attn, M, q, attn, 0.5)),
        ("read-bwd-attn-dtype", lambda: W.wm_read_backward(r, attn, M, q, attn.to(f32), 0.5)),
        ("read-bwd-q-B", lambda: W.wm_read_backward(r, attn, M, q[:1], attn, 0.5)),
        ("shift-v-D", lambda: W.wm_shift_write_forward(M, q[:, :2])),
        ("shift-v-rank", lambda: W.wm_shift_write_forward(M, q[0])),
        ("shift-v-dtype", lambda: W.wm_shift_write_forward(M, q.to(f32))),
        ("shift-S0", lambda: W.wm_shift_write_forward(M[:, :0], q)),
        ("shift-bwd-rank", lambda: W.wm_shift_write_backward(q)),
        ("shift-bwd-int", lambda: W.wm_shift_write_backward(M.int())),
        ("write-w-S", lambda: W.wm_write_forward(M, w[:, :4], q, q)),
        ("write-e-D", lambda: W.wm_write_forward(M, w, q[:, :3], q)),
        ("write-a-B", lambda: W.wm_write_forward(M, w, q, q[:2])),
        ("write-a-dtype", lambda: W.wm_write_forward(M, w, q, q.to(f32))),
        ("write-bwd-grad-shape", lambda: W.wm_write_backward(M[:, :4], M, w, q, q)),
        ("write-bwd-w-dtype", lambda: W.wm_write_backward(M, M, w.to(f32), q, q)),
        ("write-bwd-e-rank", lambda: W.wm_write_backward(M, M, w, q[0], q)),
    ]


@pytest.mark.parametrize("index", range(len(_bad_memory_calls())))
def test_memory_entry_points_reject_bad_arguments(index):
    name, call = _bad_memory_calls()[index]
    with pytest.raises(RuntimeError):
        call()

"""The cpu backend's working-memory kernels (csrc/cpu/memory_ops.cpp,
csrc/cpu/wm_lstm_sequence.cpp): gradcheck in float64, awkward sizes, the
all-masked read row, empty batches, direct calls of the C++ entry points with
bad arguments (TORCH_CHECK -> RuntimeError), the fake kernels, and the memory
wm_lstm_sequence keeps for backward. Agreement with the reference at the
sizes of tests/ops/test_ops.py is tested there (it covers every implemented op).
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


# --------------------------------------------------------------------------- wm_lstm_sequence

SEQ_GRADCHECK = [
    ("fifo", dict(T=4, B=3, I=2, H=3, S=3, D=2)),
    ("fifo-len", dict(T=4, B=3, I=2, H=3, S=3, D=2, with_lengths=True)),
    ("gated", dict(T=4, B=3, I=2, H=3, S=3, D=2)),
    ("gated-len", dict(T=5, B=3, I=2, H=2, S=2, D=3, with_lengths=True)),
]


@pytest.mark.parametrize("name, kw", SEQ_GRADCHECK, ids=[n for n, _ in SEQ_GRADCHECK])
def test_gradcheck_wm_lstm_sequence(name, kw):
    gradcheck_case(testing.random_case("wm_lstm_sequence", write_mode=name.split("-")[0], **kw))


# Awkward sizes against the float64 reference (every output and gradient).
SEQ_SIZES = [
    ("S1D1H1", dict(T=3, B=2, I=2, H=1, S=1, D=1)),
    ("T1B1", dict(T=1, B=1, I=3, H=5, S=3, D=7)),
    ("T<S-len", dict(T=3, B=4, I=3, H=5, S=7, D=3, with_lengths=True)),
    ("T>S-len", dict(T=11, B=4, I=3, H=6, S=3, D=5, with_lengths=True)),
    ("T=S", dict(T=5, B=2, I=4, H=3, S=5, D=9)),
    ("odd-H17D33", dict(T=6, B=3, I=5, H=17, S=6, D=33, with_lengths=True)),
    ("T18-len", dict(T=18, B=5, I=3, H=4, S=4, D=3, with_lengths=True)),
]


@pytest.mark.parametrize("mode", ["fifo", "gated"])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, kw", SEQ_SIZES, ids=[n for n, _ in SEQ_SIZES])
def test_wm_lstm_sequence_awkward_sizes(mode, dtype, name, kw):
    case = testing.random_case("wm_lstm_sequence", write_mode=mode, **kw)
    rows = testing.compare(case, "cpu", dtype)
    bad = [f"{r.name}: {r.error:.3g}" for r in rows if not r.passed]
    assert not bad, f"{mode} {case.describe()}: " + "; ".join(bad)


def _direct_vs_reference(case: testing.Case, K: int) -> None:
    """The C++ forward and backward with checkpoint interval K against the
    reference's outputs and gradients (float64, 1e-9)."""
    t = {k: v.clone() for k, v in case.tensors.items()}
    mode, lengths = case.extras["write_mode"], case.extras["lengths"]
    capacity = case.extras.get("capacity")
    gated = mode == "gated"
    w_e, b_e = (t["w_e"], t["b_e"]) if gated else (None, None)
    weights = [t[k] for k in ("w_ih", "w_hh", "w_rh", "b", "w_q", "b_q", "w_v", "b_v")]
    out = W.wm_lstm_sequence_forward(t["x"], t["h0"], t["c0"], t["M0"], *weights, w_e, b_e,
                                     lengths, capacity, mode, K)
    ref_in = [v.clone().requires_grad_() for v in case.tensors.values()]
    ref_out = case.run(ref_in, "reference")
    grads_out = [torch.randn_like(o) for o in ref_out]
    ref_grads = torch.autograd.grad(ref_out, ref_in, grads_out)
    for k, (a, b) in enumerate(zip(out[:4], ref_out)):
        assert testing.rel_err(a, b) <= 1e-9, f"output {k} (K={K})"
    grads = W.wm_lstm_sequence_backward(
        *grads_out, t["x"], t["M0"], t["w_ih"], t["w_hh"], t["w_rh"], t["w_q"], t["w_v"], w_e,
        lengths, capacity, t["h0"], out[0], *out[4:], mode, K)
    for name, g, ref in zip(case.tensors, grads, ref_grads):
        assert testing.rel_err(g, ref) <= 1e-9, f"grad[{name}] (K={K})"


@pytest.mark.parametrize("T, K", [(7, 3), (4, 10), (6, 1), (6, 6), (9, 3), (1, 2), (5, 2 ** 63 - 1)])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "len"])
def test_gated_checkpoint_intervals(T, K, with_lengths):
    """Gated recompute from checkpoints: T not a multiple of K, T < K, K = 1, K = T,
    K = 2^63 - 1 (no checkpoint: ceil(T / K) must not be computed as (T + K - 1) / K,
    which overflows int64 there)."""
    case = testing.random_case("wm_lstm_sequence", T=T, B=4, I=3, H=4, S=3, D=5,
                               write_mode="gated", with_lengths=with_lengths)
    _direct_vs_reference(case, K)
    n_ckpt = W.wm_lstm_sequence_forward(
        *[case.tensors[k] for k in ("x", "h0", "c0", "M0", "w_ih", "w_hh", "w_rh", "b", "w_q",
                                    "b_q", "w_v", "b_v", "w_e", "b_e")],
        None, None, "gated", K)[10].shape[0]
    assert n_ckpt == -(-T // K) - 1


def test_fifo_with_direct_call_ignores_K():
    case = testing.random_case("wm_lstm_sequence", T=6, B=3, I=2, H=3, S=4, D=2,
                               write_mode="fifo", with_lengths=True)
    _direct_vs_reference(case, 1)
    _direct_vs_reference(case, 5)


@pytest.mark.parametrize("mode", ["fifo", "gated"])
@pytest.mark.parametrize("T, B", [(0, 3), (4, 0), (0, 0)])
def test_wm_lstm_sequence_empty(mode, T, B):
    case = testing.random_case("wm_lstm_sequence", T=max(T, 1), B=max(B, 1), I=3, H=4, S=3, D=2,
                               write_mode=mode)
    tensors = {k: v[:T] if k == "x" else v for k, v in case.tensors.items()}
    tensors = {k: (v[:, :B] if k == "x" else v[:B] if k in ("h0", "c0", "M0") else v)
               for k, v in tensors.items()}
    inputs = [v.clone().requires_grad_() for v in tensors.values()]
    empty = testing.Case("wm_lstm_sequence", dict(zip(tensors, inputs)), case.extras)
    y, h, c, M = empty.run(inputs, "cpu")
    assert y.shape == (T, B, 4 + 2) and h.shape == (B, 4) and M.shape == (B, 3, 2)
    if T == 0:
        assert torch.equal(h, inputs[1]) and torch.equal(M, inputs[3])
    (y.sum() + h.sum() + 2 * c.sum() + 3 * M.sum()).backward()
    for t in inputs:
        assert t.grad is not None and t.grad.shape == t.shape and torch.isfinite(t.grad).all()
    if T == 0:
        assert torch.equal(inputs[2].grad, torch.full_like(inputs[2], 2.0))
        assert torch.equal(inputs[3].grad, torch.full_like(inputs[3], 3.0))
        assert torch.count_nonzero(inputs[4].grad) == 0  # w_ih


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fifo_saves_no_memory_per_step(backend):
    """Every fused backend: fifo keeps the written vectors, never M_t per step:
    at S = 32 the saved bytes stay below a quarter of one memory per step
    (T·B·S·D floats), which the reference exceeds."""
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    T, B, H, S, D = 24, 2, 4, 32, 32
    one_memory_per_step = T * B * S * D * 4
    saved = testing.wm_lstm_saved_bytes(backend, "fifo", T, B, H, S, D, device)
    assert 0 < saved < one_memory_per_step / 4, (saved, one_memory_per_step)
    assert testing.wm_lstm_saved_bytes("reference", "fifo", T, B, H, S, D, device) > one_memory_per_step


@pytest.mark.parametrize("mode", ["fifo", "gated"])
def test_saved_bytes_scale_with_attention_not_memory(mode):
    """Doubling S adds about T·B·S floats (the read weights) to what is saved,
    nowhere near T·B·S·D; in gated mode plus the extra checkpoint width."""
    T, B, H, D = 16, 2, 4, 16
    small, large = (testing.wm_lstm_saved_bytes("cpu", mode, T, B, H, S, D) for S in (8, 16))
    grown = large - small
    K = -(-int(T ** 0.5) // 1)
    checkpoints = (-(-T // K) - 1) * B * 8 * D * 4 if mode == "gated" else 0
    assert grown == T * B * 8 * 4 + checkpoints, (small, large)
    assert grown < T * B * 8 * D * 4 / 2


def test_wm_lstm_sequence_fake_kernels():
    for mode in ("fifo", "gated"):
        case = testing.random_case("wm_lstm_sequence", T=5, B=2, I=3, H=2, S=3, D=2,
                                   write_mode=mode, with_lengths=True)
        t = case.tensors
        e = (t["w_e"], t["b_e"]) if mode == "gated" else (None, None)
        weights = [t[k] for k in ("w_ih", "w_hh", "w_rh", "b", "w_q", "b_q", "w_v", "b_v")]
        capacity = torch.randint(1, 4, (5, 2))
        args = (t["x"], t["h0"], t["c0"], t["M0"], *weights, *e, case.extras["lengths"], capacity, mode, 2)
        checks = ("test_schema", "test_faketensor")
        torch.library.opcheck(W.wm_lstm_sequence_forward, args, test_utils=checks)
        out = W.wm_lstm_sequence_forward(*args)
        grads = [torch.randn_like(o) for o in out[:4]]
        bargs = (*grads, t["x"], t["M0"], t["w_ih"], t["w_hh"], t["w_rh"], t["w_q"], t["w_v"],
                 e[0], case.extras["lengths"], capacity, t["h0"], out[0], *out[4:], mode, 2)
        torch.library.opcheck(W.wm_lstm_sequence_backward, bargs, test_utils=checks)


def _seq_args(mode="gated", T=4, B=3, dtype=F64):
    case = testing.random_case("wm_lstm_sequence", T=T, B=B, I=3, H=2, S=3, D=2, write_mode=mode)
    t = {k: v.to(dtype) for k, v in case.tensors.items()}
    if mode == "fifo":
        t.update(w_e=None, b_e=None)
    return dict(t, lengths=None, capacity=None, write_mode=mode, K=2)


_SEQ_ORDER = ("x", "h0", "c0", "M0", "w_ih", "w_hh", "w_rh", "b", "w_q", "b_q", "w_v", "b_v",
              "w_e", "b_e", "lengths", "capacity", "write_mode", "K")


def _seq_call(**changes):
    args = _seq_args(changes.pop("_mode", "gated"))
    for k, fn in changes.items():
        args[k] = fn(args) if callable(fn) else fn
    return W.wm_lstm_sequence_forward(*[args[k] for k in _SEQ_ORDER])


BAD_SEQ = [
    ("x-rank", dict(x=lambda a: a["x"][0])),
    ("h0-B", dict(h0=lambda a: a["h0"][:2])),
    ("c0-H", dict(c0=lambda a: a["c0"][:, :1])),
    ("M0-B", dict(M0=lambda a: a["M0"][:2])),
    ("M0-S0", dict(M0=lambda a: a["M0"][:, :0])),
    ("w_ih-I", dict(w_ih=lambda a: a["w_ih"][:, :2])),
    ("w_hh-4H", dict(w_hh=lambda a: a["w_hh"][:7])),
    ("w_rh-D", dict(w_rh=lambda a: a["w_rh"][:, :1])),
    ("b-shape", dict(b=lambda a: a["b"][:3])),
    ("w_q-D", dict(w_q=lambda a: a["w_q"][:1])),
    ("b_v-D", dict(b_v=lambda a: a["b_v"][:1])),
    ("w_e-H", dict(w_e=lambda a: a["w_e"][:, :1])),
    ("gated-no-w_e", dict(w_e=None)),
    ("fifo-with-w_e", dict(_mode="fifo", w_e=lambda a: torch.randn(2, 2, dtype=F64),
                           b_e=lambda a: torch.randn(2, dtype=F64))),
    ("x-float32", dict(x=lambda a: a["x"].float())),
    ("w_hh-float32", dict(w_hh=lambda a: a["w_hh"].float())),
    ("x-int", dict(x=lambda a: a["x"].long())),
    ("half", dict(x=lambda a: a["x"].half())),
    ("mode", dict(write_mode="lifo")),
    ("K0", dict(K=0)),
    ("lengths>T", dict(lengths=torch.tensor([1, 5, 2]))),
    ("lengths<0", dict(lengths=torch.tensor([1, -1, 2]))),
    ("lengths-B", dict(lengths=torch.tensor([1, 2]))),
    ("lengths-int32", dict(lengths=torch.tensor([1, 2, 3], dtype=torch.int32))),
    ("capacity>S", dict(capacity=torch.full((4, 3), 4))),
    ("capacity<1", dict(capacity=torch.zeros(4, 3, dtype=torch.int64))),
    ("capacity-shape", dict(capacity=torch.ones(3, dtype=torch.int64))),
    ("capacity-int32", dict(capacity=torch.ones(4, 3, dtype=torch.int32))),
    ("lengths-2d", dict(lengths=torch.tensor([[1, 2, 3]]))),
]


@pytest.mark.parametrize("name, changes", BAD_SEQ, ids=[n for n, _ in BAD_SEQ])
def test_wm_lstm_sequence_forward_rejects_bad_arguments(name, changes):
    with pytest.raises(RuntimeError):
        _seq_call(**changes)


def _bwd_args(mode="gated"):
    a = _seq_args(mode)
    out = W.wm_lstm_sequence_forward(*[a[k] for k in _SEQ_ORDER])
    grads = [torch.randn_like(o) for o in out[:4]]
    named = dict(zip(("grad_y", "grad_h", "grad_c", "grad_M"), grads))
    named.update(x=a["x"], M0=a["M0"], w_ih=a["w_ih"], w_hh=a["w_hh"], w_rh=a["w_rh"],
                 w_q=a["w_q"], w_v=a["w_v"], w_e=a["w_e"], lengths=None, capacity=None, h0=a["h0"],
                 y=out[0])
    named.update(zip(("c_all", "act", "attn", "q_all", "v_all", "e_all", "ckpt"), out[4:]))
    named.update(write_mode=mode, K=2)
    return named


BAD_SEQ_BWD = [
    ("grad_y-shape", "grad_y", lambda a: a["grad_y"][:, :, :3]),
    ("grad_M-S", "grad_M", lambda a: a["grad_M"][:, :2]),
    ("c_all-T", "c_all", lambda a: a["c_all"][:3]),
    ("y-H+D", "y", lambda a: a["y"][:, :, :3]),
    ("h0-B", "h0", lambda a: a["h0"][:2]),
    ("act-4H", "act", lambda a: a["act"][:, :, :7]),
    ("attn-S", "attn", lambda a: a["attn"][:, :, :2]),
    ("v_all-T", "v_all", lambda a: a["v_all"][:2]),
    ("e_all-empty", "e_all", lambda a: a["e_all"][:0]),
    ("ckpt-count", "ckpt", lambda a: torch.cat([a["ckpt"], a["ckpt"]])),
    ("ckpt-K", "K", lambda a: 1),
    ("c_all-dtype", "c_all", lambda a: a["c_all"].float()),
    ("w_e-missing", "w_e", lambda a: None),
    ("mode", "write_mode", lambda a: "fifo"),
    ("lengths", "lengths", lambda a: torch.tensor([9, 0, 0])),
    ("capacity", "capacity", lambda a: torch.zeros(4, 3, dtype=torch.int64)),
]


@pytest.mark.parametrize("name, key, bad", BAD_SEQ_BWD, ids=[n for n, _, _ in BAD_SEQ_BWD])
def test_wm_lstm_sequence_backward_rejects_bad_arguments(name, key, bad):
    args = _bwd_args()
    args[key] = bad(args)
    with pytest.raises(RuntimeError):
        W.wm_lstm_sequence_backward(*args.values())

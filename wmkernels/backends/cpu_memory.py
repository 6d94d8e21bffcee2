"""The cpu backend's working-memory kernels: wm_read, wm_shift_write,
wm_write and wm_lstm_sequence, through ``torch.ops.wmkernels``.

A mixin of ``CpuBackend`` (``wmkernels.backends.cpu``), kept apart from the
LSTM kernels so each file holds one family of ops. The fake (meta) kernels of
the C++ ops are registered here too, so ``torch.compile`` can trace them.
Shapes: ``B`` batch, ``S`` slots, ``D`` slot width.
"""
from __future__ import annotations

import torch

from wmkernels.backends.base import checkpoint_interval
from wmkernels.backends.cpu_extension import LOAD_ERROR


def _register_fakes() -> None:
    """Fake kernels of the memory ops; registered once at import, when
    ``wmkernels._C`` is usable (``CpuBackend`` reports why when it is not)."""
    fake = torch.library.register_fake

    @fake("wmkernels::wm_read_forward")
    def _(M, q, mask, scale):
        B, S, D = M.shape
        return M.new_empty(B, D), M.new_empty(B, S)

    @fake("wmkernels::wm_read_backward")
    def _(grad_r, grad_attn, M, q, attn, scale):
        return torch.empty_like(M), torch.empty_like(q)

    @fake("wmkernels::wm_shift_write_forward")
    def _(M, v):
        return torch.empty_like(M)

    @fake("wmkernels::wm_shift_write_backward")
    def _(grad_new):
        return torch.empty_like(grad_new), grad_new.new_empty(grad_new.shape[0], grad_new.shape[2])

    @fake("wmkernels::wm_write_forward")
    def _(M, w, e, a):
        return torch.empty_like(M)

    @fake("wmkernels::wm_write_backward")
    def _(grad_new, M, w, e, a):
        return torch.empty_like(M), torch.empty_like(w), torch.empty_like(e), torch.empty_like(a)

    @fake("wmkernels::wm_lstm_sequence_forward")
    def _(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, lengths, capacity,
          write_mode, K):
        T, B, _ = x.shape
        H, (S, D) = h0.shape[1], M0.shape[1:]
        gated = write_mode == "gated"
        n_ckpt = (T + K - 1) // K - 1 if gated and T > 0 else 0
        new = x.new_empty
        return (new(T, B, H + D), new(B, H), new(B, H), new(B, S, D), new(T + 1, B, H),
                new(T, B, 4 * H), new(T, B, S), new(T, B, D), new(T, B, D),
                new(T if gated else 0, B, D), new(n_ckpt, B, S, D))

    @fake("wmkernels::wm_lstm_sequence_backward")
    def _(grad_y, grad_h, grad_c, grad_M, x, M0, w_ih, w_hh, w_rh, w_q, w_v, w_e, lengths, capacity,
          h0, y, c_all, act, attn, q_all, v_all, e_all, ckpt, write_mode, K):
        H, D = h0.shape[1], M0.shape[2]
        like = torch.empty_like
        gated = write_mode == "gated"
        e_grads = (like(w_e), x.new_empty(D)) if gated else (x.new_empty(0), x.new_empty(0))
        return (like(x), like(grad_h), like(grad_c), like(M0), like(w_ih), like(w_hh),
                like(w_rh), x.new_empty(4 * H), like(w_q), x.new_empty(D), like(w_v),
                x.new_empty(D), *e_grads)


if LOAD_ERROR is None:
    _register_fakes()


class CpuMemoryOps:
    """``<op>_forward`` / ``<op>_backward`` of the memory ops (protocol of
    ``wmkernels.backends.base``); an op appears here when its kernels land.
    The C++ entry points take any strides (they make inputs contiguous)."""

    def wm_read_forward(self, M, q, mask=None, scale=None):
        """M [B, S, D], q [B, D], mask [B, S] bool or None -> ((r [B, D], attn [B, S]), saved, scale)."""
        r, attn = torch.ops.wmkernels.wm_read_forward(M, q, mask, float(scale))
        return (r, attn), (M, q, attn), float(scale)

    def wm_read_backward(self, saved, scale, grad_r, grad_attn):
        M, q, attn = saved
        return torch.ops.wmkernels.wm_read_backward(grad_r, grad_attn, M, q, attn, scale)

    def wm_shift_write_forward(self, M, v):
        """M [B, S, D], v [B, D] -> ((M_new,), (), None)."""
        return (torch.ops.wmkernels.wm_shift_write_forward(M, v),), (), None

    def wm_shift_write_backward(self, saved, info, grad_new):
        return torch.ops.wmkernels.wm_shift_write_backward(grad_new)

    def wm_write_forward(self, M, w, e, a):
        """M [B, S, D], w [B, S], e/a [B, D] -> ((M_new,), (M, w, e, a), None)."""
        return (torch.ops.wmkernels.wm_write_forward(M, w, e, a),), (M, w, e, a), None

    def wm_write_backward(self, saved, info, grad_new):
        return torch.ops.wmkernels.wm_write_backward(grad_new, *saved)

    def wm_lstm_sequence_forward(self, x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v,
                                 w_e, b_e, write_mode="fifo", lengths=None, capacity=None):
        """x [T, B, I], h0/c0 [B, H], M0 [B, S, D], SPEC 1.4 weights (w_e/b_e None
        in fifo), capacity int64 [T, B] (CPU) or None -> ((y [T, B, H+D], h_n, c_n,
        M_n), saved, (write_mode, K)).

        Saved for backward: x, h0, M0 and the weights (the caller's), lengths, capacity,
        the output y (h_t and r_t are read back from it), and the kernel's
        per-step tensors O(T·B·(5H + S + 2D)), plus in gated mode T·B·D erase
        vectors and ceil(T/K) - 1 memory checkpoints; never a memory per step."""
        K = checkpoint_interval(x.shape[0])
        y, h, c, M, *kept = torch.ops.wmkernels.wm_lstm_sequence_forward(
            x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, lengths, capacity,
            write_mode, K)
        saved = (x, M0, w_ih, w_hh, w_rh, w_q, w_v, w_e, lengths, capacity, h0, y, *kept)
        return (y, h, c, M), saved, (write_mode, K)

    def wm_lstm_sequence_backward(self, saved, info, grad_y, grad_h, grad_c, grad_M):
        write_mode, K = info
        grads = torch.ops.wmkernels.wm_lstm_sequence_backward(
            grad_y, grad_h, grad_c, grad_M, *saved, write_mode, K)
        if write_mode != "gated":  # no w_e, b_e
            grads = grads[:-2] + (None, None)
        return grads

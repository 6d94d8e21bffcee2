"""The working-memory LSTM on the cpu backend: the C++ kernels of
csrc/cpu/wm_lstm_sequence.cpp through ``torch.ops.wmkernels``, their fake
(meta) kernels for torch.compile, and its ``Impl`` (contract §3.1).
"""
from __future__ import annotations

import torch

from wmkernels.contract import Impl, checkpoint_interval, empty_outputs
from wmkernels.cpu_extension import LOAD_ERROR


def _register_fakes() -> None:
    """Fake kernels of the WM-LSTM ops; registered once at import, when
    ``wmkernels._C`` is usable (the cpu backend reports why when it is not)."""
    fake = torch.library.register_fake

    @fake("wmkernels::wm_lstm_sequence_forward")
    def _(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, lengths, capacity,
          write_mode, K):
        T, B, _ = x.shape
        H, (S, D) = h0.shape[1], M0.shape[1:]
        gated = write_mode == "gated"
        n_ckpt = (T + K - 1) // K - 1 if gated and T > 0 else 0
        new = x.new_empty
        return (*empty_outputs("wm_lstm_sequence", x, x=x, h0=h0, M0=M0), new(T + 1, B, H),
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


def _wm_lstm_sequence_forward(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v,
                              w_e, b_e, write_mode="fifo", lengths=None, capacity=None):
    """x [T, B, I], h0/c0 [B, H], M0 [B, S, D], contract §1.4 weights (w_e/b_e None
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


def _wm_lstm_sequence_backward(saved, info, grad_y, grad_h, grad_c, grad_M):
    write_mode, K = info
    grads = torch.ops.wmkernels.wm_lstm_sequence_backward(
        grad_y, grad_h, grad_c, grad_M, *saved, write_mode, K)
    if write_mode != "gated":  # no w_e, b_e
        grads = grads[:-2] + (None, None)
    return grads


WM_LSTM_SEQUENCE = Impl(_wm_lstm_sequence_forward, _wm_lstm_sequence_backward)

"""The LSTM family on the cpu backend: the C++ kernels of csrc/cpu
(lstm_cell.cpp, lstm_sequence.cpp) through ``torch.ops.wmkernels``, their
fake (meta) kernels for torch.compile, and one ``Impl`` per op (contract §3.1).

Without a usable ``wmkernels._C`` nothing is registered; the cpu backend
reports ``LOAD_ERROR`` instead.
"""
from __future__ import annotations

import torch

from wmkernels.contract import Impl, empty_outputs
from wmkernels.cpu_extension import LOAD_ERROR
from wmkernels.lstm.bias import bias_grads


def _register_fakes():
    """Fake (meta) kernels of the C++ LSTM ops, so torch.compile can trace them."""
    lib = "wmkernels::"

    @torch.library.register_fake(lib + "lstm_cell_forward")
    def _(gates, c_prev):
        return (*empty_outputs("lstm_cell", c_prev, c_prev=c_prev), gates.new_empty(gates.shape))

    @torch.library.register_fake(lib + "lstm_cell_backward")
    def _(grad_h, grad_c, act, c_prev, c):
        return act.new_empty(act.shape), c_prev.new_empty(c_prev.shape)

    @torch.library.register_fake(lib + "lstm_sequence_forward")
    def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
        T, B, _ = x.shape
        H = h0.shape[1]
        kept = torch.float32 if x.dtype == torch.bfloat16 else x.dtype  # bf16 keeps act, cs in float32
        return (*empty_outputs("lstm_sequence", x, x=x, h0=h0), x.new_empty(T, B, 4 * H, dtype=kept),
                x.new_empty(T, B, H, dtype=kept))

    @torch.library.register_fake(lib + "lstm_sequence_inference")
    def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
        return empty_outputs("lstm_sequence", x, x=x, h0=h0)

    @torch.library.register_fake(lib + "lstm_sequence_backward")
    def _(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, act, cs, y, lengths):
        H = h0.shape[1]
        return (x.new_empty(x.shape), h0.new_empty(h0.shape), h0.new_empty(h0.shape),
                w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_hh.new_empty(4 * H))


if LOAD_ERROR is None:
    _register_fakes()


def _lstm_cell_forward(gates, c_prev):
    """gates [B, 4H], c_prev [B, H] -> ((h, c), saved (act, c_prev, c), None)."""
    h, c, act = torch.ops.wmkernels.lstm_cell_forward(gates.contiguous(), c_prev.contiguous())
    return (h, c), (act, c_prev, c), None


def _lstm_cell_backward(saved, info, grad_h, grad_c):
    act, c_prev, c = saved
    return torch.ops.wmkernels.lstm_cell_backward(
        grad_h.contiguous(), grad_c.contiguous(), act, c_prev.contiguous(), c)


def _lstm_sequence_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None):
    """saved: x, h0, c0, w_ih, w_hh, act [T, B, 4H], cs [T, B, H], y, lengths;
    info: (has b_ih, has b_hh)."""
    y, h_n, c_n, act, cs = torch.ops.wmkernels.lstm_sequence_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    saved = (x, h0, c0, w_ih, w_hh, act, cs, y, lengths)
    return (y, h_n, c_n), saved, (b_ih is not None, b_hh is not None)


def _lstm_sequence_inference(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None):
    """No input wants a gradient: the persistent loop saves nothing -> (y, h_n, c_n)."""
    return tuple(torch.ops.wmkernels.lstm_sequence_inference(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths))


def _lstm_sequence_backward(saved, info, grad_y, grad_h_n, grad_c_n):
    grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b = torch.ops.wmkernels.lstm_sequence_backward(
        grad_y, grad_h_n, grad_c_n, *saved)
    return (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, *bias_grads(grad_b, *info))


LSTM_CELL = Impl(_lstm_cell_forward, _lstm_cell_backward)
LSTM_SEQUENCE = Impl(_lstm_sequence_forward, _lstm_sequence_backward, _lstm_sequence_inference)

"""The cpu backend: the C++ kernels of ``csrc/cpu`` through ``wmkernels._C``.

Without a built ``_C`` the backend is unavailable, with the import error as
the reason; ``import wmkernels`` itself never fails for it.
"""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.backends.cpu_extension import LOAD_ERROR
from wmkernels.backends.cpu_memory import CpuMemoryOps


def _register_fakes():
    """Fake (meta) kernels of the C++ LSTM ops, so torch.compile can trace them."""
    lib = "wmkernels::"

    @torch.library.register_fake(lib + "lstm_cell_forward")
    def _(gates, c_prev):
        return c_prev.new_empty(c_prev.shape), c_prev.new_empty(c_prev.shape), gates.new_empty(gates.shape)

    @torch.library.register_fake(lib + "lstm_cell_backward")
    def _(grad_h, grad_c, act, c_prev, c):
        return act.new_empty(act.shape), c_prev.new_empty(c_prev.shape)

    @torch.library.register_fake(lib + "lstm_sequence_forward")
    def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
        T, B, _ = x.shape
        H = h0.shape[1]
        return (x.new_empty(T, B, H), h0.new_empty(B, H), h0.new_empty(B, H),
                x.new_empty(T, B, 4 * H), x.new_empty(T, B, H))

    @torch.library.register_fake(lib + "lstm_sequence_backward")
    def _(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, act, cs, y, lengths):
        H = h0.shape[1]
        return (x.new_empty(x.shape), h0.new_empty(h0.shape), h0.new_empty(h0.shape),
                w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_hh.new_empty(4 * H))


if LOAD_ERROR is None:
    _register_fakes()


class CpuBackend(CpuMemoryOps, Backend):
    name = "cpu"
    dtypes = (torch.float32, torch.float64)
    takes_capacity = True  # its wm_lstm_sequence loops over each row's active slots only

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors only, got tensors on {device}"
        return None

    def lstm_cell_forward(self, gates, c_prev):
        h, c, act = torch.ops.wmkernels.lstm_cell_forward(gates.contiguous(), c_prev.contiguous())
        return (h, c), (act, c_prev, c), None

    def lstm_cell_backward(self, saved, info, grad_h, grad_c):
        act, c_prev, c = saved
        return torch.ops.wmkernels.lstm_cell_backward(
            grad_h.contiguous(), grad_c.contiguous(), act, c_prev.contiguous(), c)

    # saved: x, h0, c0, w_ih, w_hh, act [T, B, 4H], cs [T, B, H], y [, lengths];
    # info: (has b_ih, has b_hh, has lengths).
    def lstm_sequence_forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None):
        y, h_n, c_n, act, cs = torch.ops.wmkernels.lstm_sequence_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
        saved = (x, h0, c0, w_ih, w_hh, act, cs, y) + ((lengths,) if lengths is not None else ())
        return (y, h_n, c_n), saved, (b_ih is not None, b_hh is not None, lengths is not None)

    def lstm_sequence_backward(self, saved, info, grad_y, grad_h_n, grad_c_n):
        has_b_ih, has_b_hh, has_lengths = info
        x, h0, c0, w_ih, w_hh, act, cs, y = saved[:8]
        lengths = saved[8] if has_lengths else None
        grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b = (
            torch.ops.wmkernels.lstm_sequence_backward(
                grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, act, cs, y, lengths))
        # Two bias gradients are equal but must not share storage (each may
        # become a .grad that is accumulated into in place).
        return (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh,
                grad_b if has_b_ih else None,
                (grad_b.clone() if has_b_ih else grad_b) if has_b_hh else None)

"""The reference backend: each op family's reference run under PyTorch
autograd (the machinery of ``wmkernels.backends.plain``)."""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels.contract import WM_PARAM_KEYS
from wmkernels.lstm import reference as lstm
from wmkernels.memory import reference as memory
from wmkernels.wm_lstm import reference as wm_lstm
from wmkernels.backends.plain import PlainTorchBackend


def _wm_shift_write(M, v):
    return (memory.wm_shift_write(M, v),)


def _wm_write(M, w, e, a):
    return (memory.wm_write(M, w, e, a),)


def _wm_lstm_sequence(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, write_mode, lengths,
                      capacity=None):
    """The ops-level layout (w_e, b_e None in fifo) -> (y, h_n, c_n, M_n)."""
    weights = (w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e)
    params = {k: w for k, w in zip(WM_PARAM_KEYS, weights) if w is not None}
    y, (h, c, M) = wm_lstm.wm_lstm_sequence(x, (h0, c0, M0), params, write_mode, lengths=lengths,
                                            capacity=capacity)
    return y, h, c, M


class ReferenceBackend(PlainTorchBackend):
    name = "reference"
    takes_capacity = True
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    traceable = {
        "lstm_cell": lstm.lstm_cell,
        "lstm_sequence": lstm.lstm_sequence,
        "wm_read": memory.wm_read,
        "wm_shift_write": _wm_shift_write,
        "wm_write": _wm_write,
        "wm_lstm_sequence": _wm_lstm_sequence,
    }

    def device_reason(self, device: torch.device) -> Optional[str]:
        return None

"""The reference of the working-memory LSTM (contract §1.4), in plain PyTorch,
built from the LSTM and memory references: the source of truth every backend
is tested against (no argument checks: ``wmkernels.ops`` does them)."""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from wmkernels.lstm.reference import keep_where, lstm_cell, valid_rows
from wmkernels.memory.reference import wm_read, wm_shift_write, wm_write


def wm_lstm_step(x_t: Tensor, h: Tensor, c: Tensor, M: Tensor,
                 params: Mapping[str, Tensor], write_mode: str):
    """One step of the working-memory LSTM (contract §1.4).

    x_t [B, I], h/c [B, H], M [B, S, D] -> (h, c, M, r [B, D]).
    """
    p = params
    q = h @ p["w_q"].t() + p["b_q"]
    r, attn = wm_read(M, q)
    gates = x_t @ p["w_ih"].t() + h @ p["w_hh"].t() + r @ p["w_rh"].t() + p["b"]
    h, c = lstm_cell(gates, c)
    v = torch.tanh(h @ p["w_v"].t() + p["b_v"])
    if write_mode == "fifo":
        M = wm_shift_write(M, v)
    else:
        e = torch.sigmoid(h @ p["w_e"].t() + p["b_e"])
        M = wm_write(M, attn, e, v)
    return h, c, M, r


def wm_lstm_sequence(x: Tensor, state: Tuple[Tensor, Tensor, Tensor],
                     params: Mapping[str, Tensor], write_mode: str = "fifo",
                     lengths: Optional[Tensor] = None):
    """The working-memory LSTM over a sequence.

    x [T, B, I], state (h0 [B, H], c0 [B, H], M0 [B, S, D]), params as contract §1.4
    -> (y [T, B, H + D], (h_T, c_T, M_T)). Rows past their length keep their
    state and memory and output zeros.
    """
    h, c, M = state
    ys = []
    for t in range(x.shape[0]):
        h_new, c_new, M_new, r = wm_lstm_step(x[t], h, c, M, params, write_mode)
        valid = valid_rows(lengths, t, x)
        y_t = torch.cat([h_new, r], dim=1)
        ys.append(keep_where(valid, y_t, torch.zeros_like(y_t)))
        h, c, M = (keep_where(valid, h_new, h), keep_where(valid, c_new, c),
                   keep_where(valid, M_new, M))
    if ys:
        y = torch.stack(ys)
    else:
        y = x.new_zeros(0, x.shape[1], h.shape[1] + M.shape[2])
    return y, (h.clone(), c.clone(), M.clone())

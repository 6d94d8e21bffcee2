"""The reference of the working-memory LSTM (contract §1.4), in plain PyTorch,
built from the LSTM and memory references: the source of truth every backend
is tested against (no argument checks: ``wmkernels.ops`` does them)."""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from wmkernels.lstm.reference import lstm_cell, put_rows, running_rows, take_rows
from wmkernels.memory.reference import wm_read, wm_shift_write, wm_write


def active_slots(capacity: Tensor, slots: int, write_mode: str) -> Tensor:
    """The mask [B, S] (True = active) of ``capacity`` [B] (values in [1, S]):
    fifo the last ``capacity`` slots (its most recent writes), gated the first."""
    s = torch.arange(slots, device=capacity.device)
    c = capacity.unsqueeze(1)
    return s >= slots - c if write_mode == "fifo" else s < c


def wm_lstm_step(x_t: Tensor, h: Tensor, c: Tensor, M: Tensor,
                 params: Mapping[str, Tensor], write_mode: str, capacity: Optional[Tensor] = None):
    """One step of the working-memory LSTM (contract §1.4).

    x_t [B, I], h/c [B, H], M [B, S, D], capacity [B] or None (all S slots)
    -> (h, c, M, r [B, D]). The read sees the active slots only; the gated
    write, at the read's attention, touches only those.
    """
    p = params
    q = h @ p["w_q"].t() + p["b_q"]
    active = None if capacity is None else active_slots(capacity.to(M.device), M.shape[1], write_mode)
    if active is None:
        r, attn = wm_read(M, q)
    else:  # an inactive slot is not read at all: not even a NaN or inf there reaches r
        r, attn = wm_read(torch.where(active.unsqueeze(2), M, 0), q, active)
    gates = x_t @ p["w_ih"].t() + h @ p["w_hh"].t() + r @ p["w_rh"].t() + p["b"]
    h, c = lstm_cell(gates, c)
    v = torch.tanh(h @ p["w_v"].t() + p["b_v"])
    if write_mode == "fifo":
        M = wm_shift_write(M, v)
    else:
        e = torch.sigmoid(h @ p["w_e"].t() + p["b_e"])
        written = wm_write(M, attn, e, v)
        M = written if active is None else torch.where(active.unsqueeze(2), written, M)  # inactive: as given
    return h, c, M, r


def wm_lstm_sequence(x: Tensor, state: Tuple[Tensor, Tensor, Tensor],
                     params: Mapping[str, Tensor], write_mode: str = "fifo",
                     lengths: Optional[Tensor] = None, capacity: Optional[Tensor] = None):
    """The working-memory LSTM over a sequence.

    x [T, B, I], state (h0 [B, H], c0 [B, H], M0 [B, S, D]), params as contract §1.4,
    capacity [T, B] (active slots of each row and step, in [1, S]) or None
    -> (y [T, B, H + D], (h_T, c_T, M_T)). Rows past their length keep their
    state and memory and output zeros.
    """
    h, c, M = state
    ys = []
    for t in range(x.shape[0]):
        rows = running_rows(lengths, t, x)
        step_capacity = None if capacity is None else take_rows(rows, capacity[t].to(x.device))[0]
        h_new, c_new, M_new, r = wm_lstm_step(*take_rows(rows, x[t], h, c, M), params, write_mode,
                                              step_capacity)
        y_t = torch.cat([h_new, r], dim=1)
        ys.append(put_rows(rows, y_t.new_zeros(x.shape[1], y_t.shape[1]), y_t))
        h, c, M = put_rows(rows, h, h_new), put_rows(rows, c, c_new), put_rows(rows, M, M_new)
    if ys:
        y = torch.stack(ys)
    else:
        y = x.new_zeros(0, x.shape[1], h.shape[1] + M.shape[2])
    return y, (h.clone(), c.clone(), M.clone())

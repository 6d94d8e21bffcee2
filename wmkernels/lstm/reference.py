"""The reference of the LSTM family (contract §1.1, §1.2), in plain PyTorch.

Written for clarity, never for speed: a Python loop over time, every step a
handful of PyTorch calls, any floating dtype (float64 included). It is the
source of truth every backend is tested against; it does not validate its
arguments (``wmkernels.ops`` does that once, before any backend).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def lstm_cell(gates: Tensor, c_prev: Tensor) -> Tuple[Tensor, Tensor]:
    """One LSTM cell update from pre-activations.

    gates [B, 4H] in gate order i, f, g, o; c_prev [B, H] -> (h [B, H], c [B, H]).
    """
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def running_rows(lengths: Optional[Tensor], t: int, like: Tensor) -> Optional[Tensor]:
    """Indices [R] (int64) of the batch rows still running at step t (None: all)."""
    if lengths is None:
        return None
    return (lengths.to(like.device) > t).nonzero().squeeze(1)


def take_rows(rows: Optional[Tensor], *tensors: Tensor) -> Tuple[Tensor, ...]:
    """The running ``rows`` of each tensor ([B, ...] -> [R, ...]; None: all).

    Padding is "don't care" (a PackedSequence never holds it), and so is a row
    past its length: a step runs on the running rows alone, so nothing of the
    others (not even a NaN or inf in x there) reaches an output or a gradient,
    and the weights meet none of their values (a step run on all rows and then
    discarded would still leak backward: its zero gradient times a NaN or an
    infinite weight is NaN; so would multiplying by a 0/1 mask).
    """
    return tuple(t if rows is None else t.index_select(0, rows) for t in tensors)


def put_rows(rows: Optional[Tensor], old: Tensor, new: Tensor) -> Tensor:
    """``old`` with the running ``rows`` replaced by ``new`` ([R, ...]; None: all).
    The other rows pass around the step: their gradient goes straight to ``old``."""
    return new if rows is None else old.index_copy(0, rows, new)


def lstm_step(x_t: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """One LSTM step: x_t [B, I], h/c [B, H] -> (h [B, H], c [B, H]) (contract §1.2)."""
    gates = x_t @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        gates = gates + b_ih
    if b_hh is not None:
        gates = gates + b_hh
    return lstm_cell(gates, c)


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
                  lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of one LSTM layer.

    x [T, B, I], h0/c0 [B, H], w_ih [4H, I], w_hh [4H, H], b_ih/b_hh [4H] or None,
    lengths [B] int64 or None -> (y [T, B, H], h_n [B, H], c_n [B, H]).
    Rows past their length carry their state unchanged and output zeros.
    """
    T = x.shape[0]
    h, c = h0, c0
    ys = []
    for t in range(T):
        rows = running_rows(lengths, t, x)
        h_new, c_new = lstm_step(*take_rows(rows, x[t], h, c), w_ih, w_hh, b_ih, b_hh)
        ys.append(put_rows(rows, torch.zeros_like(h), h_new))
        h, c = put_rows(rows, h, h_new), put_rows(rows, c, c_new)
    y = torch.stack(ys) if ys else x.new_zeros(0, x.shape[1], h0.shape[1])
    return y, h.clone(), c.clone()

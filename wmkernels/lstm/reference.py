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


def valid_rows(lengths: Optional[Tensor], t: int, like: Tensor) -> Optional[Tensor]:
    """[B, 1] bool: which batch rows are still running at step t (None: all)."""
    if lengths is None:
        return None
    return (lengths.to(like.device) > t).unsqueeze(1)


def keep_where(valid: Optional[Tensor], new: Tensor, old: Tensor) -> Tensor:
    """new where the row is valid, old elsewhere; valid is [B, 1] (or None: all)."""
    if valid is None:
        return new
    return torch.where(valid.view(valid.shape + (1,) * (new.dim() - 2)), new, old)


def step_inputs(valid: Optional[Tensor], *tensors: Tensor) -> Tuple[Tensor, ...]:
    """The inputs of step t ([B, ...] each) with the rows past their length
    replaced by zeros, by selection.

    Padding is "don't care" (a PackedSequence never holds it), and so is the
    step a row takes past its length, whose results are discarded: nothing
    there may reach an output or a gradient. Run on its real inputs, that step
    would still leak backward (its zero gradient times a NaN derivative is
    NaN); multiplying by a 0/1 mask would keep a NaN (0 × NaN = NaN). So the
    step runs on zeros, selected with torch.where, whose gradient there is
    exactly zero, and the state passes around it (``keep_where``).
    """
    return tuple(keep_where(valid, t, torch.zeros_like(t)) for t in tensors)


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
        valid = valid_rows(lengths, t, x)
        h_new, c_new = lstm_step(*step_inputs(valid, x[t], h, c), w_ih, w_hh, b_ih, b_hh)
        ys.append(keep_where(valid, h_new, torch.zeros_like(h_new)))
        h, c = keep_where(valid, h_new, h), keep_where(valid, c_new, c)
    y = torch.stack(ys) if ys else x.new_zeros(0, x.shape[1], h0.shape[1])
    return y, h.clone(), c.clone()

"""The pure-PyTorch reference of every op of SPEC section 1.

Written for clarity, never for speed: a Python loop over time, every step a
handful of PyTorch calls, any floating dtype (float64 included). This module
is the source of truth every other backend is tested against; it does not
validate its arguments (``wmkernels.ops`` does that once, before any backend).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

# The keys of the WM-LSTM parameter mapping, in the order backends receive them.
WM_PARAM_KEYS = ("w_ih", "w_hh", "w_rh", "b", "w_q", "b_q", "w_v", "b_v", "w_e", "b_e")
WM_GATED_ONLY_KEYS = ("w_e", "b_e")
WRITE_MODES = ("fifo", "gated")


def lstm_cell(gates: Tensor, c_prev: Tensor) -> Tuple[Tensor, Tensor]:
    """One LSTM cell update from pre-activations.

    gates [B, 4H] in gate order i, f, g, o; c_prev [B, H] -> (h [B, H], c [B, H]).
    """
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def _valid_rows(lengths: Optional[Tensor], t: int, like: Tensor) -> Optional[Tensor]:
    """[B, 1] bool: which batch rows are still running at step t (None: all)."""
    if lengths is None:
        return None
    return (lengths.to(like.device) > t).unsqueeze(1)


def _keep_where(valid: Optional[Tensor], new: Tensor, old: Tensor) -> Tensor:
    """new where the row is valid, old elsewhere; valid is [B, 1] (or None: all)."""
    if valid is None:
        return new
    return torch.where(valid.view(valid.shape + (1,) * (new.dim() - 2)), new, old)


def lstm_step(x_t: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """One LSTM step: x_t [B, I], h/c [B, H] -> (h [B, H], c [B, H]) (SPEC 1.2)."""
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
        h_new, c_new = lstm_step(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        valid = _valid_rows(lengths, t, x)
        ys.append(_keep_where(valid, h_new, torch.zeros_like(h_new)))
        h, c = _keep_where(valid, h_new, h), _keep_where(valid, c_new, c)
    y = torch.stack(ys) if ys else x.new_zeros(0, x.shape[1], h0.shape[1])
    return y, h.clone(), c.clone()


def wm_read(M: Tensor, q: Tensor, mask: Optional[Tensor] = None,
            scale: Optional[float] = None) -> Tuple[Tensor, Tensor]:
    """Content-addressed read: scaled dot-product attention over the slots.

    M [B, S, D], q [B, D], mask [B, S] bool (True = readable) or None
    -> (r [B, D], attn [B, S]). A row with no readable slot reads zeros.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(M.shape[2])
    scores = torch.einsum("bsd,bd->bs", M, q) * scale
    if mask is None:
        attn = torch.softmax(scores, dim=1)
    else:
        scores = scores.masked_fill(~mask, float("-inf"))
        # A row with no readable slot would be softmax(all -inf) = NaN; give it
        # finite scores and zero its weights below instead.
        any_readable = mask.any(dim=1, keepdim=True)
        scores = scores.masked_fill(~any_readable, 0.0)
        attn = torch.softmax(scores, dim=1) * mask
    r = torch.einsum("bs,bsd->bd", attn, M)
    return r, attn


def wm_shift_write(M: Tensor, v: Tensor) -> Tensor:
    """FIFO write: drop slot 0, shift the rest down, write v [B, D] into slot S-1."""
    return torch.cat([M[:, 1:], v.unsqueeze(1)], dim=1)


def wm_write(M: Tensor, w: Tensor, e: Tensor, a: Tensor) -> Tensor:
    """Gated erase/add write (NTM): M ⊙ (1 − w eᵀ) + w aᵀ per batch row.

    M [B, S, D], w [B, S], e [B, D], a [B, D] -> M_new [B, S, D].
    """
    w = w.unsqueeze(2)
    return M * (1 - w * e.unsqueeze(1)) + w * a.unsqueeze(1)


def active_slots(capacity: Tensor, slots: int, write_mode: str) -> Tensor:
    """The mask [B, S] (True = active) of ``capacity`` [B] (values in [1, S]):
    fifo the last ``capacity`` slots (its most recent writes), gated the first."""
    s = torch.arange(slots, device=capacity.device)
    c = capacity.unsqueeze(1)
    return s >= slots - c if write_mode == "fifo" else s < c


def wm_lstm_step(x_t: Tensor, h: Tensor, c: Tensor, M: Tensor,
                 params: Mapping[str, Tensor], write_mode: str, capacity: Optional[Tensor] = None):
    """One step of the working-memory LSTM (SPEC 1.4).

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

    x [T, B, I], state (h0 [B, H], c0 [B, H], M0 [B, S, D]), params as SPEC 1.4,
    capacity [T, B] (active slots of each row and step, in [1, S]) or None
    -> (y [T, B, H + D], (h_T, c_T, M_T)). Rows past their length keep their
    state and memory and output zeros.
    """
    h, c, M = state
    ys = []
    for t in range(x.shape[0]):
        h_new, c_new, M_new, r = wm_lstm_step(x[t], h, c, M, params, write_mode,
                                              None if capacity is None else capacity[t])
        valid = _valid_rows(lengths, t, x)
        y_t = torch.cat([h_new, r], dim=1)
        ys.append(_keep_where(valid, y_t, torch.zeros_like(y_t)))
        h, c, M = (_keep_where(valid, h_new, h), _keep_where(valid, c_new, c),
                   _keep_where(valid, M_new, M))
    if ys:
        y = torch.stack(ys)
    else:
        y = x.new_zeros(0, x.shape[1], h.shape[1] + M.shape[2])
    return y, (h.clone(), c.clone(), M.clone())

"""``wmkernels.nn.WMLSTM`` and ``WMLSTMCell``: the working-memory LSTM of contract §1.4."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from wmkernels import ops
from wmkernels.nn import checks
from wmkernels.nn.cell import gate_preactivations
from wmkernels.nn.sequences import repack, time_major, unpack
from wmkernels.contract import WM_GATED_ONLY_KEYS, WM_PARAM_KEYS, WRITE_MODES

State = Tuple[Tensor, Tensor, Tensor]


class _WMParameters(nn.Module):
    """The parameters of the WM-LSTM, named as the keys of contract §1.4, and its state.

    ``w_ih [4H, I]``, ``w_hh [4H, H]``, ``w_rh [4H, D]``, ``b [4H]``,
    ``w_q [D, H]``, ``b_q [D]``, ``w_v [D, H]``, ``b_v [D]``, and in ``gated``
    mode ``w_e [D, H]``, ``b_e [D]``; all uniform ±1/√H as in torch.nn.LSTM
    (every matrix but ``w_ih``/``w_rh`` reads the hidden state, and ±1/√H keeps
    the read's scores ``q·M/√D`` and the gates O(1) at any width).
    """

    NAME = "WMLSTM"

    def __init__(self, input_size: int, hidden_size: int, memory_slots: int, memory_dim: int,
                 write_mode: str = "fifo", device=None, dtype=None) -> None:
        super().__init__()
        name = self.NAME
        I = checks.positive_int(name, "input_size", input_size)
        H = checks.positive_int(name, "hidden_size", hidden_size)
        S = checks.positive_int(name, "memory_slots", memory_slots)
        D = checks.positive_int(name, "memory_dim", memory_dim)
        if not isinstance(write_mode, str) or write_mode not in WRITE_MODES:
            raise ValueError(f"{name}: write_mode must be one of {list(WRITE_MODES)}, got {write_mode!r}")
        self.input_size, self.hidden_size, self.memory_slots, self.memory_dim = I, H, S, D
        self.write_mode = write_mode
        sizes = {"I": I, "H": H, "4H": 4 * H, "D": D}
        for key in self.param_keys():
            shape = tuple(sizes[label] for label in ops.WM_PARAM_SHAPES[key])
            setattr(self, key, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    def param_keys(self):
        return tuple(k for k in WM_PARAM_KEYS if self.write_mode == "gated" or k not in WM_GATED_ONLY_KEYS)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def params(self) -> Dict[str, Tensor]:
        """The ``params`` mapping of ``ops.wm_lstm_sequence`` (= ``dict(self.named_parameters())``)."""
        return {key: getattr(self, key) for key in self.param_keys()}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, memory_slots={self.memory_slots}, "
                f"memory_dim={self.memory_dim}, write_mode={self.write_mode!r}")

    def initial_state(self, state: Optional[State], like: Tensor, batch: int) -> State:
        """``state`` checked against ``[B, H], [B, H], [B, S, D]``, or zeros of ``like``'s kind."""
        H, S, D = self.hidden_size, self.memory_slots, self.memory_dim
        shapes = ((batch, H), (batch, H), (batch, S, D))
        if state is None:
            return tuple(checks.zeros(shape, like) for shape in shapes)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError(f"{self.NAME}: Expected state to be a tuple (h, c, M), got "
                             f"{type(state).__name__}" + (f" of length {len(state)}"
                                                          if isinstance(state, (tuple, list)) else ""))
        for (name, labels), value, shape in zip((("state[0] (h)", "[B, H]"), ("state[1] (c)", "[B, H]"),
                                                 ("state[2] (M)", "[B, S, D]")), state, shapes):
            checks.tensor(self.NAME, name, value, (len(shape),))
            checks.matches_weights(self.NAME, name, value, self.w_ih)
            checks.size(self.NAME, name, value, shape, labels)
        return tuple(state)

    def check_input(self, x: Tensor, dims: int, labels: str) -> None:
        checks.tensor(self.NAME, "input", x, (dims,))
        checks.matches_weights(self.NAME, "input", x, self.w_ih)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{self.NAME}: Expected input of shape {labels} with I={self.input_size}, "
                             f"got {list(x.shape)}")


class WMLSTM(_WMParameters):
    """The working-memory LSTM over a whole sequence: one ``ops.wm_lstm_sequence`` call.

    ``WMLSTM(input_size, hidden_size, memory_slots, memory_dim, write_mode="fifo",
    batch_first=False, device=None, dtype=None)``; parameters as contract §1.4's keys,
    so ``dict(layer.named_parameters())`` is a valid ``params``.
    ``forward(x, state=None) -> (y, (h, c, M))``: ``x [T, B, I]`` (``[B, T, I]``
    with ``batch_first``) or a ``PackedSequence``; ``state = (h0 [B, H], c0 [B, H],
    M0 [B, S, D])``, zeros if None; ``y [T, B, H + D]`` (``concat(h_t, r_t)``,
    laid out like ``x``, packed if ``x`` was), ``h, c [B, H]``, ``M [B, S, D]``
    (of each row's last valid step when packed). Compiles with
    ``torch.compile(fullgraph=True)`` on tensor input (not on a PackedSequence).
    Under ``torch.autocast`` it computes in its inputs' dtype, as a fused op.

    Note: in ``gated`` mode a memory that starts with all slots equal (the zero
    state) stays so — the write weights are the read's attention, uniform over
    equal slots — so the read is uniform and ``w_q``, ``b_q`` get no gradient;
    pass a non-uniform ``M0`` (or use ``fifo``) when that matters.
    """

    def __init__(self, input_size: int, hidden_size: int, memory_slots: int, memory_dim: int,
                 write_mode: str = "fifo", batch_first: bool = False, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, memory_slots, memory_dim, write_mode, device, dtype)
        if not isinstance(batch_first, bool):
            raise TypeError(f"{self.NAME}: batch_first should be of type bool, got: {type(batch_first).__name__}")
        self.batch_first = batch_first

    def extra_repr(self) -> str:
        return super().extra_repr() + (", batch_first=True" if self.batch_first else "")

    def forward(self, x, state: Optional[State] = None):
        packed = isinstance(x, PackedSequence)
        if packed:
            xs, lengths = unpack(x)  # lengths stay on the CPU: checked there, with no sync
            self.check_input(xs, 3, "[T, B, I]")
        else:
            self.check_input(x, 3, "[B, T, I]" if self.batch_first else "[T, B, I]")
            xs, lengths = time_major(x, self.batch_first), None
        state = self.initial_state(state, xs, xs.shape[1])
        y, state_n = ops.wm_lstm_sequence(xs, state, self.params(), self.write_mode, lengths)
        y = repack(y, lengths, x) if packed else time_major(y, self.batch_first)
        return y, state_n


class WMLSTMCell(_WMParameters):
    """One step of the working-memory LSTM (contract §1.4), for user-written loops.

    Same constructor (without ``batch_first``) and parameters as ``WMLSTM``, so
    the two load each other's ``state_dict``. ``forward(x [B, I], state=None)
    -> (y [B, H + D], (h, c, M))``, from ``ops.wm_read``, ``addmm`` gate
    pre-activations, ``ops.lstm_cell`` and ``ops.wm_shift_write`` (fifo) or
    ``ops.wm_write`` (gated); ``state=None`` means zeros.
    """

    NAME = "WMLSTMCell"

    def forward(self, x: Tensor, state: Optional[State] = None):
        self.check_input(x, 2, "[B, I]")
        with ops.autocast_off(x.device.type):  # a step of WMLSTM, which computes in its inputs' dtype
            return self._step(x, state)

    def _step(self, x: Tensor, state: Optional[State]):
        h, c, M = self.initial_state(state, x, x.shape[0])
        q = torch.addmm(self.b_q, h, self.w_q.t())
        r, attn = ops.wm_read(M, q)
        gates = torch.addmm(gate_preactivations(x, h, self.w_ih, self.w_hh, self.b), r, self.w_rh.t())
        h, c = ops.lstm_cell(gates, c)
        v = torch.tanh(torch.addmm(self.b_v, h, self.w_v.t()))
        if self.write_mode == "fifo":
            M = ops.wm_shift_write(M, v)
        else:
            e = torch.sigmoid(torch.addmm(self.b_e, h, self.w_e.t()))
            M = ops.wm_write(M, attn, e, v)
        return torch.cat([h, r], dim=1), (h, c, M)

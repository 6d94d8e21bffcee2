"""``wmkernels.nn.WMLSTM`` and ``WMLSTMCell``: the working-memory LSTM of contract §1.4."""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from wmkernels import _checks, ops
from wmkernels.nn import checks
from wmkernels.nn.cell import gate_preactivations
from wmkernels.nn.sequences import repack, time_major, unpack
from wmkernels.contract import WM_GATED_ONLY_KEYS, WM_PARAM_KEYS, WRITE_MODES
from wmkernels.wm_lstm.reference import active_slots

State = Tuple[Tensor, Tensor, Tensor]


def degenerate_rows(M: Tensor) -> Tensor:
    """Bool ``[B]``: rows of ``M [B, S, D]`` whose ``S > 1`` slots are all equal.

    Under the gated write such a row stays so: the read attention over equal
    slots is uniform, the write weights are that attention, every slot gets
    the same update. Its read ignores the query, which then gets no gradient.
    """
    if M.shape[1] < 2:
        return torch.zeros(M.shape[0], dtype=torch.bool, device=M.device)
    return (M == M[:, :1]).flatten(1).all(dim=1)


class _WMParameters(nn.Module):
    """The parameters of the WM-LSTM, named as the keys of contract §1.4, and its state.

    ``w_ih [4H, I]``, ``w_hh [4H, H]``, ``w_rh [4H, D]``, ``b [4H]``,
    ``w_q [D, H]``, ``b_q [D]``, ``w_v [D, H]``, ``b_v [D]``, and in ``gated``
    mode ``w_e [D, H]``, ``b_e [D]``; all uniform ±1/√H as in torch.nn.LSTM
    (every matrix but ``w_ih``/``w_rh`` reads the hidden state, and ±1/√H keeps
    the read's scores ``q·M/√D`` and the gates O(1) at any width).

    In ``gated`` mode also ``m0 [S, D]``, the learned initial memory (the
    memory a ``state=None`` call starts from), uniform ±1: slots that differ,
    in the range the write puts there (``v = tanh(·)``). A gated memory whose
    slots start equal stays so (``degenerate_rows``); see contract §2.1.
    ``fifo`` has no ``m0``: it starts from zeros, its shift tells slots apart.
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
        if write_mode == "gated":
            self.m0 = nn.Parameter(torch.empty(S, D, device=device, dtype=dtype))
        self.reset_parameters()

    def param_keys(self):
        return tuple(k for k in WM_PARAM_KEYS if self.write_mode == "gated" or k not in WM_GATED_ONLY_KEYS)

    def reset_parameters(self) -> None:
        # m0 is drawn last, so the contract §1.4 weights of a seed are what they were before it existed
        bound = 1.0 / math.sqrt(self.hidden_size)
        for key in self.param_keys():
            nn.init.uniform_(getattr(self, key), -bound, bound)
        if self.write_mode == "gated":
            nn.init.uniform_(self.m0, -1.0, 1.0)

    def params(self) -> Dict[str, Tensor]:
        """The ``params`` mapping of ``ops.wm_lstm_sequence``: the named parameters
        less ``m0`` (the op rejects keys it does not know)."""
        return {key: getattr(self, key) for key in self.param_keys()}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, memory_slots={self.memory_slots}, "
                f"memory_dim={self.memory_dim}, write_mode={self.write_mode!r}")

    def initial_state(self, state: Optional[State], like: Tensor, batch: int) -> State:
        """``state`` checked against ``[B, H], [B, H], [B, S, D]`` (in gated mode a
        warning where a row's slots are all equal), or the default: zero ``h``,
        ``c``, and ``M`` = ``m0`` for every row (gated) or zeros (fifo)."""
        H, S, D = self.hidden_size, self.memory_slots, self.memory_dim
        shapes = ((batch, H), (batch, H), (batch, S, D))
        if state is None:
            h, c = (checks.zeros(shape, like) for shape in shapes[:2])
            if self.write_mode == "gated":
                return h, c, self.m0.unsqueeze(0).expand(batch, S, D)
            return h, c, checks.zeros(shapes[2], like)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError(f"{self.NAME}: Expected state to be a tuple (h, c, M), got "
                             f"{type(state).__name__}" + (f" of length {len(state)}"
                                                          if isinstance(state, (tuple, list)) else ""))
        names = (("state[0] (h)", "[B, H]"), ("state[1] (c)", "[B, H]"), ("state[2] (M)", "[B, S, D]"))
        for (name, labels), value, shape in zip(names, state, shapes):  # shapes first, then dtypes
            checks.tensor(self.NAME, name, value, (len(shape),))
            checks.size(self.NAME, name, value, shape, labels)
        for (name, _), value in zip(names, state):
            checks.matches_weights(self.NAME, name, value, self.w_ih)
        if self.write_mode == "gated":
            self.warn_if_degenerate(state[2])
        return tuple(state)

    def warn_if_degenerate(self, M: Tensor) -> None:
        """A ``UserWarning`` where a row of the caller's gated memory has all slots
        equal (one comparison and a host sync; skipped while compiling or tracing)."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or M.numel() == 0:
            return
        rows = degenerate_rows(M.detach()).nonzero().flatten()
        if rows.numel():
            warnings.warn(
                f"{self.NAME}: gated memory state[2] (M) has all {self.memory_slots} slots equal in "
                f"{rows.numel()} of {M.shape[0]} rows (first: row {int(rows[0])}). A gated memory "
                "whose slots are equal stays so (the read attention is uniform and the write "
                "weights are that attention): it cannot store anything apart and w_q, b_q get no "
                "gradient. Start from distinct slots, e.g. state=None (the learned initial memory "
                "m0) or layer.m0.expand(B, -1, -1).", UserWarning, stacklevel=4)

    def capacity_from_lengths(self, lengths: Tensor, slots_per_step: float = 1.0) -> Tensor:
        """A capacity policy: ``ceil(slots_per_step · lengths)`` clamped to [1, S],
        int64 ``[B]`` on the device of ``lengths`` (int ``[B]``, any integer dtype).

        At the default 1.0 a row gets as many slots as it has steps, up to S:
        never fewer than it can fill (fifo keeps its last ``min(L, S)`` writes
        either way; a gated row of L steps makes at most L writes, and a
        smaller memory sharpens its read). A row of length 0 gets 1 (the
        least allowed; it runs no step). Pass the result as ``capacity``.
        """
        if not isinstance(lengths, Tensor) or lengths.dtype.is_floating_point or lengths.dtype.is_complex \
                or lengths.dtype == torch.bool or lengths.dim() != 1:
            raise TypeError(f"{self.NAME}.capacity_from_lengths: lengths must be an integer tensor [B], got "
                            + (f"{lengths.dtype} of shape {list(lengths.shape)}" if isinstance(lengths, Tensor)
                               else type(lengths).__name__))
        if isinstance(slots_per_step, bool) or not isinstance(slots_per_step, (int, float)) \
                or not slots_per_step > 0 or not math.isfinite(slots_per_step):
            raise ValueError(f"{self.NAME}.capacity_from_lengths: slots_per_step must be a finite number > 0, "
                             f"got {slots_per_step!r}")
        wanted = torch.ceil(lengths.to(torch.float64) * slots_per_step)
        return wanted.clamp(1, self.memory_slots).to(torch.int64)

    def check_input(self, x: Tensor, dims: int, labels: str) -> None:
        """Rank and width of the input, then its dtype and device (shapes first, as torch's layers)."""
        checks.tensor(self.NAME, "input", x, (dims,))
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{self.NAME}: Expected input of shape {labels} with I={self.input_size}, "
                             f"got {list(x.shape)}")
        checks.matches_weights(self.NAME, "input", x, self.w_ih)


class WMLSTM(_WMParameters):
    """The working-memory LSTM over a whole sequence: one ``ops.wm_lstm_sequence`` call.

    ``WMLSTM(input_size, hidden_size, memory_slots, memory_dim, write_mode="fifo",
    batch_first=False, device=None, dtype=None)``; parameters as contract §1.4's keys
    (and ``m0`` in gated mode, the initial memory rather than an op parameter),
    so ``layer.params()`` is the op's ``params``.
    ``forward(x, state=None) -> (y, (h, c, M))``: ``x [T, B, I]`` (``[B, T, I]``
    with ``batch_first``) or a ``PackedSequence``; ``state = (h0 [B, H], c0 [B, H],
    M0 [B, S, D])``; None means zero ``h0``, ``c0`` and ``M0`` = zeros (fifo) or
    the learned initial memory ``m0`` in every row (gated); ``y [T, B, H + D]``
    (``concat(h_t, r_t)``, laid out like ``x``, packed if ``x`` was), ``h, c [B, H]``,
    ``M [B, S, D]`` (of each row's last valid step when packed). Compiles with
    ``torch.compile(fullgraph=True)`` on tensor input (not on a PackedSequence).
    Under ``torch.autocast`` it computes in its inputs' dtype, as a fused op.

    ``capacity`` (int64 ``[B]``, or per step ``[T, B]`` — ``[B, T]`` with
    ``batch_first`` —, values in [1, S]) gives each row its active slots, as
    ``ops.wm_lstm_sequence`` takes it; ``capacity_from_lengths`` derives one.

    In ``gated`` mode a memory whose slots are all equal stays so (the write
    weights are the read's attention, uniform over equal slots): a ``state``
    whose ``M0`` has such a row draws a ``UserWarning``.
    """

    def __init__(self, input_size: int, hidden_size: int, memory_slots: int, memory_dim: int,
                 write_mode: str = "fifo", batch_first: bool = False, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, memory_slots, memory_dim, write_mode, device, dtype)
        if not isinstance(batch_first, bool):
            raise TypeError(f"{self.NAME}: batch_first should be of type bool, got: {type(batch_first).__name__}")
        self.batch_first = batch_first

    def extra_repr(self) -> str:
        return super().extra_repr() + (", batch_first=True" if self.batch_first else "")

    def forward(self, x, state: Optional[State] = None, capacity: Optional[Tensor] = None):
        packed = isinstance(x, PackedSequence)
        if packed:
            xs, lengths = unpack(x)  # lengths stay on the CPU: checked there, with no sync
            self.check_input(xs, 3, "[T, B, I]")
        else:
            self.check_input(x, 3, "[B, T, I]" if self.batch_first else "[T, B, I]")
            xs, lengths = time_major(x, self.batch_first), None
        state = self.initial_state(state, xs, xs.shape[1])
        if capacity is not None and self.batch_first and not packed and isinstance(capacity, Tensor) \
                and capacity.dim() == 2:
            capacity = capacity.t()  # [B, T], laid out like x -> [T, B]
        y, state_n = ops.wm_lstm_sequence(xs, state, self.params(), self.write_mode, lengths, capacity)
        y = repack(y, lengths, x) if packed else time_major(y, self.batch_first)
        return y, state_n


class WMLSTMCell(_WMParameters):
    """One step of the working-memory LSTM (contract §1.4), for user-written loops.

    Same constructor (without ``batch_first``) and parameters as ``WMLSTM``, so
    the two load each other's ``state_dict``. ``forward(x [B, I], state=None)
    -> (y [B, H + D], (h, c, M))``, from ``ops.wm_read``, ``addmm`` gate
    pre-activations, ``ops.lstm_cell`` and ``ops.wm_shift_write`` (fifo) or
    ``ops.wm_write`` (gated); ``state=None`` means what it means for ``WMLSTM``
    (zeros; in gated mode ``M`` = ``m0``), and a degenerate gated ``M`` warns.
    ``capacity`` (int64 ``[B]`` in [1, S], or None) limits the step's read, and
    so the gated write, to each row's active slots (fifo: the last, gated: the first).
    """

    NAME = "WMLSTMCell"

    def forward(self, x: Tensor, state: Optional[State] = None, capacity: Optional[Tensor] = None):
        self.check_input(x, 2, "[B, I]")
        capacity = _checks.capacity(self.NAME, capacity, x.shape[0], None, self.memory_slots, x.device)
        with ops.autocast_off(x.device.type):  # a step of WMLSTM, which computes in its inputs' dtype
            return self._step(x, state, capacity)

    def _step(self, x: Tensor, state: Optional[State], capacity: Optional[Tensor]):
        h, c, M = self.initial_state(state, x, x.shape[0])
        q = torch.addmm(self.b_q, h, self.w_q.t())
        mask = None if capacity is None else active_slots(capacity.to(x.device), self.memory_slots, self.write_mode)
        r, attn = ops.wm_read(M, q, mask)
        gates = torch.addmm(gate_preactivations(x, h, self.w_ih, self.w_hh, self.b), r, self.w_rh.t())
        h, c = ops.lstm_cell(gates, c)
        v = torch.tanh(torch.addmm(self.b_v, h, self.w_v.t()))
        if self.write_mode == "fifo":
            M = ops.wm_shift_write(M, v)
        else:
            e = torch.sigmoid(torch.addmm(self.b_e, h, self.w_e.t()))
            M = ops.wm_write(M, attn, e, v)
        return torch.cat([h, r], dim=1), (h, c, M)

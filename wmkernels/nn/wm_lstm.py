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
from wmkernels.nn.sequences import layer_input, layer_output, reverse_within
from wmkernels.nn.stack import run_stack
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


def layer_suffix(layer: int, direction: int) -> str:
    """The suffix of layer-direction (``layer``, ``direction``)'s parameter names:
    torch.nn.LSTM's ``_l{layer}`` (and ``_reverse``), none for the first layer's
    forward direction, whose names are the op's keys (``w_ih``, ``m0``, ...)."""
    if (layer, direction) == (0, 0):
        return ""
    return f"_l{layer}" + ("_reverse" if direction else "")


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

    With ``num_layers`` L and ``num_directions`` 2 (bidirectional), every
    layer-direction has a set of its own, its names suffixed as torch.nn.LSTM's
    (``layer_suffix``: ``w_ih_l1``, ``m0_l0_reverse``; none for layer 0's forward
    direction); a layer ``l > 0`` reads ``dirs·(H + D)`` features, so its
    ``w_ih`` is ``[4H, dirs·(H + D)]``. Every weight of every layer-direction is
    drawn before any ``m0``.
    """

    NAME = "WMLSTM"
    # a layer pickled whole before layers and directions existed loads as the one it was
    num_layers, num_directions, _suffixes = 1, 1, ("",)

    def __init__(self, input_size: int, hidden_size: int, memory_slots: int, memory_dim: int,
                 write_mode: str = "fifo", device=None, dtype=None, num_layers: int = 1,
                 num_directions: int = 1) -> None:
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
        self.num_layers, self.num_directions = num_layers, num_directions
        self._suffixes = tuple(layer_suffix(layer, direction)
                               for layer in range(num_layers) for direction in range(num_directions))
        for k, suffix in enumerate(self._suffixes):
            sizes = {"I": I if k < num_directions else num_directions * (H + D), "H": H, "4H": 4 * H, "D": D}
            for key in self.param_keys():
                shape = tuple(sizes[label] for label in ops.WM_PARAM_SHAPES[key])
                setattr(self, key + suffix, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        if write_mode == "gated":
            for suffix in self._suffixes:
                setattr(self, "m0" + suffix, nn.Parameter(torch.empty(S, D, device=device, dtype=dtype)))
        self.reset_parameters()

    def param_keys(self):
        return tuple(k for k in WM_PARAM_KEYS if self.write_mode == "gated" or k not in WM_GATED_ONLY_KEYS)

    def reset_parameters(self) -> None:
        # m0 is drawn last, so the contract §1.4 weights of a seed are what they were before it existed
        bound = 1.0 / math.sqrt(self.hidden_size)
        for suffix in self._suffixes:
            for key in self.param_keys():
                nn.init.uniform_(getattr(self, key + suffix), -bound, bound)
        if self.write_mode == "gated":
            for suffix in self._suffixes:
                nn.init.uniform_(getattr(self, "m0" + suffix), -1.0, 1.0)

    def params(self, layer: int = 0, direction: int = 0) -> Dict[str, Tensor]:
        """The ``params`` mapping of ``ops.wm_lstm_sequence`` for one layer-direction
        (by default the first layer's forward one, the only one of a one-layer
        unidirectional layer): its parameters less ``m0`` (the op rejects keys
        it does not know), under the op's key names."""
        for name, value, count in (("layer", layer, self.num_layers), ("direction", direction, self.num_directions)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
                raise ValueError(f"{self.NAME}.params: {name} must be an int in [0, {count}), got {value!r}")
        suffix = layer_suffix(layer, direction)
        return {key: getattr(self, key + suffix) for key in self.param_keys()}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, memory_slots={self.memory_slots}, "
                f"memory_dim={self.memory_dim}, write_mode={self.write_mode!r}")

    def initial_state(self, state: Optional[State], like: Tensor, batch: int, stacked: bool = False,
                      batched: bool = True) -> State:
        """``state`` checked, or the default, as ``[L·dirs, B, ...]`` tensors if
        ``stacked`` else ``[B, ...]``: ``h, c [., B, H]``, ``M [., B, S, D]``.

        A given ``state`` has that shape, less the ``B`` dimension when not
        ``batched`` (unbatched input: it is put back here, ``B = 1``); shapes are
        checked first, then dtypes and devices; in gated mode a row whose slots are
        all equal draws a warning. The default: zero ``h``, ``c``, and ``M`` =
        each layer-direction's ``m0`` in every row (gated) or zeros (fifo).
        """
        H, S, D = self.hidden_size, self.memory_slots, self.memory_dim
        lead = (len(self._suffixes),) if stacked else ()
        rows = (batch,) if batched else ()
        inner = ((H,), (H,), (S, D))
        if state is None:
            h, c = (checks.zeros(lead + (batch,) + shape, like) for shape in inner[:2])
            if self.write_mode == "fifo":
                return h, c, checks.zeros(lead + (batch, S, D), like)
            memories = [getattr(self, "m0" + suffix).expand(batch, S, D) for suffix in self._suffixes]
            return h, c, torch.stack(memories) if stacked else memories[0]
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError(f"{self.NAME}: Expected state to be a tuple (h, c, M), got "
                             f"{type(state).__name__}" + (f" of length {len(state)}"
                                                          if isinstance(state, (tuple, list)) else ""))
        outer = (["num_layers*num_directions"] if stacked else []) + (["B"] if batched else [])
        names = (("state[0] (h)", ["H"]), ("state[1] (c)", ["H"]), ("state[2] (M)", ["S", "D"]))
        for (name, labels), value, shape in zip(names, state, inner):  # shapes first, then dtypes
            shape = lead + rows + shape
            checks.tensor(self.NAME, name, value, (len(shape),))
            checks.size(self.NAME, name, value, shape, "[" + ", ".join(outer + labels) + "]")
        for (name, _), value in zip(names, state):
            checks.matches_weights(self.NAME, name, value, self.w_ih)
        if self.write_mode == "gated":
            self.warn_if_degenerate(state[2])
        return tuple(state) if batched else tuple(t.unsqueeze(len(lead)) for t in state)

    def warn_if_degenerate(self, M: Tensor) -> None:
        """A ``UserWarning`` where a row of the caller's gated memory ``M [..., S, D]``
        has all slots equal (one comparison and a host sync; skipped while compiling
        or tracing). Rows are counted over every leading dimension."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or M.numel() == 0:
            return
        flat = M.detach().reshape(-1, self.memory_slots, self.memory_dim)
        rows = degenerate_rows(flat).nonzero().flatten()
        if rows.numel():
            warnings.warn(
                f"{self.NAME}: gated memory state[2] (M) has all {self.memory_slots} slots equal in "
                f"{rows.numel()} of {flat.shape[0]} rows (first: row {int(rows[0])}). A gated memory "
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

    def check_width(self, x: Tensor, labels: str) -> None:
        """The input's last dimension is ``I`` (its rank was checked; its dtype is
        checked after every shape, as torch's layers do)."""
        if x.shape[-1] != self.input_size:
            raise checks.LayerShapeError(
                f"{self.NAME}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]} (input of shape {labels} with I={self.input_size}, got {list(x.shape)})")

    def check_input(self, x: Tensor, dims: int, labels: str) -> None:
        """Rank and width of the input, then its dtype and device (shapes first, as torch's layers)."""
        checks.tensor(self.NAME, "input", x, (dims,))
        self.check_width(x, labels)
        checks.matches_weights(self.NAME, "input", x, self.w_ih)


class WMLSTM(_WMParameters):
    """The working-memory LSTM over a whole sequence, stacked and bidirectional as
    ``torch.nn.LSTM``: each layer-direction one ``ops.wm_lstm_sequence`` call.

    ``WMLSTM(input_size, hidden_size, memory_slots, memory_dim, write_mode="fifo",
    batch_first=False, num_layers=1, dropout=0.0, bidirectional=False, device=None,
    dtype=None)``. Each of the ``L = num_layers`` layers and ``dirs`` directions
    (2 if ``bidirectional``) is a WM-LSTM of its own — its own parameters (named
    as contract §1.4's keys with torch's suffixes, ``_WMParameters``), its own
    ``h``, ``c`` and memory ``M`` — and layer-direction ``k = l·dirs + d`` is
    entry ``k`` of every stacked state. Layer 0 reads ``x``; layer ``l > 0``
    reads layer ``l - 1``'s outputs ``[h_t, r_t]`` of both directions
    concatenated (``dirs·(H + D)`` features), through dropout (``p = dropout``)
    in training mode for every layer but the last, as torch.nn.LSTM. The
    reverse direction runs the op on each row reversed within its own length
    (its memory fills from the row's last element back) and its outputs are
    put back in time order. ``layer.params(l, d)`` is layer-direction
    (l, d)'s ``params`` for the op (default: the first).

    ``forward(x, state=None, capacity=None) -> (y, (h, c, M))``: ``x [T, B, I]``
    (``[B, T, I]`` with ``batch_first``), unbatched ``[T, I]``, or a
    ``PackedSequence``; ``y [T, B, dirs·(H + D)]`` (each direction's
    ``concat(h_t, r_t)``, forward first; laid out like ``x``, ``[T, dirs·(H + D)]``
    unbatched, packed if ``x`` was). The state: for one layer and direction
    the op's own, ``h, c [B, H]``, ``M [B, S, D]`` (as ``WMLSTMCell``'s);
    stacked (``L·dirs > 1``) ``h, c [L·dirs, B, H]``, ``M [L·dirs, B, S, D]``;
    unbatched, the same without ``B``. The final state is of each row's last
    valid step when packed (for the reverse direction: after ``x[0]``).
    ``state=None`` means zero ``h``, ``c`` and ``M`` = zeros (fifo) or each
    layer-direction's learned initial memory ``m0`` in every row (gated).
    Compiles with ``torch.compile(fullgraph=True)`` on tensor input (not on a
    PackedSequence). Under ``torch.autocast`` it computes in its inputs' dtype,
    as a fused op.

    ``capacity`` (int64 ``[B]``, or per step ``[T, B]`` — ``[B, T]`` with
    ``batch_first`` —, values in [1, S]; unbatched ``[]`` or ``[T]``) gives each
    row its active slots, as ``ops.wm_lstm_sequence`` takes it, in every layer
    and direction; a per-step capacity is indexed by the input's time step, so
    the reverse direction meets it reversed (within each row's length), as it
    meets ``x``. ``capacity_from_lengths`` derives one.

    In ``gated`` mode a memory whose slots are all equal stays so (the write
    weights are the read's attention, uniform over equal slots): a ``state``
    whose ``M0`` has such a row draws a ``UserWarning``.
    """

    batch_first, dropout, bidirectional = False, 0.0, False  # see _WMParameters.num_layers

    def __init__(self, input_size: int, hidden_size: int, memory_slots: int, memory_dim: int,
                 write_mode: str = "fifo", batch_first: bool = False, num_layers: int = 1,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None) -> None:
        checks.flag(self.NAME, "batch_first", batch_first)
        checks.flag(self.NAME, "bidirectional", bidirectional)
        checks.positive_int(self.NAME, "num_layers", num_layers)
        dropout = checks.dropout(dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
        super().__init__(input_size, hidden_size, memory_slots, memory_dim, write_mode, device, dtype,
                         num_layers=num_layers, num_directions=2 if bidirectional else 1)
        self.batch_first, self.dropout, self.bidirectional = batch_first, dropout, bidirectional

    @property
    def stacked(self) -> bool:
        """True when the state has a leading ``L·dirs`` dimension (more than one layer-direction)."""
        return len(self._suffixes) > 1

    def extra_repr(self) -> str:
        extra = [f"num_layers={self.num_layers}"] if self.num_layers != 1 else []
        extra += ["batch_first=True"] if self.batch_first else []
        extra += [f"dropout={self.dropout}"] if self.dropout else []
        extra += ["bidirectional=True"] if self.bidirectional else []
        return ", ".join([super().extra_repr()] + extra)

    def forward(self, x, state: Optional[State] = None, capacity: Optional[Tensor] = None):
        packed = isinstance(x, PackedSequence)
        xs, lengths, batched = layer_input(self.NAME, x, self.batch_first)
        self.check_width(xs, "[T, I]" if not batched else "[B, T, I]" if self.batch_first and not packed
                         else "[T, B, I]")
        T, B = xs.shape[:2]
        state = self.initial_state(state, xs, B, self.stacked, batched)
        checks.matches_weights(self.NAME, "input", xs, self.w_ih)
        forward_capacity, backward_capacity = self._capacities(capacity, batched, packed, lengths, xs)
        if not self.stacked:
            state = tuple(t.unsqueeze(0) for t in state)

        def run(k: int, inputs: Tensor, initial: State):
            layer, direction = divmod(k, self.num_directions)
            return ops.wm_lstm_sequence(inputs, initial, self.params(layer, direction), self.write_mode, lengths,
                                        backward_capacity if direction else forward_capacity)

        y, state_n = run_stack(xs, state, run, num_layers=self.num_layers, num_directions=self.num_directions,
                               dropout=self.dropout, training=self.training, lengths=lengths)
        if not self.stacked:
            state_n = tuple(t.squeeze(0) for t in state_n)
        if not batched:
            state_n = tuple(t.squeeze(1 if self.stacked else 0) for t in state_n)
        return layer_output(y, lengths, x, batched, self.batch_first), state_n

    def _capacities(self, capacity, batched: bool, packed: bool, lengths: Optional[Tensor],
                    x: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``capacity`` as the op takes it for the forward and the reverse directions:
        time-major (``[B, T]`` with ``batch_first`` transposed; unbatched ``[]`` or
        ``[T]`` given a batch of 1), and a per-step one reversed within each row's
        length for the reverse direction (checked here first; the op checks the rest)."""
        if not isinstance(capacity, Tensor):
            return capacity, capacity  # None, or not a tensor: the op names it
        if not batched:
            if capacity.dim() not in (0, 1):
                raise ValueError(f"{self.NAME}: argument 'capacity' of unbatched input must have shape [] or "
                                 f"[T], got {list(capacity.shape)}")
            capacity = capacity.unsqueeze(-1)
        elif self.batch_first and not packed and capacity.dim() == 2:
            capacity = capacity.t()  # [B, T], laid out like x -> [T, B]
        if self.num_directions == 1 or capacity.dim() != 2:
            return capacity, capacity
        T, B = x.shape[:2]
        _checks.capacity(self.NAME, capacity, B, T, self.memory_slots, x.device)
        return capacity, reverse_within(capacity, lengths)


class WMLSTMCell(_WMParameters):
    """One step of the working-memory LSTM (contract §1.4), for user-written loops.

    Same constructor and parameters as a one-layer unidirectional ``WMLSTM``
    (without ``batch_first``, ``num_layers``, ``dropout``, ``bidirectional``), so
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

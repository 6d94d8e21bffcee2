"""``wmkernels.nn.LSTM``: a drop-in for ``torch.nn.LSTM`` on ``wmkernels.ops``."""
from __future__ import annotations

from functools import partial
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from wmkernels import ops
from wmkernels.nn import checks
from wmkernels.nn.sequences import layer_input, layer_output
from wmkernels.nn.stack import run_stack
from wmkernels.nn.torch_path import runs_on_torch

NAME = "LSTM"


class LSTM(nn.LSTM):
    """Multi-layer LSTM: a subclass of ``torch.nn.LSTM`` whose forward runs ``wmkernels.ops``.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None)``.
    The constructor is torch.nn.LSTM's (after stricter argument checks), so the
    parameters are torch's own — named ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``weight_hr_l{k}`` (``_reverse`` for the
    backward direction), initialised uniform ±1/√H — and so are ``_flat_weights``,
    ``all_weights``, ``flatten_parameters``, weight-norm support and pickling:
    ``isinstance(layer, torch.nn.LSTM)`` holds and ``load_state_dict`` works both ways.

    ``forward(input, hx=None) -> (output, (h_n, c_n))``:
    ``input`` is ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``), ``[T, I]``
    unbatched, or a ``PackedSequence``; ``hx = (h0, c0)`` with ``h0 [L·D, B, H_out]``,
    ``c0 [L·D, B, H]`` (``L`` layers, ``D`` = 2 if bidirectional else 1,
    ``H_out = proj_size or H``), zeros if None; ``output [T, B, D·H_out]`` (or
    packed like the input), ``h_n [L·D, B, H_out]``, ``c_n [L·D, B, H]``.

    Each layer and direction is one ``wmkernels.ops.lstm_sequence`` call (the
    time loop runs inside the backend; ``wmkernels.nn.stack``). A packed batch
    runs padded with per-row ``lengths``; its backward direction starts at each
    sequence's own last element. ``dropout`` applies to the outputs of every
    layer but the last, in training mode only (its random mask is not torch's).
    Where lstm_sequence's backend is ``aten`` (on CUDA, what ``auto`` picks
    unless a wmkernels kernel was measured faster), the whole stack is instead
    one ``torch._VF.lstm`` call, torch.nn.LSTM's own path: cuDNN, its dropout,
    its packed input.

    ``proj_size > 0`` always takes that path, on every device, for inference
    and training: no wmkernels kernel implements the projection, torch's own
    LSTM does (``wmkernels.explain("lstm_sequence", proj_size=P)`` says so).
    A backend other than ``aten`` named for it raises ``BackendUnavailableError``.

    Under ``torch.compile`` dynamo treats it as it treats every
    ``torch.nn.LSTM``: a graph break around the layer (which then runs its
    fused ops outside the graph), unless ``torch._dynamo.config.allow_rnn =
    True``, with which ``fullgraph=True`` traces the layer's ops (tensor input;
    a ``PackedSequence`` is not traceable, as torch's packing functions are not).

    A sequence of length 0 is valid here (empty output, ``h_n, c_n`` = the
    initial state), where torch.nn.LSTM raises: every call torch.nn.LSTM
    accepts runs unchanged, and empty inputs are valid throughout wmkernels.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        # stricter than torch's own checks (which follow, in its constructor): each names the argument
        checks.dropout(dropout)
        for name, flag in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            checks.flag(NAME, name, flag)
        checks.positive_int(NAME, "input_size", input_size)
        checks.positive_int(NAME, "hidden_size", hidden_size)
        checks.positive_int(NAME, "num_layers", num_layers)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"{NAME}: proj_size should be a positive integer or zero to disable "
                             f"projections, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"{NAME}: proj_size has to be smaller than hidden_size, got "
                             f"proj_size={proj_size}, hidden_size={hidden_size}")
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, proj_size=proj_size,
                         device=device, dtype=dtype)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward(self, input, hx: Optional[Tuple[Tensor, Tensor]] = None):
        # torch.nn.LSTM's order: ranks (input, then state), the input's dtype,
        # its width, the state's sizes; then the state's dtype and device
        x, lengths, batched = layer_input(NAME, input, self.batch_first)
        state = self._state_ranks(hx, batched)
        checks.matches_weights(NAME, "input", x, self.weight_ih_l0)
        if x.shape[2] != self.input_size:
            raise checks.LayerShapeError(f"{NAME}: input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {x.shape[2]}")
        h0, c0 = self._initial_state(state, x, batched)
        T, B, _ = x.shape
        if T == 0 or B == 0:  # valid here, where torch.nn.LSTM raises: nothing runs
            D_out = self.num_directions * (self.proj_size or self.hidden_size)
            output, h_n, c_n = x.new_zeros(T, B, D_out), h0.clone(), c0.clone()
        elif self._runs_on_torch_lstm(x, h0, c0):
            return super().forward(input, hx)
        else:
            output, (h_n, c_n) = run_stack(x, (h0, c0), partial(self._run_direction, lengths=lengths),
                                           num_layers=self.num_layers, num_directions=self.num_directions,
                                           dropout=self.dropout, training=self.training, lengths=lengths)
        if not batched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return layer_output(output, lengths, input, batched, self.batch_first), (h_n, c_n)

    def _runs_on_torch_lstm(self, x: Tensor, h0: Tensor, c0: Tensor) -> bool:
        """True when the backend of lstm_sequence for these tensors is ``aten``
        (auto's choice on CUDA and CPU unless a kernel was measured faster for
        the call's shape and mode; with
        ``proj_size > 0`` always, no wmkernels kernel having a projection):
        then the whole stack is one ``torch._VF.lstm`` call, exactly
        torch.nn.LSTM's path (cuDNN runs all layers and both directions in one
        call), not one call per layer and direction.
        Under ``torch.autocast`` the stack is torch's LSTM too: its casts are
        torch's to decide (the ops compute in their inputs' dtype).
        ``torch.jit.trace`` and ``torch.export`` always record torch's LSTM: a
        Python autograd Function can be neither saved in TorchScript nor
        differentiated in an exported program."""
        T, B, I = x.shape
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return True
        return runs_on_torch("lstm_sequence", x, h0, c0, *self._current_weights(),
                             with_projection=self.proj_size > 0, T=T, B=B, I=I, H=self.hidden_size)

    def _current_weights(self) -> List[Tensor]:
        """Every weight as the module holds it now (parametrized ones recomputed),
        in torch.nn.LSTM's ``_flat_weights`` order."""
        return [getattr(self, name) for name in self._flat_weights_names]

    @staticmethod
    def _state_ranks(hx, batched: bool) -> Optional[Tuple[Tensor, Tensor]]:
        """``hx`` checked to be None or a pair of tensors of the input's rank."""
        if hx is None:
            return None
        h0, c0 = checks.state_pair(NAME, "hx", hx)
        for name, value in (("hx[0] (h0)", h0), ("hx[1] (c0)", c0)):
            checks.tensor(NAME, name, value, (3 if batched else 2,))
        return h0, c0

    def _initial_state(self, state: Optional[Tuple[Tensor, Tensor]], x: Tensor,
                       batched: bool) -> Tuple[Tensor, Tensor]:
        """(h0 [L·D, B, H_out], c0 [L·D, B, H]) from ``state`` (of checked rank;
        its sizes, then dtype and device are checked here) or zeros."""
        B = x.shape[1]
        LD = self.num_layers * self.num_directions
        h_shape, c_shape = (LD, B, self.proj_size or self.hidden_size), (LD, B, self.hidden_size)
        if state is None:
            return checks.zeros(h_shape, x), checks.zeros(c_shape, x)
        h0, c0 = state
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        labels = "[num_layers*num_directions, B, {}]"
        checks.size(NAME, "hidden[0] (hx[0], h0)", h0, h_shape,
                    labels.format("proj_size" if self.proj_size else "H"))
        checks.size(NAME, "hidden[1] (hx[1], c0)", c0, c_shape, labels.format("H"))
        for name, value in (("hx[0] (h0)", h0), ("hx[1] (c0)", c0)):
            checks.matches_weights(NAME, name, value, self.weight_ih_l0)
        return h0, c0

    def _run_direction(self, k: int, x: Tensor, state: Tuple[Tensor, Tensor], lengths: Optional[Tensor]):
        """Layer-direction ``k`` (``_all_weights[k]``) over ``x [T, B, F]``, forward in
        time (``run_stack`` reverses a reverse direction's input and output):
        one ``ops.lstm_sequence`` call -> (y [T, B, H], (h_n [B, H], c_n [B, H]))."""
        weights = {name.split("_l")[0]: getattr(self, name) for name in self._all_weights[k]}
        y, h, c = ops.lstm_sequence(x, *state, weights["weight_ih"], weights["weight_hh"],
                                    weights.get("bias_ih"), weights.get("bias_hh"), lengths)
        return y, (h, c)

"""A stack of recurrent layers, each layer-direction one fused sequence op.

Shared by ``wmkernels.nn.LSTM`` and ``WMLSTM``, with ``torch.nn.LSTM``'s
semantics: layer ``l`` reads the outputs of layer ``l - 1`` (both directions
concatenated), dropout acts on the outputs of every layer but the last (in
training only), the reverse direction runs on each row reversed within its own
length, and the states are indexed ``k = l · num_directions + direction``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from wmkernels.nn.sequences import reverse_within

# run(k, x, state) -> (y, state_n): layer-direction k over x [T, B, F] forward in time
# (a reverse direction's x comes reversed), state and state_n tuples of [B, ...] tensors
RunDirection = Callable[[int, Tensor, Tuple[Tensor, ...]], Tuple[Tensor, Tuple[Tensor, ...]]]


def run_stack(x: Tensor, initial: Sequence[Tensor], run: RunDirection, *, num_layers: int,
              num_directions: int, dropout: float, training: bool,
              lengths: Optional[Tensor]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """Run ``num_layers × num_directions`` layer-directions over ``x [T, B, F]``.

    ``initial``: the state tensors, each ``[L·dirs, B, ...]`` (entry ``k`` is
    layer-direction k's); ``run`` computes one layer-direction (one fused op
    call, the time loop inside it). ``lengths`` (int ``[B]`` or None): a
    reverse direction sees row ``b`` as ``x[L_b - 1], …, x[0]`` and its
    outputs are put back in time order. Returns ``(y [T, B, dirs·F_out],
    final state)``, the final state as ``initial``: ``[L·dirs, B, ...]`` each.
    """
    layer_input, finals = x, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            given = reverse_within(layer_input, lengths) if direction else layer_input
            y, state = run(k, given, tuple(t[k] for t in initial))
            outputs.append(reverse_within(y, lengths) if direction else y)
            finals.append(state)
        layer_input = torch.cat(outputs, dim=2) if num_directions > 1 else outputs[0]
        if training and dropout > 0 and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, tuple(torch.stack(parts) for parts in zip(*finals))

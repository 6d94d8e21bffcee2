"""``wmkernels.nn.LSTMCell``: a drop-in for ``torch.nn.LSTMCell`` on ``wmkernels.ops.lstm_cell``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from wmkernels import ops
from wmkernels.nn import checks
from wmkernels.nn.torch_path import runs_on_torch

NAME = "LSTMCell"


def gate_preactivations(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
                        bias: Optional[Tensor]) -> Tensor:
    """``x w_ihᵀ + h w_hhᵀ + bias`` as two ``addmm``: x [B, I], h [B, H] -> [B, 4H]."""
    first = x @ w_ih.t() if bias is None else torch.addmm(bias, x, w_ih.t())
    return torch.addmm(first, h, w_hh.t())


class LSTMCell(nn.LSTMCell):
    """One LSTM step: a subclass of ``torch.nn.LSTMCell`` (its constructor,
    parameters, initialisation and repr) whose forward runs ``ops.lstm_cell``.

    ``LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)``;
    parameters ``weight_ih [4H, I]``, ``weight_hh [4H, H]``, ``bias_ih [4H]``,
    ``bias_hh [4H]`` (None without bias), uniform ±1/√H.
    ``forward(input [B, I] or [I], hx=(h [B, H], c [B, H]) or None) -> (h', c')``;
    the gate pre-activations come from ``addmm``, the cell from ``ops.lstm_cell``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        # stricter than torch's constructor, which checks nothing: each names the argument
        checks.positive_int(NAME, "input_size", input_size)
        checks.positive_int(NAME, "hidden_size", hidden_size)
        if not isinstance(bias, bool):
            raise TypeError(f"{NAME}: bias should be of type bool, got: {type(bias).__name__}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        # torch.nn.LSTMCell's order: ranks, input size, state sizes, then dtype and device
        checks.tensor(NAME, "input", input, (1, 2))
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is not None:
            h, c = checks.state_pair(NAME, "hx", hx)
            for k, value in enumerate((h, c)):
                checks.tensor(NAME, f"hx[{k}]", value, (1, 2))
        # the messages below are torch.nn.LSTMCell's own
        if x.shape[1] != self.input_size:
            raise checks.LayerShapeError(f"{NAME}: input has inconsistent input_size: got {x.shape[1]} "
                                         f"expected {self.input_size}")
        B = x.shape[0]
        if hx is None:
            h, c = checks.zeros((B, self.hidden_size), x), checks.zeros((B, self.hidden_size), x)
        else:
            for k, value in enumerate((h, c)):
                if value.dim() != input.dim():
                    raise checks.LayerShapeError(
                        f"{NAME}: Expected hx[{k}] to be {input.dim()}D for {input.dim()}D input, "
                        f"got {value.dim()}D")
                rows = value.shape[0] if batched else 1
                if rows != B:
                    raise checks.LayerShapeError(f"{NAME}: Input batch size {B} doesn't match hidden{k} "
                                                 f"batch size {rows}")
                if value.shape[-1] != self.hidden_size:
                    raise checks.LayerShapeError(f"{NAME}: hidden{k} has inconsistent hidden_size: got "
                                                 f"{value.shape[-1]}, expected {self.hidden_size}")
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        for name, value in (("input", x), ("hx[0]", h), ("hx[1]", c)):
            checks.matches_weights(NAME, name, value, self.weight_ih)
        if self._runs_on_torch_cell(x, h, c):
            return super().forward(input, hx)
        bias = self.bias_ih + self.bias_hh if self.bias else None
        h, c = ops.lstm_cell(gate_preactivations(x, h, self.weight_ih, self.weight_hh, bias), c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def _runs_on_torch_cell(self, x: Tensor, h: Tensor, c: Tensor) -> bool:
        """True when lstm_cell's backend for these tensors is ``aten`` (on CUDA,
        auto's choice unless a kernel was measured faster): then the step is
        torch.nn.LSTMCell's own forward (one ``_VF.lstm_cell`` call, torch's
        fused cell on CUDA), exactly the path the user had. So is it under
        ``torch.autocast``, whose casts for the cell are torch's to decide."""
        return runs_on_torch("lstm_cell", x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                             B=x.shape[0], H=self.hidden_size)

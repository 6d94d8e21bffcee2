"""The reference backend: ``wmkernels.reference`` run under PyTorch autograd
(the machinery of ``wmkernels.backends.graph``)."""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels import reference
from wmkernels.backends.graph import GraphBackend


def _run_reference(op: str, inputs, extras):
    """Call the reference function of ``op`` with the ops-level argument layout."""
    if op == "lstm_cell":
        return reference.lstm_cell(*inputs)
    if op == "lstm_sequence":
        return reference.lstm_sequence(*inputs, lengths=extras["lengths"])
    if op == "wm_read":
        return reference.wm_read(*inputs, mask=extras["mask"], scale=extras["scale"])
    if op == "wm_shift_write":
        return (reference.wm_shift_write(*inputs),)
    if op == "wm_write":
        return (reference.wm_write(*inputs),)
    if op == "wm_lstm_sequence":
        x, h0, c0, M0, *weights = inputs
        params = {k: w for k, w in zip(reference.WM_PARAM_KEYS, weights) if w is not None}
        y, (h, c, M) = reference.wm_lstm_sequence(
            x, (h0, c0, M0), params, extras["write_mode"], lengths=extras["lengths"],
            capacity=extras.get("capacity"))
        return y, h, c, M
    raise ValueError(f"unknown op {op!r}")


class ReferenceBackend(GraphBackend):
    name = "reference"
    takes_capacity = True
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def device_reason(self, device: torch.device) -> Optional[str]:
        return None

    def implemented_ops(self):
        from wmkernels.ops import OP_INPUTS

        return frozenset(OP_INPUTS)

    def run_traceable(self, op, inputs, extras):
        return tuple(_run_reference(op, inputs, extras))

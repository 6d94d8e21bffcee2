"""The reference backend: ``wmkernels.reference`` run under PyTorch autograd.

Forward builds the autograd graph of the reference on detached copies of the
inputs (those that want a gradient); backward differentiates that graph. It
plugs into the same protocol as the kernel backends, so an op's autograd
Function does not know which one it runs. Under torch.compile, which cannot
trace that inner autograd call, ``run_traceable`` runs the reference directly.
"""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels import reference
from wmkernels.backends.base import Backend


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
            x, (h0, c0, M0), params, extras["write_mode"], lengths=extras["lengths"])
        return y, h, c, M
    raise ValueError(f"unknown op {op!r}")


class ReferenceBackend(Backend):
    name = "reference"
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def device_reason(self, device: torch.device) -> Optional[str]:
        return None

    def implemented_ops(self):
        from wmkernels.ops import OP_INPUTS

        return frozenset(OP_INPUTS)

    def run_traceable(self, op, inputs, extras):
        """The reference as plain differentiable PyTorch (no Function, no inner
        autograd call), for torch.compile to trace: ``wmkernels.ops`` calls it
        instead of the op's Function while compiling. Same outputs as forward."""
        return tuple(_run_reference(op, inputs, extras))

    def forward(self, op, inputs, extras, needs_grad):
        leaves = tuple(
            t.detach().requires_grad_(need) if t is not None else None
            for t, need in zip(inputs, needs_grad))
        with torch.enable_grad():
            outputs = tuple(_run_reference(op, leaves, extras))
        differentiable = any(o.requires_grad for o in outputs)
        # Keep the graph alive through its outputs and the leaves it hangs from.
        saved = (leaves + outputs) if differentiable else ()
        info = len(leaves)
        return tuple(o.detach() for o in outputs), saved, info

    def backward(self, op, saved, info, grads, needs_grad):
        leaves, outputs = saved[:info], saved[info:]
        wanted = [t for t, need in zip(leaves, needs_grad) if need and t is not None]
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
        # retain_graph: autograd may call backward again (retain_graph=True
        # outside); the graph dies with the op's saved tensors.
        found = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                    allow_unused=True, retain_graph=True)
        found = iter(found)
        result = []
        for t, need in zip(leaves, needs_grad):
            if not need or t is None:
                result.append(None)
                continue
            g = next(found)
            result.append(torch.zeros_like(t) if g is None else g)
        return tuple(result)

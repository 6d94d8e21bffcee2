"""Backends whose computation is plain differentiable PyTorch: the reference,
and torch's own LSTM (``aten``).

Their table (``traceable = {op: function}``) holds, per op, a function of the
op's inputs (in ``wmkernels.contract`` order) and extras (by name) that returns
the op's outputs as a tuple. Forward builds the autograd graph of that function on
detached copies of the inputs (those that want a gradient); backward
differentiates that graph. They plug into the same protocol as the kernel
backends, so an op's autograd Function does not know which one it runs. Under
torch.compile, which cannot trace that inner autograd call, ``wmkernels.ops``
calls ``run_traceable`` directly.
"""
from __future__ import annotations

import torch

from typing import Callable, FrozenSet, Mapping

from wmkernels.backends.base import Backend


class PlainTorchBackend(Backend):
    """A backend that runs an op as plain differentiable PyTorch."""

    recordable = True
    traceable: Mapping[str, Callable[..., tuple]] = {}

    def implemented_ops(self) -> FrozenSet[str]:
        return frozenset(self.traceable)

    def run_traceable(self, op, inputs, extras):
        """The op's outputs (a tuple) as plain differentiable PyTorch, the
        ops-level argument layout in (``contract.OPS[op].inputs`` order, extras by name)."""
        return tuple(self.traceable[op](*inputs, **extras))

    def forward(self, op, inputs, extras, needs_grad):
        leaves = tuple(
            t.detach().requires_grad_(need) if t is not None else None
            for t, need in zip(inputs, needs_grad))
        with torch.enable_grad():
            outputs = tuple(self.run_traceable(op, leaves, extras))
        # Keep the graph alive through its outputs and the leaves it hangs from
        # (the leaves also give the shape of a zero gradient).
        return tuple(o.detach() for o in outputs), leaves + outputs, len(leaves)

    def backward(self, op, saved, info, grads, needs_grad):
        leaves, outputs = saved[:info], saved[info:]
        wanted = [t for t, need in zip(leaves, needs_grad) if need and t is not None]
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
        if not wanted or not pairs:  # no output depends on what wants a gradient (e.g. T = 0):
            # zeros, as the kernel backends give (x.grad [0, B, I] at T = 0)
            return tuple(torch.zeros_like(t) if need and t is not None else None
                         for t, need in zip(leaves, needs_grad))
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

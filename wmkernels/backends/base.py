"""What every backend is (contract §3.1).

A backend computes; it never validates arguments (``wmkernels.ops`` does that
once) and never touches autograd (one ``torch.autograd.Function`` per op in
``wmkernels.ops`` does). Each backend holds an explicit table of its
implementations, ``impls = {op: Impl(forward, backward)}`` (``wmkernels.contract.Impl``);
the ops it implements are that table's keys. For the op's Function it answers

    forward(op, inputs, extras, needs_grad) -> (outputs, saved, info)
    backward(op, saved, info, grads, needs_grad) -> input grads

``inputs`` is the op's tuple of tensors (``None`` for an absent optional one),
in the order of ``wmkernels.contract.OPS[op].inputs``; ``extras`` holds the
non-differentiable arguments (lengths, mask, scale, write_mode) by name;
``needs_grad`` says which inputs want a gradient. ``saved`` is a tuple of
tensors that the op's Function keeps with ``ctx.save_for_backward``; ``info``
is anything else the backward needs. ``grads`` are the gradients of the
outputs (zeros for unused ones); backward returns one gradient per input, or
``None`` where ``needs_grad`` is False.
"""
from __future__ import annotations

from typing import Any, FrozenSet, Mapping, Optional, Sequence, Tuple

import torch

from wmkernels.contract import Impl


class Backend:
    """Base of every backend: availability, supported cases, and the table of
    implementations (``impls``) that ``forward`` and ``backward`` run."""

    name: str = ""
    dtypes: Tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    traces_lengths = True  # torch.compile can trace its calls with lengths
    recordable = False  # plain PyTorch ops that torch.jit.trace / torch.export can record
    impls: Mapping[str, Impl] = {}
    takes_capacity = False  # wm_lstm_sequence with a capacity (active slots per row and step)

    def device_reason(self, device: torch.device) -> Optional[str]:
        """Why this backend cannot run on tensors of ``device`` (None: it can)."""
        raise NotImplementedError

    def implemented_ops(self) -> FrozenSet[str]:
        """The ops this backend has kernels for."""
        return frozenset(self.impls)

    def case_reason(self, op: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        """Why this backend cannot run ``op`` on these tensors (None: it can)."""
        return self.device_reason(device) or self.build_reason(op, dtype)

    def build_reason(self, op: str, dtype: torch.dtype) -> Optional[str]:
        """Why this build of the backend cannot run ``op`` in ``dtype`` even on a
        device it runs on (None: it can): what a machine with that device would say."""
        if op not in self.implemented_ops():
            return f"backend '{self.name}' does not implement {op} yet"
        if dtype not in self.dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            return f"backend '{self.name}' runs {op} in {names} only, got {str(dtype).replace('torch.', '')}"
        return None

    def place_lengths(self, lengths: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
        """Checked ``lengths`` moved where this backend reads them: the tensors'
        device. From the CPU the copy is queued without waiting; towards the CPU
        it waits (the values are read at once there)."""
        if lengths is None:
            return None
        return lengths.to(device, non_blocking=lengths.device.type == "cpu")

    def forward(self, op: str, inputs: Sequence[Optional[torch.Tensor]], extras: dict,
                needs_grad: Sequence[bool]) -> Tuple[Tuple[torch.Tensor, ...], tuple, Any]:
        impl = self.impls[op]
        if impl.inference is not None and not any(needs_grad):  # nothing to keep for a backward
            return impl.inference(*inputs, **extras), (), None
        return impl.forward(*inputs, **extras)

    def backward(self, op: str, saved: Sequence[Optional[torch.Tensor]], info: Any,
                 grads: Sequence[torch.Tensor], needs_grad: Sequence[bool]):
        input_grads = self.impls[op].backward(saved, info, *grads)
        return tuple(g if need else None for g, need in zip(input_grads, needs_grad))

"""Running a float32 implementation on bfloat16 tensors (contract §3): the
inputs are converted to float32, the kernels compute in float32, the outputs
and the input gradients are rounded back to bfloat16. What forward saves
stays float32 (the backward then starts from the forward's own values).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import torch

from wmkernels.contract import Impl

__all__ = ["in_float32"]


def _float(t: Any) -> Any:
    return t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t


def _bf16(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def in_float32(impl: Impl) -> Impl:
    """``impl`` (float32/float64 kernels) made to take bfloat16 inputs too:
    float32 inside, bfloat16 outputs and gradients. Other dtypes pass through
    untouched. Extras (lengths, capacity, write_mode) are never converted."""

    @functools.wraps(impl.forward)  # its signature too (the op's inputs and extras)
    def forward(*inputs, **extras):
        if not any(isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 for t in inputs):
            outputs, saved, info = impl.forward(*inputs, **extras)
            return outputs, saved, (False, info)
        outputs, saved, info = impl.forward(*map(_float, inputs), **extras)
        return tuple(map(_bf16, outputs)), saved, (True, info)

    @functools.wraps(impl.backward)
    def backward(saved, info, *grads):
        upcast, inner = info
        if not upcast:
            return impl.backward(saved, inner, *grads)
        return tuple(map(_bf16, impl.backward(saved, inner, *map(_float, grads))))

    return Impl(forward, backward)

"""The working-memory ops on the cpu backend: wm_read, wm_shift_write and
wm_write, the C++ kernels of csrc/cpu/memory_ops.cpp through
``torch.ops.wmkernels``, their fake (meta) kernels for torch.compile, and one
``Impl`` per op (contract §3.1). The C++ entry points take any strides (they
make inputs contiguous). Shapes: ``B`` batch, ``S`` slots, ``D`` slot width.
"""
from __future__ import annotations

import torch

from wmkernels.contract import Impl, empty_outputs
from wmkernels.cpu_extension import LOAD_ERROR


def _register_fakes() -> None:
    """Fake kernels of the memory ops; registered once at import, when
    ``wmkernels._C`` is usable (the cpu backend reports why when it is not)."""
    fake = torch.library.register_fake

    @fake("wmkernels::wm_read_forward")
    def _(M, q, mask, scale):
        return empty_outputs("wm_read", M, M=M)

    @fake("wmkernels::wm_read_backward")
    def _(grad_r, grad_attn, M, q, attn, scale, mask=None):
        return torch.empty_like(M), torch.empty_like(q)

    @fake("wmkernels::wm_shift_write_forward")
    def _(M, v):
        return empty_outputs("wm_shift_write", M, M=M)[0]

    @fake("wmkernels::wm_shift_write_backward")
    def _(grad_new):
        return torch.empty_like(grad_new), grad_new.new_empty(grad_new.shape[0], grad_new.shape[2])

    @fake("wmkernels::wm_write_forward")
    def _(M, w, e, a):
        return empty_outputs("wm_write", M, M=M)[0]

    @fake("wmkernels::wm_write_backward")
    def _(grad_new, M, w, e, a):
        return torch.empty_like(M), torch.empty_like(w), torch.empty_like(e), torch.empty_like(a)


if LOAD_ERROR is None:
    _register_fakes()


def _wm_read_forward(M, q, mask=None, scale=None):
    """M [B, S, D], q [B, D], mask [B, S] bool or None -> ((r [B, D], attn [B, S]), saved, scale)."""
    r, attn = torch.ops.wmkernels.wm_read_forward(M, q, mask, float(scale))
    return (r, attn), (M, q, attn, mask), float(scale)


def _wm_read_backward(saved, scale, grad_r, grad_attn):
    """``scale`` is the forward's info; the mask is saved with M, q, attn."""
    M, q, attn, mask = saved
    return torch.ops.wmkernels.wm_read_backward(grad_r, grad_attn, M, q, attn, scale, mask)


def _wm_shift_write_forward(M, v):
    """M [B, S, D], v [B, D] -> ((M_new,), (), None)."""
    return (torch.ops.wmkernels.wm_shift_write_forward(M, v),), (), None


def _wm_shift_write_backward(saved, info, grad_new):
    return torch.ops.wmkernels.wm_shift_write_backward(grad_new)


def _wm_write_forward(M, w, e, a):
    """M [B, S, D], w [B, S], e/a [B, D] -> ((M_new,), (M, w, e, a), None)."""
    return (torch.ops.wmkernels.wm_write_forward(M, w, e, a),), (M, w, e, a), None


def _wm_write_backward(saved, info, grad_new):
    return torch.ops.wmkernels.wm_write_backward(grad_new, *saved)


WM_READ = Impl(_wm_read_forward, _wm_read_backward)
WM_SHIFT_WRITE = Impl(_wm_shift_write_forward, _wm_shift_write_backward)
WM_WRITE = Impl(_wm_write_forward, _wm_write_backward)

"""The cpu backend's working-memory kernels: wm_read, wm_shift_write,
wm_write and wm_lstm_sequence, through ``torch.ops.wmkernels``.

A mixin of ``CpuBackend`` (``wmkernels.backends.cpu``), kept apart from the
LSTM kernels so each file holds one family of ops. The fake (meta) kernels of
the C++ ops are registered here too, so ``torch.compile`` can trace them.
Shapes: ``B`` batch, ``S`` slots, ``D`` slot width.
"""
from __future__ import annotations

import importlib

import torch


def _register_fakes() -> None:
    """Fake kernels of the memory ops; run once at import, when ``wmkernels._C``
    loads (``wmkernels.backends.cpu`` reports it when it does not)."""
    try:
        importlib.import_module("wmkernels._C")
    except ImportError:
        return
    fake = torch.library.register_fake

    @fake("wmkernels::wm_read_forward")
    def _(M, q, mask, scale):
        B, S, D = M.shape
        return M.new_empty(B, D), M.new_empty(B, S)

    @fake("wmkernels::wm_read_backward")
    def _(grad_r, grad_attn, M, q, attn, scale):
        return torch.empty_like(M), torch.empty_like(q)

    @fake("wmkernels::wm_shift_write_forward")
    def _(M, v):
        return torch.empty_like(M)

    @fake("wmkernels::wm_shift_write_backward")
    def _(grad_new):
        return torch.empty_like(grad_new), grad_new.new_empty(grad_new.shape[0], grad_new.shape[2])

    @fake("wmkernels::wm_write_forward")
    def _(M, w, e, a):
        return torch.empty_like(M)

    @fake("wmkernels::wm_write_backward")
    def _(grad_new, M, w, e, a):
        return torch.empty_like(M), torch.empty_like(w), torch.empty_like(e), torch.empty_like(a)


_register_fakes()


class CpuMemoryOps:
    """``<op>_forward`` / ``<op>_backward`` of the memory ops (protocol of
    ``wmkernels.backends.base``); an op appears here when its kernels land.
    The C++ entry points take any strides (they make inputs contiguous)."""

    def wm_read_forward(self, M, q, mask=None, scale=None):
        """M [B, S, D], q [B, D], mask [B, S] bool or None -> ((r [B, D], attn [B, S]), saved, scale)."""
        r, attn = torch.ops.wmkernels.wm_read_forward(M, q, mask, float(scale))
        return (r, attn), (M, q, attn), float(scale)

    def wm_read_backward(self, saved, scale, grad_r, grad_attn):
        M, q, attn = saved
        return torch.ops.wmkernels.wm_read_backward(grad_r, grad_attn, M, q, attn, scale)

    def wm_shift_write_forward(self, M, v):
        """M [B, S, D], v [B, D] -> ((M_new,), (), None)."""
        return (torch.ops.wmkernels.wm_shift_write_forward(M, v),), (), None

    def wm_shift_write_backward(self, saved, info, grad_new):
        return torch.ops.wmkernels.wm_shift_write_backward(grad_new)

    def wm_write_forward(self, M, w, e, a):
        """M [B, S, D], w [B, S], e/a [B, D] -> ((M_new,), (M, w, e, a), None)."""
        return (torch.ops.wmkernels.wm_write_forward(M, w, e, a),), (M, w, e, a), None

    def wm_write_backward(self, saved, info, grad_new):
        return torch.ops.wmkernels.wm_write_backward(grad_new, *saved)

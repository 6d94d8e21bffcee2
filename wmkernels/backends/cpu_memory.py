"""The cpu backend's working-memory kernels: wm_read, wm_shift_write,
wm_write and wm_lstm_sequence, through ``torch.ops.wmkernels``.

A mixin of ``CpuBackend`` (``wmkernels.backends.cpu``), kept apart from the
LSTM kernels so each file holds one family of ops.
"""
from __future__ import annotations


class CpuMemoryOps:
    """``<op>_forward`` / ``<op>_backward`` of the memory ops (protocol of
    ``wmkernels.backends.base``); an op appears here when its kernels land."""

"""The triton backend: the kernels of ``wmkernels.triton`` (SPEC section 3).

It runs CUDA tensors, and CPU tensors under ``TRITON_INTERPRET=1`` (which
must be set before ``wmkernels`` is imported: ``@triton.jit`` reads it).
bfloat16 runs on CUDA tensors only. Without Triton installed (or if its import
fails) the backend is unavailable and says why. The kernel modules are imported
with this one, so their ops (``torch.ops.wmkernels_triton``, each with a fake
implementation) exist before torch.compile traces a call.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Optional

import torch

from wmkernels.backends.base import Backend


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Triton releases whose interpreter breaks with numpy >= 2.4 (it converts
# 1-element arrays to Python scalars, which numpy 2.4 refuses: InterpreterError
# "only 0-dimensional arrays can be converted to Python scalars").
NUMPY_BREAKS_INTERPRETER = {"3.6": (2, 4)}


def interpreter_numpy_problem() -> Optional[str]:
    """Why Triton's interpreter cannot run with the installed numpy (None: it can)."""
    try:
        import numpy
        import triton
    except ImportError:
        return None
    breaking = NUMPY_BREAKS_INTERPRETER.get(".".join(triton.__version__.split(".")[:2]))
    installed = tuple(int(part) for part in numpy.__version__.split(".")[:2] if part.isdigit())
    if breaking is None or installed < breaking:
        return None
    below = ".".join(map(str, breaking))
    return (f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) fails with numpy {numpy.__version__}: "
            f"pip install 'numpy<{below}'")


def _load_kernels():
    """The kernel modules by name, and None; or None and why they cannot load."""
    if importlib.util.find_spec("triton") is None:
        return None, "Triton is not installed (pip install triton)"
    try:
        return {name: importlib.import_module(module) for name, module in (
            ("cell", "wmkernels.lstm.lstm_cell_triton"), ("memory", "wmkernels.memory.memory_ops_triton"),
            ("sequence", "wmkernels.lstm.lstm_sequence_triton"),
            ("wm_sequence", "wmkernels.wm_lstm.wm_lstm_sequence_triton"))}, None
    except Exception as error:  # a broken Triton install must not break `import wmkernels`
        return None, f"Triton does not load ({type(error).__name__}: {error})"


KERNELS, LOAD_ERROR = _load_kernels()


def kernels(module: str):
    """The kernel module of ``module`` (cell, memory, sequence, wm_sequence)."""
    return KERNELS[module]


class TritonBackend(Backend):
    name = "triton"
    dtypes = (torch.float16, torch.bfloat16, torch.float32)

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpreter_on():
            return interpreter_numpy_problem()
        if device.type == "cpu":
            numpy_problem = interpreter_numpy_problem()
            return "backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1" + (
                f"; {numpy_problem}" if numpy_problem else "")
        return f"backend 'triton' does not run on {device}"

    def build_reason(self, op: str, dtype: torch.dtype) -> Optional[str]:
        return LOAD_ERROR or super().build_reason(op, dtype)

    def case_reason(self, op: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        if dtype == torch.bfloat16 and device.type == "cpu" and self.device_reason(device) is None:
            return ("backend 'triton' runs bfloat16 on CUDA tensors only: the Triton interpreter "
                    "computes bfloat16 matrix products wrongly")
        return super().case_reason(op, device, dtype)

    def lstm_cell_forward(self, gates, c_prev):
        h, c, act = kernels("cell").lstm_cell_forward(gates, c_prev)
        return (h, c), (act, c_prev, c), None

    def lstm_cell_backward(self, saved, info, grad_h, grad_c):
        return kernels("cell").lstm_cell_backward(grad_h, grad_c, *saved)

    def wm_read_forward(self, M, q, mask=None, scale=1.0):
        r, attn = kernels("memory").wm_read_forward(M, q, mask, scale)
        return (r, attn), (M, q, attn, mask), scale

    def wm_read_backward(self, saved, info, grad_r, grad_attn):
        M, q, attn, mask = saved
        return kernels("memory").wm_read_backward(M, q, attn, grad_r, grad_attn, info, mask)

    def wm_shift_write_forward(self, M, v):
        return (kernels("memory").wm_shift_write_forward(M, v),), (v,), None

    def wm_shift_write_backward(self, saved, info, grad):
        return kernels("memory").wm_shift_write_backward(grad, *saved)

    def wm_write_forward(self, M, w, e, a):
        return (kernels("memory").wm_write_forward(M, w, e, a),), (M, w, e, a), None

    def wm_write_backward(self, saved, info, grad):
        return kernels("memory").wm_write_backward(grad, *saved)

    def lstm_sequence_forward(self, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None):
        biases = [b for b in (b_ih, b_hh) if b is not None]
        bias = sum(biases[1:], biases[0]) if biases else None
        lengths = lengths.contiguous() if lengths is not None else None
        y, h_n, c_n, hs, cs, act = kernels("sequence").lstm_sequence_forward(x, h0, c0, w_ih, w_hh, bias, lengths)
        return (y, h_n, c_n), (x, w_ih, w_hh, hs, cs, act, lengths), (b_ih is not None, b_hh is not None)

    def lstm_sequence_backward(self, saved, info, grad_y, grad_h, grad_c):
        dx, dh0, dc0, dw_ih, dw_hh, d_bias = kernels("sequence").lstm_sequence_backward(
            grad_y, grad_h, grad_c, *saved)
        has_b_ih, has_b_hh = info
        return (dx, dh0, dc0, dw_ih, dw_hh, d_bias if has_b_ih else None, d_bias if has_b_hh else None)

    def wm_lstm_sequence_forward(self, x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e=None,
                                 b_e=None, write_mode="fifo", lengths=None):
        gated = write_mode == "gated"
        lengths = lengths.contiguous() if lengths is not None else None
        y, h, c, M, *kept = kernels("wm_sequence").wm_lstm_sequence_forward(
            x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, lengths, gated)
        return (y, h, c, M), (x, w_ih, w_hh, w_rh, w_q, w_v, w_e, *kept, lengths), gated

    def wm_lstm_sequence_backward(self, saved, info, grad_y, grad_h, grad_c, grad_M):
        grads = kernels("wm_sequence").wm_lstm_sequence_backward(grad_y, grad_h, grad_c, grad_M, *saved, info)
        return tuple(grads) if info else (*grads[:-2], None, None)

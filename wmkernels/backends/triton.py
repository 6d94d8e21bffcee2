"""The triton backend: the Triton kernels of each op family (contract §3),
one ``Impl`` per op from the family's ``*_triton`` module.

It runs CUDA tensors, and CPU tensors under ``TRITON_INTERPRET=1`` (which
must be set before ``wmkernels`` is imported: ``@triton.jit`` reads it).
bfloat16 runs on CUDA tensors only. Without Triton installed (or if its import
fails) the backend is unavailable and says why. The kernel modules are imported
with this one, so their ops (``torch.ops.wmkernels_triton``, each with a fake
implementation) exist before torch.compile traces a call.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.contract import Impl

IMPLS: Dict[str, Impl] = {}
LOAD_ERROR: Optional[str] = None
if importlib.util.find_spec("triton") is None:
    LOAD_ERROR = "Triton is not installed (pip install triton)"
else:
    try:  # a broken Triton install must not break `import wmkernels`
        from wmkernels.lstm import lstm_cell_triton, lstm_sequence_triton
        from wmkernels.memory import memory_ops_triton
        from wmkernels.wm_lstm import wm_lstm_sequence_triton
    except Exception as error:
        LOAD_ERROR = f"Triton does not load ({type(error).__name__}: {error})"
    else:
        IMPLS = {
            "lstm_cell": lstm_cell_triton.LSTM_CELL,
            "lstm_sequence": lstm_sequence_triton.LSTM_SEQUENCE,
            "wm_read": memory_ops_triton.WM_READ,
            "wm_shift_write": memory_ops_triton.WM_SHIFT_WRITE,
            "wm_write": memory_ops_triton.WM_WRITE,
            "wm_lstm_sequence": wm_lstm_sequence_triton.WM_LSTM_SEQUENCE,
        }


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


class TritonBackend(Backend):
    name = "triton"
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    impls = IMPLS
    takes_capacity = True  # its WM-LSTM kernels mask each row's inactive slots (contract §1.5)

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

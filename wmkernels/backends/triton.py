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


class TritonBackend(Backend):
    name = "triton"
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    impls = IMPLS

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreter_on()):
            return None
        if device.type == "cpu":
            return "backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1"
        return f"backend 'triton' does not run on {device}"

    def case_reason(self, op: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        if dtype == torch.bfloat16 and device.type == "cpu" and self.device_reason(device) is None:
            return ("backend 'triton' runs bfloat16 on CUDA tensors only: the Triton interpreter "
                    "computes bfloat16 matrix products wrongly")
        return super().case_reason(op, device, dtype)

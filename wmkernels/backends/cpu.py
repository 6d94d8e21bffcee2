"""The cpu backend: the C++ kernels of ``csrc/cpu`` through ``wmkernels._C``.

Without a built ``_C`` the backend is unavailable, with the import error as
the reason; ``import wmkernels`` itself never fails for it.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.backends.cpu_memory import CpuMemoryOps

try:
    importlib.import_module("wmkernels._C")  # loading it registers torch.ops.wmkernels

    LOAD_ERROR: Optional[str] = None
except ImportError as error:  # not built, or built against another torch
    LOAD_ERROR = f"wmkernels._C is not built or does not load ({error}); run `pip install --no-build-isolation -e .`"


class CpuBackend(CpuMemoryOps, Backend):
    name = "cpu"
    dtypes = (torch.float32, torch.float64)

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors only, got tensors on {device}"
        return None

    def lstm_cell_forward(self, gates, c_prev):
        h, c, act = torch.ops.wmkernels.lstm_cell_forward(gates.contiguous(), c_prev.contiguous())
        return (h, c), (act, c_prev, c), None

    def lstm_cell_backward(self, saved, info, grad_h, grad_c):
        act, c_prev, c = saved
        return torch.ops.wmkernels.lstm_cell_backward(
            grad_h.contiguous(), grad_c.contiguous(), act, c_prev.contiguous(), c)

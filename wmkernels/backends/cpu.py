"""The cpu backend: the C++ kernels of ``csrc/cpu`` through ``wmkernels._C``,
one ``Impl`` per op from each op family's cpu module.

Without a built ``_C`` the backend is unavailable, with the import error as
the reason; ``import wmkernels`` itself never fails for it.
"""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.cpu_extension import LOAD_ERROR
from wmkernels.lstm import cpu as lstm
from wmkernels.memory import cpu as memory
from wmkernels.wm_lstm import cpu as wm_lstm

__all__ = ["CpuBackend", "LOAD_ERROR"]


class CpuBackend(Backend):
    name = "cpu"
    dtypes = (torch.float32, torch.float64)
    takes_capacity = True  # its wm_lstm_sequence loops over each row's active slots only
    impls = {
        "lstm_cell": lstm.LSTM_CELL,
        "lstm_sequence": lstm.LSTM_SEQUENCE,
        "wm_read": memory.WM_READ,
        "wm_shift_write": memory.WM_SHIFT_WRITE,
        "wm_write": memory.WM_WRITE,
        "wm_lstm_sequence": wm_lstm.WM_LSTM_SEQUENCE,
    }

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors only, got tensors on {device}"
        return None

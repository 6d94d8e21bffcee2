"""The cpu backend: the C++ kernels of ``csrc/cpu`` through ``wmkernels._C``,
one ``Impl`` per op from each op family's cpu module.

Without a built ``_C`` the backend is unavailable, with the import error as
the reason; ``import wmkernels`` itself never fails for it.

bfloat16 (contract §3): ``lstm_sequence`` runs its own bf16 kernels, which need
the avx512_bf16 instruction set (refused elsewhere, with that reason, so
``auto`` skips the backend and ``explain`` says why); ``lstm_cell`` and
``wm_lstm_sequence`` compute in float32 on bf16 tensors on any CPU.
"""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.backends.upcast import in_float32
from wmkernels.cpu_extension import LOAD_ERROR
from wmkernels.lstm import cpu as lstm
from wmkernels.memory import cpu as memory
from wmkernels.wm_lstm import cpu as wm_lstm

__all__ = ["CpuBackend", "LOAD_ERROR", "BF16_INSTRUCTIONS"]

# The instruction set (cpu_capability()) the bf16 kernels of lstm_sequence need.
BF16_INSTRUCTIONS = "avx512_bf16"
# The ops that take bfloat16 tensors; lstm_sequence only with BF16_INSTRUCTIONS.
BF16_OPS = ("lstm_cell", "lstm_sequence", "wm_lstm_sequence")


def cpu_capability() -> str:
    """The instruction set of the extension's kernels in use (csrc/cpu/lstm_rows.h)."""
    return torch.ops.wmkernels.cpu_capability()


class CpuBackend(Backend):
    name = "cpu"
    dtypes = (torch.float32, torch.float64, torch.bfloat16)
    takes_capacity = True  # its wm_lstm_sequence loops over each row's active slots only
    impls = {
        "lstm_cell": in_float32(lstm.LSTM_CELL),
        "lstm_sequence": lstm.LSTM_SEQUENCE,
        "wm_read": memory.WM_READ,
        "wm_shift_write": memory.WM_SHIFT_WRITE,
        "wm_write": memory.WM_WRITE,
        "wm_lstm_sequence": in_float32(wm_lstm.WM_LSTM_SEQUENCE),
    }

    def device_reason(self, device: torch.device) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors only, got tensors on {device}"
        return None

    def build_reason(self, op: str, dtype: torch.dtype) -> Optional[str]:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if dtype == torch.bfloat16 and op in BF16_OPS:
            if op == "lstm_sequence" and cpu_capability() != BF16_INSTRUCTIONS:
                return (f"backend 'cpu' runs lstm_sequence in bfloat16 only with the {BF16_INSTRUCTIONS} "
                        f"instruction set; this CPU (or WMKERNELS_CPU_CAPABILITY) gives {cpu_capability()}")
            return super().build_reason(op, torch.float32)
        if dtype == torch.bfloat16:
            return f"backend 'cpu' runs {op} in float32, float64 only, got bfloat16"
        return super().build_reason(op, dtype)

"""The GPU backends, as far as this build has them.

``triton`` and ``cuda`` are named by SPEC section 3; until their kernels land
they stay in the registry so that asking for them by name gets a reason,
never a silent fallback.
"""
from __future__ import annotations

import importlib.util
import os
from typing import FrozenSet, Optional

import torch

from wmkernels.backends.base import Backend


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class TritonBackend(Backend):
    name = "triton"
    dtypes = (torch.float16, torch.bfloat16, torch.float32)

    def device_reason(self, device: torch.device) -> Optional[str]:
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (pip install triton)"
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreter_on()):
            return None
        if device.type == "cpu":
            return "backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1"
        return f"backend 'triton' does not run on {device}"

    def implemented_ops(self) -> FrozenSet[str]:
        return frozenset()  # no Triton kernels in this build yet


class CudaBackend(Backend):
    name = "cuda"
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def device_reason(self, device: torch.device) -> Optional[str]:
        if torch.version.cuda is None:
            return "this torch is a CPU build; the cuda backend needs a CUDA build of torch"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        if device.type != "cuda":
            return f"backend 'cuda' runs on CUDA tensors only, got tensors on {device}"
        return "wmkernels was built without its CUDA kernels (no CUDA launcher in this build yet)"

    def implemented_ops(self) -> FrozenSet[str]:
        return frozenset()

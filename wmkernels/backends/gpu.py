"""The cuda backend, as far as this build has it (the triton backend lives in
``wmkernels.backends.triton``).

``cuda`` is named by SPEC section 3; until its kernels land it stays in the
registry so that asking for it by name gets a reason, never a silent fallback.
"""
from __future__ import annotations

from typing import FrozenSet, Optional

import torch

from wmkernels.backends.base import Backend


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

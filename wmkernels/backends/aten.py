"""The aten backend: torch's own LSTM (cuDNN on CUDA, ATen's kernels on CPU).

It runs ``lstm_sequence`` through ``torch._VF.lstm``, the call behind
``torch.nn.LSTM``, so on CUDA a user gets exactly the path they had before
wmkernels, and ``lstm_cell`` as ATen's pointwise ops (the layers
``wmkernels.nn.LSTM`` / ``LSTMCell`` go further when this backend is chosen:
they run torch's own forward, one ``_VF`` call). It is what ``auto`` picks for
both ops on CUDA unless a wmkernels kernel was measured faster for the shape
(``wmkernels.backends``). The memory ops have no ATen counterpart: asked for by
name, it says so.

Its lstm_sequence lives with the LSTM family (``wmkernels.lstm.aten``); its
lstm_cell is the reference's pointwise cell (the ops torch's LSTMCell runs on CPU).
"""
from __future__ import annotations

from typing import Optional

import torch

from wmkernels.lstm import aten, reference
from wmkernels.backends.plain import PlainTorchBackend


class AtenBackend(PlainTorchBackend):
    name = "aten"
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    traces_lengths = False  # packing reads the lengths' values (a graph break, as for torch.nn.LSTM)
    traceable = {
        "lstm_cell": reference.lstm_cell,  # the pointwise ops torch's LSTMCell runs on CPU
        "lstm_sequence": aten.lstm_sequence,
    }

    def device_reason(self, device: torch.device) -> Optional[str]:
        if device.type == "cpu":
            return None
        if device.type == "cuda":
            return None if torch.cuda.is_available() else "no CUDA device is visible"
        return f"backend 'aten' runs on CPU and CUDA tensors, got tensors on {device}"

    def case_reason(self, op: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        if op not in self.implemented_ops() and self.device_reason(device) is None:
            return (f"backend 'aten' implements lstm_cell and lstm_sequence only (torch's own LSTM); "
                    f"{op} has no ATen kernel")
        return super().case_reason(op, device, dtype)

    def place_lengths(self, lengths, device):
        return lengths  # packing wants them on the CPU: leave them where the caller keeps them

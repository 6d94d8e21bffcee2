"""Loads ``wmkernels._C`` once and says whether the cpu backend can use it.

``LOAD_ERROR`` is None when the extension loads and registers every op the
Python side calls; otherwise it is the reason, which ``CpuBackend`` reports.
An extension built from older sources (an op missing) is caught here too, so
``import wmkernels`` never fails because of ``_C``.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

REBUILD = "run `pip install --no-build-isolation -e .`"
# Every torch.ops.wmkernels op that wmkernels/backends/cpu*.py calls.
REQUIRED_OPS = tuple(
    f"{op}_{direction}"
    for op in ("lstm_cell", "lstm_sequence", "wm_read", "wm_shift_write", "wm_write", "wm_lstm_sequence")
    for direction in ("forward", "backward"))


def _has_cpu_kernel(qualname: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CPU")
    except RuntimeError:  # no such operator
        return False


def _load() -> Optional[str]:
    try:
        importlib.import_module("wmkernels._C")  # loading it registers torch.ops.wmkernels
    except ImportError as error:  # not built, or built against another torch
        return f"wmkernels._C is not built or does not load ({error}); {REBUILD}"
    missing = [name for name in REQUIRED_OPS if not _has_cpu_kernel(f"wmkernels::{name}")]
    if missing:
        return f"wmkernels._C is out of date (it lacks torch.ops.wmkernels.{', '.join(missing)}); {REBUILD}"
    return None


LOAD_ERROR: Optional[str] = _load()

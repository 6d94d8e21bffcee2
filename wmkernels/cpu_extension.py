"""Loads ``wmkernels._C`` once and says whether the cpu backend can use it.

``LOAD_ERROR`` is None when the extension loads and registers every op the
Python side calls (the table of ops, ``wmkernels.contract``: a forward and a
backward kernel each); otherwise it is the reason, which the cpu backend reports.
An extension built from older sources (an op missing) is caught here too, so
``import wmkernels`` never fails because of ``_C``.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from wmkernels.contract import OP_NAMES

REBUILD = "run `pip install --no-build-isolation -e .`"
# Every torch.ops.wmkernels op that the cpu modules of the op families call.
REQUIRED_OPS = tuple(
    f"{op}_{direction}"
    for op in OP_NAMES
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

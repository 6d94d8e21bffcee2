"""Every Triton launch of the package goes through ``launch``.

It does two things no launch site should repeat: it makes the tensors'
CUDA device current for the launch (Triton launches on the *current*
device, so tensors on cuda:1 while cuda:0 is current would otherwise be
read from the wrong GPU), and, inside ``recording()``, it records the
launch instead of running it. The ahead-of-time compile check
(``wmkernels.tools.aot``) records what the ops launch that way, on CPU
tensors and with the block sizes a GPU would get, then compiles each
recorded variant for real GPU targets, each recording planned for the GPU
it targets (``RECORDED_DEVICES``).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch


@dataclass(frozen=True)
class Launch:
    """One recorded launch: the @triton.jit kernel, its grid, positional
    arguments, and keyword arguments (constexprs and launch options)."""

    kernel: object
    grid: tuple
    args: tuple
    options: dict


@dataclass(frozen=True)
class RecordedDevice:
    """The GPU a recording plans for: its SMs and the most shared memory
    (bytes) one block may take."""

    sms: int
    shared_bytes: int


# By compute capability: an A100 (SXM) and an H100 (SXM; an H200 is the same chip).
RECORDED_DEVICES = {80: RecordedDevice(108, 166912), 90: RecordedDevice(132, 232448)}

_recorder: contextvars.ContextVar[Optional[Tuple[List[Launch], RecordedDevice]]] = contextvars.ContextVar(
    "wmkernels_triton_recorder", default=None)


def recording_active() -> bool:
    """True inside ``recording()``: tiles are sized for a GPU and nothing runs."""
    return _recorder.get() is not None


def recorded_device() -> Optional[RecordedDevice]:
    """The GPU the active recording plans for (None outside ``recording()``)."""
    active = _recorder.get()
    return None if active is None else active[1]


@contextlib.contextmanager
def recording(device: RecordedDevice = RECORDED_DEVICES[90]) -> Iterator[List[Launch]]:
    """Record every launch made inside the block into the list it yields,
    planned for ``device`` (the kernels do not run, so outputs stay uninitialised)."""
    launches: List[Launch] = []
    token = _recorder.set((launches, device))
    try:
        yield launches
    finally:
        _recorder.reset(token)


def launch(kernel, grid, *args, device: torch.device, **options) -> None:
    """Run ``kernel[grid](*args, **options)`` with ``device`` current (or record it)."""
    active = _recorder.get()
    if active is not None:
        active[0].append(Launch(kernel, tuple(grid), args, options))
        return
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **options)
    else:
        kernel[grid](*args, **options)

"""Backend registry and selection (SPEC section 3).

The backend of an op call is, in order of precedence: its ``backend=``
argument, the innermost ``use_backend(name)`` context, the environment
variable ``WMKERNELS_BACKEND``, else ``"auto"``. ``auto`` takes the fastest
backend that can run the op on the tensors at hand; a backend asked for by
name either runs or raises ``BackendUnavailableError`` saying why.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Dict, Iterator, Optional

import torch

from wmkernels.backends.base import Backend
from wmkernels.backends.cpu import CpuBackend
from wmkernels.backends.gpu import CudaBackend
from wmkernels.backends.reference import ReferenceBackend
from wmkernels.backends.triton import TritonBackend

BACKENDS: Dict[str, Backend] = {
    b.name: b for b in (ReferenceBackend(), CpuBackend(), TritonBackend(), CudaBackend())
}
AUTO = "auto"
ENV_VAR = "WMKERNELS_BACKEND"
# Fastest first, per device type; the reference closes every list.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_context_backend: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "wmkernels_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name cannot run the call; the message says why."""


def check_backend_name(name, source: str = "backend") -> str:
    """Return ``name`` if it names a backend or ``auto``; else raise naming ``source``."""
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a str, one of {known_names()}, got {type(name).__name__}")
    if name != AUTO and name not in BACKENDS:
        raise ValueError(f"{source} must be one of {known_names()}, got {name!r}")
    return name


def known_names():
    return [AUTO, *BACKENDS]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the ops inside the ``with`` block on backend ``name`` (or ``"auto"``)."""
    token = _context_backend.set(check_backend_name(name, "use_backend(name)"))
    try:
        yield
    finally:
        _context_backend.reset(token)


def requested_backend(argument: Optional[str]) -> str:
    """The backend name in force for one call, by the precedence above."""
    if argument is not None:
        return check_backend_name(argument, "backend")
    context = _context_backend.get()
    if context is not None:
        return context
    env = os.environ.get(ENV_VAR)
    if env:
        return check_backend_name(env, f"environment variable {ENV_VAR}")
    return AUTO


def select_backend(op: str, argument: Optional[str], device: torch.device,
                   dtype: torch.dtype) -> Backend:
    """The backend that runs ``op`` on tensors of ``device`` and ``dtype``."""
    name = requested_backend(argument)
    if name != AUTO:
        backend = BACKENDS[name]
        reason = backend.case_reason(op, device, dtype)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend '{name}' cannot run this call: {reason}")
        return backend
    for candidate in AUTO_ORDER.get(device.type, ("reference",)):
        backend = BACKENDS[candidate]
        if backend.case_reason(op, device, dtype) is None:
            return backend
    raise BackendUnavailableError(f"{op}: no backend runs on {device} with {dtype}")


def availability(device: torch.device) -> Dict[str, Optional[str]]:
    """For each backend, None if it runs on ``device``, else the reason why not."""
    return {name: b.device_reason(device) for name, b in BACKENDS.items()}

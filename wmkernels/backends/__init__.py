"""Backend registry and selection (contract §3).

The backend of an op call is, in order of precedence: its ``backend=``
argument, the innermost ``use_backend(name)`` context, the environment
variable ``WMKERNELS_BACKEND``, else ``"auto"``. ``auto`` takes the fastest
backend that can run the op on the tensors at hand, and never one slower than
what the user had before wmkernels: on CUDA, ``lstm_sequence`` (and so
``wmkernels.nn.LSTM``) goes to torch's own cuDNN path (``aten``), and
``lstm_cell`` (and so ``wmkernels.nn.LSTMCell``) to ``aten`` as well, unless a
wmkernels kernel was *measured* faster for that shape (``MEASURED_FASTER``).
A backend asked for by name either runs or raises ``BackendUnavailableError``
saying why. ``explain`` says which backend a call would take and why; with the
environment variable ``WMKERNELS_LOG_BACKEND=1`` (or the logger
``wmkernels.backends`` at DEBUG) every choice is logged.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from wmkernels.contract import OPS
from wmkernels.triton import schedule_env
from wmkernels.backends.aten import AtenBackend
from wmkernels.backends.base import Backend
from wmkernels.backends import cpu as cpu_backend
from wmkernels.backends.cpu import CpuBackend
from wmkernels.backends.reference import ReferenceBackend
from wmkernels.backends.triton import TritonBackend

BACKENDS: Dict[str, Backend] = {
    b.name: b for b in (ReferenceBackend(), CpuBackend(), TritonBackend(), AtenBackend())
}
AUTO = "auto"
ENV_VAR = "WMKERNELS_BACKEND"
LOG_ENV_VAR = "WMKERNELS_LOG_BACKEND"
# Fastest first, per device type; the reference closes every list (aten stands
# in on CPU when the extension is not built).
AUTO_ORDER = {"cuda": ("triton", "reference"), "cpu": ("cpu", "aten", "reference")}
# Ops torch itself has a fast kernel for: auto takes it first on that device
# (cuDNN on CUDA, oneDNN's fused LSTM on CPU, for inference and training),
# unless MEASURED_FASTER says a wmkernels kernel was measured faster for the
# call's shape and mode.
TORCH_FIRST = {("cuda", "lstm_sequence"): "aten", ("cuda", "lstm_cell"): "aten",
               ("cpu", "lstm_sequence"): "aten"}
TORCH_KERNEL = {"cuda": "cuDNN", "cpu": "oneDNN"}
# An LSTM with projections (torch.nn.LSTM's proj_size > 0): no wmkernels kernel
# implements one, torch's own LSTM does (torch._VF.lstm), so it runs there on
# every device, for inference and training.
PROJECTION_BACKEND = "aten"
PROJECTION_WHY = ("proj_size > 0: no wmkernels kernel implements the LSTM's projection; torch's own LSTM "
                  "(torch._VF.lstm) runs it, on every device, for inference and training")

log = logging.getLogger(__name__)
if os.environ.get(LOG_ENV_VAR, "0") not in ("", "0"):
    log.setLevel(logging.DEBUG)
    log.addHandler(logging.StreamHandler())


@dataclass(frozen=True)
class MeasuredFaster:
    """A wmkernels backend measured faster than torch's own kernel for some calls.

    ``applies(sizes)`` takes the call's sizes (``T, B, I, H`` for
    lstm_sequence) and says whether the measurement covers them; ``evidence``
    names the committed result it rests on (device, file). ``machines``: the
    instruction sets of the cpu kernels (``cpu_capability()``) the
    measurement holds for, the machine class it was taken on (empty: any).
    """

    op: str
    backend: str
    device_type: str
    dtypes: Tuple[torch.dtype, ...]
    applies: Callable[[Mapping[str, int]], bool]
    evidence: str
    inference: Optional[bool] = None  # True: measured without backward only; False: training only; None: both
    machines: Tuple[str, ...] = ()

    def covers(self, op: str, device_type: str, dtype: torch.dtype,
               sizes: Optional[Mapping[str, int]], inference: bool) -> bool:
        return (self.op == op and self.device_type == device_type and dtype in self.dtypes
                and sizes is not None and self.applies(sizes)
                and (self.inference is None or self.inference == inference)
                and (not self.machines or cpu_machine() in self.machines))


def cpu_machine() -> Optional[str]:
    """The instruction set the cpu kernels run with here (None without the extension)."""
    return None if cpu_backend.LOAD_ERROR is not None else cpu_backend.cpu_capability()


# Entries only from measured results under benchmarks/results/. None on a GPU
# yet: no wmkernels kernel has been measured faster than cuDNN there.
#
# CPU, float32 (2-core AMD EPYC Zen 4, AVX-512, quiet, 2026-12-07 05:55 UTC, after
# the kernel speed-ups of 00:21-00:54 that day): the cpu backend's persistent
# lstm_sequence against torch.nn.LSTM (oneDNN) over a grid of B x H (I = H,
# T = 128), 7 interleaved rounds, at 2 threads and at 1
# (benchmarks/cpu_routing.py). A cell is taken where the upper quartile of the
# per-round ratios was below 1 at BOTH thread counts; a call takes the cell
# nearest its B and H on a log scale, within half a grid step of the grid, and
# only for T >= 32 and I <= 2H (what the grid resembles). Not taken: inference
# B = 4 H <= 256 (1 thread 0.96 / 0.99, upper quartile above 1), B = 16
# (1.00-1.06 at both), B = 64 H = 128 (1.02 / 1.07), B = 64 H = 512 (2 threads
# 0.99, IQR 0.03); training B = 16 H = 256 (1 thread 1.01; 2 threads 0.98) and
# B = 64 H = 512 (1 thread 1.00); every other training cell was faster at both
# (2 threads 0.50-0.93, 1 thread 0.83-0.96). The grid before the speed-ups
# (...-routing-{1thread,2threads}.txt) had taken inference B = 4 H = 256 (now
# 0.99 at 1 thread, IQR 0.04) and not inference B = 4 H = 512, B = 64 H = 256,
# training B = 16 H = 128, B = 64 H = 256.
_CPU_GRID_B = (1, 4, 16, 64)
_CPU_GRID_H = (128, 256, 512)
_CPU_FASTER_CELLS = {
    True: frozenset({(1, 128), (1, 256), (1, 512), (4, 512), (64, 256)}),  # inference
    False: frozenset({(1, 128), (1, 256), (1, 512), (4, 128), (4, 256), (4, 512), (16, 128), (16, 512),
                      (64, 128), (64, 256)}),  # training
}
_CPU_EVIDENCE = "benchmarks/results/cpu-epyc-zen4-2core-2026-12-07-routing-{1thread,2threads}-after-speedups.txt"
# bfloat16, both sides bf16, the same grid and criterion (cpu_routing.py --dtype bfloat16, quiet,
# 03:34 UTC): at 2 threads inference was faster in 10 of 12 cells, at 1 thread only at B=64 H=512 (torch's
# own is at parity there); training faster at B=1 on both (the bf16 backward computes in float32: 1.2-1.6x
# slower from B=16 on). Their bf16 kernels need avx512_bf16.
_CPU_BF16_FASTER_CELLS = {
    True: frozenset({(64, 512)}),
    False: frozenset({(1, 128), (1, 256), (1, 512)}),
}
_CPU_BF16_EVIDENCE = "benchmarks/results/cpu-epyc-zen4-2core-2026-12-07-routing-bf16-{1thread,2threads}.txt"
# The grid holds for the AVX-512 tile kernels only: with them capped to AVX2 on
# the same machine (and torch capped alike), training at T=256 B=16 H=256 and
# T=128 B=64 H=512 ran 1.11x and 1.31x torch's time
# (benchmarks/results/cpu-epyc-zen4-2core-2026-12-07-avx2-capped-2threads.txt).
_CPU_GRID_MACHINES = ("avx512", "avx512_bf16")


def _nearest_on_grid(value: int, grid: Tuple[int, ...]) -> Optional[int]:
    """The grid value nearest ``value`` in log2, or None beyond half a step past its ends."""
    if value < 1:
        return None
    log = math.log2(value)
    if log < math.log2(grid[0]) - 1 or log > math.log2(grid[-1]) + 1:
        return None
    return min(grid, key=lambda g: abs(math.log2(g) - log))


def _cpu_grid_rule(cells: frozenset) -> Callable[[Mapping[str, int]], bool]:
    def applies(s: Mapping[str, int]) -> bool:
        cell = (_nearest_on_grid(s["B"], _CPU_GRID_B), _nearest_on_grid(s["H"], _CPU_GRID_H))
        return s["T"] >= 32 and s["I"] <= 2 * s["H"] and cell in cells
    return applies


MEASURED_FASTER: List[MeasuredFaster] = [
    *(MeasuredFaster("lstm_sequence", "cpu", "cpu", (torch.float32,), _cpu_grid_rule(_CPU_FASTER_CELLS[mode]),
                     _CPU_EVIDENCE, inference=mode, machines=_CPU_GRID_MACHINES) for mode in (True, False)),
    *(MeasuredFaster("lstm_sequence", "cpu", "cpu", (torch.bfloat16,), _cpu_grid_rule(_CPU_BF16_FASTER_CELLS[mode]),
                     _CPU_BF16_EVIDENCE, inference=mode, machines=("avx512_bf16",)) for mode in (True, False)),
]


def has_size_rules(op: str, device_type: str) -> bool:
    """True when some ``MEASURED_FASTER`` rule covers ``op`` on ``device_type``
    (only then does auto's choice depend on a call's sizes)."""
    return any(m.op == op and m.device_type == device_type for m in MEASURED_FASTER)


@dataclass
class Choice:
    """Which backend a call takes, and why (what ``explain`` returns)."""

    op: str
    device: torch.device
    dtype: torch.dtype
    requested: str
    backend: Optional[str]
    reason: str
    rejected: List[Tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.op} on {self.device} ({str(self.dtype).replace('torch.', '')}), "
                 f"backend requested: {self.requested}",
                 f"  -> {self.backend or 'none'}: {self.reason}"]
        lines += [f"     not {name}: {why}" for name, why in self.rejected]
        return "\n".join(lines)

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


def auto_candidates(op: str, device: torch.device, dtype: torch.dtype,
                    sizes: Optional[Mapping[str, int]] = None,
                    inference: bool = False, traced_lengths: bool = False,
                    recording: bool = False, with_projection: bool = False) -> List[Tuple[str, str]]:
    """The backends ``auto`` tries for this call, in order, each with why it is
    there (``inference``: no input of the call wants a gradient;
    ``traced_lengths``: torch.compile is tracing a call with lengths, which
    torch's own LSTM cannot take in a graph, as for torch.nn.LSTM;
    ``recording``: torch.jit.trace or torch.export records the call, which only
    plain PyTorch survives — a Python autograd Function can be neither saved in
    TorchScript nor differentiated in an exported program; ``with_projection``:
    an LSTM with ``proj_size > 0``, which only torch's own LSTM runs)."""
    if traced_lengths or recording:
        return [(name, why) for name, why in auto_candidates(op, device, dtype, sizes, inference,
                                                             with_projection=with_projection)
                if BACKENDS[name].traces_lengths or not traced_lengths
                if BACKENDS[name].recordable or not recording]
    if with_projection:
        return [(PROJECTION_BACKEND, PROJECTION_WHY)]
    order = list(AUTO_ORDER.get(device.type, ("reference",)))
    why = {name: f"the fastest available on {device.type} by the auto order {tuple(order)}" for name in order}
    torch_own = TORCH_FIRST.get((device.type, op))
    if torch_own is not None:
        mode = "inference (nothing wants a gradient)" if inference else "training (forward and backward)"
        measured = [m for m in MEASURED_FASTER if m.covers(op, device.type, dtype, sizes, inference)]
        order = [m.backend for m in measured] + [torch_own] + [n for n in order if n != torch_own]
        for m in measured:
            why[m.backend] = f"measured faster than torch's own kernel for {mode} at this shape ({m.evidence})"
        kernel = TORCH_KERNEL.get(device.type, "ATen") if op == "lstm_sequence" else "ATen"
        why[torch_own] = (f"torch's own kernel ({kernel} on {device.type.upper()}): no wmkernels kernel was "
                          f"measured faster for {op} in {mode} at {dict(sizes) if sizes else 'this shape'}")
    return [(name, why[name]) for name in dict.fromkeys(order)]


def _call_reason(name: str, op: str, device: torch.device, dtype: torch.dtype,
                 with_capacity: bool, with_projection: bool = False) -> Optional[str]:
    """Why backend ``name`` cannot run this call (None: it can)."""
    backend = BACKENDS[name]
    reason = backend.case_reason(op, device, dtype)
    if reason is None and with_capacity and not backend.takes_capacity:
        reason = f"backend '{name}' does not implement {op} with capacity yet"
    if reason is None and with_projection and name != PROJECTION_BACKEND:
        reason = (f"backend '{name}' has no LSTM projection (proj_size > 0): no wmkernels kernel implements "
                  f"one; torch's own LSTM (backend '{PROJECTION_BACKEND}') runs it")
    return reason


def decide(op: str, argument: Optional[str], device: torch.device, dtype: torch.dtype,
           sizes: Optional[Mapping[str, int]] = None, inference: bool = False,
           traced_lengths: bool = False, recording: bool = False, with_capacity: bool = False,
           with_projection: bool = False) -> Choice:
    """The backend of one call and the reasons (nothing raised: see ``select_backend``);
    ``with_capacity``: the call has a capacity, which only some backends take;
    ``with_projection``: an LSTM with ``proj_size > 0``, which only aten runs."""
    name = requested_backend(argument)
    if name != AUTO:
        reason = _call_reason(name, op, device, dtype, with_capacity, with_projection)
        if reason is None and recording and not BACKENDS[name].recordable:
            reason = ("torch.jit.trace and torch.export record plain PyTorch only, and this backend runs "
                      "a Python autograd Function; use 'reference' or 'aten', or auto")
        if reason is not None:
            return Choice(op, device, dtype, name, None, f"backend '{name}' cannot run this call: {reason}")
        return Choice(op, device, dtype, name, name, "asked for by name")
    if device.type == "cuda" and not torch.cuda.is_available():
        return _without_a_gpu(op, device, dtype, sizes, inference, traced_lengths, recording, with_projection)
    rejected = []
    for candidate, why in auto_candidates(op, device, dtype, sizes, inference, traced_lengths, recording,
                                          with_projection):
        reason = _call_reason(candidate, op, device, dtype, with_capacity, with_projection)
        if reason is None:
            return Choice(op, device, dtype, AUTO, candidate, why, rejected)
        rejected.append((candidate, reason))
    return Choice(op, device, dtype, AUTO, None, f"no backend runs on {device} with {dtype}", rejected)


def _without_a_gpu(op: str, device: torch.device, dtype: torch.dtype, sizes, inference: bool,
                   traced_lengths: bool, recording: bool, with_projection: bool = False) -> Choice:
    """Auto on ``device`` when no CUDA device is visible: nothing runs there. The
    reason says so plainly, then what a machine with one would take: the first
    backend in auto's order that this build can run there (``Backend.build_reason``)."""
    here = f"no CUDA device is visible on this machine, so nothing runs on {device} here"
    rejected = []
    for candidate, why in auto_candidates(op, device, dtype, sizes, inference, traced_lengths, recording,
                                          with_projection):
        reason = BACKENDS[candidate].build_reason(op, dtype)
        if reason is None:
            return Choice(op, device, dtype, AUTO, None, f"{here}; a machine with one would take {candidate}: {why}",
                          rejected)
        rejected.append((candidate, f"there either: {reason}"))
    return Choice(op, device, dtype, AUTO, None, f"{here}; no backend of this build would run it there", rejected)


def select_backend(op: str, argument: Optional[str], device: torch.device, dtype: torch.dtype,
                   sizes: Optional[Mapping[str, int]] = None, inference: bool = False,
                   traced_lengths: bool = False, recording: bool = False,
                   with_capacity: bool = False, with_projection: bool = False) -> Backend:
    """The backend that runs ``op`` on tensors of ``device`` and ``dtype`` (``sizes``:
    the call's dimensions by name, for the measured rules; ``inference``: no
    input wants a gradient; ``traced_lengths``, ``recording``, ``with_projection``:
    see ``auto_candidates``; ``with_capacity``: the call has a capacity)."""
    choice = decide(op, argument, device, dtype, sizes, inference, traced_lengths, recording, with_capacity,
                    with_projection)
    if choice.backend is None:
        raise BackendUnavailableError(f"{op}: {choice.reason}")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("wmkernels: %s", str(choice).replace("\n", "; "))
    return BACKENDS[choice.backend]


def explain(op: str, *, device="cpu", dtype: torch.dtype = torch.float32, backend: Optional[str] = None,
            inference: bool = False, **sizes: int) -> Choice:
    """Which backend ``op`` would run on, and why, for tensors on ``device`` of
    ``dtype`` (sizes by name, e.g. ``T=1024, B=16, I=768, H=768``), with the
    backend asked for (``backend=``, else the ``use_backend`` context or the
    environment, else auto); ``inference=True`` for a call where no input
    wants a gradient. ``print`` the result for the reasons. ``proj_size=P``
    (``lstm_sequence`` only) asks about an LSTM with projections, as
    ``wmkernels.nn.LSTM(..., proj_size=P)`` runs: with ``P > 0`` always torch's
    own LSTM (aten), no wmkernels kernel having one."""
    if op not in OPS:
        raise ValueError(f"explain: op must be one of {list(OPS)}, got {op!r}")
    proj_size = sizes.pop("proj_size", 0)
    if proj_size and op != "lstm_sequence":
        raise ValueError(f"explain: proj_size applies to lstm_sequence only, got op {op!r}")
    return decide(op, backend, torch.device(device), dtype, sizes, inference, with_projection=proj_size > 0)


def availability(device="cpu") -> Dict[str, Optional[str]]:
    """For each backend, None if it runs on ``device`` (a torch.device or a
    string such as ``"cuda:1"``), else the reason why not."""
    return {name: b.device_reason(torch.device(device)) for name, b in BACKENDS.items()}


CPU_CAPABILITY_ENV_VAR = "WMKERNELS_CPU_CAPABILITY"
CPU_CAPABILITIES = ("default", "avx2", "avx512", "avx512_bf16")


def environment_problems() -> List[str]:
    """What is wrong with the wmkernels environment variables set now (none: [])."""
    problems = []
    backend = os.environ.get(ENV_VAR)
    if backend and backend != AUTO and backend not in BACKENDS:
        problems.append(f"{ENV_VAR}={backend!r} names no backend (one of {known_names()}): "
                        "every op call will raise until it is fixed")
    capability = os.environ.get(CPU_CAPABILITY_ENV_VAR)
    if capability is not None and capability not in CPU_CAPABILITIES:
        problems.append(f"{CPU_CAPABILITY_ENV_VAR}={capability!r} is not one of {list(CPU_CAPABILITIES)}: "
                        "it is ignored (the best instruction set of this CPU is used)")
    try:
        schedule_env.requested()
    except ValueError as error:
        problems.append(f"{error}: every lstm_sequence call on the triton backend will raise until it is fixed")
    return problems

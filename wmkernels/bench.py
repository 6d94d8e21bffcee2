"""Benchmarks of the sequence ops against their baselines, in one process.

Each *workload* is a forward+backward closure over fixed random inputs:
``torch.nn.LSTM`` (cuDNN on a GPU), the reference backend, and every other
available backend that implements the op. Time is the median of repeated
runs; memory is the bytes autograd keeps between forward and backward beyond
the inputs and outputs themselves (saved tensors, measured with
``torch.autograd.graph.saved_tensors_hooks``).
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from wmkernels import ops, reference
from wmkernels.backends import BACKENDS
from wmkernels.reference import WM_GATED_ONLY_KEYS, WM_PARAM_KEYS

DEFAULT_SIZES = dict(T=256, B=16, I=256, H=256, S=32, D=64)


@dataclass
class Workload:
    """One forward+backward to time: ``run()`` does both; ``inputs`` are the
    tensors a caller owns anyway (not counted as saved memory)."""

    op: str
    impl: str
    baseline: str
    run: Callable[[], None]
    forward: Callable[[], object]
    inputs: List[torch.Tensor] = field(default_factory=list)


@dataclass
class Result:
    op: str
    impl: str
    baseline: str
    ms: float
    ratio: Optional[float]  # ms / baseline ms (< 1 is faster)
    saved_bytes: int
    error: Optional[str] = None


def _storage_key(t: torch.Tensor):
    return (t.device, t.untyped_storage().data_ptr())


def saved_bytes(forward: Callable[[], object], owned: List[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves during ``forward()``,
    leaving out the storages of ``owned`` tensors and of the outputs."""
    packed: Dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            packed[_storage_key(t)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    outputs = [o for o in _flatten(out) if isinstance(o, torch.Tensor)]
    for t in owned + outputs:
        packed.pop(_storage_key(t), None)
    del out
    return sum(packed.values())


def _flatten(value):
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _loss_backward(out, inputs):
    total = sum(o.float().sum() for o in _flatten(out) if isinstance(o, torch.Tensor) and o.requires_grad)
    total.backward()
    for t in inputs:
        t.grad = None


def lstm_workloads(device, dtype, T, B, I, H, compiled: bool = False, **_) -> List[Workload]:
    """lstm_sequence on each backend beside torch.nn.LSTM with the same weights
    (and, with ``compiled``, ``torch.compile`` of the reference function)."""
    lstm = torch.nn.LSTM(I, H).to(device=device, dtype=dtype)
    x = torch.randn(T, B, I, device=device, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    inputs = [x, h0, c0, *weights]
    baseline = "torch.nn.LSTM"

    def nn_forward():
        return lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))

    loads = [Workload("lstm_sequence", baseline, baseline,
                      lambda: _loss_backward(nn_forward(), inputs), nn_forward, inputs)]
    for name in _backends_for("lstm_sequence", device, dtype):
        def forward(name=name):
            return ops.lstm_sequence(x, h0, c0, *weights, backend=name)
        loads.append(Workload("lstm_sequence", name, baseline,
                              lambda f=forward: _loss_backward(f(), inputs), forward, inputs))
    if compiled:
        compiled_fn = torch.compile(reference.lstm_sequence)

        def forward():
            return compiled_fn(x, h0, c0, *weights)
        loads.append(Workload("lstm_sequence", "reference+compile", baseline,
                              lambda: _loss_backward(forward(), inputs), forward, inputs))
    return loads


def wm_lstm_workloads(device, dtype, T, B, I, H, S, D, write_mode,
                      compiled: bool = False) -> List[Workload]:
    """wm_lstm_sequence on each backend beside the reference backend (and,
    with ``compiled``, ``torch.compile`` of the reference function)."""
    sizes = {"I": I, "H": H, "4H": 4 * H, "D": D}
    bound = 1.0 / math.sqrt(H)
    params = {
        key: (torch.rand(*[sizes[l] for l in ops.WM_PARAM_SHAPES[key]], device=device, dtype=dtype)
              * 2 - 1).mul_(bound).requires_grad_()
        for key in WM_PARAM_KEYS if write_mode == "gated" or key not in WM_GATED_ONLY_KEYS}
    x = torch.randn(T, B, I, device=device, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
                  for shape in ((B, H), (B, H), (B, S, D)))
    inputs = [x, *state, *params.values()]
    op = f"wm_lstm_sequence[{write_mode}]"
    loads = []
    for name in _backends_for("wm_lstm_sequence", device, dtype):
        def forward(name=name):
            return ops.wm_lstm_sequence(x, state, params, write_mode, backend=name)
        loads.append(Workload(op, name, "reference", lambda f=forward: _loss_backward(f(), inputs),
                              forward, inputs))
    if compiled:
        compiled_fn = torch.compile(reference.wm_lstm_sequence)

        def forward():
            return compiled_fn(x, state, params, write_mode)
        loads.append(Workload(op, "reference+compile", "reference",
                              lambda: _loss_backward(forward(), inputs), forward, inputs))
    return loads


def _backends_for(op: str, device, dtype) -> List[str]:
    """Backends that can run ``op`` here, the reference first; the triton
    interpreter is left out (it measures Python, not kernels)."""
    names = []
    for name, backend in BACKENDS.items():
        if name == "triton" and torch.device(device).type == "cpu":
            continue
        if backend.case_reason(op, torch.device(device), dtype) is None:
            names.append(name)
    return names


def time_ms(run: Callable[[], None], device, repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` in milliseconds."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_benchmarks(device="cpu", dtype=torch.float32, repeat=5, sizes=None,
                   ops_wanted=("lstm_sequence", "wm_lstm_sequence"),
                   compiled: bool = False) -> List[Result]:
    """Time every workload; ratios are against each op's baseline. With
    ``compiled``, ``torch.compile`` of the reference joins as a baseline (its
    compile time, minutes at large T, falls in the untimed warm-up)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    loads: List[Workload] = []
    if "lstm_sequence" in ops_wanted:
        loads += lstm_workloads(device, dtype, compiled=compiled, **sizes)
    if "wm_lstm_sequence" in ops_wanted:
        for mode in ("fifo", "gated"):
            loads += wm_lstm_workloads(device, dtype, write_mode=mode, compiled=compiled, **sizes)
    results: List[Result] = []
    baseline_ms: Dict[str, float] = {}
    for load in loads:
        try:
            ms = time_ms(load.run, device, repeat)
            memory = saved_bytes(load.forward, load.inputs)
            error = None
        except Exception as exc:  # one failing workload must not hide the others
            ms, memory, error = math.nan, 0, f"{type(exc).__name__}: {exc}"
        if load.impl == load.baseline:
            baseline_ms[load.op] = ms
        base = baseline_ms.get(load.op)
        results.append(Result(load.op, load.impl, load.baseline, ms,
                              ms / base if base else None, memory, error))
    return results


def machine_description(device) -> Dict[str, object]:
    """What ran the benchmark: the processor or GPU, threads, versions, date."""
    info: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["cpu"] = _cpu_name()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(results: List[Result]) -> str:
    lines = [f"{'op':<26} {'impl':<16} {'ms':>10} {'vs baseline':>12} {'saved MiB':>10}"]
    for r in results:
        ratio = "baseline" if r.impl == r.baseline else (f"{r.ratio:.2f}x" if r.ratio else "-")
        ms = "failed" if r.error else f"{r.ms:.2f}"
        lines.append(f"{r.op:<26} {r.impl:<16} {ms:>10} {ratio:>12} {r.saved_bytes / 2**20:>10.2f}")
        if r.error:
            lines.append(f"    {r.error}")
    return "\n".join(lines)


def results_json(results: List[Result], device, dtype, sizes) -> Dict[str, object]:
    return {"machine": machine_description(device), "dtype": str(dtype).replace("torch.", ""),
            "sizes": {**DEFAULT_SIZES, **(sizes or {})}, "results": [asdict(r) for r in results],
            "ratio_meaning": "ms / baseline ms; below 1 is faster than the baseline"}

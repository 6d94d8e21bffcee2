"""Benchmarks of the sequence ops against their baselines, in one process.

Each *workload* is a forward+backward closure over fixed random inputs:
``torch.nn.LSTM`` (cuDNN on a GPU), the reference backend, and every other
available backend that implements the op. The workloads run interleaved
(one run of each per round, so load on a shared machine hits them alike) and
time is the median over the rounds; memory is the bytes autograd keeps
between forward and backward beyond the inputs and outputs themselves (saved
tensors, measured with ``torch.autograd.graph.saved_tensors_hooks``).

lstm_sequence rows also give the achieved GFLOP/s, counting the matrix
products only (2·B·4H·(I+H) per step forward, twice that backward), and its
fraction of the machine's peak, measured in the same process as the GFLOP/s
of one large matrix product (``peak_gflops``). On a GPU they also give the
floor model's time for the persistent schedule (``wmkernels.tools.floor``, rates
measured in the same process) and how far each row is from it; the triton
backend then has a second row, ``triton persistent``, with that schedule (for
lstm_sequence and wm_lstm_sequence).
Every row also times the forward alone (``forward_ms``).
"""
from __future__ import annotations

import datetime
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from wmkernels import ops, reference
from wmkernels.backends import BACKENDS, use_backend
from wmkernels.contract import WM_GATED_ONLY_KEYS, WM_PARAM_KEYS
from wmkernels.nn import LSTMCell
from wmkernels.testing import flatten, saved_bytes
from wmkernels.tools import floor
from wmkernels.tools.timing import time_interleaved, time_ms

DEFAULT_SIZES = dict(T=256, B=16, I=256, H=256, S=32, D=64)
# torch.compile of the reference: one step compiled, the time loop in Python
# (compiling the whole sequence unrolls T steps: minutes of compile at T=16 here).
COMPILED = "compile(ref step)"


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
    flops: Optional[float] = None  # floating-point operations of one run(), when counted


@dataclass
class Result:
    op: str
    impl: str
    baseline: str
    ms: float
    ratio: Optional[float]  # ms / baseline ms (< 1 is faster)
    saved_bytes: int
    error: Optional[str] = None
    gflops: Optional[float] = None  # achieved GFLOP/s of the matrix products (lstm_sequence)
    peak_fraction: Optional[float] = None  # gflops / the machine's measured peak
    min_ms: Optional[float] = None  # fastest round
    iqr_ms: Optional[float] = None  # interquartile range of the rounds (the spread)
    forward_ms: Optional[float] = None  # the forward alone (median)
    floor: Optional[dict] = None  # the floor model of the op here (wmkernels.tools.floor), GPU only
    rounds: Optional[int] = None  # timed forward+backward rounds behind ms (fewer than --repeat: out of time)

    @property
    def noisy(self) -> bool:
        """The rounds spread by more than NOISY of the median: treat the ratio with care."""
        return bool(self.iqr_ms is not None and self.ms and self.iqr_ms > NOISY * self.ms)


NOISY = 0.10


def _loss_backward(out, inputs):
    total = sum(o.float().sum() for o in flatten(out) if isinstance(o, torch.Tensor) and o.requires_grad)
    total.backward()
    for t in inputs:
        t.grad = None


def lstm_flops(T, B, I, H) -> float:
    """Matrix-product FLOPs of one LSTM layer forward+backward: 2·B·4H·(I+H)
    per step forward and twice that backward."""
    return 3 * T * 2 * B * 4 * H * (I + H)


def lstm_workloads(device, dtype, T, B, I, H, compiled: bool = False, compile_backend: str = "inductor",
                   **_) -> List[Workload]:
    """lstm_sequence on each backend beside torch.nn.LSTM with the same weights
    (and, with ``compiled``, ``torch.compile`` of the reference step in a Python loop)."""
    lstm = torch.nn.LSTM(I, H).to(device=device, dtype=dtype)
    x = torch.randn(T, B, I, device=device, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    inputs = [x, h0, c0, *weights]
    baseline = "torch.nn.LSTM"

    def nn_forward():
        return lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))

    flops = lstm_flops(T, B, I, H)
    loads = [Workload("lstm_sequence", baseline, baseline,
                      lambda: _loss_backward(nn_forward(), inputs), nn_forward, inputs, flops)]
    for name in _backends_for("lstm_sequence", device, dtype):
        def forward(name=name):
            return ops.lstm_sequence(x, h0, c0, *weights, backend=name)
        loads.append(Workload("lstm_sequence", name, baseline,
                              lambda f=forward: _loss_backward(f(), inputs), forward, inputs, flops))
        if name == "triton":
            loads.append(_persistent_workload(loads[-1]))
    if compiled:
        step = torch.compile(reference.lstm_step, backend=compile_backend)

        def forward():
            h, c, ys = h0, c0, []
            for t in range(T):
                h, c = step(x[t], h, c, *weights)
                ys.append(h)
            return torch.stack(ys), h, c
        loads.append(Workload("lstm_sequence", COMPILED, baseline,
                              lambda: _loss_backward(forward(), inputs), forward, inputs, flops))
    return loads


INFERENCE_OP = "lstm_sequence[no_grad]"


def lstm_inference_flops(T, B, I, H) -> float:
    """Matrix-product FLOPs of one LSTM layer forward: 2·B·4H·(I+H) per step."""
    return T * 2 * B * 4 * H * (I + H)


def lstm_inference_workloads(device, dtype, T, B, I, H, **_) -> List[Workload]:
    """lstm_sequence under torch.no_grad on each backend beside torch.nn.LSTM
    under no_grad (oneDNN's fused inference kernel on CPU), same weights."""
    lstm = torch.nn.LSTM(I, H).to(device=device, dtype=dtype)
    x = torch.randn(T, B, I, device=device, dtype=dtype)
    h0 = torch.randn(B, H, device=device, dtype=dtype)
    c0 = torch.randn(B, H, device=device, dtype=dtype)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    baseline = "torch.nn.LSTM"
    flops = lstm_inference_flops(T, B, I, H)

    def no_grad(forward):
        def run():
            with torch.no_grad():
                return forward()
        return run

    nn_forward = no_grad(lambda: lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0))))
    loads = [Workload(INFERENCE_OP, baseline, baseline, nn_forward, nn_forward, [x, h0, c0, *weights], flops)]
    for name in _backends_for("lstm_sequence", device, dtype):
        forward = no_grad(lambda name=name: ops.lstm_sequence(x, h0, c0, *weights, backend=name))
        loads.append(Workload(INFERENCE_OP, name, baseline, forward, forward, [x, h0, c0, *weights], flops))
    return loads


def _persistent_workload(triton_load: Workload, options: str = "", baseline: Optional[str] = None) -> Workload:
    """The triton row again with the persistent schedule (``wmkernels.triton.schedule``)
    and its ``options`` (e.g. ``:n32:streamed``)."""
    from wmkernels.triton import schedule  # Triton is optional: only the triton rows need it

    text = "persistent" + options

    def forward():
        with schedule.using(text):
            return triton_load.forward()

    def run():  # backward runs outside the forward's block: the schedule must hold there too
        with schedule.using(text):
            _loss_backward(triton_load.forward(), triton_load.inputs)
    return Workload(triton_load.op, "triton " + text.replace(":", " "), baseline or triton_load.baseline, run,
                    forward, triton_load.inputs, triton_load.flops)


# The persistent sweep's schedule options: hidden-unit blocks (the default takes
# the smallest that fits the GPU, most programs, which the floor model questions
# for the WM-LSTM: every program repeats its batch tile's memory work), and the
# smallest again with its weights streamed instead of resident.
SWEEP_OPTIONS = (":n16", ":n16:streamed", ":n32", ":n64")


def persistent_sweep_workloads(device, dtype, T, B, I, H, S, D, **_) -> List[List[Workload]]:
    """Per op (lstm_sequence beside torch.nn.LSTM; wm_lstm_sequence fifo and
    gated, against the first option), the triton backend's persistent schedule
    with each of SWEEP_OPTIONS. Empty where the triton backend cannot run."""
    groups = []
    lstm = lstm_workloads(device, dtype, T, B, I, H)
    triton_rows = [load for load in lstm if load.impl == "triton"]
    if not triton_rows:
        return []
    groups.append([lstm[0]] + [_persistent_workload(triton_rows[0], options) for options in SWEEP_OPTIONS])
    first = "triton persistent" + SWEEP_OPTIONS[0].replace(":", " ")
    for mode in ("fifo", "gated"):
        triton_wm = next(load for load in wm_lstm_workloads(device, dtype, T, B, I, H, S, D, mode)
                         if load.impl == "triton")
        groups.append([_persistent_workload(triton_wm, options, first) for options in SWEEP_OPTIONS])
    return groups


def lstm_cell_workloads(device, dtype, B, I, H, **_) -> List[Workload]:
    """One step of ``wmkernels.nn.LSTMCell`` with its ``lstm_cell`` on each backend
    beside ``torch.nn.LSTMCell`` with the same weights: the measurement behind
    auto's choice for the cell (on aten the layer is torch's own forward)."""
    theirs = torch.nn.LSTMCell(I, H).to(device=device, dtype=dtype)
    ours = LSTMCell(I, H, device=device, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I, device=device, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, device=device, dtype=dtype, requires_grad=True)
    inputs = [x, h0, c0, *theirs.parameters(), *ours.parameters()]
    baseline = "torch.nn.LSTMCell"

    def torch_forward():
        return theirs(x, (h0, c0))

    flops = lstm_flops(1, B, I, H)
    loads = [Workload("lstm_cell", baseline, baseline, lambda: _loss_backward(torch_forward(), inputs),
                      torch_forward, inputs, flops)]
    for name in _backends_for("lstm_cell", device, dtype):
        def forward(name=name):
            with use_backend(name):
                return ours(x, (h0, c0))
        loads.append(Workload("lstm_cell", name, baseline, lambda f=forward: _loss_backward(f(), inputs),
                              forward, inputs, flops))
    return loads


def wm_lstm_workloads(device, dtype, T, B, I, H, S, D, write_mode,
                      compiled: bool = False, compile_backend: str = "inductor") -> List[Workload]:
    """wm_lstm_sequence on each backend beside the reference backend (and,
    with ``compiled``, ``torch.compile`` of the reference step in a Python loop)."""
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
        if name == "triton":
            loads.append(_persistent_workload(loads[-1]))
    if compiled:
        step = torch.compile(reference.wm_lstm_step, backend=compile_backend)

        def forward():
            (h, c, M), ys = state, []
            for t in range(T):
                h, c, M, r = step(x[t], h, c, M, params, write_mode)
                ys.append(torch.cat([h, r], dim=1))
            return torch.stack(ys), (h, c, M)
        loads.append(Workload(op, COMPILED, "reference",
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


def peak_gflops(device, dtype=torch.float32, n: int = 2048, repeat: int = 5) -> float:
    """The machine's peak FLOP rate as measured here: GFLOP/s of one n×n×n
    matrix product in ``dtype`` with the current thread setting."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = min(time_ms(lambda: torch.mm(a, b), device, 1) for _ in range(repeat))
    return 2 * n ** 3 / (ms * 1e6)


def group_deadlines(budget_s: Optional[float], groups: int, start: float) -> List[Optional[Tuple[float, float]]]:
    """Per group, when its forward+backward rounds and then its forward-alone
    rounds stop starting: ``budget_s`` shared evenly from ``start``, two thirds
    of each share to forward+backward; a group that overran shortens the next."""
    if budget_s is None:
        return [None] * groups
    share = budget_s / max(groups, 1)
    return [(start + share * (k + 2 / 3), start + share * (k + 1)) for k in range(groups)]


def rounds_text(repeat: int, budget_s: Optional[float]) -> str:
    """What the timing loop does, in words (the progress lines and the command's header)."""
    bound = f", fewer if its share of the {budget_s:.0f} s budget runs out" if budget_s else ""
    return f"1 warm-up + up to {repeat} timed round{'s' if repeat != 1 else ''}{bound}"


def run_benchmarks(device="cpu", dtype=torch.float32, repeat=5, sizes=None,
                   ops_wanted=("lstm_sequence", "wm_lstm_sequence"),
                   compiled: bool = False, compile_backend: str = "inductor", peak: Optional[float] = None,
                   progress: bool = False, budget_s: Optional[float] = None, label: str = "") -> List[Result]:
    """Time every workload (interleaved per op); ratios are against each op's
    baseline. With ``compiled``, ``torch.compile`` of the reference step joins
    as a baseline (its compile time falls in the untimed warm-up), with
    ``compile_backend``. ``peak``
    (GFLOP/s) gives the fraction of peak of counted rows; ``progress`` says on
    stderr which group is being timed (after ``label``, e.g. a sweep point).
    ``budget_s`` bounds the rounds by time (``group_deadlines``): at least one
    round is timed, at most ``repeat``."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    groups: List[List[Workload]] = []
    if "lstm_cell" in ops_wanted:
        groups.append(lstm_cell_workloads(device, dtype, **sizes))
    if "lstm_sequence" in ops_wanted:
        groups.append(lstm_workloads(device, dtype, compiled=compiled, compile_backend=compile_backend, **sizes))
    if INFERENCE_OP in ops_wanted:
        groups.append(lstm_inference_workloads(device, dtype, **sizes))
    if "wm_lstm_sequence" in ops_wanted:
        for mode in ("fifo", "gated"):
            groups.append(wm_lstm_workloads(device, dtype, write_mode=mode, compiled=compiled,
                                            compile_backend=compile_backend,
                                            **sizes))
    if "persistent_sweep" in ops_wanted:
        groups += persistent_sweep_workloads(device, dtype, **sizes)
    results: List[Result] = []
    deadlines = group_deadlines(budget_s, len(groups), time.perf_counter())
    for number, (loads, deadline) in enumerate(zip(groups, deadlines), 1):
        if progress:
            print(f"{label}[bench {number}/{len(groups)}] {loads[0].op}: {', '.join(l.impl for l in loads)}, "
                  f"{rounds_text(repeat, None)}", file=sys.stderr, flush=True)
        run_deadline, forward_deadline = deadline or (None, None)
        timings = time_interleaved([load.run for load in loads], device, repeat, deadline=run_deadline)
        forwards = time_interleaved([load.forward for load in loads], device, repeat, deadline=forward_deadline)
        base = next((t.median for load, t in zip(loads, timings) if load.impl == load.baseline), None)
        floor = _floor(loads[0].op, device, dtype, sizes)
        for load, timing, forward in zip(loads, timings, forwards):
            ms = timing.median
            try:
                if math.isnan(ms):
                    load.run()  # raises again, for the message
                memory, error = saved_bytes(load.forward, load.inputs), None
            except Exception as exc:  # one failing workload must not hide the others
                ms, memory, error = math.nan, 0, f"{type(exc).__name__}: {exc}"
            gflops = load.flops / (ms * 1e6) if load.flops and not error else None
            results.append(Result(load.op, load.impl, load.baseline, ms,
                                  ms / base if base and not error else None, memory, error,
                                  gflops, gflops / peak if gflops and peak else None,
                                  None if error else timing.min, None if error else timing.iqr,
                                  None if error else forward.median, floor, None if error else timing.rounds))
    return results


def _floor(op: str, device, dtype, sizes) -> Optional[dict]:
    """The floor model of lstm_sequence or wm_lstm_sequence on a GPU (None
    elsewhere; a failed measurement is reported in place of the floor)."""
    if op not in ("lstm_sequence", "wm_lstm_sequence[fifo]", "wm_lstm_sequence[gated]") or \
            torch.device(device).type != "cuda":
        return None
    try:
        if op == "lstm_sequence":
            found = floor.lstm_floor_on(device, dtype, *(sizes[k] for k in "TBIH"))
        else:
            found = floor.wm_floor_on(device, dtype, *(sizes[k] for k in "TBIHSD"), gated=op.endswith("[gated]"))
    except Exception as exc:  # the probes need Triton and a cooperative launch
        return {"error": f"{type(exc).__name__}: {exc}"}
    return found.describe() if found else {"error": "the persistent schedule cannot run at these sizes"}


def machine_description(device) -> Dict[str, object]:
    """What ran the benchmark: the processor or GPU, threads, versions, date."""
    info: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "device": str(device),
        "isa": cpu_isa(),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["cpu"] = _cpu_name()
    return info


def cpu_isa() -> str:
    """The instruction set the cpu backend's LSTM rows run (and torch's own)."""
    torch_isa = torch.backends.cpu.get_cpu_capability()
    if BACKENDS["cpu"].device_reason(torch.device("cpu")) is not None:
        return f"torch {torch_isa}; wmkernels cpu backend not built"
    return f"wmkernels {torch.ops.wmkernels.cpu_capability()}, torch {torch_isa}"


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
    lines = [f"{'op':<26} {'impl':<18} {'ms':>9} {'min':>8} {'IQR':>7} {'fwd ms':>8} {'vs baseline':>11} "
             f"{'x floor':>7} {'GFLOP/s':>8} {'of peak':>7} {'saved bytes':>12} {'saved vs base':>13}"]
    base_bytes = {r.op: r.saved_bytes for r in results if r.impl == r.baseline}
    for r in results:
        ratio = "baseline" if r.impl == r.baseline else (f"{r.ratio:.2f}x" if r.ratio else "-")
        ms = "failed" if r.error else f"{r.ms:.2f}"
        gflops = f"{r.gflops:.1f}" if r.gflops else "-"
        peak = f"{100 * r.peak_fraction:.0f}%" if r.peak_fraction else "-"
        base = base_bytes.get(r.op)
        memory = ("-" if r.impl == r.baseline or not base or r.error
                  else "none saved" if not r.saved_bytes
                  else f"{base / r.saved_bytes:.1f}x less" if r.saved_bytes <= base
                  else f"{r.saved_bytes / base:.1f}x more")
        low = "-" if r.min_ms is None else f"{r.min_ms:.2f}"
        iqr = "-" if r.iqr_ms is None else f"{r.iqr_ms:.2f}"
        fwd = "-" if r.forward_ms is None else f"{r.forward_ms:.2f}"
        floor = (f"{r.ms / r.floor['total_ms']:.1f}x" if r.floor and "total_ms" in r.floor and not r.error
                 else "-")
        lines.append(f"{r.op:<26} {r.impl:<18} {ms:>9} {low:>8} {iqr:>7} {fwd:>8} {ratio:>11} {floor:>7} "
                     f"{gflops:>8} {peak:>7} {r.saved_bytes:>12} {memory:>13}" + ("  NOISY" if r.noisy else ""))
        if r.error:
            lines.append(f"    {r.error}")
    for op, model in {r.op: r.floor for r in results if r.floor}.items():
        lines.append(describe_floor(op, model))
    noisy = [f"{r.op} {r.impl}" for r in results if r.noisy]
    if noisy:
        lines.append(f"warning: the rounds of {len(noisy)} row(s) spread by more than {NOISY:.0%} of their "
                     f"median (IQR): {', '.join(noisy)}; the machine is busy or the rounds too few "
                     "(--repeat): treat those ratios with care")
    return "\n".join(lines)


def describe_floor(op: str, model: dict) -> str:
    """One line: the floor model's times and the rates they rest on."""
    if "error" in model:
        return f"floor of {op}: not measured ({model['error']})"
    rates = model["rates"]
    steps = "; ".join(f"{name} step: HBM {step['hbm_bytes'] / 1e6:.2f} MB, L2 {step['l2_bytes'] / 1e6:.2f} MB, "
                      f"shared {step['smem_bytes'] / 1e3:.0f} KB a program, {step['barriers']} barrier"
                      for name, step in (("forward", model["forward_step"]), ("backward", model["backward_step"])))
    return (f"floor of {op} (persistent schedule, model of wmkernels.tools.floor): forward {model['forward_ms']:.2f} ms, "
            f"forward+backward {model['total_ms']:.2f} ms (matrix products {model['matmul_ms']:.2f} ms); "
            f"{steps}; measured here: HBM {rates['hbm_GB_s']} GB/s, L2 {rates['l2_GB_s']} GB/s, grid barrier "
            f"{rates['barrier_us']} us with {rates['barrier_programs']} programs, "
            f"matmul {rates['matmul_TFLOP_s']} TFLOP/s")


def results_json(results: List[Result], device, dtype, sizes,
                 peak: Optional[float] = None) -> Dict[str, object]:
    return {"machine": machine_description(device), "dtype": str(dtype).replace("torch.", ""),
            "sizes": {**DEFAULT_SIZES, **(sizes or {})}, "results": [asdict(r) for r in results],
            "peak_gflops": peak,
            "peak_meaning": "GFLOP/s of one 2048x2048x2048 torch.mm in this process and dtype",
            "gflops_meaning": "matrix-product FLOPs (2*B*4H*(I+H) per step forward, twice that "
                              "backward) / time",
            "ratio_meaning": "ms / baseline ms; below 1 is faster than the baseline",
            "floor_meaning": "wmkernels.tools.floor: T x (barrier + max(HBM bytes / HBM rate, L2 bytes / L2 rate)) "
                             "per direction + the non-recurrent matrix products at the measured peak; "
                             "rates measured in this process"}

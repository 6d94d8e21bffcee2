"""Ahead-of-time compile check of every Triton kernel variant the ops launch.

The interpreter (how CI runs the kernels) does not type-check as the
compiler does, so a kernel can pass every CPU test and still fail to compile
for a GPU. This module compiles, without a GPU, what the triton backend
actually launches on CUDA:

1. *capture*: each case of ``CASES`` runs the backend's forward and backward
   on CPU tensors inside ``launch.recording()``: nothing runs, each launch is
   recorded with the block sizes the target's GPU gets (``tiles.interpreted``
   is False while recording; its SMs and shared memory are those of
   ``launch.RECORDED_DEVICES``: an A100 for sm_80, an H100 for sm_90);
2. *bind*: Triton's own argument binder (the one every launch runs)
   turns each recorded launch into a signature, constexprs and
   specialisations for a ``GPUTarget``; identical variants are compiled once;
3. *compile*: ``triton.compile`` to PTX and cubin, then ``ptxas -v`` (Triton's
   own) for registers and spills; shared memory from Triton's metadata.

Each variant must compile, fit the target's shared memory per block, stay
within its kernel's spill budget (``SPILL_BUDGET``), for 16-bit dtypes in
kernels with matrix products use tensor-core instructions, and, where it
runs a grid barrier (``GRID_SYNC``), carry the barrier's GPU-scope
release/acquire and read what other programs wrote past L1.

    python -m wmkernels.tools.aot [--arch 80 --arch 90] [--jobs 2] [--json out.json]

prints one row per variant and exits 1 on any failure. ``TRITON_INTERPRET``
must be unset: the kernels must be compiled objects, not interpreted ones.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from wmkernels import testing
from wmkernels.backends import BACKENDS
from wmkernels.contract import OPS
from wmkernels.tools import probes
from wmkernels.triton import schedule
from wmkernels.triton.launch import RECORDED_DEVICES, recording

ARCHS = (80, 90)
# Spilled bytes (stores) per thread allowed per kernel; a kernel not named
# here may not spill at all. The WM-LSTM backward keeps the four gate tiles,
# the memory tiles of the read and the write and the segment state live at
# once: at 255 registers its gated, lengths, 16-bit variant spills 8-16 B on
# sm_80 (none on sm_90), outside the matrix-product loops.
# The split WM-LSTM backward (wm_lstm_sequence_split_triton.py), gated at S = 128 (8 warps), keeps
# the read's and the write's [16, 128, 2] memory tiles live beside each other
# (the memory before and after the step and its gradient): 36-60 B a thread on
# sm_80, none on sm_90; 68 B (fp16 and bf16, with lengths) since the read's
# backward takes the mask and keeps every slot in the score gradient's
# arithmetic (NaN where the reference has it, issue 21). Fewer live tiles would
# need a narrower batch tile than tl.dot's 16 rows, more warps a register file
# larger than the SM's.
# The split WM-LSTM forward with w_hh and w_rh resident (sm_90, H = 768)
# spills 28-48 B a thread: the SASS stores them once, before the step loop
# (invariants the compiler hoisted), and reloads each once a step, from L1.
# With the capacity (issue 19: the read's mask of active slots, always formed,
# so one compiled variant serves calls with and without one), the gated S = 128
# 16-bit backwards on sm_80 spill 44 B (tile kernel, 24 B before) and 76 B
# (split, 68 B before); none on sm_90. Not measured on a GPU yet.
SPILL_BUDGET = {"wm_lstm_sequence._backward_kernel": 48, "wm_lstm_split._backward_kernel": 80,
                "wm_lstm_split._forward_kernel": 48}
# 32-bit registers per SM (sm_80, sm_90): a block of num_warps warps at R
# registers a thread must fit, or the launch fails.
REGISTER_FILE = 65536
# Kernels with tl.dot: for float16/bfloat16 they must use the tensor cores.
DOT_KERNELS = frozenset({"lstm_sequence._forward_kernel", "lstm_sequence._backward_kernel",
                         "wm_lstm_sequence._forward_kernel", "wm_lstm_sequence._backward_kernel",
                         "wm_lstm_split._forward_kernel", "wm_lstm_split._backward_kernel"})
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Sizes of the captured calls. Block sizes depend on H, S, D (and B up to 16);
# T, B, H, S, D also specialise the kernels (a value of 1, divisibility by 16).
AWKWARD = dict(T=1, B=1, I=3, H=1, S=1, D=1)
SMALL = dict(T=5, B=3, I=7, H=9, S=5, D=6)
BENCH = dict(T=16, B=16, I=768, H=768, S=32, D=64)
BENCH_S128 = dict(BENCH, S=128)
MEMORY_LARGE = dict(B=64, S=128, D=64)


@dataclass(frozen=True)
class CaptureCase:
    """One op call to capture: the op, its sizes, and the case options."""

    op: str
    sizes: Dict[str, int]
    options: Dict[str, object] = field(default_factory=dict)

    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        sizes = ",".join(f"{k}{v}" for k, v in self.sizes.items())
        return f"{self.op}[{sizes}{';' + opts if opts else ''}]"


def _sized(op: str, sizes: Dict[str, int]) -> Dict[str, int]:
    """The sizes of ``op`` (its dimensions in the table of ops) out of ``sizes``."""
    return {k: sizes[k] for k in OPS[op].sizes}


def _cases() -> List[CaptureCase]:
    cases = []
    for sizes in (AWKWARD, SMALL, dict(B=64, H=768)):
        cases.append(CaptureCase("lstm_cell", _sized("lstm_cell", sizes)))
    for sizes in (AWKWARD, SMALL, MEMORY_LARGE, dict(B=16, S=32, D=64)):
        cases.append(CaptureCase("wm_read", _sized("wm_read", sizes)))
        cases.append(CaptureCase("wm_read", _sized("wm_read", sizes), {"with_mask": True}))
        cases.append(CaptureCase("wm_shift_write", _sized("wm_shift_write", sizes)))
        cases.append(CaptureCase("wm_write", _sized("wm_write", sizes)))
    for sizes in (AWKWARD, SMALL, BENCH):
        for with_lengths in (False, True):
            cases.append(CaptureCase("lstm_sequence", _sized("lstm_sequence", sizes),
                                     {"with_lengths": with_lengths}))
    # the split grid: resident weights (BENCH: H = 768, BLOCK_N = 16; B = 256: H = 256, BLOCK_N = 32),
    # streamed ones (64-row batch tiles at B = 64)
    for sizes in (AWKWARD, SMALL, BENCH, dict(BENCH, B=64), dict(BENCH, B=256, I=256, H=256)):
        for with_lengths in (False, True):
            cases.append(CaptureCase("lstm_sequence", _sized("lstm_sequence", sizes),
                                     {"with_lengths": with_lengths, "schedule": "persistent"}))
    for sizes in (AWKWARD, SMALL, BENCH, BENCH_S128):
        for mode in ("fifo", "gated"):
            for with_lengths in (False, True):
                cases.append(CaptureCase("wm_lstm_sequence", dict(sizes),
                                         {"write_mode": mode, "with_lengths": with_lengths}))
    for sizes in (AWKWARD, SMALL, BENCH, BENCH_S128):  # the WM-LSTM's split grid (wm_lstm_sequence_split_triton.py)
        for mode in ("fifo", "gated"):
            for with_lengths in (False, True):
                cases.append(CaptureCase("wm_lstm_sequence", dict(sizes), {
                    "write_mode": mode, "with_lengths": with_lengths, "schedule": "persistent"}))
    # a [T, B] capacity (contract §1.5): the kernels always read one (S for every row without), so these
    # calls bind to the variants above (nothing more to compile); captured so such a call is checked too
    for sizes in (SMALL, BENCH):
        for mode in ("fifo", "gated"):
            for schedule_kind in ("tile", "persistent"):
                cases.append(CaptureCase("wm_lstm_sequence", dict(sizes), {
                    "write_mode": mode, "with_lengths": True, "with_capacity": True, "schedule": schedule_kind}))
    missing = set(OPS) - {case.op for case in cases}
    if missing:  # every op of the table has its kernels captured
        raise RuntimeError(f"no capture case for {sorted(missing)}")
    return cases


CASES = _cases()


@dataclass
class Variant:
    """One distinct compiled kernel: where it comes from and how it was bound."""

    kernel: str          # e.g. "wm_lstm_sequence._backward_kernel"
    module: str          # the module holding the @triton.jit function
    function: str        # its name there
    dtype: str
    case: str            # the first captured case that launched it
    signature: Dict[str, str]
    constexprs: Dict[Tuple[int, ...], object]
    attrs: Dict[Tuple[int, ...], object]
    options: Dict[str, object]

    def constexpr_text(self) -> str:
        names = list(self.signature)
        return " ".join(f"{names[k[0]]}={v}" for k, v in sorted(self.constexprs.items())
                        if names[k[0]].isupper())


@dataclass
class Report:
    """What compiling one variant for one architecture gave."""

    kernel: str
    arch: int
    dtype: str
    case: str
    constexprs: str
    registers: Optional[int] = None
    spill_stores: Optional[int] = None
    spill_loads: Optional[int] = None
    shared: Optional[int] = None
    tensor_cores: Optional[bool] = None
    grid_sync: Optional[bool] = None  # a persistent variant: whether its PTX orders the barrier (see judge)
    error: Optional[str] = None
    problems: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


KERNEL_OP = {  # module holding the kernels -> the op family its kernels serve
    "lstm_cell_triton": "lstm_cell", "memory_ops_triton": "memory", "lstm_sequence_triton": "lstm_sequence",
    "wm_lstm_sequence_triton": "wm_lstm_sequence", "wm_lstm_sequence_split_triton": "wm_lstm_split",
    "probes": "probes"}


def _kernel_name(kernel) -> Tuple[str, str, str]:
    module = kernel.fn.__module__
    family = KERNEL_OP.get(module.rsplit(".", 1)[-1], module)
    return f"{family}.{kernel.fn.__name__}", module, kernel.fn.__name__


class _ProductsSkipped(TorchFunctionMode):
    """Matrix products return uninitialised tensors of their result's shape,
    dtype and strides. Inside ``recording()`` no kernel runs, so what the host
    computes between launches is never read; its products (input projections,
    weight gradients) are the only costly part of a capture: in float16, on a
    CPU without float16 arithmetic, one of them takes tens of seconds.

    A function mode is not active inside the handler of a call it sees, so a
    call of one of the triton backend's custom ops runs the op's Python
    implementation with the mode pushed again, for the products inside it."""

    PRODUCTS = frozenset({torch.Tensor.__matmul__, torch.Tensor.matmul, torch.matmul, torch.mm, torch.addmm,
                          torch.bmm, torch.baddbmm})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.PRODUCTS:
            to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
            shape = func(*[to_meta(a) for a in args], **{k: to_meta(v) for k, v in kwargs.items()})
            device = next(a.device for a in args if isinstance(a, torch.Tensor))
            return torch.empty_strided(shape.shape, shape.stride(), dtype=shape.dtype, device=device)
        name = getattr(func, "_qualified_op_name", None) or getattr(getattr(func, "_schema", None), "name", "")
        if name.startswith("wmkernels_triton::"):
            from torch._library.custom_ops import OPDEFS

            with self:
                return OPDEFS[name]._init_fn(*args, **kwargs)
        return func(*args, **kwargs)


def _random_inputs(case: CaptureCase):
    """Random inputs of ``case`` (``testing.random_case``, float64): their
    values are never read while recording, so one draw serves every dtype."""
    options = {k: v for k, v in case.options.items() if k not in ("schedule", "with_capacity")}
    made = testing.random_case(case.op, **case.sizes, **options)
    if case.options.get("with_capacity"):
        made.extras["capacity"] = torch.randint(1, case.sizes["S"] + 1, (case.sizes["T"], case.sizes["B"]))
    return made


def _run_case(case: CaptureCase, dtype: torch.dtype, made=None) -> None:
    """Forward then backward of ``case`` on the triton backend, straight
    through the backend protocol (the op checks and backend choice are not
    what is being compiled), on ``made`` (``_random_inputs(case)``, drawn
    when not given). A ``schedule`` option sets the recurrent kernels'
    schedule (``wmkernels.triton.schedule``) for the call."""
    made = _random_inputs(case) if made is None else made
    with schedule.using(case.options.get("schedule", "tile")):
        named = {k: v.to(dtype) for k, v in made.tensors.items()}
        inputs = tuple(named.get(name) for name in OPS[case.op].inputs)
        extras = dict(made.extras)
        if case.op == "wm_read":
            extras["scale"] = 1.0 / math.sqrt(case.sizes["D"])
        backend = BACKENDS["triton"]
        needs = tuple(t is not None for t in inputs)
        outputs, saved, info = backend.forward(case.op, inputs, extras, needs)
        grads = tuple(torch.zeros_like(o) for o in outputs)
        backend.backward(case.op, saved, info, grads, needs)


def _runs(cases: Sequence[CaptureCase], dtypes: Iterable[str]):
    """(case, dtype name, call) of every capture, one input draw per case, then the probes."""
    dtypes = list(dtypes)
    for case in cases:
        made = _random_inputs(case)
        for dtype_name in dtypes:
            yield case, dtype_name, lambda c=case, d=dtype_name, m=made: _run_case(c, DTYPES[d], m)
    yield CaptureCase("probes", {}), "float32", _run_probes


def _run_probes() -> None:
    """The floor model's probes (``wmkernels.tools.probes``), as the bench launches them."""
    probes.launch_barrier_probe(torch.zeros(1, dtype=torch.int32), 48, 2)
    probes.launch_l2_probe(torch.zeros(1024), torch.zeros(4 * probes.L2_PROBE_BLOCK), 4, 2)


def capture(target, cases: Sequence[CaptureCase] = CASES,
            dtypes: Iterable[str] = DTYPES) -> List[Variant]:
    """The distinct kernel variants the cases launch on ``target``'s GPU, bound for it."""

    backend = make_backend(target)
    binders: Dict[object, object] = {}  # one binder per kernel, as Triton keeps one per device
    variants: Dict[tuple, Variant] = {}
    for case, dtype_name, run in _runs(cases, dtypes):
        with recording(RECORDED_DEVICES[target.arch]) as launches, _ProductsSkipped():
            run()
        for launch in launches:
            kernel = launch.kernel
            if not hasattr(kernel, "params"):
                raise RuntimeError(f"{kernel} is not a compiled-mode Triton kernel: "
                                   "unset TRITON_INTERPRET to run the ahead-of-time check")
            if kernel not in binders:
                binders[kernel] = create_function_from_signature(kernel.signature, kernel.params, backend)
            bound, specialization, options = binders[kernel](*launch.args, **launch.options)
            _, signature, constexprs, attrs = kernel._pack_args(
                backend, dict(launch.options), bound, specialization, options)
            # launch options (num_warps, ...) only: the target sets the rest per arch
            launch_options = {k: v for k, v in launch.options.items() if k not in kernel.arg_names}
            name, module, function = _kernel_name(kernel)
            key = (name, repr(signature), repr(sorted(constexprs.items())), repr(sorted(attrs.items())),
                   repr(sorted(launch_options.items())))
            if key not in variants:
                variants[key] = Variant(name, module, function, dtype_name, case.label(), signature,
                                        constexprs, attrs, launch_options)
    return list(variants.values())


_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_TENSOR_CORE_PTX = ("mma.sync.aligned", "wgmma.mma_async")
# What a grid barrier needs in the PTX: the arrival released and the wait
# acquired at GPU scope, and the exchanged h / dg read past L1.
_GRID_SYNC_PTX = (re.compile(r"atom\.global\.gpu\.release\.add"), re.compile(r"\.gpu\.acquire"),
                  re.compile(r"ld\.global\.cg"))


def _constexpr(variant: Variant, name: str):
    """The value of one of the variant's constexprs (None when it has none of that name)."""
    names = list(variant.signature)
    return next((value for key, value in variant.constexprs.items() if names[key[0]] == name), None)


def _ptxas_resources(log: str) -> Tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from a ``ptxas -v`` log."""
    used, spill = _PTXAS_USED.search(log), _PTXAS_SPILL.search(log)
    if used is None or spill is None:
        raise RuntimeError(f"unexpected ptxas -v output:\n{log}")
    return int(used.group(1)), int(spill.group(1)), int(spill.group(2))


def _run_ptxas(ptx: str, arch: int) -> str:
    """``ptxas -v`` (Triton's own) of ``ptx`` for sm_<arch>: its log. Only for a
    variant Triton's cache holds without the log (compiled elsewhere)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        result = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}",
                                 src, "-o", os.path.join(tmp, "kernel.cubin")],
                                capture_output=True, text=True, check=True)
    return result.stderr + result.stdout


def _keep_ptxas_log(backend, stages, options, language, capability) -> None:
    """Triton's pipeline hook: the cubin stage (``ptxas -v``) keeps its log in
    the kernel's metadata (and so in Triton's cache), where Triton drops it, so
    registers and spills are read from the run that made the cubin instead of
    running ptxas a second time."""
    make_cubin = stages["cubin"]

    def cubin(src, metadata):
        printed = knobs.nvidia.dump_ptxas_log
        knobs.nvidia.dump_ptxas_log = True  # Triton prints the log instead of deleting it unread
        try:
            with contextlib.redirect_stdout(io.StringIO()) as log:
                binary = make_cubin(src, metadata)
        finally:
            knobs.nvidia.dump_ptxas_log = printed
        metadata["ptxas_log"] = log.getvalue()
        return binary

    stages["cubin"] = cubin


def compile_variant(variant: Variant, arch: int) -> Report:
    """Compile one variant for sm_<arch> and judge it against the budgets."""
    report = Report(variant.kernel, arch, variant.dtype, variant.case, variant.constexpr_text())
    kernel = getattr(importlib.import_module(variant.module), variant.function)
    target = GPUTarget("cuda", arch, 32)
    hook = knobs.runtime.add_stages_inspection_hook
    knobs.runtime.add_stages_inspection_hook = _keep_ptxas_log
    try:
        compiled = triton.compile(ASTSource(kernel, variant.signature, variant.constexprs, variant.attrs),
                                  target=target, options=variant.options)
        log = getattr(compiled.metadata, "ptxas_log", None) or _run_ptxas(compiled.asm["ptx"], arch)
        report.registers, report.spill_stores, report.spill_loads = _ptxas_resources(log)
        report.shared = int(compiled.metadata.shared)
        report.tensor_cores = any(op in compiled.asm["ptx"] for op in _TENSOR_CORE_PTX)
        if _constexpr(variant, "GRID_SYNC"):
            report.grid_sync = all(pattern.search(compiled.asm["ptx"]) for pattern in _GRID_SYNC_PTX)
    except Exception as error:  # a compile error is a finding, reported per variant
        report.error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300] if str(error).strip() else ''}"
        report.problems.append("does not compile: " + report.error)
        return report
    finally:
        knobs.runtime.add_stages_inspection_hook = hook
    report.problems = judge(report, variant)
    return report


def judge(report: Report, variant: Variant) -> List[str]:
    """What is wrong with a compiled variant: shared memory over the target's
    limit, registers over the SM's for its block, spills over its kernel's
    budget, 16-bit matrix products without tensor cores."""
    problems = []
    limit = RECORDED_DEVICES[report.arch].shared_bytes
    if report.shared > limit:
        problems.append(f"shared memory {report.shared} B > {limit} B per block on sm_{report.arch}")
    threads = 32 * variant.options.get("num_warps", 4)
    if report.registers is not None and report.registers * threads > REGISTER_FILE:
        problems.append(f"{report.registers} registers x {threads} threads > the SM's {REGISTER_FILE}")
    budget = SPILL_BUDGET.get(variant.kernel, 0)
    if report.spill_stores > budget:
        problems.append(f"spills {report.spill_stores} B/thread > budget {budget} B")
    if variant.kernel in DOT_KERNELS and variant.dtype != "float32" and not report.tensor_cores:
        problems.append("no tensor-core instruction (mma/wgmma) in a 16-bit matrix kernel")
    if report.grid_sync is False:
        problems.append("grid barrier without a GPU-scope release/acquire pair or with h/dg read through L1")
    return problems


# The compiling processes run with Python's cyclic garbage collector off and
# collect every COLLECT_EVERY variants instead: Triton's code generator leaves
# cyclic garbage at a rate that kept the collector scanning the process's
# ~300,000 objects (torch, Triton) over and over, 10% of the compile time
# (40 variants on the 2-core EPYC: 26.5-27.3 s against 29.5-31.2 s), for
# ~0.5 MB of garbage a variant.
COLLECT_EVERY = 32
_compiled_here = 0


def _compile_job(job: Tuple[Variant, int]) -> Report:
    global _compiled_here
    gc.disable()
    _compiled_here += 1
    if _compiled_here % COLLECT_EVERY == 0:
        gc.collect()
    return compile_variant(*job)


def compile_all(variants: Sequence[Variant], archs: Sequence[int], jobs: int = 1) -> List[Report]:
    """Compile every variant for every arch, ``jobs`` processes at a time."""
    work = [(v, arch) for arch in archs for v in variants]
    if jobs <= 1:
        enabled = gc.isenabled()
        try:
            return [_compile_job(w) for w in work]
        finally:
            if enabled:
                gc.enable()
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_compile_job, work))


def format_table(reports: Sequence[Report]) -> str:
    header = (f"{'kernel':<34} {'sm':>3} {'dtype':<8} {'regs':>4} {'spill':>6} {'shared':>7} {'mma':>3}  "
              f"{'constexprs':<62} result")
    lines = [header, "-" * len(header)]
    for r in sorted(reports, key=lambda r: (r.kernel, r.arch, r.dtype, r.constexprs)):
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        mma = "-" if r.tensor_cores is None else ("yes" if r.tensor_cores else "no")
        lines.append(f"{r.kernel:<34} {r.arch:>3} {r.dtype:<8} {fmt(r.registers):>4} {fmt(r.spill_stores):>6} "
                     f"{fmt(r.shared):>7} {mma:>3}  {r.constexprs[:62]:<62} "
                     f"{'ok' if r.passed else 'FAIL: ' + '; '.join(r.problems)}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wmkernels.tools.aot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, action="append", choices=ARCHS,
                        help="compute capability to compile for (repeatable; default: 80 and 90)")
    parser.add_argument("--dtype", action="append", choices=list(DTYPES), help="(repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--json", help="also write every report as JSON to this path")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the check compiles kernels, the interpreter does not", file=sys.stderr)
        return 2
    archs = args.arch or list(ARCHS)
    reports = []
    for arch in archs:  # each arch's GPU plans its own launches (grid, resident weights)
        variants = capture(GPUTarget("cuda", arch, 32), dtypes=args.dtype or list(DTYPES))
        reports += compile_all(variants, [arch], args.jobs)
    print(format_table(reports))
    failed = [r for r in reports if not r.passed]
    print(f"{len(reports)} variants compiled for {', '.join(f'sm_{a}' for a in archs)} "
          f"from {len(CASES)} captured calls per dtype: {len(reports) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in reports], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

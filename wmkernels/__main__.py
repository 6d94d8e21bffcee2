"""Command line: ``python -m wmkernels {info,check,explain,bench,gpu-report}``.

    info        version, torch, which backends run here (and why not), what auto picks
    check       every op of every available backend against the float64 reference
    explain     which backend one op call takes here, and why
    bench       lstm_sequence and wm_lstm_sequence forward+backward timings
    gpu-report  the GPU protocol: tests and benchmarks on a lent GPU, JSON + markdown
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

import torch

import wmkernels
from wmkernels import testing
from wmkernels.backends import BACKENDS, environment_problems
from wmkernels.contract import OPS
from wmkernels.tools import bench, bench_plot, bench_summary, gpu_report
from wmkernels.triton import schedule_env

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_info(args) -> int:
    print(f"wmkernels {wmkernels.__version__}  torch {torch.__version__}  "
          f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}")
    for problem in environment_problems():
        print(f"environment: {problem}")
    try:
        chosen = schedule_env.requested()
        print(f"triton schedule of lstm_sequence: {chosen.kind}{':reversed' if chosen.reversed else ''} "
              f"({schedule_env.SCHEDULE_ENV}: one of {', '.join(schedule_env.KINDS)})")
    except ValueError:
        pass  # reported as an environment problem above
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        print(f"backends on {device}:")
        for name, reason in wmkernels.availability(torch.device(device)).items():
            if reason is None:
                implemented = sorted(BACKENDS[name].implemented_ops())
                print(f"  {name:<10} available; implements {', '.join(implemented) or 'no ops yet'}")
            else:
                print(f"  {name:<10} unavailable: {reason}")
        dtype = torch.float16 if device == "cuda" else torch.float32
        sizes = bench.DEFAULT_SIZES
        print(f"auto picks on {device} ({str(dtype).replace('torch.', '')}, bench sizes {sizes}):")
        for op in OPS:  # each with the dimensions auto's rules see (wmkernels.backends.MEASURED_FASTER)
            op_sizes = {k: sizes[k] for k in OPS[op].sizes}
            choice = wmkernels.explain(op, device=device, dtype=dtype, backend="auto", **op_sizes)
            print(f"  {op:<17} -> {choice.backend or 'none'}: {choice.reason}")
    return 0


def check_verdict(rows) -> str:
    """``ok``, ``ok, excused: ...`` (rows over their tolerance on an ill-conditioned
    draw, docs/contract.md "How close") or ``FAIL ...`` for one case's rows."""
    bad = [r for r in rows if not r.passed]
    if bad:
        return "FAIL " + ", ".join(f"{r.name}={r.error:.2e}" for r in bad)
    excused = [r.excuse() for r in rows if r.excused]
    return "ok" if not excused else "ok, excused: " + "; ".join(excused)


def cmd_check(args) -> int:
    device = torch.device(args.device)
    names = args.backend or [n for n, r in wmkernels.availability(device).items() if r is None]
    cases = list(testing.standard_cases())
    width = max(len(case.describe()) for case in cases)
    failures = excused = 0
    checked = {name: 0 for name in names}
    skipped = {}  # (backend, dtype, reason) -> ops, said once
    print(f"{'backend':<10} {'dtype':<8} {'op':<18} {'case':<{width}} {'worst rel err':>13} {'tol':>7}  result")
    for dtype_name in args.dtype:
        dtype = DTYPES[dtype_name]
        for case in cases:
            for name in names:
                reason = BACKENDS[name].case_reason(case.op, device, dtype)
                if reason is not None:
                    skipped.setdefault((name, dtype_name, reason), set()).add(case.op)
                    continue
                rows = testing.compare(case, name, dtype, device)
                checked[name] += 1
                worst = max(rows, key=lambda r: (r.error != r.error, r.error))
                verdict = check_verdict(rows)
                failures += verdict.startswith("FAIL")
                excused += verdict.startswith("ok, excused")
                print(f"{name:<10} {dtype_name:<8} {case.op:<18} {case.describe():<{width}} "
                      f"{worst.error:>13.2e} {worst.tolerance:>7.0e}  {verdict}")
    if args.backend:  # asked for by name: say what it could not run
        for (name, dtype_name, reason), ops in skipped.items():
            print(f"{name:<10} {dtype_name:<8} skipped {', '.join(sorted(ops))}: {reason}")
    unchecked = [name for name in names if not checked[name]]
    total = sum(checked.values())
    if not total:
        print("nothing was checked: every case was skipped (see the reasons above)")
        return 1
    print(f"all {total} checks passed" if not failures else f"{failures} of {total} check(s) failed")
    if excused:
        print(f"{excused} passed excused: over the tolerance on an ill-conditioned draw, within 10x of the error "
              "rounding the inputs alone gives it (docs/contract.md, 'How close')")
    if args.backend and unchecked:
        print(f"nothing was checked on {', '.join(unchecked)} (see the reasons above)")
        return 1
    return 1 if failures else 0


def cmd_explain(args) -> int:
    sizes = {k: getattr(args, k) if getattr(args, k) is not None else bench.DEFAULT_SIZES[k]
             for k in OPS[args.op].sizes}
    if args.proj_size:
        sizes["proj_size"] = args.proj_size
    choice = wmkernels.explain(args.op, device=args.device, dtype=DTYPES[args.dtype], backend=args.backend,
                               inference=args.inference, **sizes)
    print(choice)
    return 0 if choice.backend else 1


def cmd_bench(args) -> int:
    dtype = DTYPES[args.dtype]
    sizes = {k: getattr(args, k) for k in bench.DEFAULT_SIZES if getattr(args, k) is not None}
    all_sizes = {**bench.DEFAULT_SIZES, **sizes}
    budget = args.budget_s if args.budget_s > 0 else None
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bench.machine_description(args.device)
    print(f"machine: {machine.get('gpu', machine['cpu'])}, {machine['threads']} threads, ISA {machine['isa']}, "
          f"torch {machine['torch']}, {args.dtype}, sizes {all_sizes}")
    if args.inference:
        args.op = list(args.op) + [bench.INFERENCE_OP]
    print(bench_summary.plan_text(args.op, all_sizes, args.repeat, budget), flush=True)
    started = time.perf_counter()
    peak = None
    if "lstm_sequence" in args.op or bench.INFERENCE_OP in args.op:
        peak = bench.peak_gflops(args.device, dtype)
        print(f"peak: {peak:.1f} GFLOP/s = one 2048x2048x2048 torch.mm in {args.dtype}, "
              f"{machine['threads']} threads, measured in this process")
    results = bench.run_benchmarks(args.device, dtype, args.repeat, sizes, tuple(args.op),
                                   compiled=args.compile, peak=peak, progress=True, budget_s=budget)
    seconds = time.perf_counter() - started
    print(bench.format_table(results))
    rounds = sorted({r.rounds for r in results if r.rounds})
    spread = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}" if rounds else "no"
    print(f"forward+backward, median (min, IQR) of {spread} timed interleaved round(s) a row (at most "
          f"{args.repeat}; fewer where the time budget ran out); 'fwd ms' = the forward "
          "alone; 'vs baseline' = time / baseline time (below 1 is faster); 'x floor' = time / the floor "
          "model's forward+backward (GPU); GFLOP/s counts the matrix products "
          "(2*B*4H*(I+H) per step forward, twice that backward), 'of peak' divides by the peak "
          "above; saved bytes = what autograd keeps between forward and backward")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.results_json(results, args.device, dtype, sizes, peak), f, indent=2)
        print("wrote", args.json)
    failed = any(r.error for r in results)
    groups = len({r.op for r in results}) or 1
    print(f"took {seconds:.0f} s. {bench_summary.gain_sentence(results, args.device, dtype, all_sizes)}")
    if args.plot:
        curves = bench_plot.sweep(args.device, dtype, args.repeat, all_sizes, progress=True,
                                  group_budget_s=None if budget is None else budget / groups)
        bench_plot.plot(curves, args.plot, f"{machine.get('gpu', machine['cpu'])}, {machine['threads']} threads, "
                                           f"{args.dtype}, around {all_sizes}")
        print("wrote", args.plot)
        failed = failed or any(r.error for points in curves.values() for _, rs in points for r in rs)
    else:
        print("Next: " + bench_summary.sweep_text(all_sizes, seconds / groups) + ".")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wmkernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and backend availability").set_defaults(func=cmd_info)

    check = sub.add_parser("check", help="compare every backend with the float64 reference")
    check.add_argument("--backend", action="append", choices=list(BACKENDS),
                       help="backend to check (repeatable; default: every available one)")
    check.add_argument("--dtype", action="append", choices=list(DTYPES),
                       help="dtype to check (repeatable; default: float64 and float32)")
    check.add_argument("--device", default=default_device())
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="which backend an op call takes here, and why (wmkernels.explain)")
    explain.add_argument("op", choices=list(OPS))
    explain.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    explain.add_argument("--dtype", default="float32", choices=list(DTYPES))
    explain.add_argument("--backend", choices=["auto", *BACKENDS], help="as asked for (default: auto or "
                                                                       "WMKERNELS_BACKEND)")
    explain.add_argument("--inference", action="store_true", help="a call where no input wants a gradient")
    for key, value in bench.DEFAULT_SIZES.items():
        explain.add_argument(f"--{key}", type=int, default=None, help=f"(default {value}; where the op has {key})")
    explain.add_argument("--proj_size", type=int, default=0, help="lstm_sequence: an LSTM with projections, as "
                         "wmkernels.nn.LSTM(proj_size=P) runs it (default: 0, none)")
    explain.set_defaults(func=cmd_explain)

    run = sub.add_parser("bench", help="time the sequence ops against their baselines")
    run.add_argument("--device", default=default_device())
    run.add_argument("--dtype", default="float32", choices=list(DTYPES))
    run.add_argument("--repeat", type=int, default=5, help="timed rounds at most (default 5)")
    run.add_argument("--budget-s", type=float, default=60.0,
                     help="seconds the timed rounds may take in all (default 60; 0: no bound, --repeat rounds)")
    run.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    run.add_argument("--op", action="append", choices=["lstm_cell", "lstm_sequence", "wm_lstm_sequence"])
    run.add_argument("--inference", action="store_true",
                     help="add lstm_sequence under torch.no_grad (forward only, nothing saved) beside "
                          "torch.nn.LSTM under no_grad; GFLOP/s and 'of peak' count the forward")
    run.add_argument("--json", help="also write the results as JSON to this path")
    run.add_argument("--plot", help="also sweep T, B, H and S around the sizes and write the scaling "
                                    "curves against the baselines as a PNG to this path (needs matplotlib)")
    run.add_argument("--compile", action="store_true",
                     help="add torch.compile of the reference step (the time loop in Python) as a baseline")
    for key, value in bench.DEFAULT_SIZES.items():
        run.add_argument(f"--{key}", type=int, default=None,
                         help=f"(default {value}; e.g. --S 128 for the memory comparison)"
                         if key == "S" else f"(default {value})")
    run.set_defaults(func=cmd_bench)

    report = sub.add_parser("gpu-report", add_help=False,
                            help="the GPU protocol (tests + benchmarks, JSON + markdown); --help for its options")
    report.set_defaults(func=lambda args: gpu_report.main([]))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-report"]:  # its options are its own (wmkernels.tools.gpu_report)
        return gpu_report.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "check" and not args.dtype:
        args.dtype = ["float64", "float32"]
    if args.command == "bench" and not args.op:
        args.op = ["lstm_sequence", "wm_lstm_sequence"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The GPU protocol: everything a lent H100/H200 is for, in one command.

    bash benchmarks/gpu_check.sh [--out DIR]          # builds wmkernels._C, then:
    python -m wmkernels gpu-report --out DIR [--budget-s 480] [--dry-run]

1. *machine*: the device name, its properties, the versions (torch, Triton,
   CUDA, driver);
2. *tests*: the whole test suite on that machine (Triton kernels on CUDA
   tensors, bfloat16 included), spread over the CPU cores with pytest-xdist
   where it is installed; the ahead-of-time compile check is skipped (the
   kernels are compiled for real there);
3. *bench*: forward+backward (and the forward alone) at T=1024, B=16,
   I=H=768, interleaved in one process (``wmkernels.tools.bench``): lstm_sequence
   in float16 and bfloat16 against cuDNN ``torch.nn.LSTM``, the reference and
   ``torch.compile`` of the reference step, the triton backend with its
   ``tile`` and ``persistent`` schedules, beside the floor model
   (``wmkernels.tools.floor``, rates measured there), and the WM-LSTM (fifo, gated) at S=32 and S=128, D=64
   against the reference and its compiled step (bfloat16, then float16 in
   what is left of the budget); last, if time is left, the persistent
   schedule at hidden-unit blocks 16, 32, 64 and at 16 with the weights streamed
   (``bench.persistent_sweep_workloads``).

Each phase has a share of ``--budget-s`` (8 minutes by default, what a lent
machine's session can spare); a benchmark group that would start past the
budget is skipped and listed as skipped, never silently dropped. Results go to
``DIR/gpu-report.json`` and ``DIR/gpu-report.md`` with the device named.
``--dry-run`` runs the same plumbing on whatever device there is, with tiny
sizes, one quick test file and the reference step compiled by ``aot_eager``,
so the protocol itself is tested on CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from wmkernels.tools import bench

FULL = dict(T=1024, B=16, I=768, H=768)
DRY = dict(T=4, B=2, I=8, H=8)
MEMORIES = (dict(S=32, D=64), dict(S=128, D=64))
DRY_MEMORIES = (dict(S=3, D=4),)
# Share of the budget the test suite may take; the benchmarks get the rest.
TEST_SHARE = 0.5
REPO = Path(__file__).resolve().parents[2]
# Set for the test suite the protocol runs: its dry-run test would run the protocol again.
INSIDE_ENV = "WMKERNELS_IN_GPU_REPORT"


@dataclass
class BenchGroup:
    """One set of workloads timed together: an op at one dtype and size."""

    name: str
    dtype: str
    sizes: Dict[str, int]
    ops_wanted: tuple
    skipped: Optional[str] = None
    seconds: Optional[float] = None
    results: List[dict] = field(default_factory=list)


def plan(dry_run: bool) -> List[BenchGroup]:
    """The benchmark groups of the protocol, in the order they run."""
    sizes, memories = (DRY, DRY_MEMORIES) if dry_run else (FULL, MEMORIES)
    groups = [BenchGroup(f"lstm_sequence {dtype}", dtype, dict(sizes), ("lstm_sequence",))
              for dtype in ("float16", "bfloat16")]
    # seconds: the evidence auto's choice for the cell on CUDA waits for
    groups.append(BenchGroup("lstm_cell bfloat16", "bfloat16", dict(sizes), ("lstm_cell",)))
    # bfloat16 first: float16 runs in what is left of the budget
    groups += [BenchGroup(f"wm_lstm_sequence {dtype} S={m['S']}", dtype, {**sizes, **m}, ("wm_lstm_sequence",))
               for dtype in ("bfloat16", "float16") for m in memories]
    if not dry_run:  # last, in what budget is left: the block the persistent schedule should take
        groups.append(BenchGroup(f"persistent BLOCK_N sweep bfloat16 S={memories[0]['S']}", "bfloat16",
                                 {**sizes, **memories[0]}, ("persistent_sweep",)))
    return groups


def machine(device: str) -> Dict[str, object]:
    """The device and the software the results were measured with."""
    info = bench.machine_description(device)
    info.update(triton=_version("triton"), cuda=torch.version.cuda, cpu_count=os.cpu_count())
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(multiprocessors=props.multi_processor_count, memory_bytes=props.total_memory,
                    capability=f"{props.major}.{props.minor}")
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["driver"] = f"nvidia-smi failed: {error}"
    return info


def _version(module: str) -> Optional[str]:
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(__import__(module), "__version__", "unknown")


def run_tests(dry_run: bool, timeout_s: float) -> Dict[str, object]:
    """The test suite in a subprocess: its exit code, closing line and failures."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
    if dry_run:
        command.append(str(REPO / "tests" / "backends" / "test_backend_choice.py"))
    else:
        command.append(str(REPO / "tests"))
        if importlib.util.find_spec("xdist") is not None:
            command += ["-n", str(min(16, os.cpu_count() or 1))]
    env = dict(os.environ, WMKERNELS_SKIP_AOT="1", **{INSIDE_ENV: "1"})
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        code = None
    lines = output.strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)),
                   "no summary line")
    return {"command": " ".join(command), "exit_code": code, "summary": summary,
            "timed_out": code is None, "seconds": round(time.perf_counter() - start, 1),
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
            "tail": "\n".join(lines[-40:])}


def run_bench(groups: List[BenchGroup], device: str, deadline: float, repeat: int, dry_run: bool = False) -> None:
    """Time each group (in place) unless the deadline has passed. A dry run
    compiles the reference step with ``aot_eager`` (dynamo and AOTAutograd, no
    code generated): the row's plumbing is what it checks, and inductor's C++
    on a CPU is not what a GPU compiles (it took ~45 of the dry run's 65
    CPU-seconds with a cold cache)."""
    for group in groups:
        if time.perf_counter() > deadline:
            group.skipped = "out of time (the protocol's budget was spent before this group)"
            continue
        start = time.perf_counter()
        results = bench.run_benchmarks(device, getattr(torch, group.dtype), repeat, group.sizes,
                                       group.ops_wanted, compiled=True,
                                       compile_backend="aot_eager" if dry_run else "inductor")
        group.seconds = round(time.perf_counter() - start, 1)
        group.results = [asdict(r) for r in results]
        print(f"[gpu-report] {group.name}: {group.seconds} s\n{bench.format_table(results)}", flush=True)


def markdown(report: Dict[str, object]) -> str:
    """The report as a results page."""
    m = report["machine"]
    lines = [f"# GPU report: {m.get('gpu', m.get('cpu'))}", "",
             f"{report['date']}; torch {m['torch']}, Triton {m.get('triton')}, CUDA {m.get('cuda')}, "
             f"driver {m.get('driver', '-')}; {'DRY RUN (tiny sizes), ' if report['dry_run'] else ''}"
             f"budget {report['budget_s']} s, took {report['seconds']} s.", "",
             "## Tests", "", f"`{report['tests']['command']}`", "",
             f"exit code {report['tests']['exit_code']}, {report['tests']['seconds']} s: "
             f"**{report['tests']['summary']}**"]
    lines += [f"- {f}" for f in report["tests"]["failures"]]
    lines += ["", "## Benchmarks (forward+backward, median ms; ratio = time / baseline, below 1 is faster)", ""]
    for group in report["bench"]:
        lines.append(f"### {group['name']} {group['sizes']}")
        lines.append("")
        if group["skipped"]:
            lines += [f"skipped: {group['skipped']}", ""]
            continue
        lines += ["| impl | baseline | ms | forward ms | ratio | x floor | GFLOP/s | saved bytes | error |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in group["results"]:
            ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
            gflops = f"{r['gflops']:.0f}" if r["gflops"] else "-"
            forward = f"{r['forward_ms']:.2f}" if r.get("forward_ms") else "-"
            floor = r.get("floor") or {}
            vs_floor = f"{r['ms'] / floor['total_ms']:.1f}" if "total_ms" in floor and not r["error"] else "-"
            lines.append(f"| {r['impl']} | {r['baseline']} | {r['ms']:.2f} | {forward} | {ratio} | {vs_floor} | "
                         f"{gflops} | {r['saved_bytes']:,} | {r['error'] or ''} |")
        models = {r["op"]: r["floor"] for r in group["results"] if r.get("floor")}
        lines += [""] + [bench.describe_floor(op, model) for op, model in models.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wmkernels gpu-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"),
                        help="folder for gpu-report.json and gpu-report.md")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole protocol")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds per benchmark group")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes and one test file (any device)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.dry_run:
        print("gpu-report: no CUDA device is visible; use --dry-run to exercise the protocol on CPU",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine(device)
    print(f"[gpu-report] {info.get('gpu', info['cpu'])}, budget {args.budget_s} s", flush=True)
    tests = {"command": "skipped (--skip-tests)", "exit_code": None, "summary": "skipped", "seconds": 0,
             "failures": [], "timed_out": False}
    if not args.skip_tests:
        tests = run_tests(args.dry_run, args.budget_s * TEST_SHARE)
        print(f"[gpu-report] tests: {tests['summary']} ({tests['seconds']} s)\n{tests.get('tail', '')}", flush=True)
    groups = plan(args.dry_run)
    run_bench(groups, device, start + args.budget_s, args.repeat, args.dry_run)
    report = {"date": info["date"], "dry_run": args.dry_run, "budget_s": args.budget_s, "machine": info,
              "tests": tests, "bench": [asdict(g) for g in groups],
              "seconds": round(time.perf_counter() - start, 1)}
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu-report.md").write_text(markdown(report))
    print(f"[gpu-report] wrote {out / 'gpu-report.json'} and {out / 'gpu-report.md'} "
          f"in {report['seconds']} s", flush=True)
    tests_ok = args.skip_tests or tests["exit_code"] == 0
    bench_ok = all(not r["error"] for g in groups for r in g.results)
    return 0 if tests_ok and bench_ok else 1

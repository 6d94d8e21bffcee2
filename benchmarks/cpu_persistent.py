"""Ratios of the cpu backend's lstm_sequence (persistent team, csrc/cpu/
persistent_lstm.h) over torch.nn.LSTM (oneDNN) at the sizes of issue 22,
under no_grad and forward+backward, interleaved in one process, with the
machine's own GEMM rate in the same dtype (torch.mm 2048^3) measured between
the rows as the floor. Both sides run in --dtype (bfloat16: ours through its
avx512_bf16 kernels, torch.nn.LSTM in bf16 too).

    python benchmarks/cpu_persistent.py [--rounds 7] [--threads 2] [--dtype bfloat16] [--json out.json]

Per row: median of per-round ratios ours/torch (< 1: ours faster) with the
min-max and interquartile spread of those ratios, each side's median ms and
GFLOP/s (matrix-product FLOPs: 2*B*4H*(I+H) per step forward, x3 with
backward), and that rate as a fraction of the GEMM rate measured just before
the row. Round-to-round ratios, not absolute times, are what survives a
shared machine.
"""
import argparse
import json
import statistics
import sys

import torch

from wmkernels import ops
from wmkernels.tools import bench
from wmkernels.tools.timing import Ratio, rotated_rounds

SIZES = [(256, 1, 512, 512), (256, 16, 256, 256), (128, 64, 512, 512)]


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def gemm_rate(dtype=torch.float32, repeat=3):
    """GFLOP/s of torch.mm 2048³ in ``dtype`` here and now (the floor's rate)."""
    return bench.peak_gflops("cpu", dtype, repeat=repeat)


def arguments(description, rounds):
    """The options every CPU benchmark here takes: --rounds, --threads, --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json")
    return parser


def start(args):
    """Sets the thread count; returns the machine's description and the first
    words of the header line that names it."""
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bench.machine_description("cpu")
    return machine, (f"# {machine['cpu']}, {machine['threads']} threads, ISA {machine['isa']}, "
                     f"torch {machine['torch']}, {machine['date']}")


def write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def row(T, B, I, H, grad, rounds, dtype=torch.float32):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H).to(dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=grad)
    h0 = torch.zeros(B, H, dtype=dtype, requires_grad=grad)
    c0 = torch.zeros(B, H, dtype=dtype, requires_grad=grad)
    w = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    for p in w:
        p.requires_grad_(grad)

    def ours():
        with torch.set_grad_enabled(grad):
            y, h, c = ops.lstm_sequence(x, h0, c0, *w, backend="cpu")
            if grad:
                (y.sum() + h.sum() + c.sum()).backward()

    def theirs():
        with torch.set_grad_enabled(grad):
            y, (h, c) = lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
            if grad:
                (y.sum() + h.sum() + c.sum()).backward()

    t_ours, t_torch = rotated_rounds([ours, theirs], rounds)
    ratio = Ratio.of(t_ours, t_torch)
    flops = bench.lstm_flops(T, B, I, H) if grad else bench.lstm_inference_flops(T, B, I, H)
    mo, mt = statistics.median(t_ours), statistics.median(t_torch)
    return {"T": T, "B": B, "I": I, "H": H, "mode": "fwd+bwd" if grad else "no_grad",
            "ratio": ratio.median, "ratio_min": ratio.min, "ratio_max": ratio.max,
            "ratio_iqr": ratio.iqr, "ours_ms": mo, "torch_ms": mt,
            "ours_gflops": flops / mo / 1e6, "torch_gflops": flops / mt / 1e6}


def main(argv=None):
    parser = arguments(__doc__.split("\n\n")[0], rounds=7)
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--modes", default="no_grad,fwd+bwd", help="comma-separated: no_grad, fwd+bwd")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    grads = [{"no_grad": False, "fwd+bwd": True}[m] for m in args.modes.split(",")]
    machine, header = start(args)
    print(f"{header}, {args.dtype}, {args.rounds} interleaved rounds", flush=True)
    print(f"{'T':>4} {'B':>3} {'I=H':>4} {'mode':>8} {'ours/torch':>10} {'[min, max]':>14} {'IQR':>5} "
          f"{'ours ms':>8} {'torch ms':>8} {'ours GF/s':>9} {'torch GF/s':>10} {'GEMM GF/s':>9} "
          f"{'ours/GEMM':>9} {'torch/GEMM':>10}", flush=True)
    rows = []
    for grad in grads:
        for T, B, I, H in SIZES:
            floor = gemm_rate(dtype)
            r = row(T, B, I, H, grad, args.rounds, dtype)
            r["gemm_gflops"] = floor
            rows.append(r)
            print(f"{T:>4} {B:>3} {H:>4} {r['mode']:>8} {r['ratio']:>10.2f} "
                  f"[{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] {r['ratio_iqr']:>5.2f} {r['ours_ms']:>8.1f} "
                  f"{r['torch_ms']:>8.1f} {r['ours_gflops']:>9.1f} {r['torch_gflops']:>10.1f} {floor:>9.1f} "
                  f"{r['ours_gflops'] / floor:>9.2f} {r['torch_gflops'] / floor:>10.2f}", flush=True)
    write_json(args.json, {"machine": machine, "dtype": args.dtype, "rounds": args.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

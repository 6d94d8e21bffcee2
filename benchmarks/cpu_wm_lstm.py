"""The cpu backend's WM-LSTM against its baselines, forward+backward,
interleaved in one process: ``wmkernels.nn.WMLSTM`` (fifo and gated) over a
``torch.nn.LSTM`` with the same number of parameters (issue 22's goal: <= 1.2)
and over the plain-PyTorch reference of the same op (goal: >= 4x faster).

    python benchmarks/cpu_wm_lstm.py [--rounds 5] [--threads 1] [--json out.json]

Sizes: T=256 B=16 I=H=256 S=32 D=64 (the bench's defaults). Per row: median
of per-round ratios with min-max, and each side's median ms.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch

import wmkernels
from wmkernels.tools import bench

T, B, I, H, S, D = 256, 16, 256, 256, 32, 64


def same_params_hidden(n_params, inputs):
    """Hidden size of a torch.nn.LSTM(inputs, h) with about n_params parameters."""
    # 4h(inputs + h) + 8h = n  ->  4h^2 + (4 inputs + 8) h - n = 0
    b = 4 * inputs + 8
    return round((-b + math.sqrt(b * b + 16 * n_params)) / 8)


def _timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def fwd_bwd(module, x, backend=None):
    def run():
        with wmkernels.use_backend(backend) if backend else _nothing():
            y, _ = module(x)
            y.sum().backward()
    return run


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def compare(mode, rounds):
    torch.manual_seed(0)
    wm = wmkernels.nn.WMLSTM(I, H, memory_slots=S, memory_dim=D, write_mode=mode)
    n = sum(p.numel() for p in wm.parameters())
    lstm = torch.nn.LSTM(I, same_params_hidden(n, I))
    x = torch.randn(T, B, I, requires_grad=True)
    sides = {"cpu": fwd_bwd(wm, x, "cpu"), "reference": fwd_bwd(wm, x, "reference"),
             "nn.LSTM": fwd_bwd(lstm, x)}
    times = {k: [] for k in sides}
    for f in sides.values():
        f()
    for r in range(rounds):
        names = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for k in names:
            times[k].append(_timed(sides[k]))
    out = {"mode": mode, "params": n, "lstm_hidden": lstm.hidden_size,
           "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}}
    for base in ("nn.LSTM", "reference"):
        ratios = sorted(a / b for a, b in zip(times["cpu"], times[base]))
        out[f"cpu/{base}"] = [statistics.median(ratios), ratios[0], ratios[-1]]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bench.machine_description("cpu")
    print(f"# {machine['cpu']}, {machine['threads']} threads, ISA {machine['isa']}, torch {machine['torch']}, "
          f"{machine['date']}; WMLSTM T={T} B={B} I=H={H} S={S} D={D}, forward+backward, "
          f"{args.rounds} interleaved rounds", flush=True)
    rows = []
    for mode in ("fifo", "gated"):
        r = compare(mode, args.rounds)
        rows.append(r)
        a, b = r["cpu/nn.LSTM"], r["cpu/reference"]
        print(f"{mode:>5}: cpu {r['ms']['cpu']:.1f} ms, nn.LSTM(H={r['lstm_hidden']}, same {r['params']} params) "
              f"{r['ms']['nn.LSTM']:.1f} ms, reference {r['ms']['reference']:.1f} ms | cpu/nn.LSTM "
              f"{a[0]:.2f} [{a[1]:.2f}, {a[2]:.2f}] | reference/cpu {1 / b[0]:.2f}x "
              f"[{1 / b[2]:.2f}, {1 / b[1]:.2f}]", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rounds": args.rounds, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

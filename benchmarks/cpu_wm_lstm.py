"""The cpu backend's WM-LSTM against its baselines, forward+backward,
interleaved in one process: ``wmkernels.nn.WMLSTM`` (fifo and gated) over a
``torch.nn.LSTM`` with the same number of parameters (issue 22's goal: <= 1.2)
and over the plain-PyTorch reference of the same op (goal: >= 4x faster).

    python benchmarks/cpu_wm_lstm.py [--rounds 5] [--threads 1] [--json out.json]

Sizes: T=256 B=16 I=H=256 S=32 D=64 (the bench's defaults). Per row: median
of per-round ratios with min-max, and each side's median ms.
"""
import contextlib
import math
import statistics
import sys

import torch

import wmkernels
from wmkernels.tools.timing import Ratio, rotated_rounds

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cpu_persistent import arguments, start, write_json  # noqa: E402

T, B, I, H, S, D = 256, 16, 256, 256, 32, 64


def same_params_hidden(n_params, inputs):
    """Hidden size of a torch.nn.LSTM(inputs, h) with about n_params parameters."""
    # 4h(inputs + h) + 8h = n  ->  4h^2 + (4 inputs + 8) h - n = 0
    b = 4 * inputs + 8
    return round((-b + math.sqrt(b * b + 16 * n_params)) / 8)


def fwd_bwd(module, x, backend=None):
    def run():
        with wmkernels.use_backend(backend) if backend else contextlib.nullcontext():
            y, _ = module(x)
            y.sum().backward()
    return run


def compare(mode, rounds):
    torch.manual_seed(0)
    wm = wmkernels.nn.WMLSTM(I, H, memory_slots=S, memory_dim=D, write_mode=mode)
    n = sum(p.numel() for p in wm.parameters())
    lstm = torch.nn.LSTM(I, same_params_hidden(n, I))
    x = torch.randn(T, B, I, requires_grad=True)
    sides = {"cpu": fwd_bwd(wm, x, "cpu"), "reference": fwd_bwd(wm, x, "reference"),
             "nn.LSTM": fwd_bwd(lstm, x)}
    times = dict(zip(sides, rotated_rounds(list(sides.values()), rounds)))
    out = {"mode": mode, "params": n, "lstm_hidden": lstm.hidden_size,
           "ms": {k: statistics.median(v) for k, v in times.items()}}
    for base in ("nn.LSTM", "reference"):
        r = Ratio.of(times["cpu"], times[base])
        out[f"cpu/{base}"] = [r.median, r.min, r.max]
    return out


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], rounds=5).parse_args(argv)
    machine, header = start(args)
    print(f"{header}; WMLSTM T={T} B={B} I=H={H} S={S} D={D}, forward+backward, "
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
    write_json(args.json, {"machine": machine, "rounds": args.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

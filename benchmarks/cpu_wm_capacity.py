"""Time of the cpu backend's wm_lstm_sequence against the mean capacity of its
rows (contract §1.5) at a fixed number of slots S, fifo and gated, as ratios
over capacity=None (every slot active) timed in the same rounds.

    python benchmarks/cpu_wm_capacity.py [--rounds 9] [--threads 1] [--json out.json]

Each round times, in a rotating order, capacity=None and every capacity in
--capacities: forward + backward of the op (every input wants a gradient) and,
separately, the forward alone under no_grad. Row b's capacity is fixed over
the steps and spread around the mean c: rows alternate c - c/2, c + c/2 (c at
c = 1 or S), clamped to [1, S], so a batch mixes small and large memories as a
batch of mixed lengths would. Per capacity: the median over rounds of the
per-round ratio t(capacity) / t(None) (< 1: faster), its [min, max] and
interquartile range, and each side's median ms. Only the read and the write
follow the capacity; the recurrent and projection products (4H x (I + H + D)
per row and step) do not, so the ratio tends to their share, not to c / S.
"""
import statistics
import sys

import torch

from wmkernels import testing
from wmkernels.tools.timing import Ratio, rotated_rounds

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cpu_persistent import arguments, start, write_json  # noqa: E402


def row_capacities(mean: int, batch: int, slots: int) -> torch.Tensor:
    """int64 [B]: alternating mean - mean/2 and mean + mean/2, clamped to [1, S]."""
    half = mean // 2 if 1 < mean < slots else 0
    caps = torch.tensor([mean - half if b % 2 == 0 else mean + half for b in range(batch)])
    return caps.clamp(1, slots).to(torch.int64)


def workload(case: testing.Case, capacity, grad: bool):
    """One call of the op on ``case`` (float32), forward + backward or forward alone."""
    tensors = [t.float().requires_grad_(grad) for t in case.tensors.values()]
    extras = dict(case.extras, capacity=capacity)
    run_case = testing.Case(case.op, case.tensors, extras)

    def run():
        with torch.set_grad_enabled(grad):
            outputs = run_case.run(tensors, "cpu")
            if grad:
                torch.autograd.backward(outputs[0].sum() + sum(o.sum() for o in outputs[1:]))
    return run


def measure(mode: str, T: int, B: int, I: int, H: int, S: int, D: int, capacities, rounds: int,
            grad: bool):
    torch.manual_seed(0)
    case = testing.random_case("wm_lstm_sequence", T=T, B=B, I=I, H=H, S=S, D=D, write_mode=mode)
    caps = [None] + [row_capacities(c, B, S) for c in capacities]
    per_round = rotated_rounds([workload(case, cap, grad) for cap in caps], rounds)
    base = per_round[0]
    rows = []
    for cap, c, times in zip(caps[1:], capacities, per_round[1:]):
        ratio = Ratio.of(times, base)
        rows.append({"mode": mode, "grad": grad, "mean_capacity": float(cap.double().mean()),
                     "capacity_arg": c, "S": S, "ratio": ratio.median, "ratio_min": ratio.min,
                     "ratio_max": ratio.max, "ratio_iqr": ratio.iqr, "ms": statistics.median(times),
                     "none_ms": statistics.median(base)})
    return rows


def main(argv=None):
    parser = arguments(__doc__.split("\n\n")[0], rounds=9)
    parser.set_defaults(threads=1)
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--B", type=int, default=32)
    parser.add_argument("--I", type=int, default=32)
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--S", type=int, default=64)
    parser.add_argument("--D", type=int, default=32)
    parser.add_argument("--capacities", type=int, nargs="+", default=[8, 16, 32, 48, 64])
    args = parser.parse_args(argv)
    machine, header = start(args)
    print(f"{header}; T={args.T} B={args.B} I={args.I} H={args.H} S={args.S} D={args.D}, float32, "
          f"{args.rounds} rounds, order rotated per round", flush=True)
    print(f"{'mode':>5} {'pass':>8} {'mean cap':>8} {'cap/None':>8} {'[min, max]':>14} {'IQR':>5} "
          f"{'ms':>8} {'None ms':>8}", flush=True)
    rows = []
    for grad in (True, False):
        for mode in ("fifo", "gated"):
            for r in measure(mode, args.T, args.B, args.I, args.H, args.S, args.D, args.capacities,
                             args.rounds, grad):
                rows.append(r)
                print(f"{mode:>5} {'fwd+bwd' if grad else 'no_grad':>8} {r['mean_capacity']:>8.1f} "
                      f"{r['ratio']:>8.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] {r['ratio_iqr']:>5.2f} "
                      f"{r['ms']:>8.2f} {r['none_ms']:>8.2f}", flush=True)
    write_json(args.json, {"machine": machine, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

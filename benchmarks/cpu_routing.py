"""The measurement behind auto's CPU rules for lstm_sequence
(``MEASURED_FASTER`` in wmkernels/backends/__init__.py): the cpu backend
against torch.nn.LSTM (oneDNN), under no_grad and forward+backward, over a
grid of batch sizes and hidden sizes (I = H), interleaved in one process with
the rows of benchmarks/cpu_persistent.py.

    python benchmarks/cpu_routing.py [--rounds 7] [--threads 2] [--T 128] [--dtype bfloat16] [--json out.json]

A cell counts as measured faster when the median plus half the interquartile
range of its per-round ratios ours/torch (about their upper quartile) is below 1
(the median alone can be one lucky round on a
shared machine). The printed table ends with the cells that qualify, in the
form the rule in wmkernels/backends/__init__.py holds.
"""
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cpu_persistent import DTYPES, arguments, gemm_rate, row, start, write_json  # noqa: E402  (the same timed row)

BATCHES = (1, 4, 16, 64)
HIDDEN = (128, 256, 512)


def faster(r):
    """The median plus half the interquartile range of the per-round ratios
    (about their upper quartile) below 1."""
    return r["ratio"] + r["ratio_iqr"] / 2 < 1.0


def main(argv=None):
    parser = arguments(__doc__.split("\n\n")[0], rounds=7)
    parser.add_argument("--T", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="both sides in this dtype")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    machine, header = start(args)
    print(f"{header}, {args.dtype}, T={args.T}, {args.rounds} interleaved rounds; ratio ours/torch "
          f"(< 1: ours faster), [min, max], IQR", flush=True)
    rows = []
    for grad in (False, True):
        for B in BATCHES:
            for H in HIDDEN:
                r = row(args.T, B, H, H, grad, args.rounds, dtype)
                r["gemm_gflops"] = gemm_rate(dtype, repeat=1)
                r["faster"] = faster(r)
                rows.append(r)
                print(f"{r['mode']:>8} B={B:<3} H={H:<4} {r['ratio']:5.2f} [{r['ratio_min']:.2f}, "
                      f"{r['ratio_max']:.2f}] IQR {r['ratio_iqr']:.2f}  ours {r['ours_gflops']:6.1f} GF/s  "
                      f"torch {r['torch_gflops']:6.1f} GF/s  GEMM {r['gemm_gflops']:6.1f}"
                      f"{'  faster' if r['faster'] else ''}", flush=True)
    for mode in ("no_grad", "fwd+bwd"):
        cells = sorted((r["B"], r["H"]) for r in rows if r["mode"] == mode and r["faster"])
        print(f"# measured faster, {mode}: {cells}")
    write_json(args.json, {"machine": machine, "dtype": args.dtype, "rounds": args.rounds, "T": args.T,
                           "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a memory sized per sequence help? Associative recall on a mixed batch
(half the rows with few key-value pairs, half with many), the WM-LSTM (FIFO and
gated) with S slots read by every row (capacity=None) against a capacity per
row from ``WMLSTM.capacity_from_lengths`` (contract §1.5), seeds 0-2, on CPU.

A row with n pairs is n + 2 steps long (the recall task of memory_tasks.py: the
pairs, a query step, the answer step); the batch is padded to its longest row
and run as a PackedSequence, with its lengths. Policies (``--policies``):
``none`` (capacity=None: every row reads all S slots), ``1.0`` (capacity = the
row's length, clamped to [1, S]: as many slots as the row can fill) and ``0.5``
(half that: too few for a row of many pairs, to show what too small a memory
costs). For a seed every policy starts from the same weights and sees the same
batches.

Measured: accuracy on fresh mixed batches, per row group (few, many pairs);
learning curves; the time of one training step (forward, loss, backward) of
each policy as ratios over ``none``, timed in rotated rounds in one process.
Training runs at ``--threads`` torch threads (default 1). Writes
``capacity_recall.json``, ``capacity_recall.md`` and ``capacity_recall.png``
to ``--out``.

    python examples/capacity_recall.py --out docs/results       # the full run (~20 min on one core)
    python examples/capacity_recall.py --quick --out /tmp/cr    # a smoke run (seconds)
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import common
import memory_tasks
import wmkernels
from wmkernels.tools.timing import Ratio, rotated_rounds

MODES = ("fifo", "gated")
GROUPS = ("few", "many")
Inputs = Tuple[Tensor, Tensor]  # (x [T, B, F] padded, lengths int64 [B])
Batch = Tuple[Inputs, Tensor, Tensor]


def mixed_recall_batch(batch: int, few: List[int], many: List[int], keys: int, values: int,
                       generator: torch.Generator) -> Batch:
    """((x [T, B, keys + values + 1], lengths [B]), targets [T, B], mask [T, B]):
    rows 0 .. B/2 - 1 hold a number of pairs drawn from ``few``, the others from
    ``many``, each row a recall example of memory_tasks.recall_batch (length
    pairs + 2) padded with zeros to T = the longest row."""
    half = batch // 2
    pick = lambda choices, n: torch.tensor(choices)[torch.randint(len(choices), (n,), generator=generator)]
    pairs = torch.cat([pick(few, half), pick(many, batch - half)])
    T = int(pairs.max()) + 2
    x = torch.zeros(T, batch, keys + values + 1)
    targets = torch.zeros(T, batch, dtype=torch.long)
    mask = torch.zeros(T, batch, dtype=torch.bool)
    for n in pairs.unique().tolist():
        rows = (pairs == n).nonzero().squeeze(1)
        xb, tb, mb = memory_tasks.recall_batch(len(rows), n, keys, values, generator)
        x[:n + 2, rows], targets[:n + 2, rows], mask[:n + 2, rows] = xb, tb, mb
    return (x, pairs + 2), targets, mask


class CapacityModel(nn.Module):
    """``wmkernels.nn.WMLSTM`` and a linear read-out of ``[h, r]`` at every step,
    each row's capacity from ``capacity_from_lengths(lengths, slots_per_step)``
    (None: capacity=None). ``forward((x [T, B, I], lengths [B])) -> (logits [T, B, classes], state)``."""

    def __init__(self, mode: str, input_size: int, classes: int, hidden: int, slots: int, width: int,
                 slots_per_step: Optional[float]) -> None:
        super().__init__()
        self.rnn = wmkernels.nn.WMLSTM(input_size, hidden, slots, width, write_mode=mode)
        self.head = nn.Linear(hidden + width, classes)
        self.slots_per_step = slots_per_step

    def forward(self, inputs: Inputs):
        x, lengths = inputs
        capacity = None if self.slots_per_step is None else self.rnn.capacity_from_lengths(lengths, self.slots_per_step)
        y, state = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), None, capacity)
        y, _ = pad_packed_sequence(y, total_length=x.shape[0])
        return self.head(y), state


def policy_value(name: str) -> Optional[float]:
    return None if name == "none" else float(name)


@torch.no_grad()
def group_accuracy(model: nn.Module, batch: Callable[[], Batch], batches: int) -> Dict[str, float]:
    """Accuracy of the answer step per row group (first half: few pairs, second: many) over fresh batches."""
    model.eval()
    right, total = {g: 0 for g in GROUPS}, {g: 0 for g in GROUPS}
    for _ in range(batches):
        inputs, targets, mask = batch()
        correct = ((model(inputs)[0].argmax(-1) == targets) & mask).sum(0)  # [B]: 1 if the answer is right
        half = correct.shape[0] // 2
        for g, rows in zip(GROUPS, (slice(0, half), slice(half, None))):
            right[g] += int(correct[rows].sum())
            total[g] += int(mask[:, rows].sum())
    model.train()
    return {g: right[g] / total[g] for g in GROUPS}


def build(args, mode: str, policy: str, seed: int) -> CapacityModel:
    torch.manual_seed(seed)
    return CapacityModel(mode, args.keys + args.values + 1, args.values, args.hidden, args.slots, args.width,
                         policy_value(policy))


def batches(args, seed: int) -> Callable[[], Batch]:
    data = torch.Generator().manual_seed(10_000 + seed)
    return lambda: mixed_recall_batch(args.batch, args.few, args.many, args.keys, args.values, data)


def run_one(args, mode: str, policy: str, seed: int) -> Dict:
    model, batch = build(args, mode, policy, seed), batches(args, seed)
    curve: List[list] = []  # [step, accuracy few, accuracy many] on 4 fresh batches

    def checkpoint(step: int, loss: float) -> None:
        if step % args.curve_every == 0:
            scored = group_accuracy(model, batch, 4)
            curve.append([step, scored["few"], scored["many"]])

    fit = common.train(model, batch, args.steps, args.lr, checkpoint)
    return {"mode": mode, "policy": policy, "seed": seed, "accuracy": group_accuracy(model, batch, args.eval_batches),
            "curve": curve, **fit}


def step_times(args, mode: str) -> Dict[str, Dict]:
    """One training step (forward, loss, backward) of every policy on one batch,
    the weights of seed 0: median ms, and the per-round ratio over ``none``."""
    inputs, targets, mask = batches(args, 0)()
    models = [build(args, mode, policy, 0) for policy in args.policies]

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            common.masked_cross_entropy(model(inputs)[0], targets, mask).backward()
        return run

    times = rotated_rounds([step(m) for m in models], args.timing_rounds, warmup=2)
    base = times[args.policies.index("none")]
    out = {}
    for policy, model, t in zip(args.policies, models, times):
        capacity = torch.full_like(inputs[1], args.slots) if model.slots_per_step is None \
            else model.rnn.capacity_from_lengths(inputs[1], model.slots_per_step)
        ratio = Ratio.of(t, base)
        out[policy] = {"median_ms": statistics.median(t), "ratio": ratio.median, "ratio_min": ratio.min,
                       "ratio_max": ratio.max, "ratio_iqr": ratio.iqr,
                       "mean_capacity": float(capacity.double().mean())}
    return out


def summarise(results: List[Dict]) -> Dict[Tuple[str, str, str], Tuple[float, float, float]]:
    """(mode, policy, group) -> (mean, min, max) accuracy over seeds."""
    groups: Dict[Tuple[str, str, str], List[float]] = {}
    for r in results:
        for g in GROUPS:
            groups.setdefault((r["mode"], r["policy"], g), []).append(r["accuracy"][g])
    return {key: (statistics.fmean(v), min(v), max(v)) for key, v in groups.items()}


def policy_label(policy: str) -> str:
    return "capacity=None (all S)" if policy == "none" else f"capacity_from_lengths(·, {policy})"


def markdown(args, summary, timings) -> List[str]:
    lines = [f"Machine: {common.machine()}. WM-LSTM H={args.hidden}, S={args.slots}, D={args.width}; "
             f"{args.steps} training steps of batch {args.batch} (half the rows {args.few} pairs, half "
             f"{args.many}), lr {args.lr}, seeds {list(range(args.seeds))}; accuracy of the answer on "
             f"{args.eval_batches * args.batch} fresh examples per run (mean [min, max] over seeds). "
             f"Chance {1 / args.values:.2f}.", "",
             "| mode | capacity | few pairs | many pairs | mean capacity | step time / None [min, max] | step ms |",
             "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for policy in args.policies:
            cells = [f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in (summary[(mode, policy, g)] for g in GROUPS)]
            t = timings[mode][policy]
            lines.append(f"| {mode} | {policy_label(policy)} | {cells[0]} | {cells[1]} | {t['mean_capacity']:.1f} | "
                         f"{t['ratio']:.2f} [{t['ratio_min']:.2f}, {t['ratio_max']:.2f}] | {t['median_ms']:.1f} |")
    lines += ["", f"Step time: forward + loss + backward of one mixed batch, {args.timing_rounds} rounds in a "
              "rotated order, ratio = median over rounds of t(policy) / t(None) in the same round."]
    return lines


def plot(path, args, results, summary, timings) -> None:
    fig, axes = common.figure(4, (19, 4))
    width = 0.8 / len(args.policies)
    for ax, mode in zip(axes[:2], MODES):
        for k, policy in enumerate(args.policies):
            stats = [summary[(mode, policy, g)] for g in GROUPS]
            xs = [i + (k - (len(args.policies) - 1) / 2) * width for i in range(len(GROUPS))]
            ax.bar(xs, [s[0] for s in stats], width, label=policy_label(policy),
                   yerr=[[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]], capsize=3)
        ax.axhline(1 / args.values, color="grey", linestyle=":", label="chance")
        ax.set_xticks(range(len(GROUPS)), [f"{g} ({'/'.join(map(str, args.few if g == 'few' else args.many))} pairs)"
                                           for g in GROUPS])
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"WM-LSTM {mode}, S={args.slots}: accuracy (min-max over seeds)")
        ax.legend(fontsize=7)
    ax = axes[2]
    for k, policy in enumerate(args.policies):
        for r in results:
            if r["mode"] == "fifo" and r["policy"] == policy and r["curve"]:
                steps, _, many = zip(*r["curve"])
                ax.plot(steps, many, "-", color=f"C{k}", alpha=0.8, label=policy_label(policy) if r["seed"] == 0 else None)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy, many-pair rows")
    ax.set_title("fifo: learning curves of the many-pair rows")
    ax.legend(fontsize=7)
    ax = axes[3]
    for k, policy in enumerate(args.policies):
        xs = [i + (k - (len(args.policies) - 1) / 2) * width for i in range(len(MODES))]
        t = [timings[m][policy] for m in MODES]
        ax.bar(xs, [r["ratio"] for r in t], width, label=policy_label(policy),
               yerr=[[r["ratio"] - r["ratio_min"] for r in t], [r["ratio_max"] - r["ratio"] for r in t]], capsize=3)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set_xticks(range(len(MODES)), MODES)
    ax.set_ylabel("training step time / capacity=None")
    ax.set_title("step time (median of per-round ratios, min-max)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Associative recall, mixed batch, fixed S={args.slots} against a capacity per row, "
                 f"{args.seeds} seeds, {args.steps} steps", fontsize=10)
    common.save_figure(fig, path)


def main(argv=None) -> Dict:
    parser = common.argument_parser(__doc__, seeds=3, lr=1e-2, hidden=64)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--curve-every", type=int, default=250, help="steps between learning-curve points")
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--values", type=int, default=8)
    parser.add_argument("--few", type=int, nargs="+", default=[2, 3, 4], help="pairs of the few-pair rows")
    parser.add_argument("--many", type=int, nargs="+", default=[10, 11, 12], help="pairs of the many-pair rows")
    parser.add_argument("--policies", nargs="+", default=["none", "1.0", "0.5"],
                        help="'none' and slots_per_step values of capacity_from_lengths")
    parser.add_argument("--eval-batches", type=int, default=32)
    parser.add_argument("--timing-rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = parser.parse_args(argv)
    if "none" not in args.policies:
        parser.error("--policies must include 'none', the baseline")
    if args.quick:
        args.steps, args.curve_every, args.seeds, args.eval_batches, args.timing_rounds = 30, 10, 1, 2, 3
        args.hidden, args.slots, args.width, args.few, args.many = 16, 6, 8, [1, 2], [3, 4]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: List[Dict] = []
    start = time.perf_counter()
    for mode in MODES:
        for seed in range(args.seeds):
            for policy in args.policies:
                results.append(run_one(args, mode, policy, seed))
                r = results[-1]
                print(f"{mode:5s} {policy:5s} seed {seed}: few {r['accuracy']['few']:.3f} many "
                      f"{r['accuracy']['many']:.3f} loss {r['loss']:.3f} ({time.perf_counter() - start:.0f} s)",
                      flush=True)
    timings = {mode: step_times(args, mode) for mode in MODES}
    summary = summarise(results)
    plot(args.out / "capacity_recall.png", args, results, summary, timings)
    return common.write_report(args, "capacity_recall", {"results": results, "timings": timings},
                               markdown(args, summary, timings))


if __name__ == "__main__":
    sys.exit(main() and 0)

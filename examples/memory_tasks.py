"""Memory tasks with known answers: WM-LSTM (FIFO and gated) against torch.nn.LSTM
of equal parameter count, over several seeds, on CPU.

- **copy**: ``L`` random symbols (one-hot of ``K``), ``delay`` blank steps, then
  ``L`` recall steps on which the symbols must come out in order. Accuracy is
  per recalled symbol; chance is 1/K.
- **recall** (associative recall): ``n`` key-value pairs, one per step (one-hot
  key of ``K_keys`` beside one-hot value of ``K_values``, distinct keys), then a
  query step holding one of the keys; the answer is its value. Chance is 1/K_values.

For each task and difficulty (delay, or number of pairs) every model trains
``--steps`` Adam steps on fresh batches, then is scored on fresh examples.
The seconds per training step of the WM-LSTM on its kernels (auto), on the
reference backend, and of torch.nn.LSTM are measured at the largest size.
Writes ``memory_tasks.json``, ``memory_tasks.md`` and ``memory_tasks.png`` to ``--out``.

    python examples/memory_tasks.py --out docs/results            # the full run (~25 min on 2 cores)
    python examples/memory_tasks.py --quick --out /tmp/mt         # a smoke run (seconds)
    python examples/memory_tasks.py --out new --kinds gated --reuse docs/results/memory_tasks.json
        # rerun one model; the others' rows and the step timings come from the earlier report
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

import common

Batch = Tuple[Tensor, Tensor, Tensor]


def copy_batch(batch: int, length: int, delay: int, symbols: int, generator: torch.Generator) -> Batch:
    """x [T, B, K + 1] (one-hot symbols; the last channel says "recall now"),
    targets [T, B] (the symbols, at the recall steps), mask [T, B] (recall steps); T = 2L + delay."""
    T = 2 * length + delay
    ids = torch.randint(0, symbols, (length, batch), generator=generator)
    x = torch.zeros(T, batch, symbols + 1)
    x[:length].scatter_(2, ids.unsqueeze(2), 1.0)
    x[length + delay:, :, symbols] = 1.0
    targets = torch.zeros(T, batch, dtype=torch.long)
    targets[length + delay:] = ids
    mask = torch.zeros(T, batch, dtype=torch.bool)
    mask[length + delay:] = True
    return x, targets, mask


def recall_batch(batch: int, pairs: int, keys: int, values: int, generator: torch.Generator) -> Batch:
    """x [n + 2, B, keys + values + 1]: n steps of (key one-hot, value one-hot), distinct keys,
    a query step (key one-hot, last channel set), then a blank answer step whose
    target is that key's value (mask marks it). The answer comes one step after
    the query because the WM-LSTM reads with a query made from the previous
    hidden state (contract §1.4): the step that sees the key can only ask for it."""
    key_ids = torch.argsort(torch.rand(batch, keys, generator=generator), dim=1)[:, :pairs].t()  # [n, B]
    value_ids = torch.randint(0, values, (pairs, batch), generator=generator)
    asked = torch.randint(0, pairs, (batch,), generator=generator)
    columns = torch.arange(batch)
    x = torch.zeros(pairs + 2, batch, keys + values + 1)
    x[:pairs].scatter_(2, key_ids.unsqueeze(2), 1.0)
    x[:pairs].scatter_(2, (keys + value_ids).unsqueeze(2), 1.0)
    x[pairs, columns, key_ids[asked, columns]] = 1.0
    x[pairs, :, keys + values] = 1.0
    targets = torch.zeros(pairs + 2, batch, dtype=torch.long)
    targets[pairs + 1] = value_ids[asked, columns]
    mask = torch.zeros(pairs + 2, batch, dtype=torch.bool)
    mask[pairs + 1] = True
    return x, targets, mask


def task_batches(args, task: str, level: int, generator: torch.Generator) -> Tuple[Callable[[], Batch], int, int]:
    """(batch(), input size, classes) of ``task`` at difficulty ``level``."""
    if task == "copy":
        return (lambda: copy_batch(args.batch, args.length, level, args.symbols, generator),
                args.symbols + 1, args.symbols)
    return (lambda: recall_batch(args.batch, level, args.keys, args.values, generator),
            args.keys + args.values + 1, args.values)


def run_one(args, task: str, level: int, kind: str, seed: int) -> Dict[str, float]:
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(10_000 + seed)
    batch, inputs, classes = task_batches(args, task, level, data)
    model = common.build(kind, inputs, classes, args.hidden, args.slots, args.width)
    curve: List[list] = []  # [step, accuracy on 4 fresh batches]: the learning curve

    def checkpoint(step: int, loss: float) -> None:
        if step % args.curve_every == 0:
            curve.append([step, common.accuracy(model, batch, 4)])

    fit = common.train(model, batch, args.copy_steps if task == "copy" else args.recall_steps, args.lr, checkpoint)
    scored = common.accuracy(model, batch, args.eval_batches)
    return {"task": task, "level": level, "kind": kind, "seed": seed, "accuracy": scored,
            "params": common.parameter_count(model), "curve": curve, **fit}


def costs(args, task: str, level: int) -> Dict[str, Dict[str, float]]:
    """Time and saved-for-backward bytes of a training step at one size: WM-LSTM on
    auto and on the reference, torch.nn.LSTM."""
    batch, inputs, classes = task_batches(args, task, level, torch.Generator().manual_seed(0))
    return common.compare_costs(
        lambda kind: common.build(kind, inputs, classes, args.hidden, args.slots, args.width), *batch())


def summarise(results: List[Dict]) -> Dict[Tuple[str, int, str], Tuple[float, float, float]]:
    """(task, level, kind) -> (mean, min, max) accuracy over seeds."""
    groups: Dict[Tuple[str, int, str], List[float]] = {}
    for r in results:
        groups.setdefault((r["task"], r["level"], r["kind"]), []).append(r["accuracy"])
    return {key: (statistics.fmean(v), min(v), max(v)) for key, v in groups.items()}


def markdown(args, results, timings, summary) -> List[str]:
    lines = [f"Machine: {common.machine()}. {args.copy_steps} (copy) and {args.recall_steps} (recall) "
             f"training steps of batch {args.batch}, "
             f"seeds {list(range(args.seeds))}; accuracy on {args.eval_batches * args.batch} fresh "
             f"examples per run (mean, [min, max] over seeds).", ""]
    lines.append(f"WM-LSTM H={args.hidden}, S={args.slots}, D={args.width}; torch.nn.LSTM sized to the "
                 "gated WM-LSTM's parameter count.")
    for task, levels, label, chance in (("copy", args.delays, "delay", 1 / args.symbols),
                                         ("recall", args.pairs, "pairs", 1 / args.values)):
        params = {r["kind"]: r["params"] for r in results if r["task"] == task}
        lines += ["", f"**{task}** (chance {chance:.2f}; parameters: "
                  + ", ".join(f"{k} {params[k]:,}" for k in common.KINDS) + ")", "",
                  f"| {label} | " + " | ".join(common.KINDS) + " |", "|---" * (len(common.KINDS) + 1) + "|"]
        for level in levels:
            cells = []
            for kind in common.KINDS:
                mean, low, high = summary[(task, level, kind)]
                cells.append(f"{mean:.2f} [{low:.2f}, {high:.2f}]")
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
    for task, rows in timings.items():
        lines += ["", f"One training step ({task} at its largest size, batch {args.batch}; "
                  "forward + backward, 7 runs):", ""] + common.cost_table(rows)
    return lines


def plot(path: pathlib.Path, args, results, summary) -> None:
    fig, axes = common.figure(3, (15, 4))
    for ax, (task, levels, label, chance) in zip(axes, (
            ("copy", args.delays, f"delay (steps; L={args.length}, S={args.slots})", 1 / args.symbols),
            ("recall", args.pairs, f"key-value pairs (S={args.slots})", 1 / args.values))):
        for kind, style in zip(common.KINDS, ("o-", "s-", "^-")):
            stats = [summary[(task, level, kind)] for level in levels]
            mean = [s[0] for s in stats]
            err = [[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]]
            ax.errorbar(levels, mean, yerr=err, fmt=style, capsize=3, label=common.label(kind))
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(task)
        ax.legend(fontsize=8)
    ax, level = axes[2], max(args.pairs)
    for kind, color in zip(common.KINDS, ("C0", "C1", "C2")):
        for r in results:
            if (r["task"], r["level"], r["kind"]) == ("recall", level, kind) and r["curve"]:
                steps, scores = zip(*r["curve"])
                ax.plot(steps, scores, "-", color=color, alpha=0.8,
                        label=common.label(kind) if r["seed"] == 0 else None)
    ax.axhline(1 / args.values, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"recall, {level} pairs: learning curves (one line per seed)")
    ax.legend(fontsize=8)
    fig.suptitle(f"Equal parameter counts, {args.copy_steps} (copy) / {args.recall_steps} (recall) steps, "
                 f"{args.seeds} seeds (min-max bars)", fontsize=10)
    common.save_figure(fig, path)


def main(argv=None) -> Dict:
    parser = common.argument_parser(__doc__, seeds=3, lr=1e-2, hidden=64)
    parser.add_argument("--copy-steps", type=int, default=1500)
    parser.add_argument("--recall-steps", type=int, default=4000, help="one target per example: more steps")
    parser.add_argument("--curve-every", type=int, default=250, help="steps between learning-curve points")
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--length", type=int, default=5)
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 8, 16, 32])
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--values", type=int, default=8)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--eval-batches", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.copy_steps = args.recall_steps = 30
        args.curve_every = 10
        args.seeds, args.hidden, args.slots, args.width = 1, 16, 4, 8
        args.delays, args.pairs, args.eval_batches, args.length = [0, 4], [2, 3], 2, 3
    args.out.mkdir(parents=True, exist_ok=True)

    results, timings, provenance = common.reused(args, "results")
    start = time.perf_counter()
    for task, levels in (("copy", args.delays), ("recall", args.pairs)):
        for level in levels:
            for kind in args.kinds:
                for seed in range(args.seeds):
                    results.append(run_one(args, task, level, kind, seed))
                    r = results[-1]
                    print(f"{task:6s} {level:3d} {kind:5s} seed {seed}: accuracy {r['accuracy']:.3f} "
                          f"loss {r['loss']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    if timings is None:
        timings = {"copy": costs(args, "copy", max(args.delays)), "recall": costs(args, "recall", max(args.pairs))}
    summary = summarise(results)
    plot(args.out / "memory_tasks.png", args, results, summary)
    report = {"results": results, "timings": timings}
    if provenance is not None:
        report["reused"] = provenance
    return common.write_report(args, "memory_tasks", report,
                               markdown(args, results, timings, summary) + common.reuse_note(provenance))


if __name__ == "__main__":
    sys.exit(main() and 0)

"""Character-level language model on real text that ships with Python: torch.nn.LSTM
against the WM-LSTM (FIFO and gated) at equal parameter counts, on CPU.

The text is the Python Language Reference's topic pages that CPython installs as
``pydoc_data.topics`` (~465k characters of English prose and code, no download).
The last topics in sorted order, about a tenth of the characters, are held out. Training takes random windows
of ``--window`` characters; held-out bits per character are measured after every
epoch (one epoch = as many windows as the training text has characters) over
all non-overlapping held-out windows, each starting from a zero state.
Writes ``char_lm.json``, ``char_lm.md`` and ``char_lm.png`` to ``--out``.

    python examples/char_lm.py --out docs/results           # the full run (~15 min on 2 cores)
    python examples/char_lm.py --quick --out /tmp/lm        # a smoke run (seconds)
    python examples/char_lm.py --out new --kinds gated --reuse docs/results/char_lm.json  # rerun one model
"""
from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

import common


def corpus(held_out_fraction: float = 0.1) -> Tuple[str, str]:
    """(training text, held-out text): the topics in sorted order, the last ones
    (about ``held_out_fraction`` of the characters, whole topics) held out."""
    from pydoc_data.topics import topics

    pages = [topics[name] for name in sorted(topics)]
    total, kept = sum(len(p) for p in pages), 0
    for split, page in enumerate(pages):
        if kept >= (1 - held_out_fraction) * total:
            break
        kept += len(page)
    return "\n".join(pages[:split]), "\n".join(pages[split:])


class Vocabulary:
    """Characters of the training text, id 0 for any character it lacks."""

    def __init__(self, text: str) -> None:
        self.chars = ["\0"] + sorted(set(text))
        self.ids = {c: k for k, c in enumerate(self.chars)}

    def encode(self, text: str) -> Tensor:
        return torch.tensor([self.ids.get(c, 0) for c in text], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.chars)


class CharModel(nn.Module):
    """Embedding, then a ``common.SequenceModel`` predicting the next character.
    ``forward(ids [T, B]) -> logits [T, B, V]``."""

    def __init__(self, kind: str, vocabulary: int, embedding: int, hidden: int, slots: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, embedding)
        self.core = common.build(kind, embedding, vocabulary, hidden, slots, width)

    def forward(self, ids: Tensor):
        return self.core(self.embed(ids))


def random_windows(data: Tensor, window: int, batch: int, generator: torch.Generator):
    """(inputs [window, B], targets [window, B], mask all True) from random offsets."""
    starts = torch.randint(0, len(data) - window - 1, (batch,), generator=generator)
    rows = torch.stack([data[s:s + window + 1] for s in starts.tolist()], dim=1)
    return rows[:-1], rows[1:], torch.ones(window, batch, dtype=torch.bool)


@torch.no_grad()
def bits_per_character(model: nn.Module, data: Tensor, window: int, batch: int) -> float:
    """Mean -log2 p(next character) over every non-overlapping window of ``data``."""
    model.eval()
    count = (len(data) - 1) // window
    rows = torch.stack([data[k * window:(k + 1) * window + 1] for k in range(count)], dim=1)  # [window+1, N]
    nats, total = 0.0, 0
    for first in range(0, count, batch):
        chunk = rows[:, first:first + batch]
        logits = model(chunk[:-1])[0]
        nats += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[1:].reshape(-1),
                                            reduction="sum").item()
        total += chunk[1:].numel()
    model.train()
    return nats / total / math.log(2)


def run(args, kind: str, seed: int, train_ids: Tensor, held_ids: Tensor, vocabulary: int) -> Dict:
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(10_000 + seed)
    model = CharModel(kind, vocabulary, args.embedding, args.hidden, args.slots, args.width)
    steps_per_epoch = max(1, len(train_ids) // (args.window * args.batch))
    curve: List[Dict[str, float]] = []
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    elapsed = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        losses = []
        for _ in range(steps_per_epoch):
            x, targets, mask = random_windows(train_ids, args.window, args.batch, data)
            loss = common.masked_cross_entropy(model(x)[0], targets, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        epoch_seconds = time.perf_counter() - start
        elapsed += epoch_seconds
        held = bits_per_character(model, held_ids, args.window, 4 * args.batch)
        curve.append({"epoch": epoch, "train_bpc": sum(losses) / len(losses) / math.log(2),
                      "held_out_bpc": held, "epoch_seconds": epoch_seconds})
        print(f"{kind:5s} seed {seed} epoch {epoch:2d}: train {curve[-1]['train_bpc']:.3f} "
              f"held-out {held:.3f} bits/char ({epoch_seconds:.1f} s)", flush=True)
    return {"kind": kind, "seed": seed, "params": common.parameter_count(model),
            "steps_per_epoch": steps_per_epoch, "curve": curve, "train_seconds": elapsed}


def markdown(args, runs: List[Dict], timings: Dict, sizes: Dict) -> List[str]:
    lines = [f"Machine: {common.machine()}. Text: pydoc_data.topics, {sizes['train']:,} training / "
             f"{sizes['held_out']:,} held-out characters, {sizes['vocabulary']} symbols. Windows of "
             f"{args.window}, batch {args.batch}, {args.epochs} epochs of {runs[0]['steps_per_epoch']} steps, "
             f"seeds {list(range(args.seeds))}.", "",
             "| model | parameters | held-out bits/char (last epoch) | best epoch | seconds per epoch |",
             "|---|---|---|---|---|"]
    for kind in common.KINDS:
        mine = [r for r in runs if r["kind"] == kind]
        last = [r["curve"][-1]["held_out_bpc"] for r in mine]
        best = [min(c["held_out_bpc"] for c in r["curve"]) for r in mine]
        seconds = [c["epoch_seconds"] for r in mine for c in r["curve"]]
        lines.append(f"| {common.label(kind)} | {mine[0]['params']:,} | {sum(last) / len(last):.3f} "
                     f"[{min(last):.3f}, {max(last):.3f}] | {sum(best) / len(best):.3f} | "
                     f"{sum(seconds) / len(seconds):.1f} |")
    lines += ["", f"One training step (window {args.window}, batch {args.batch}; forward + backward, "
              "7 runs):", ""] + common.cost_table(timings)
    return lines


def plot(path: pathlib.Path, runs: List[Dict]) -> None:
    fig, ax = common.figure(1, (6, 4))
    colors = dict(zip(common.KINDS, ("C0", "C1", "C2")))
    for r in runs:
        name = common.label(r["kind"])
        epochs = [c["epoch"] for c in r["curve"]]
        ax.plot(epochs, [c["held_out_bpc"] for c in r["curve"]], "-", color=colors[r["kind"]],
                label=f"{name} held-out" if r["seed"] == 0 else None)
        ax.plot(epochs, [c["train_bpc"] for c in r["curve"]], ":", color=colors[r["kind"]],
                label=f"{name} train" if r["seed"] == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title("Character LM on pydoc_data.topics (equal parameters)", fontsize=10)
    ax.legend(fontsize=7)
    common.save_figure(fig, path)


def main(argv=None) -> Dict:
    parser = common.argument_parser(__doc__.splitlines()[0], seeds=2, lr=3e-3, hidden=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--embedding", type=int, default=32)
    args = parser.parse_args(argv)
    train_text, held_text = corpus()
    if args.quick:
        args.epochs, args.seeds, args.window, args.hidden, args.slots, args.width = 2, 1, 32, 32, 4, 8
        train_text, held_text = train_text[:20_000], held_text[:4_000]
    args.out.mkdir(parents=True, exist_ok=True)
    vocabulary = Vocabulary(train_text)
    train_ids, held_ids = vocabulary.encode(train_text), vocabulary.encode(held_text)

    runs, timings, provenance = common.reused(args, "runs")
    runs += [run(args, kind, seed, train_ids, held_ids, len(vocabulary))
             for kind in args.kinds for seed in range(args.seeds)]
    runs.sort(key=lambda r: common.KINDS.index(r["kind"]))
    if timings is None:
        timings = common.compare_costs(
            lambda kind: CharModel(kind, len(vocabulary), args.embedding, args.hidden, args.slots, args.width),
            *random_windows(train_ids, args.window, args.batch, torch.Generator().manual_seed(0)))

    sizes = {"train": len(train_text), "held_out": len(held_text), "vocabulary": len(vocabulary)}
    plot(args.out / "char_lm.png", runs)
    report = {"sizes": sizes, "runs": runs, "timings": timings}
    if provenance is not None:
        report["reused"] = provenance
    return common.write_report(args, "char_lm", report,
                               markdown(args, runs, timings, sizes) + common.reuse_note(provenance))


if __name__ == "__main__":
    sys.exit(main() and 0)

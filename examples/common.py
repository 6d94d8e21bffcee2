"""What the examples share: the models compared (torch.nn.LSTM and the WM-LSTM,
FIFO or gated, at equal parameter counts), a training loop, and the timing of a
training step on each backend.

Run from the repository (``python examples/memory_tasks.py``): the examples
import this module as a sibling file.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import wmkernels

KINDS = ("lstm", "fifo", "gated")  # torch.nn.LSTM, WMLSTM write_mode="fifo", WMLSTM write_mode="gated"


class SequenceModel(nn.Module):
    """A recurrent layer and a linear read-out at every step.

    ``kind`` "lstm": ``torch.nn.LSTM(input_size, hidden)``, read-out from ``h``;
    "fifo" / "gated": ``wmkernels.nn.WMLSTM(input_size, hidden, slots, width,
    write_mode=kind)``, read-out from ``[h, r]`` (hidden state and what was read).
    ``forward(x [T, B, input_size]) -> logits [T, B, classes]``.
    """

    def __init__(self, kind: str, input_size: int, classes: int, hidden: int,
                 slots: int = 0, width: int = 0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "lstm":
            self.rnn = nn.LSTM(input_size, hidden)
            features = hidden
        else:
            self.rnn = wmkernels.nn.WMLSTM(input_size, hidden, slots, width, write_mode=kind)
            features = hidden + width
        self.head = nn.Linear(features, classes)

    def forward(self, x: Tensor, state=None) -> Tuple[Tensor, object]:
        """x [T, B, I] -> (logits [T, B, classes], final recurrent state)."""
        y, state = self.rnn(x, state)
        return self.head(y), state


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(kind: str, input_size: int, classes: int, hidden: int, slots: int, width: int) -> SequenceModel:
    """The WM-LSTM of ``hidden``/``slots``/``width`` for "fifo"/"gated"; for "lstm",
    the torch.nn.LSTM whose hidden size gives the parameter count closest to the
    gated WM-LSTM's (the larger of the two write modes), read-out included."""
    if kind != "lstm":
        return SequenceModel(kind, input_size, classes, hidden, slots, width)
    target = parameter_count(SequenceModel("gated", input_size, classes, hidden, slots, width))
    best = min(range(1, 8 * hidden),
               key=lambda h: abs(4 * h * (input_size + h + 2) + (h + 1) * classes - target))
    return SequenceModel("lstm", input_size, classes, best)


def train(model: nn.Module, batch: Callable[[], Tuple[Tensor, Tensor, Tensor]], steps: int,
          lr: float, on_step: Optional[Callable[[int, float], None]] = None) -> Dict[str, float]:
    """Adam with gradient clipping on ``batch() -> (x [T, B, I], targets [T, B], mask [T, B])``
    (cross-entropy over the masked steps). Returns the last loss and seconds per step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start, loss_value = time.perf_counter(), float("nan")
    for step in range(1, steps + 1):
        x, targets, mask = batch()
        loss = masked_cross_entropy(model(x)[0], targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        if on_step is not None:
            on_step(step, loss_value)
    return {"loss": loss_value, "seconds_per_step": (time.perf_counter() - start) / max(steps, 1)}


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of logits [T, B, K] against targets [T, B] where mask [T, B] is True."""
    return nn.functional.cross_entropy(logits[mask], targets[mask])


@torch.no_grad()
def accuracy(model: nn.Module, batch: Callable[[], Tuple[Tensor, Tensor, Tensor]], batches: int) -> float:
    """Fraction of masked steps whose arg-max prediction is the target, over fresh batches."""
    model.eval()
    right = total = 0
    for _ in range(batches):
        x, targets, mask = batch()
        predicted = model(x)[0].argmax(-1)
        right += (predicted[mask] == targets[mask]).sum().item()
        total += mask.sum().item()
    model.train()
    return right / total


def step_cost(model: nn.Module, x: Tensor, targets: Tensor, mask: Tensor,
              backend: str = "auto", repeats: int = 7) -> Dict[str, float]:
    """One training step (forward, loss, backward; no optimizer) of ``model`` on
    one batch, its ops on ``backend``: median and min seconds over ``repeats``
    after a warm-up, and the bytes autograd saves for backward (parameters,
    input and outputs left out)."""
    from wmkernels.testing import saved_bytes

    times: List[float] = []
    with wmkernels.use_backend(backend):
        saved = saved_bytes(lambda: model(x)[0], [x, *model.parameters()])
        for k in range(repeats + 2):
            start = time.perf_counter()
            loss = masked_cross_entropy(model(x)[0], targets, mask)
            loss.backward()
            if k >= 2:
                times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return {"median_s": statistics.median(times), "min_s": min(times), "saved_bytes": saved}


def compare_costs(make: Callable[[str], nn.Module], x: Tensor, targets: Tensor, mask: Tensor) -> Dict[str, Dict]:
    """``step_cost`` of the WM-LSTM (``make("fifo")``, ``make("gated")``) on its
    kernels (auto) and on the reference backend, and of ``make("lstm")``."""
    rows = {}
    for kind in ("fifo", "gated"):
        model = make(kind)
        for backend in ("auto", "reference"):
            rows[f"WMLSTM {kind} ({backend})"] = step_cost(model, x, targets, mask, backend)
    rows["torch.nn.LSTM (equal params)"] = step_cost(make("lstm"), x, targets, mask)
    return rows


def cost_table(rows: Dict[str, Dict]) -> List[str]:
    """Markdown lines of ``compare_costs``' rows."""
    lines = ["| model | median ms | min ms | saved for backward |", "|---|---|---|---|"]
    for name, c in rows.items():
        lines.append(f"| {name} | {c['median_s'] * 1e3:.1f} | {c['min_s'] * 1e3:.1f} | "
                     f"{c['saved_bytes'] / 2 ** 20:.2f} MiB |")
    return lines


def machine() -> str:
    """The CPU and thread count, for result headers."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def label(kind: str) -> str:
    """The name of a model kind in tables and figures."""
    return "torch.nn.LSTM" if kind == "lstm" else f"WM-LSTM {kind}"


def argument_parser(description: str, seeds: int, lr: float, hidden: int) -> argparse.ArgumentParser:
    """The options every example takes: --out, --quick, --seeds, --batch, --lr and
    the WM-LSTM's --hidden, --slots, --width (the LSTM is sized from them).
    ``description`` is the script's docstring, shown whole, as written."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the JSON, markdown and PNG")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--seeds", type=int, default=seeds, help="training runs per model (default %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=lr, help="Adam's learning rate (default %(default)s)")
    parser.add_argument("--hidden", type=int, default=hidden, help="the WM-LSTM's hidden size (default %(default)s)")
    parser.add_argument("--slots", type=int, default=16, help="the WM-LSTM's memory slots (default %(default)s)")
    parser.add_argument("--width", type=int, default=32, help="the WM-LSTM's slot width (default %(default)s)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="the models to train (default all); the others come from --reuse")
    parser.add_argument("--reuse", type=pathlib.Path, default=None,
                        help="an earlier report (JSON) of this example with the same options: "
                             "the runs of the models not in --kinds and the step timings are taken from it")
    return parser


# Options that do not change what a run computes, so a reused report may differ in them.
NOT_COMPARED = ("out", "kinds", "reuse")


def reused(args: argparse.Namespace, runs_key: str) -> Tuple[List[Dict], Optional[Dict], Optional[Dict]]:
    """(runs of the models not in ``args.kinds``, step timings, the earlier report's
    provenance) from ``args.reuse``, or ``([], None, None)`` without it. The
    earlier report must have the same options (``NOT_COMPARED`` aside) and
    hold every model left out of ``args.kinds``."""
    missing = [k for k in KINDS if k not in args.kinds]
    if args.reuse is None:
        if missing:
            raise SystemExit(f"--kinds leaves out {missing}: give --reuse with an earlier report holding them")
        return [], None, None
    old = json.loads(args.reuse.read_text())
    mine = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
            if k not in NOT_COMPARED}
    differ = {k: (v, old["args"].get(k)) for k, v in mine.items() if old["args"].get(k) != v}
    if differ:
        raise SystemExit(f"--reuse {args.reuse} was made with other options (now, then): {differ}")
    runs = [r for r in old[runs_key] if r["kind"] in missing]
    if {r["kind"] for r in runs} != set(missing):
        raise SystemExit(f"--reuse {args.reuse} lacks runs of {missing}")
    provenance = {"file": args.reuse.name, "machine": old["machine"], "kinds": missing}
    return runs, old["timings"], provenance


def reuse_note(provenance: Optional[Dict]) -> List[str]:
    """Markdown lines saying which rows and timings come from an earlier run."""
    if provenance is None:
        return []
    return ["", f"Rows of {', '.join(provenance['kinds'])} and the step timings are reused from the "
                f"earlier run in {provenance['file']} ({provenance['machine']}); "
                "the other rows were rerun for this report."]


def figure(columns: int, size: Tuple[float, float]):
    """(fig, axes) of one row of ``columns`` plots, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size)


def save_figure(fig, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(args: argparse.Namespace, name: str, report: Dict, markdown: List[str]) -> Dict:
    """Write ``<out>/<name>.json`` (the report, with the run's options and the
    machine) and ``<out>/<name>.md`` (the markdown lines), print the markdown,
    and return the report as written."""
    report = {"machine": machine(), "args": {k: str(v) if isinstance(v, pathlib.Path) else v
                                             for k, v in vars(args).items() if k not in ("kinds", "reuse")},
              **report}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    text = "\n".join(markdown) + "\n"
    (args.out / f"{name}.md").write_text(text)
    print(text)
    return report

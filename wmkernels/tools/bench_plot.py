"""Scaling curves for ``python -m wmkernels bench --plot out.png``.

Each axis (T, B, H, S) is swept around the bench sizes with the others held,
every point a full interleaved ``wmkernels.tools.bench`` run against its baselines;
the PNG has one panel per axis, forward+backward time against size, one line
per op and implementation, log-log. Needs matplotlib (``pip install matplotlib``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from wmkernels.tools import bench

# Factors applied to the bench sizes along each axis; S is swept over fixed values.
FACTORS = (0.25, 0.5, 1.0, 2.0)
SLOTS = (8, 32, 128)
# Which ops each axis exercises: S matters to the WM-LSTM only.
AXIS_OPS = {"T": ("lstm_sequence", "wm_lstm_sequence"), "B": ("lstm_sequence", "wm_lstm_sequence"),
            "H": ("lstm_sequence", "wm_lstm_sequence"), "S": ("wm_lstm_sequence",)}

Sweep = Dict[str, List[Tuple[int, List[bench.Result]]]]


def axis_values(axis: str, sizes: Dict[str, int]) -> List[int]:
    if axis == "S":
        return list(SLOTS)
    return sorted({max(1, int(round(sizes[axis] * f))) for f in FACTORS})


def groups_per_point(ops: Sequence[str]) -> int:
    """Timed groups of one sweep point: lstm_sequence one, the WM-LSTM two (fifo, gated)."""
    return ("lstm_sequence" in ops) + 2 * ("wm_lstm_sequence" in ops)


def sweep_points(sizes: Dict[str, int], axes: Sequence[str] = ("T", "B", "H", "S")) -> List[Tuple[str, int]]:
    """(axis, value) of every point of the sweep, in the order it runs."""
    return [(axis, value) for axis in axes for value in axis_values(axis, sizes)]


def sweep_groups(sizes: Dict[str, int], axes: Sequence[str] = ("T", "B", "H", "S")) -> int:
    """How many groups the whole sweep times (what its duration scales with)."""
    return sum(groups_per_point(AXIS_OPS[axis]) for axis, _ in sweep_points(sizes, axes))


def sweep(device, dtype: torch.dtype, repeat: int, sizes: Dict[str, int],
          axes: Sequence[str] = ("T", "B", "H", "S"), progress: bool = False,
          group_budget_s: Optional[float] = None) -> Sweep:
    """{axis: [(value, results at that value)]}, the other sizes held at ``sizes``;
    each group's rounds bounded by ``group_budget_s`` (``bench.run_benchmarks``)."""
    curves: Sweep = {axis: [] for axis in axes}
    points = sweep_points(sizes, axes)
    for number, (axis, value) in enumerate(points, 1):
        point = dict(sizes, **{axis: value})
        if axis == "H":
            point["I"] = value
        budget = None if group_budget_s is None else group_budget_s * groups_per_point(AXIS_OPS[axis])
        curves[axis].append((value, bench.run_benchmarks(
            device, dtype, repeat, point, AXIS_OPS[axis], progress=progress, budget_s=budget,
            label=f"[sweep {number}/{len(points)}: {axis}={value}] ")))
    return curves


def plot(curves: Sweep, path: str, title: str) -> None:
    """Write the curves as a PNG: one panel per axis, ms against size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.2), squeeze=False)
    for panel, (axis, points) in zip(panels[0], curves.items()):
        lines: Dict[str, Tuple[List[int], List[float]]] = {}
        for value, results in points:
            for r in results:
                if r.error:
                    continue
                xs, ys = lines.setdefault(f"{r.op} {r.impl}", ([], []))
                xs.append(value)
                ys.append(r.ms)
        for label, (xs, ys) in sorted(lines.items()):
            style = "--" if "reference" in label or "torch.nn" in label or "compile" in label else "-"
            panel.plot(xs, ys, style, marker="o", label=label)
        panel.set_xscale("log", base=2)
        panel.set_yscale("log")
        panel.set_xlabel(axis)
        panel.set_ylabel("forward+backward ms (median)")
        panel.grid(True, which="both", alpha=0.3)
        panel.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""What ``python -m wmkernels bench`` tells a user in words: what it will
measure and for how long (before), and what wmkernels gains them on this
machine (after), from the rows of ``wmkernels.tools.bench``."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from wmkernels.tools import bench
from wmkernels.backends import explain

OP_WORDS = {"lstm_cell": "one LSTMCell step", "lstm_sequence": "lstm_sequence (the LSTM layer)",
            "wm_lstm_sequence": "wm_lstm_sequence fifo and gated (the WM-LSTM)",
            bench.INFERENCE_OP: "lstm_sequence under torch.no_grad (inference: nothing saved)"}


def plan_text(ops_wanted: Sequence[str], sizes: Dict[str, int], repeat: int, budget_s: Optional[float]) -> str:
    """One paragraph, printed first: what is timed, against what, and for how long."""
    what = "; ".join(OP_WORDS[op] for op in ops_wanted if op in OP_WORDS)
    sizes_text = " ".join(f"{k}={v}" for k, v in sizes.items())
    against = ("torch.nn.LSTM / LSTMCell for the LSTM ops, the plain-PyTorch reference for the WM-LSTM")
    length = (f"about {budget_s:.0f} s in all (--budget-s), " if budget_s else "no time bound, ")
    return (f"measuring forward+backward (and the forward alone) of {what} at {sizes_text}, on every backend "
            f"that runs here, against {against}; interleaved rounds: {bench.rounds_text(repeat, budget_s)}; "
            f"{length}plus set-up and warm-up")


def _ratio_words(ratio: float, than: str) -> str:
    if ratio >= 1.05:
        return f"{ratio:.2f}x slower than {than}"
    if ratio <= 1 / 1.05:
        return f"{1 / ratio:.2f}x faster than {than}"
    return f"as fast as {than} (within 5%)"


def _row(results: List[bench.Result], op: str, impl: Optional[str]) -> Optional[bench.Result]:
    return next((r for r in results if r.op == op and r.impl == impl and not r.error and r.ratio), None)


def gain_sentence(results: List[bench.Result], device, dtype: torch.dtype, sizes: Dict[str, int]) -> str:
    """One plain sentence: what wmkernels' automatic choice gives on this machine,
    training against torch.nn.LSTM, inference (where it is routed), the WM-LSTM
    against its reference."""
    machine = bench.machine_description(device)
    parts = []
    lstm_sizes = {k: sizes[k] for k in "TBIH"}
    training = explain("lstm_sequence", device=device, dtype=dtype, **lstm_sizes).backend
    row = _row(results, "lstm_sequence", training)
    if row is not None:
        parts.append(f"training an LSTM (wmkernels.nn.LSTM, auto -> {training}) is "
                     f"{_ratio_words(row.ratio, 'torch.nn.LSTM')}")
    if any(r.op == "lstm_sequence" for r in results):
        inference = explain("lstm_sequence", device=device, dtype=dtype, inference=True, **lstm_sizes).backend
        if inference == "aten":
            parts.append("inference is the same as torch (routed to torch's own LSTM)")
    wm = explain("wm_lstm_sequence", device=device, dtype=dtype, **sizes).backend
    for mode in ("fifo", "gated"):
        row = _row(results, f"wm_lstm_sequence[{mode}]", wm)
        if row is not None and wm != "reference":
            parts.append(f"the {mode} WM-LSTM (auto -> {wm}) trains "
                         f"{_ratio_words(row.ratio, 'its plain-PyTorch reference')}")
    if not parts:
        return "On this machine no wmkernels row could be compared with its baseline (see the table)."
    noisy = any(r.noisy for r in results)
    return (f"On this machine ({machine.get('gpu', machine['cpu'])}, {machine['threads']} threads, "
            f"{str(dtype).replace('torch.', '')}): " + "; ".join(parts) + "."
            + (" Some rows are NOISY (a busy machine): rerun for firmer ratios." if noisy else ""))


def sweep_text(sizes: Dict[str, int], seconds_per_group: float) -> str:
    """The flag for the full sweep and how long it would take at this run's pace."""
    from wmkernels.tools import bench_plot

    groups = bench_plot.sweep_groups(sizes)
    minutes = groups * seconds_per_group / 60
    return (f"the full sweep: --plot out.png times T, B, H and S around these sizes ({groups} groups, "
            f"about {minutes:.0f} min at this run's {seconds_per_group:.0f} s a group) and draws the curves")

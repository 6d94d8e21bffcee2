"""Interleaved wall-clock timing: the measuring rule of every tool here
(ratios of medians against a baseline timed in the same rounds, with the
spread), shared by ``bench`` and the floor model's rate probes."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch


@dataclass
class Timing:
    """The rounds of one workload: median, fastest and interquartile range (ms)."""

    median: float
    min: float
    iqr: float
    rounds: int = 0  # how many timed rounds

    @classmethod
    def of(cls, rounds: List[float]) -> "Timing":
        if not rounds:
            return cls(math.nan, math.nan, math.nan)
        if len(rounds) < 2:
            return cls(rounds[0], rounds[0], 0.0, 1)
        q1, _, q3 = statistics.quantiles(rounds, n=4, method="inclusive")
        return cls(statistics.median(rounds), min(rounds), q3 - q1, len(rounds))


def _sync(device) -> Callable[[], None]:
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def time_ms(run: Callable[[], None], device, repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` in milliseconds."""
    return time_interleaved([run], device, repeat, warmup)[0].median


def time_interleaved(runs: List[Callable[[], None]], device, repeat: int,
                     warmup: int = 1, deadline: Optional[float] = None) -> List[Timing]:
    """Wall time in milliseconds of each of ``runs`` (median, fastest, IQR), timed
    in ``repeat`` rounds that run each once in turn. A run that raises gets NaN
    and leaves the rounds. Past ``deadline`` (``time.perf_counter()``) no
    further round starts, once one round was timed."""
    sync = _sync(device)
    times: List[List[float]] = [[] for _ in runs]
    alive = [True] * len(runs)
    for round_ in range(warmup + repeat):
        if deadline is not None and round_ > warmup and time.perf_counter() > deadline:
            break
        for k, run in enumerate(runs):
            if not alive[k]:
                continue
            try:
                sync()
                start = time.perf_counter()
                run()
                sync()
            except Exception:  # reported by the caller, which reruns it for the message
                alive[k] = False
                continue
            if round_ >= warmup:
                times[k].append((time.perf_counter() - start) * 1e3)
    return [Timing.of(t) if alive[k] else Timing.of([]) for k, t in enumerate(times)]


def rotated_rounds(runs: List[Callable[[], None]], rounds: int, warmup: int = 1) -> List[List[float]]:
    """Milliseconds of each of ``runs`` per round (CPU): ``warmup`` untimed
    rounds, then ``rounds`` timed ones, each running every workload once in
    an order rotated by one per round (no workload always runs first or
    after the same one)."""
    times: List[List[float]] = [[] for _ in runs]
    for round_ in range(warmup + rounds):
        for k in [(j + round_) % len(runs) for j in range(len(runs))]:
            start = time.perf_counter()
            runs[k]()
            if round_ >= warmup:
                times[k].append((time.perf_counter() - start) * 1e3)
    return times


@dataclass
class Ratio:
    """Per-round ratios t / t_baseline: median, min, max and interquartile range."""

    median: float
    min: float
    max: float
    iqr: float

    @classmethod
    def of(cls, times: List[float], baseline: List[float]) -> "Ratio":
        ratios = sorted(a / b for a, b in zip(times, baseline))
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
        return cls(statistics.median(ratios), ratios[0], ratios[-1], q3 - q1)

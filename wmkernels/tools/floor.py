"""The floor under a recurrent op on a GPU, and how far a measured time is from it.

A persistent LSTM step cannot beat the slowest of what it must do between
two grid barriers, plus the barrier itself (the WM-LSTM's likewise, with its
memory work: ``wm_step_traffic``):

- HBM: what each step must read or write once (the input projections of the
  step, the states and gate activations kept for backward, the output);
- L2: what the programs exchange (every program of a batch tile reads all of
  h_{t-1} forward, all of dg_{t+1} backward) and, when a program does not keep
  its slice of w_hh resident, the weights streamed again each step;
- shared memory: the resident weight slice each program reads each step
  (``smem_bytes``, per program; reported, not in the floor: no rate is
  measured for it);
- the grid barrier: one per step in each direction.

So ``floor = T · (barrier + max(HBM bytes / HBM rate, L2 bytes / L2 rate))``
per direction, plus the non-recurrent matrix products (input projection
forward; dx, dW_ih, dW_hh backward) at the measured matrix-product peak. The
rates are measured in the same process (``measure_rates``), never taken from
a data sheet. It is a model: it leaves out the latency of the dependent loads
inside a step, so a measured time of 1-2x the floor is near what the
hardware allows.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch

from wmkernels.tools.timing import time_interleaved


@dataclass
class Rates:
    """What the device does, measured here: bytes/s from HBM and from L2,
    seconds per grid barrier (with ``programs`` programs), matrix FLOP/s."""

    hbm_bytes_s: float
    l2_bytes_s: float
    barrier_s: float
    programs: int
    matmul_flop_s: float

    def describe(self) -> Dict[str, object]:
        return {"hbm_GB_s": round(self.hbm_bytes_s / 1e9, 1), "l2_GB_s": round(self.l2_bytes_s / 1e9, 1),
                "barrier_us": round(self.barrier_s * 1e6, 3),
                "barrier_programs": self.programs, "matmul_TFLOP_s": round(self.matmul_flop_s / 1e12, 1)}


@dataclass
class StepTraffic:
    """Bytes one step moves (per direction; ``smem_bytes`` per program) and its barriers."""

    hbm_bytes: float
    l2_bytes: float
    barriers: int
    smem_bytes: float = 0.0


@dataclass
class Floor:
    """The model's floor of one lstm_sequence forward and forward+backward (ms), and its parts."""

    forward_ms: float
    total_ms: float
    forward_step: StepTraffic
    backward_step: StepTraffic
    matmul_ms: float
    rates: Rates

    def describe(self) -> Dict[str, object]:
        return {"forward_ms": self.forward_ms, "total_ms": self.total_ms, "matmul_ms": self.matmul_ms,
                "forward_step": asdict(self.forward_step), "backward_step": asdict(self.backward_step),
                "rates": self.rates.describe()}


def lstm_step_traffic(B: int, H: int, dtype: torch.dtype, programs_per_tile: int, batch_tiles: int,
                      resident: bool) -> tuple:
    """(forward, backward) ``StepTraffic`` of one persistent lstm_sequence step:
    ``programs_per_tile`` hidden-unit programs per batch tile, w_hh kept
    ``resident`` or streamed. hs, cs, act are kept in float32; dg is kept, and
    h exchanged, in the weights' dtype; every program of a batch tile reads all
    of the exchanged h (forward) or dg (backward)."""
    e = torch.finfo(dtype).bits // 8
    f32 = 4
    forward_hbm = B * 4 * H * e + B * 4 * H * f32 + 2 * B * H * f32 + B * H * e  # xp_t in; act, h, c, y out
    backward_hbm = B * 4 * H * f32 + 2 * B * H * f32 + B * H * e + B * 4 * H * e  # act, c_t, c_{t-1}, dy in; dg out
    weights = 0 if resident else batch_tiles * 4 * H * H * e
    slice_smem = 4 * H * H * e / programs_per_tile if resident else 0.0
    forward_l2 = programs_per_tile * B * H * e + weights  # h_{t-1} gathered by every program
    backward_l2 = programs_per_tile * B * 4 * H * e + weights  # dg_{t+1} gathered by every program
    return (StepTraffic(forward_hbm, forward_l2, 1, slice_smem), StepTraffic(backward_hbm, backward_l2, 1, slice_smem))


def lstm_matmul_flops(T: int, B: int, I: int, H: int) -> tuple:
    """(forward, backward) FLOPs of the matrix products outside the time loop."""
    projection = 2 * T * B * 4 * H * I
    return projection, 2 * projection + 2 * T * B * 4 * H * H


def _floor(T: int, forward: StepTraffic, backward: StepTraffic, matmul_flops: tuple, rates: Rates) -> Floor:
    """T steps each way at the slower of their memory levels plus their barriers,
    and the (forward, backward) matrix-product FLOPs at the measured peak."""
    def step_s(traffic: StepTraffic) -> float:
        return traffic.barriers * rates.barrier_s + max(traffic.hbm_bytes / rates.hbm_bytes_s,
                                                traffic.l2_bytes / rates.l2_bytes_s)

    mm_forward, mm_backward = (f / rates.matmul_flop_s for f in matmul_flops)
    forward_s = T * step_s(forward) + mm_forward
    total_s = forward_s + T * step_s(backward) + mm_backward
    return Floor(forward_s * 1e3, total_s * 1e3, forward, backward, (mm_forward + mm_backward) * 1e3, rates)


def lstm_floor(T: int, B: int, I: int, H: int, dtype: torch.dtype, rates: Rates, programs_per_tile: int,
               batch_tiles: int, resident: bool) -> Floor:
    """The floor of lstm_sequence at these sizes on a persistent schedule."""
    forward, backward = lstm_step_traffic(B, H, dtype, programs_per_tile, batch_tiles, resident)
    return _floor(T, forward, backward, lstm_matmul_flops(T, B, I, H), rates)


def wm_step_traffic(B: int, H: int, S: int, D: int, dtype: torch.dtype, gated: bool, programs_per_tile: int,
                    batch_tiles: int, resident_forward: bool = False, resident_backward: bool = False) -> tuple:
    """(forward, backward) ``StepTraffic`` of one step of wm_lstm_sequence on
    the split grid (``wmkernels.wm_lstm.wm_lstm_sequence_split_triton``): per-step vectors kept in
    float32 (dg in the products' dtype); every program of a batch tile reads all
    of h_{t-1} forward and of dg_{t+1} backward (both exchanged in the weights'
    dtype), streams its slices of the weights (but w_hh and w_rh forward where
    ``resident_forward``, w_hh backward where ``resident_backward``: read from
    shared memory instead; resident forward, every program also puts r_t in
    the exchange and gathers it), and
    does the read (twice over the memory backward), the gated write and the
    gated segment recompute itself; fp32 atomics add each program's shares
    (q, v's and e's pre-activations; dr). The memory itself stays in L2."""
    e, f32, P = torch.finfo(dtype).bits // 8, 4, programs_per_tile
    writes = 2 if gated else 1  # v (and e) per row
    memory = B * S * D * f32
    # xp_t in; act, h, c, q, r, attn, v (e) out; y (H + D) out
    forward_hbm = B * (4 * H * e + 4 * H * f32 + 2 * H * f32 + 2 * D * f32 + S * f32 + writes * D * f32
                       + (H + D) * e)
    # act, c_t, c_{t-1}, q, attn, v (e) in; dy in; dg, dq, dpv (dpe) out
    backward_hbm = B * (4 * H * f32 + 2 * H * f32 + D * f32 + S * f32 + writes * D * f32 + (H + D) * e
                        + 4 * H * e + (1 + writes) * D * f32)
    hidden_products = batch_tiles * (1 + writes) * D * H * e  # w_q, w_v (w_e), streamed both ways
    w_hh, w_rh = batch_tiles * 4 * H * H * e, batch_tiles * 4 * H * D * e
    forward_weights = hidden_products + (0 if resident_forward else w_hh + w_rh)
    backward_weights = hidden_products + w_rh + (0 if resident_backward else w_hh)
    shares = P * B * (1 + writes) * D * f32
    # resident: r_t in the exchange (every program writes it, and gathers it with h); else read in fp32
    r_input = P * B * D * (2 * e if resident_forward else f32)
    # gated: each program reads M_t and writes M_{t+1}; backward also the gradient in and out, M_t, and
    # the recompute of the segment (a read and a write of one memory per step)
    forward_l2 = P * B * H * e + r_input + forward_weights + shares + P * memory * (3 if gated else 1)
    backward_l2 = (P * B * 4 * H * e + backward_weights + P * B * D * f32
                   + P * memory * (2 + (5 if gated else 0)) + (0 if gated else 2 * memory))
    forward_smem = (w_hh + w_rh) / (batch_tiles * P) if resident_forward else 0.0
    backward_smem = w_hh / (batch_tiles * P) if resident_backward else 0.0
    return (StepTraffic(forward_hbm, forward_l2, 1, forward_smem),
            StepTraffic(backward_hbm, backward_l2, 1, backward_smem))


def wm_matmul_flops(T: int, B: int, I: int, H: int, D: int, gated: bool) -> tuple:
    """(forward, backward) FLOPs of wm_lstm_sequence's matrix products outside
    the time loop: the input projection; dx, dW_ih, dW_hh, dW_rh, dW_q, dW_v (dW_e)."""
    projection = 2 * T * B * 4 * H * I
    return projection, 2 * projection + 2 * T * B * (4 * H * (H + D) + (3 if gated else 2) * D * H)


def wm_floor(T: int, B: int, I: int, H: int, S: int, D: int, dtype: torch.dtype, gated: bool, rates: Rates,
             programs_per_tile: int, batch_tiles: int, resident_forward: bool = False,
             resident_backward: bool = False) -> Floor:
    """The floor of wm_lstm_sequence at these sizes on the split grid's persistent schedule."""
    forward, backward = wm_step_traffic(B, H, S, D, dtype, gated, programs_per_tile, batch_tiles,
                                        resident_forward, resident_backward)
    return _floor(T, forward, backward, wm_matmul_flops(T, B, I, H, D, gated), rates)


def _seconds(run, device, repeat: int = 5) -> float:
    """Fastest of ``repeat`` timed calls (after one untimed), in seconds; a call that fails raises."""
    fastest = time_interleaved([run], device, repeat)[0].min
    if math.isnan(fastest):
        run()  # raises again, for the message
    return fastest / 1e3


def measure_rates(device, dtype: torch.dtype, programs: int) -> Rates:
    """Measure the device's rates in this process (CUDA and Triton only):
    HBM from a 256 MiB copy, L2 and the grid barrier from Triton probes
    (``wmkernels.tools.probes``), matrix FLOP/s from a 4096³ product in ``dtype``."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"measure_rates: device must be a CUDA device, got {device}")
    from wmkernels.tools import probes

    big = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device)  # far past any L2
    hbm = 2 * big.numel() / _seconds(lambda: big.clone(), device)
    n = 4096
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    flop_s = 2 * n ** 3 / _seconds(lambda: torch.mm(a, b), device)
    barrier = probes.barrier_seconds(device, programs, _seconds)
    return Rates(hbm, probes.l2_read_bytes_per_s(device, _seconds), barrier, programs, flop_s)


_MEASURED: Dict[tuple, Rates] = {}


def _persistent_plan(device, dtype: torch.dtype, plan_it):
    """The plan ``plan_it(like)`` makes under the persistent schedule, or None where it falls back."""
    from wmkernels.triton import schedule  # Triton is optional: imported where a GPU floor is asked for

    like = torch.empty(0, device=device, dtype=dtype)
    with schedule.using("persistent"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fall-back warning: reported as None
        plan = plan_it(like)
    return plan if plan.kind == "persistent" else None


def _rates(device, dtype: torch.dtype, programs: int) -> Rates:
    key = (str(device), dtype, programs)
    if key not in _MEASURED:
        _MEASURED[key] = measure_rates(device, dtype, programs)
    return _MEASURED[key]


def lstm_floor_on(device, dtype: torch.dtype, T: int, B: int, I: int, H: int) -> Optional[Floor]:
    """The floor of lstm_sequence at these sizes on this GPU, for the persistent
    schedule as the triton backend plans it here (rates measured once per
    device, dtype and grid); None where that schedule cannot run."""
    from wmkernels.triton import schedule
    from wmkernels.lstm.lstm_sequence_triton import launch_config

    plan = _persistent_plan(device, dtype, lambda like: schedule.plan(B, H, like, launch_config))
    if plan is None:
        return None
    rates = _rates(device, dtype, plan.grid[0] * plan.grid[1])
    return lstm_floor(T, B, I, H, dtype, rates, plan.grid[0], plan.grid[1], plan.config["BLOCK_H"] > 0)


def wm_floor_on(device, dtype: torch.dtype, T: int, B: int, I: int, H: int, S: int, D: int,
                gated: bool) -> Optional[Floor]:
    """The floor of wm_lstm_sequence at these sizes on this GPU, for the split
    grid's persistent schedule as planned here; None where it cannot run."""
    from wmkernels.wm_lstm import wm_lstm_sequence_triton as wm_sequence

    plan = _persistent_plan(device, dtype, lambda like: wm_sequence.split_plan(B, H, S, D, like, gated))
    if plan is None:
        return None
    backward = _persistent_plan(device, dtype,
                                lambda like: wm_sequence.split_plan(B, H, S, D, like, gated, backward=True))
    rates = _rates(device, dtype, plan.grid[0] * plan.grid[1])
    return wm_floor(T, B, I, H, S, D, dtype, gated, rates, plan.grid[0], plan.grid[1], plan.config["BLOCK_H"] > 0,
                    backward.config["BLOCK_H"] > 0)

"""How the recurrent kernels spread a sequence over programs and launches.

Three schedules run the same step body (``lstm_sequence_triton._forward_kernel``):

- ``tile``: one program per batch tile walks every hidden unit and every
  step in one launch; its steps end with a CTA barrier.
- ``persistent``: the hidden units are split across programs too (grid
  ``[H / BLOCK_N, B / BLOCK_B]``), one cooperative launch runs all steps, and
  each step ends with a grid barrier per batch tile. It needs every program
  resident at once; where the grid is larger than the GPU's SMs, or under the
  interpreter (which runs programs one after another), it falls back to
- ``steps``: the same split grid, launched once per step (the launch
  boundary is the barrier). Slow on a GPU (a launch per step); it is how the
  split step body is tested on CPU.

``WMKERNELS_TRITON_SCHEDULE`` picks one (default ``tile``; ``persistent`` is
opt-in until measured on a GPU). A ``:reversed`` suffix runs each step's
programs in reversed order, which the tests use to expose a program reading
what another program writes in the same step; ``:n<BLOCK_N>`` and
``:streamed`` fix the split grid's hidden-unit block and stream the weights
(for measuring).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
import triton

from wmkernels.triton import tiles
from wmkernels.triton.launch import launch, recorded_device, recording_active
from wmkernels.triton.schedule_env import KINDS, SCHEDULE_ENV, SPLIT_BLOCK_N, Schedule, requested, using  # noqa: F401
from wmkernels.triton.sync import BROKEN

# The largest gate tile (BLOCK_H x BLOCK_N elements) a split program keeps
# resident across steps (16-bit weights in 16-row batch tiles), besides
# fitting the GPU's shared memory (``keeps_resident``). The ahead-of-time
# compile (sm_80, sm_90, with and without lengths) shows lstm_sequence's
# kernels without spills up to it: H = 1024 with BLOCK_N = 16, H = 512 with
# 32, H = 256 with 64. Forward at 4 warps (8 spill 4-60 B: the tiny 16x16
# products replicate their operands across warps); backward at
# ``RESIDENT_BACKWARD_WARPS`` (4 spill 84-104 B at 1024 x 16, 12-28 B at 256 x 64).
RESIDENT_ELEMENTS = 1024 * 16
RESIDENT_BACKWARD_WARPS = 8


def resident_programs(like: torch.Tensor) -> Optional[int]:
    """How many programs of a split grid may run at once (one per SM), or None
    under the interpreter, where a grid barrier can never complete."""
    if like.device.type == "cuda":
        return torch.cuda.get_device_properties(like.device).multi_processor_count
    recorded = recorded_device()
    return None if recorded is None else recorded.sms


def shared_bytes(like: torch.Tensor) -> Optional[int]:
    """The most shared memory one program may take on ``like``'s GPU (the
    recorded GPU's while recording); None under the interpreter (no limit)."""
    if like.device.type == "cuda":
        return torch.cuda.get_device_properties(like.device).shared_memory_per_block_optin
    recorded = recorded_device()
    return None if recorded is None else recorded.shared_bytes


def keeps_resident(tile_rows: int, block_h: int, block_n: int, block_b: int, like: torch.Tensor) -> bool:
    """Whether a split program keeps its four gates' weight tiles (``tile_rows``
    x ``block_n`` each, of which the hidden-state product's take ``block_h``
    rows) resident: 16-bit weights on a GPU (float32's ieee products would
    need them in registers), every dtype under the interpreter; within
    ``RESIDENT_ELEMENTS`` and the GPU's shared memory, where the tiles sit
    beside the staged [block_b, block_h] operand of the product (the bytes
    Triton reports for lstm_sequence's and the WM-LSTM's resident kernels);
    never where the schedule asks for ``:streamed``."""
    if requested().streamed or (not tiles.interpreted(like) and like.dtype == torch.float32):
        return False
    limit = shared_bytes(like)
    needed = 2 * (4 * tile_rows * block_n + block_b * block_h)
    return block_h * block_n <= RESIDENT_ELEMENTS and (limit is None or needed <= limit)


@dataclass
class Plan:
    """A resolved schedule: the grid, the kernel's constexprs and launch
    options, and how many steps one launch runs (None: all of them)."""

    kind: str
    grid: Tuple[int, int]
    config: dict = field(default_factory=dict)
    steps_per_launch: Optional[int] = None


def fitting_block_n(B: int, H: int, block_b: int, programs: Optional[int]) -> int:
    """The hidden-unit block the schedule asks for (``:n64``), else the smallest
    whose split grid has at most ``programs`` programs (else the largest; the
    smallest when there is no limit)."""
    asked = requested().block_n
    if asked is not None:
        return asked
    if programs is None:
        return SPLIT_BLOCK_N[0]
    fitting = [n for n in SPLIT_BLOCK_N if triton.cdiv(H, n) * triton.cdiv(B, block_b) <= programs]
    return fitting[0] if fitting else SPLIT_BLOCK_N[-1]


def lstm_split_config(B: int, H: int, like: torch.Tensor, programs: Optional[int], backward: bool = False) -> dict:
    """lstm_sequence's blocks of the split grid (the ``backward`` kernel's, else
    the forward's), at most ``programs`` programs where possible.

    Where ``keeps_resident`` says so a program keeps w_hh resident
    (``BLOCK_H``, 16-row batch tiles). Else the weights stream from L1/L2 in
    BLOCK_K chunks, with 64-row batch tiles for the tensor cores' M (16 for float32).
    """
    common = dict(PRECISION=tiles.precision(like.dtype), num_stages=1, maxnreg=tiles.MAX_REGISTERS)
    block_h = tiles.pow2(H, tiles.DOT_MIN)
    block_b = tiles.block(B, tiles.DOT_MIN, like, lo=tiles.DOT_MIN, interp_cap=64)
    block_n = fitting_block_n(B, H, block_b, programs)
    if keeps_resident(block_h, block_h, block_n, block_b, like):
        warps = RESIDENT_BACKWARD_WARPS if backward else 4
        return dict(common, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_h, BLOCK_H=block_h, num_warps=warps)
    block_b = tiles.block(B, 16 if like.dtype == torch.float32 else 64, like, lo=tiles.DOT_MIN, interp_cap=64)
    block_n = fitting_block_n(B, H, block_b, programs)
    return dict(common, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=tiles.gate_reduction_block(H, block_n, like),
                BLOCK_H=0, num_warps=4)


def plan(B: int, H: int, like: torch.Tensor, tile_config: Callable[[int, int, torch.Tensor], dict],
         split_config: Optional[Callable[[int, int, torch.Tensor, Optional[int]], dict]] = None) -> Plan:
    """The launches of a recurrent kernel over a batch of B rows and H hidden
    units: the requested schedule, or ``steps`` where ``persistent`` cannot run.
    ``split_config(B, H, like, programs)`` gives the split grid's blocks
    (lstm_sequence's by default)."""
    wanted = requested()
    if wanted.kind == "tile":
        config = tile_config(B, H, like)
        return Plan("tile", (1, triton.cdiv(B, config["BLOCK_B"])),
                    dict(config, GRID_SYNC=False, REVERSED=wanted.reversed, BLOCK_H=0))
    programs = resident_programs(like)
    config = (split_config or lstm_split_config)(B, H, like, programs)
    grid = (triton.cdiv(H, config["BLOCK_N"]), triton.cdiv(B, config["BLOCK_B"]))
    kind = wanted.kind
    if kind == "persistent" and (programs is None or grid[0] * grid[1] > programs):
        why = ("the interpreter runs programs one at a time" if programs is None else
               f"its {grid[0] * grid[1]} programs exceed the {programs} that can be resident")
        warnings.warn(f"triton schedule 'persistent' cannot run here ({why}); using 'steps' "
                      "(one launch per step)", RuntimeWarning, stacklevel=3)
        kind = "steps"
    config.update(GRID_SYNC=kind == "persistent", REVERSED=wanted.reversed)
    if kind == "persistent":
        config["launch_cooperative_grid"] = True
    return Plan(kind, grid, config, 1 if kind == "steps" else None)


def run(kernel, plan: Plan, n_steps: int, args: tuple, device: torch.device) -> None:
    """Launch ``kernel(*args, counter, step_begin, step_end)`` over steps
    [0, n_steps) as ``plan`` says; ``counter`` holds the grid barrier's arrivals per batch tile."""
    # only the grid barrier reads it: the other schedules skip the zeroing launch
    counter = (torch.zeros if plan.kind == "persistent" else torch.empty)(plan.grid[1], dtype=torch.int32,
                                                                            device=device)
    chunk = plan.steps_per_launch or n_steps
    for begin in range(0, n_steps, chunk):
        launch(kernel, plan.grid, *args, counter, begin, min(begin + chunk, n_steps), device=device, **plan.config)
    # only a GPU stream can be capturing (a CPU build of torch raises when asked)
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if plan.kind == "persistent" and not recording_active() and not capturing:
        # one sync per call, until the barrier has been proven on GPUs
        if int(counter.max()) >= BROKEN:
            raise RuntimeError(f"{kernel.fn.__name__}: a grid barrier timed out (its {plan.grid[0] * plan.grid[1]} "
                               f"programs were not all resident); the outputs are wrong. Set {SCHEDULE_ENV}=tile")

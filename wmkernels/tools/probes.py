"""Triton probes of what a GPU does, for the floor model (``wmkernels.tools.floor``):
the latency of one grid barrier, and the rate at which programs read data
other programs wrote (from L2, past L1: how the persistent kernels exchange h
and dg). Both report the slope between n and 2n rounds in one launch, so the
launch cost cancels."""
from typing import Callable

import torch
import triton
import triton.language as tl

from wmkernels.triton.launch import launch
from wmkernels.triton.sync import BROKEN, grid_barrier

L2_PROBE_BYTES = 8 * 2 ** 20  # well inside an A100/H100/H200 L2 (40-60 MB)
L2_PROBE_BLOCK = 4096  # 16 fp32 a thread per load at 8 warps: loads in flight


@triton.jit(do_not_specialize=["rounds"])
def _barrier_probe_kernel(counter_ptr, rounds):
    """Nothing but ``rounds`` grid barriers."""
    for r in range(rounds):
        grid_barrier(counter_ptr, tl.num_programs(0) * (r + 1))


@triton.jit(do_not_specialize=["rounds"])
def _l2_read_probe_kernel(src_ptr, out_ptr, n, rounds, BLOCK: tl.constexpr):
    """Each program sums its share of ``src`` [n] fp32, ``rounds`` times, past L1."""
    pid = tl.program_id(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(rounds):
        for start in range(pid * BLOCK, n, tl.num_programs(0) * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(src_ptr + offs, mask=offs < n, other=0.0, cache_modifier=".cg")
    tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), acc)


def launch_barrier_probe(counter: torch.Tensor, programs: int, rounds: int) -> None:
    """``rounds`` grid barriers among ``programs`` programs, one cooperative launch; counter: int32 [1], zeroed."""
    launch(_barrier_probe_kernel, (programs,), counter, rounds, device=counter.device, num_warps=4,
           launch_cooperative_grid=True)


def launch_l2_probe(src: torch.Tensor, out: torch.Tensor, programs: int, rounds: int) -> None:
    """Each of ``programs`` programs sums its share of ``src`` (fp32) ``rounds`` times into ``out``."""
    launch(_l2_read_probe_kernel, (programs,), src, out, src.numel(), rounds, device=src.device,
           BLOCK=L2_PROBE_BLOCK, num_warps=8)


def barrier_seconds(device, programs: int, timer: Callable, rounds: int = 2000) -> float:
    """Seconds per grid barrier among ``programs`` co-resident programs
    (``timer(run, device)`` times one call)."""
    counter = torch.zeros(1, dtype=torch.int32, device=device)

    def run(n: int):
        counter.zero_()
        launch_barrier_probe(counter, programs, n)

    short, long = timer(lambda: run(rounds), device), timer(lambda: run(2 * rounds), device)
    if int(counter.item()) >= BROKEN:
        raise RuntimeError(f"the barrier probe timed out with {programs} programs")
    return max(long - short, 0.0) / rounds


def l2_read_bytes_per_s(device, timer: Callable, rounds: int = 20) -> float:
    """Bytes/s all SMs read from L2 (an L2-resident buffer, loads past L1)."""
    device = torch.device(device)
    n = L2_PROBE_BYTES // 4
    src = torch.randn(n, device=device)
    programs = torch.cuda.get_device_properties(device).multi_processor_count * 4
    out = torch.empty(programs * L2_PROBE_BLOCK, device=device)

    def run(k: int):
        launch_l2_probe(src, out, programs, k)

    short, long = timer(lambda: run(rounds), device), timer(lambda: run(2 * rounds), device)
    return rounds * n * 4 / max(long - short, 1e-9)

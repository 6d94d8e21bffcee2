"""Tile helpers shared by the Triton kernels, and the host-side launch heuristics.

On a GPU the blocks are sized for Hopper (16-row batch tiles, 32-128 wide
column tiles, the minimum ``tl.dot`` accepts being 16 in every dimension).
Under the interpreter (CPU tensors) every program instance costs
milliseconds, so the blocks grow to cover small problems in one program.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from wmkernels.triton.launch import recording_active

DOT_MIN = 16  # tl.dot wants every dimension of a tile to be at least 16
MAX_REGISTERS = 255  # per thread, the most a CUDA kernel may use


@triton.jit
def row_block_matmul(acc, a_ptr, a_stride, rows, row_mask, K, w_ptr, w_stride_out, w_stride_red,
                     cols, col_mask, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, A_CACHE: tl.constexpr):
    """acc[b, j] += Σ_k A[rows[b], k] · W(cols[j], k) over k in [0, K).

    A is row-major with row stride ``a_stride``; W(j, k) lives at
    ``w_ptr + j·w_stride_out + k·w_stride_red`` (``x Wᵀ`` for a row-major W is
    strides (row, 1); ``x W`` is (1, row)). A is cast to W's dtype, acc is fp32.
    ``A_CACHE`` is A's load cache modifier: ".cg" (past L1) where other
    programs wrote A during this launch.
    """
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        a = tl.load(a_ptr + rows[:, None] * a_stride + ks[None, :],
                    mask=row_mask[:, None] & k_mask[None, :], other=0.0, cache_modifier=A_CACHE)
        w = tl.load(w_ptr + ks[:, None] * w_stride_red + cols[None, :] * w_stride_out,
                    mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc += tl.dot(a.to(w.dtype), w, input_precision=PRECISION)
    return acc


def interpreted(t: torch.Tensor) -> bool:
    """True when the kernels run under the interpreter (CPU tensors), unless
    launches are being recorded for the ahead-of-time compile (GPU tiles then)."""
    return t.device.type != "cuda" and not recording_active()


def precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: full float32 where float32 accuracy is promised."""
    return "ieee" if dtype == torch.float32 else "tf32"


def product_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the after-loop products for inputs of ``dtype`` (see ``product_operand``)."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32


def product_operand(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An operand of the matrix products over all steps that follow a recurrent
    kernel (input and weight gradients), for inputs of ``dtype``: 16-bit ones
    run those products in their own dtype (tensor cores, fp32 accumulation, as
    cuDNN does; the result is returned in that dtype anyway); float32 keeps
    float32, where its accuracy is promised. At T=1024, B=16, I=H=768 they are
    four products of 77 GFLOP each: float32 without tensor cores would take
    longer than cuDNN's whole backward."""
    return t.to(product_dtype(dtype))


def lengths_argument(lengths: Optional[torch.Tensor], B: int, T: int, device: torch.device) -> torch.Tensor:
    """The lengths [B] int64 a recurrent kernel's ``row_lengths`` reads: the
    given ones, or every row's length T (one small fill, no host sync)."""
    if lengths is not None:
        return lengths
    return torch.full((B,), T, dtype=torch.int64, device=device)


def without_padding(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """x [T, B, F] with the steps past each row's length (lengths [B] on x's
    device, or None) replaced by zeros, by selection: an operand of a weight
    gradient summed over every step (the input, the state a step reads),
    whose zero rows of the gate gradient there would otherwise meet the
    padding or the kept state (0 · NaN is NaN). No host sync."""
    if lengths is None:
        return x
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    return torch.where((steps < lengths.unsqueeze(0)).unsqueeze(2), x, 0)


def pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(n, 1)))


def block(n: int, gpu_cap: int, t: torch.Tensor, lo: int = 1, interp_cap: int = 256) -> int:
    """A power-of-two block covering ``n`` up to a cap (larger under the interpreter)."""
    return min(pow2(n, lo), max(lo, interp_cap if interpreted(t) else gpu_cap))


def batch_tile(B: int, t: torch.Tensor) -> int:
    """Rows of the batch one program owns in the recurrent kernels (≥ 16 for tl.dot)."""
    return block(B, DOT_MIN, t, lo=DOT_MIN, interp_cap=64)


def gate_reduction_block(K: int, block_n: int, t: torch.Tensor) -> int:
    """Reduction tile of a four-gate product whose four weight tiles
    [BLOCK_K, block_n] are live at once, sized on a GPU so they do not spill:
    within 4096 elements for tensor-core dtypes, 1024 for float32 (its ieee
    products run on the FMA units, whose operand layouts take more registers;
    measured with the ahead-of-time compile)."""
    budget = 1024 if t.dtype == torch.float32 else 4096
    cap = 64 if interpreted(t) else max(DOT_MIN, budget // (4 * block_n))
    return block(K, min(64, cap), t, lo=DOT_MIN)


def warps(tile_elements: int) -> int:
    """num_warps for a program whose largest fp32 tile has this many elements."""
    return 8 if tile_elements >= 8192 else 4


@triton.jit
def matmul_wt(acc, a_ptr, a_stride, rows, row_mask, K, w_ptr, cols, col_mask,
              BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """acc += A Wᵀ for a row-major W [*, K] (a linear layer)."""
    return row_block_matmul(acc, a_ptr, a_stride, rows, row_mask, K, w_ptr, K, 1, cols, col_mask,
                            BLOCK_K, PRECISION, "")


@triton.jit
def matmul_w(acc, a_ptr, a_stride, rows, row_mask, K, w_ptr, N, cols, col_mask,
             BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """acc += A W for a row-major W [K, N] (the backward of a linear layer)."""
    return row_block_matmul(acc, a_ptr, a_stride, rows, row_mask, K, w_ptr, 1, N, cols, col_mask,
                            BLOCK_K, PRECISION, "")


INT32_LIMIT = 2 ** 31


def check_int32_indexing(op: str, **numels: int) -> None:
    """The kernels compute offsets in int32: refuse (clearly) buffers too large for that."""
    for name, numel in numels.items():
        if numel >= INT32_LIMIT:
            raise ValueError(f"{op}: backend 'triton' indexes in int32, but its buffer {name} would hold "
                             f"{numel} elements (≥ 2^31); split the batch or the sequence")

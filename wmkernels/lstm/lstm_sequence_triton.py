"""lstm_sequence (contract §1.2) in Triton, the time loop inside the kernels.

Forward: the input projection of all steps is one matrix product up front
(``xp = x w_ihᵀ + b``, [T, B, 4H]); then the kernel walks time. A program
owns a block of batch rows and a set of hidden-unit blocks (all of them in
the ``tile`` schedule, one in the split schedules: ``schedule.py``). Per
step and block it adds ``h_{t-1} w_hhᵀ`` through ``tl.dot`` and applies the
cell. The states go to ``hs, cs [T+1, B, H]`` (fp32; index 0 is h0/c0),
what backward keeps with the gate activations ``act [T, B, 4H]``; the next
step reads h_t (from L2, behind the step's barrier) from a two-slot exchange
buffer in the weights' dtype.

Backward walks time in reverse the same way and writes the pre-activation
gradients ``dg [T, B, 4H]``; the gradients of x and of the weights are then
matrix products over all steps at once.
"""
import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.contract import Impl, empty_outputs
from wmkernels.lstm.bias import bias_grads
from wmkernels.triton import schedule, tiles
from wmkernels.triton.lstm_gates import (add_recurrent_products, add_resident_products, cell_step, cell_step_backward,
                                    column_tile, hidden_grad_through_gates, load_gate_tiles, load_preacts,
                                    resident_product, row_lengths)
from wmkernels.triton.sync import program_ids, step_barrier


@triton.jit(do_not_specialize=["step_begin", "step_end"])
def _forward_kernel(xp_ptr, w_hh_ptr, len_ptr, hs_ptr, cs_ptr, act_ptr, y_ptr, hx_ptr, T, B, H,
                    counter_ptr, step_begin, step_end, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr, REVERSED: tl.constexpr,
                    BLOCK_H: tl.constexpr):
    """Steps [step_begin, step_end): h_t, c_t of this program's rows and hidden-unit blocks.
    With ``BLOCK_H`` (> 0; the program then owns one block) its rows of w_hh
    are loaded once and stay resident; else they stream in BLOCK_K chunks.
    The programs exchange h through ``hx [2, B, H]`` in w_hh's dtype (h_t in
    slot t % 2): the products read h in that dtype anyway, and every program
    reads all of it each step, so half the bytes in 16-bit."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    if BLOCK_H > 0:
        own = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        w_i, w_f, w_g, w_o = load_gate_tiles(w_hh_ptr, own, own < H, H, H * H, 1, H, BLOCK_H)  # rows
    for t in range(step_begin, step_end):
        valid = (row_ok & (t < lengths))[:, None]
        for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
            cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
            pre_i, pre_f, pre_g, pre_o = load_preacts(xp_ptr, t, rows, cols, tile, B, H)
            h_prev = hx_ptr + (t % 2) * B * H
            if BLOCK_H > 0:
                pre_i, pre_f, pre_g, pre_o = add_resident_products(pre_i, pre_f, pre_g, pre_o, h_prev, H, rows,
                                                                   row_ok, w_i, w_f, w_g, w_o, H, BLOCK_H, PRECISION)
            else:
                pre_i, pre_f, pre_g, pre_o = add_recurrent_products(pre_i, pre_f, pre_g, pre_o, h_prev, H, rows,
                                                                    row_ok, w_hh_ptr, cols, col_ok, H, BLOCK_K,
                                                                    PRECISION)
            h = cell_step(pre_i, pre_f, pre_g, pre_o, t, rows, cols, tile, valid, hs_ptr, cs_ptr, act_ptr, y_ptr, H,
                          B, H)
            tl.store(hx_ptr + ((t + 1) % 2) * B * H + rows[:, None] * H + cols[None, :],
                     h.to(hx_ptr.dtype.element_ty), mask=tile)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (t + 1 - step_begin), GRID_SYNC)


@triton.jit(do_not_specialize=["stage_begin", "stage_end"])
def _backward_kernel(dy_ptr, act_ptr, cs_ptr, w_hh_ptr, len_ptr, dh_ptr, dc_ptr, dg_ptr, T, B, H,
                     counter_ptr, stage_begin, stage_end, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr, REVERSED: tl.constexpr,
                     BLOCK_H: tl.constexpr):
    """Stages [stage_begin, stage_end) of T + 1; stage s is step t = T - 1 - s.

    A stage first finishes the gradient of h_t on this program's columns from
    dg_{t+1} (all of it, written by every program the stage before), then runs
    the cell backward at t, writing dg_t on its columns: one barrier per step.
    dh, dc [B, H] hold the gradients of h_T, c_T on entry and of h0, c0 after
    stage T (which only finishes h0's). ``BLOCK_H`` as in the forward: the
    program's columns of w_hh stay resident. ``dg`` is in w_hh's dtype where
    that is 16-bit (what every program gathers, and what the after-loop
    products read), else fp32."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    if BLOCK_H > 0:
        own = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        w_i, w_f, w_g, w_o = load_gate_tiles(w_hh_ptr, own, own < H, H, H * H, H, 1, BLOCK_H)  # columns
    for stage in range(stage_begin, stage_end):
        t = T - 1 - stage
        for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
            cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
            s_off = rows[:, None] * H + cols[None, :]
            grad_h = tl.load(dh_ptr + s_off, mask=tile, other=0.0)
            if t + 1 < T:
                running_next = row_ok & (t + 1 < lengths)
                dg_next = dg_ptr + (t + 1) * B * 4 * H
                if BLOCK_H > 0:
                    through = resident_product(dg_next, 4 * H, rows, running_next, H, w_i, w_f, w_g, w_o,
                                               tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), BLOCK_H, PRECISION)
                else:
                    through = hidden_grad_through_gates(0, rows, running_next, cols, col_ok, dg_next, w_hh_ptr, B, H,
                                                        BLOCK_B, BLOCK_N, BLOCK_K, PRECISION, ".cg")
                grad_h = tl.where(running_next[:, None], through, grad_h)
                tl.store(dh_ptr + s_off, grad_h, mask=tile)
            if t >= 0:
                valid = (row_ok & (t < lengths))[:, None]
                grad_h += tl.load(dy_ptr + t * B * H + s_off, mask=tile & valid, other=0.0).to(tl.float32)
                cell_step_backward(grad_h, t, rows, cols, tile, valid, act_ptr, cs_ptr, dc_ptr, dg_ptr, B, H)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (stage + 1 - stage_begin), GRID_SYNC)


def launch_config(B: int, H: int, like: Tensor) -> dict:
    """Batch tile, hidden tile and reduction tile of the ``tile`` schedule."""
    block_n = tiles.block(H, 64, like, lo=tiles.DOT_MIN)
    return dict(BLOCK_B=tiles.batch_tile(B, like), BLOCK_N=block_n,
                BLOCK_K=tiles.gate_reduction_block(H, block_n, like),
                PRECISION=tiles.precision(like.dtype), num_warps=4, num_stages=1,
                maxnreg=tiles.MAX_REGISTERS)  # why: wm_lstm_sequence_triton.launch_config


@torch.library.custom_op("wmkernels_triton::lstm_sequence_forward", mutates_args=())
def lstm_sequence_forward(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                          b_ih: Optional[Tensor], b_hh: Optional[Tensor], lengths: Optional[Tensor]
                          ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x [T, B, I], h0/c0 [B, H], w_ih [4H, I], w_hh [4H, H], b_ih/b_hh [4H] or None,
    lengths [B] int64 on x's device or None -> (y [T, B, H], h_n, c_n [B, H],
    hs, cs [T+1, B, H] fp32, act [T, B, 4H] fp32)."""
    T, B, _ = x.shape
    H = h0.shape[1]
    tiles.check_int32_indexing("lstm_sequence", gates=(T + 1) * B * 4 * H)
    xp = x.reshape(T * B, x.shape[2]) @ w_ih.t()
    biases = [b for b in (b_ih, b_hh) if b is not None]
    if biases:
        xp = xp + sum(biases[1:], biases[0])
    hs = torch.empty(T + 1, B, H, device=x.device, dtype=torch.float32)
    cs = hs.new_empty(hs.shape)
    hs[0], cs[0] = h0, c0
    act = torch.empty(T, B, 4 * H, device=x.device, dtype=torch.float32)
    y = x.new_empty(T, B, H)
    if T and B:
        h_exchange = torch.empty(2, B, H, device=x.device, dtype=w_hh.dtype)
        h_exchange[0] = h0
        plan = schedule.plan(B, H, x, launch_config)
        schedule.run(_forward_kernel, plan, T, (xp.contiguous(), w_hh.contiguous(),
                                                tiles.lengths_argument(lengths, B, T, x.device), hs, cs, act, y,
                                                h_exchange, T, B, H), x.device)
    return y, hs[T].to(x.dtype, copy=True), cs[T].to(x.dtype, copy=True), hs, cs, act


@lstm_sequence_forward.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
    T, B, _ = x.shape
    H = h0.shape[1]
    f32 = dict(device=x.device, dtype=torch.float32)
    return (*empty_outputs("lstm_sequence", x, x=x, h0=h0), torch.empty(T + 1, B, H, **f32),
            torch.empty(T + 1, B, H, **f32), torch.empty(T, B, 4 * H, **f32))


@torch.library.custom_op("wmkernels_triton::lstm_sequence_backward", mutates_args=())
def lstm_sequence_backward(grad_y: Tensor, grad_h_n: Tensor, grad_c_n: Tensor, x: Tensor, w_ih: Tensor,
                           w_hh: Tensor, hs: Tensor, cs: Tensor, act: Tensor, lengths: Optional[Tensor]
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of y, h_n, c_n and what forward saved -> (dx, dh0, dc0, dw_ih, dw_hh, d_bias)."""
    T, B, I = x.shape
    H = hs.shape[2]
    dh = grad_h_n.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # the kernel updates
    dc = grad_c_n.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # these in place
    # dg in the products' dtype: all the after-loop products read, and the
    # gather every program does backward (16-bit halves it)
    dg = torch.empty(T, B, 4 * H, device=x.device, dtype=tiles.product_dtype(x.dtype))
    if T and B:
        plan = schedule.plan(B, H, x, launch_config, functools.partial(schedule.lstm_split_config, backward=True))
        schedule.run(_backward_kernel, plan, T + 1, (grad_y.contiguous(), act, cs, w_hh.contiguous(),
                                                     tiles.lengths_argument(lengths, B, T, x.device), dh,
                                                     dc, dg, T, B, H), x.device)
    dtype = x.dtype
    dg2 = dg.reshape(T * B, 4 * H)
    grad_gates = tiles.product_operand(dg2, dtype)
    dx = tiles.without_padding((grad_gates @ tiles.product_operand(w_ih, dtype)).reshape(T, B, I), lengths)
    dw_ih = grad_gates.t() @ tiles.product_operand(tiles.without_padding(x, lengths).reshape(T * B, I), dtype)
    dw_hh = grad_gates.t() @ tiles.product_operand(tiles.without_padding(hs[:T], lengths).reshape(T * B, H), dtype)
    return (dx.to(dtype), dh.to(dtype), dc.to(dtype), dw_ih.to(dtype), dw_hh.to(dtype),
            dg2.sum(0, dtype=torch.float32).to(dtype))


@lstm_sequence_backward.register_fake
def _(grad_y, grad_h_n, grad_c_n, x, w_ih, w_hh, hs, cs, act, lengths):
    return (x.new_empty(x.shape), grad_h_n.new_empty(grad_h_n.shape), grad_c_n.new_empty(grad_c_n.shape),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_ih.new_empty(w_ih.shape[0]))


# The op's implementation on the triton backend (contract §3.1): the argument
# order of the cpu backend's (wmkernels.lstm.cpu); saved x, w_ih, w_hh, the
# fp32 states hs, cs [T+1, B, H] (16-bit y would lose what backward needs), act
# and lengths; info: (has b_ih, has b_hh).

def _forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None):
    lengths = lengths.contiguous() if lengths is not None else None
    y, h_n, c_n, hs, cs, act = lstm_sequence_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    return (y, h_n, c_n), (x, w_ih, w_hh, hs, cs, act, lengths), (b_ih is not None, b_hh is not None)


def _backward(saved, info, grad_y, grad_h_n, grad_c_n):
    *grads, grad_b = lstm_sequence_backward(grad_y, grad_h_n, grad_c_n, *saved)
    return (*grads, *bias_grads(grad_b, *info))


LSTM_SEQUENCE = Impl(_forward, _backward)

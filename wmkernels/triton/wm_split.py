"""wm_lstm_sequence, fifo, over a split grid: the ``steps`` and ``persistent`` schedules.

The grid is lstm_sequence's split grid ``[H / BLOCK_N, B / BLOCK_B]``: a
program owns a block of hidden units of a batch tile (``schedule.py``).
What the whole hidden state feeds is summed across a tile's programs with
fp32 atomic adds of each program's share, the columns of the weights that
belong to its units: forward the query ``q_{t+1} = w_q h_t + b_q`` and the
written vector's pre-activation ``w_v h_t + b_v``, backward the read's
gradient ``dr_t = dy_r + w_rhᵀ dg_t``. So one grid barrier ends a step, as
in lstm_sequence. The rest of a step's memory work (the read, its backward,
the written vector: a few S·D per row) every program of the tile does for
itself, and where it stores, all store the same values.

Backward, the gradient of the memory window of step t+1 goes to the tape's
gradient through the tile's first program only, except its newest slot:
that one is v_t's, and every program adds it straight into dv_t, which it
needs at once (the first program's adds land after the next barrier).

Buffers and saved tensors are those of the ``tile`` kernels
(``wm_sequence.py``), so either backward can follow either forward.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.triton import math as wm
from wmkernels.triton import schedule, tiles
from wmkernels.triton.gates import (add_gate_products, add_recurrent_products, cell_step, cell_step_backward,
                                    column_tile, hidden_grad_through_gates, load_preacts, row_lengths)
from wmkernels.triton.memory import read_forward, view
from wmkernels.triton.sync import program_ids, step_barrier
from wmkernels.triton.tiles import matmul_w


@triton.jit
def _share(a, w_ptr, unit_off, unit_ok, ds, d_ok, d_stride, PRECISION: tl.constexpr):
    """a [BLOCK_B, BLOCK_N] times the weight tile W[n, d] at
    ``w_ptr + unit_off[n] + ds[d]·d_stride`` ([BLOCK_B, BLOCK_D] fp32)."""
    w = tl.load(w_ptr + unit_off[:, None] + ds[None, :] * d_stride, mask=unit_ok[:, None] & d_ok[None, :], other=0.0)
    return tl.dot(a.to(w.dtype), w, input_precision=PRECISION)


@triton.jit
def _add_hidden_shares(h, rows, row_mask, cols, col_ok, w_ptr, out_ptr, D, H, BLOCK_D: tl.constexpr,
                       PRECISION: tl.constexpr):
    """out[b, :] += w[:, cols] h[b, cols] for a row-major w [D, H]; out [B, D] fp32."""
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        part = _share(h, w_ptr, cols, col_ok, ds, d_ok, H, PRECISION)
        tl.atomic_add(out_ptr + rows[:, None] * D + ds[None, :], part, mask=row_mask[:, None] & d_ok[None, :],
                      sem="relaxed")


@triton.jit
def _add_read_grad_shares(d_i, d_f, d_g, d_o, rows, row_mask, cols, col_ok, w_rh_ptr, out_ptr, D, H,
                          BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """out[b, :] += Σ_gate dg_gate[b, cols] w_rh[gate·H + cols, :] for w_rh [4H, D]; out [B, D] fp32."""
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        part = _share(d_i, w_rh_ptr, cols * D, col_ok, ds, d_ok, 1, PRECISION)
        part += _share(d_f, w_rh_ptr, (H + cols) * D, col_ok, ds, d_ok, 1, PRECISION)
        part += _share(d_g, w_rh_ptr, (2 * H + cols) * D, col_ok, ds, d_ok, 1, PRECISION)
        part += _share(d_o, w_rh_ptr, (3 * H + cols) * D, col_ok, ds, d_ok, 1, PRECISION)
        tl.atomic_add(out_ptr + rows[:, None] * D + ds[None, :], part, mask=row_mask[:, None] & d_ok[None, :],
                      sem="relaxed")


@triton.jit
def _finish_written_vector(vp_ptr, out_ptr, rows, row_mask, D, BLOCK_D: tl.constexpr):
    """out rows = tanh(vp rows), [B, D] each; vp was summed by every program of the tile."""
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        off = rows[:, None] * D + ds[None, :]
        mk = row_mask[:, None] & (ds < D)[None, :]
        tl.store(out_ptr + off, wm.tanh(tl.load(vp_ptr + off, mask=mk, other=0.0, cache_modifier=".cg")), mask=mk)


@triton.jit(do_not_specialize=["stage_begin", "stage_end"])
def _forward_kernel(xp_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, len_ptr, hs_ptr, cs_ptr, act_ptr, q_ptr, r_ptr,
                    attn_ptr, y_ptr, tape_ptr, vp_ptr, T, B, H, S, D, scale, counter_ptr, stage_begin, stage_end,
                    HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr,
                    REVERSED: tl.constexpr):
    """Stages [stage_begin, stage_end) of T + 1. Stage s first writes step s-1's
    vector v = tanh(vp[s-1]) into tape slot S+s-1, then (s < T) runs step s:
    the read with q[s], the gates and the cell on this program's units, and
    its shares of vp[s] and q[s+1]. q [T, B, D] arrives holding b_q (q[0]
    the whole query of h0), vp [T, B, D] holding b_v."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok, T, HAS_LENGTHS)
    slot_ok = tl.arange(0, BLOCK_S) < S
    BD = B * D
    for stage in range(stage_begin, stage_end):
        if stage > 0:
            _finish_written_vector(vp_ptr + (stage - 1) * BD, tape_ptr + (S + stage - 1) * BD, rows,
                                   row_ok & (stage - 1 < lengths), D, BLOCK_DM)
            tl.debug_barrier()
        if stage < T:
            t = stage
            running = row_ok & (t < lengths)
            valid = running[:, None]
            window = tl.minimum(lengths, t) * BD + rows * D
            read_forward(tape_ptr, window, BD, rows, running, valid & slot_ok[None, :], q_ptr + t * BD,
                         r_ptr + t * BD, attn_ptr + t * B * S, S, D, scale, BLOCK_B, BLOCK_S, BLOCK_DM, ".cg")
            tl.debug_barrier()
            if pid_n == 0:
                for d0 in range(0, D, BLOCK_DM):
                    ds = d0 + tl.arange(0, BLOCK_DM)
                    d_ok = ds < D
                    r = tl.load(r_ptr + t * BD + rows[:, None] * D + ds[None, :], mask=valid & d_ok[None, :],
                                other=0.0)
                    tl.store(y_ptr + t * B * (H + D) + rows[:, None] * (H + D) + H + ds[None, :],
                             r.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
            for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
                cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
                pre_i, pre_f, pre_g, pre_o = load_preacts(xp_ptr, t, rows, cols, tile, B, H)
                pre_i, pre_f, pre_g, pre_o = add_recurrent_products(pre_i, pre_f, pre_g, pre_o, hs_ptr + t * B * H,
                                                                    rows, running, w_hh_ptr, cols, col_ok, H,
                                                                    BLOCK_K, PRECISION)
                pre_i, pre_f, pre_g, pre_o = add_gate_products(pre_i, pre_f, pre_g, pre_o, r_ptr + t * BD, rows,
                                                               running, D, w_rh_ptr, cols, col_ok, H, BLOCK_K,
                                                               PRECISION)
                h = cell_step(pre_i, pre_f, pre_g, pre_o, t, rows, cols, tile, valid, hs_ptr, cs_ptr, act_ptr,
                              y_ptr, H + D, B, H)
                _add_hidden_shares(h, rows, running, cols, col_ok, w_v_ptr, vp_ptr + t * BD, D, H, BLOCK_D,
                                   PRECISION)
                if t + 1 < T:
                    _add_hidden_shares(h, rows, running & (t + 1 < lengths), cols, col_ok, w_q_ptr,
                                       q_ptr + (t + 1) * BD, D, H, BLOCK_D, PRECISION)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (stage + 1 - stage_begin), GRID_SYNC)


@triton.jit
def _read_backward_then_dv(tape_ptr, dtape_ptr, window, BD, rows, running_n, valid_t, designated, last_kept,
                           attn_ptr, q_ptr, dr_ptr, dq_ptr, v_off, dpv_ptr, S, D, scale, BLOCK_B: tl.constexpr,
                           BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """The read backward of step t+1 (rows ``running_n``; its attn, q and dr
    rows at attn_ptr, q_ptr, dr_ptr), then the written vector's gradient of step
    t (rows ``valid_t``). Stores dq rows; ``designated`` adds the memory
    gradient of the window's slots below ``last_kept`` to the tape's gradient;
    the newest slot's goes into dv_t with the tape gradient of v_t's slot
    (``v_off``), and ``dpv = dv_t (1 − v_t²)`` rows are stored."""
    slots = tl.arange(0, BLOCK_S)
    allowed = running_n[:, None] & (slots < S)[None, :]
    attn = tl.load(attn_ptr + rows[:, None] * S + slots[None, :], mask=allowed, other=0.0)
    d_attn = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(tape_ptr, window, BD, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :], other=0.0)
        dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=running_n[:, None] & d_ok[None, :], other=0.0,
                     cache_modifier=".cg")
        d_attn += tl.sum(m * dr[:, None, :], axis=2)
    d_scores = attn * (d_attn - tl.sum(attn * d_attn, axis=1)[:, None]) * scale
    newest = (slots == S - 1)[None, :, None]
    kept = allowed & (slots < last_kept)[None, :] & designated
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        row_d = running_n[:, None] & d_ok[None, :]
        m = tl.load(view(tape_ptr, window, BD, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :], other=0.0)
        dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0, cache_modifier=".cg")
        q = tl.load(q_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0)
        dm = attn[:, :, None] * dr[:, None, :] + d_scores[:, :, None] * q[:, None, :]
        dm_ptrs = view(dtape_ptr, window, BD, slots, ds)
        dm_mask = kept[:, :, None] & d_ok[None, None, :]
        tl.store(dm_ptrs, dm + tl.load(dm_ptrs, mask=dm_mask, other=0.0), mask=dm_mask)
        tl.store(dq_ptr + rows[:, None] * D + ds[None, :], tl.sum(d_scores[:, :, None] * m, axis=1), mask=row_d)
        v_mask = valid_t[:, None] & d_ok[None, :]
        v_rows = v_off + rows[:, None] * D + ds[None, :]
        dv = tl.load(dtape_ptr + v_rows, mask=v_mask, other=0.0, cache_modifier=".cg")
        dv += tl.sum(tl.where(newest, dm, 0.0), axis=1)
        v = tl.load(tape_ptr + v_rows, mask=v_mask, other=0.0)
        tl.store(dpv_ptr + rows[:, None] * D + ds[None, :], dv * (1.0 - v * v), mask=v_mask)


@triton.jit(do_not_specialize=["stage_begin", "stage_end"])
def _backward_kernel(dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, len_ptr, q_ptr, attn_ptr,
                     tape_ptr, dtape_ptr, dh_ptr, dc_ptr, dr_ptr, dg_ptr, dpv_ptr, dq_ptr, T, B, H, S, D, scale,
                     counter_ptr, stage_begin, stage_end, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr,
                     GRID_SYNC: tl.constexpr, REVERSED: tl.constexpr):
    """Stages [stage_begin, stage_end) of T + 1; stage s is step t = T - 1 - s.

    A stage finishes step t+1 (dr[t+1] is whole: its shares were added the
    stage before): its read backward, dq[t+1], and from dg[t+1] and dq[t+1] the
    gradient of h_t on this program's units; then runs step t: dpv[t], the
    cell backward on its units (dg[t]) and its share of dr[t]. dr [T, B, D]
    arrives holding y's gradient of r; dh, dc [B, H] the gradients of h_T,
    c_T, and of h0, c0 after stage T; the tape's gradient [S+T, B, D] that of
    the final memory's window (its first S rows hold dM0 at the end)."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok, T, HAS_LENGTHS)
    BD = B * D
    for stage in range(stage_begin, stage_end):
        t = T - 1 - stage
        nxt = tl.minimum(t + 1, T - 1)  # step t+1, clamped for the pointers (its rows are masked at t+1 = T)
        running_n = row_ok & (t + 1 < lengths)
        valid_t = row_ok & (t >= 0) & (t < lengths)
        # v_t's slot (the window's newest) stays out of the shared sum while a dv_t takes it
        last_kept = tl.where(t >= 0, S - 1, S)
        _read_backward_then_dv(tape_ptr, dtape_ptr, tl.minimum(lengths, nxt) * BD + rows * D, BD, rows, running_n,
                               valid_t, pid_n == 0, last_kept, attn_ptr + nxt * B * S, q_ptr + nxt * BD,
                               dr_ptr + nxt * BD, dq_ptr + nxt * BD, (S + t) * BD, dpv_ptr + t * BD, S, D, scale,
                               BLOCK_B, BLOCK_S, BLOCK_DM)
        tl.debug_barrier()
        for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
            cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
            s_off = rows[:, None] * H + cols[None, :]
            grad_h = tl.load(dh_ptr + s_off, mask=tile, other=0.0)
            if t + 1 < T:
                through = hidden_grad_through_gates(nxt, rows, running_n, cols, col_ok, dg_ptr, w_hh_ptr, B, H,
                                                    BLOCK_B, BLOCK_N, BLOCK_K, PRECISION, ".cg")
                through = matmul_w(through, dq_ptr + nxt * BD, D, rows, running_n, D, w_q_ptr, H, cols, col_ok,
                                   BLOCK_K, PRECISION)
                grad_h = tl.where(running_n[:, None], through, grad_h)
                tl.store(dh_ptr + s_off, grad_h, mask=tile)
            if t >= 0:
                valid = valid_t[:, None]
                grad_h += tl.load(dy_ptr + t * B * (H + D) + rows[:, None] * (H + D) + cols[None, :],
                                  mask=tile & valid, other=0.0).to(tl.float32)
                grad_h = matmul_w(grad_h, dpv_ptr + t * BD, D, rows, valid_t, D, w_v_ptr, H, cols, col_ok, BLOCK_K,
                                  PRECISION)
                d_i, d_f, d_g, d_o = cell_step_backward(grad_h, t, rows, cols, tile, valid, act_ptr, cs_ptr, dc_ptr,
                                                        dg_ptr, B, H)
                _add_read_grad_shares(d_i, d_f, d_g, d_o, rows, valid_t, cols, col_ok, w_rh_ptr, dr_ptr + t * BD, D,
                                      H, BLOCK_D, PRECISION)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (stage + 1 - stage_begin), GRID_SYNC)


# Reduction tiles of the split WM kernels' gate products on a GPU: the read's
# memory tiles are live beside them, and the ahead-of-time compile shows the
# forward spilling at 64 (fp16/bf16, S = 32) and not at 32.
SPLIT_BLOCK_K = 32


def split_config(B: int, H: int, S: int, D: int, like: Tensor, programs: Optional[int]) -> dict:
    """Blocks of the split grid (at most ``programs`` programs where possible):
    the tile kernels' batch, slot and memory tiles, the smallest hidden-unit
    block that fits; 8 warps for float32, whose ieee products spill at 4
    (the ahead-of-time compile, T = B = H = S = D = 1)."""
    from wmkernels.triton.wm_sequence import launch_config  # wm_sequence imports this module

    tile = launch_config(B, H, S, D, like)
    block_n = schedule.fitting_block_n(B, H, tile["BLOCK_B"], programs)
    block_k = tiles.gate_reduction_block(max(H, D), block_n, like)
    return dict(tile, BLOCK_N=block_n, BLOCK_K=block_k if tiles.interpreted(like) else min(block_k, SPLIT_BLOCK_K),
                BLOCK_D=tiles.block(D, 32, like, lo=tiles.DOT_MIN),
                num_warps=8 if like.dtype == torch.float32 else tile["num_warps"])


def forward(plan: schedule.Plan, xp: Tensor, h0: Tensor, w_hh: Tensor, w_rh: Tensor, w_q: Tensor, b_q: Tensor,
            w_v: Tensor, b_v: Tensor, lengths: Optional[Tensor], hs: Tensor, cs: Tensor, act: Tensor, Q: Tensor,
            R: Tensor, A: Tensor, y: Tensor, tape: Tensor, scale: float) -> None:
    """Fill the tile forward's outputs and saved buffers (shapes as there) with the split grid."""
    T, B, D = Q.shape
    H, S = hs.shape[2], A.shape[2]
    Q.copy_(b_q.to(torch.float32).expand(T, B, D))
    Q[0] += h0.to(torch.float32) @ w_q.to(torch.float32).t()
    vp = b_v.to(torch.float32).expand(T, B, D).contiguous()
    plan.config["HAS_LENGTHS"] = lengths is not None
    schedule.run(_forward_kernel, plan, T + 1, (xp, w_hh.contiguous(), w_rh.contiguous(), w_q.contiguous(),
                                                w_v.contiguous(), lengths, hs, cs, act, Q, R, A, y, tape, vp, T, B,
                                                H, S, D, scale), xp.device)


def backward(plan: schedule.Plan, grad_y: Tensor, act: Tensor, cs: Tensor, w_hh: Tensor, w_rh: Tensor,
             w_q: Tensor, w_v: Tensor, lengths: Optional[Tensor], Q: Tensor, A: Tensor, tape: Tensor,
             dtape: Tensor, dh: Tensor, dc: Tensor, dg: Tensor, dpv: Tensor, dq: Tensor, scale: float) -> None:
    """Fill the tile backward's buffers (shapes as there; dpv, dq zeroed) with the split grid."""
    T, B, D = Q.shape
    H, S = dh.shape[1], A.shape[2]
    dr = grad_y[:, :, H:].to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    plan.config["HAS_LENGTHS"] = lengths is not None
    schedule.run(_backward_kernel, plan, T + 1, (grad_y.contiguous(), act, cs, w_hh.contiguous(), w_rh.contiguous(),
                                                 w_q.contiguous(), w_v.contiguous(), lengths, Q, A, tape, dtape,
                                                 dh, dc, dr, dg, dpv, dq, T, B, H, S, D, scale), grad_y.device)

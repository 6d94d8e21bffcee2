"""wm_lstm_sequence (fifo and gated) over a split grid: the ``steps`` and ``persistent`` schedules.

The grid is lstm_sequence's split grid ``[H / BLOCK_N, B / BLOCK_B]``: a
program owns a block of hidden units of a batch tile (``schedule.py``).
What the whole hidden state feeds is summed across a tile's programs with
fp32 atomic adds of each program's share, the columns of the weights that
belong to its units: forward the query ``q_{t+1} = w_q h_t + b_q`` and the
written vector's (gated: and erase gate's) pre-activation ``w_v h_t + b_v``,
backward the read's gradient ``dr_t = dy_r + w_rhᵀ dg_t``. So one grid
barrier ends a step, as in lstm_sequence. The rest of a step's memory work
(the read, the write and their backward: a few S·D per row) every program of
the tile does for itself, and where it stores, all store the same values.

fifo backward: the gradient of the memory window of step t+1 goes to the
tape's gradient through the tile's first program only, except its newest
slot: that one is v_t's, and every program adds it straight into dv_t, which
it needs at once (the first program's adds land after the next barrier).

gated: the memory (forward) and its gradient (backward) alternate between
two buffers by step parity, so that no program overwrites what another of
its tile still reads in the same step; backward, every program recomputes a
checkpoint segment's memories when the walk enters it (``recompute_segment``).

Buffers and saved tensors are those of the ``tile`` kernels
(``wm_lstm_sequence_triton.py``), so either backward can follow either forward.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.triton import lstm_math as wm
from wmkernels.triton import schedule, tiles
from wmkernels.triton.lstm_gates import (add_gate_products, add_recurrent_products, add_resident_products, cell_step,
                                    cell_step_backward, column_tile, hidden_grad_through_gates, load_gate_tiles,
                                    load_preacts, resident_product, row_lengths)
from wmkernels.memory.memory_ops_triton import copy_memory, read_forward, softmax_backward, view, write_forward
from wmkernels.triton.sync import program_ids, step_barrier
from wmkernels.triton.tiles import matmul_w


@triton.jit
def active_slots(cap_ptr, rows, row_ok, S, BLOCK_S: tl.constexpr, GATED: tl.constexpr):
    """The active slots [BLOCK_B, BLOCK_S] of the rows at one step (contract
    §1.5), their capacities c the rows of ``cap_ptr`` (int64, one per batch
    row; S for every row without a capacity: ``capacity_argument``): gated the
    first c slots, fifo the last c; none for rows not ``row_ok``."""
    c = tl.load(cap_ptr + rows, mask=row_ok, other=0).to(tl.int32)[:, None]  # in [1, S]
    slots = tl.arange(0, BLOCK_S)[None, :]
    if GATED:
        return slots < c
    else:
        return (slots >= S - c) & (slots < S)


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


@triton.jit
def _finish_gated_write(vp_ptr, ep_ptr, v_ptr, e_ptr, attn_ptr, old_ptr, new_ptr, rows, row_ok, running, S, D,
                        BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, active):
    """Gated: v = tanh(vp), e = σ(ep) rows [B, D] (whole: every program added
    its share) stored at v_ptr, e_ptr for the ``running`` rows, then the memory
    after the step, written from ``old`` to ``new`` ([B, S, D] each): the erase/add
    write with the step's attn where running (on the ``active`` slots only), a
    copy elsewhere."""
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        off = rows[:, None] * D + ds[None, :]
        mk = running[:, None] & (ds < D)[None, :]
        tl.store(v_ptr + off, wm.tanh(tl.load(vp_ptr + off, mask=mk, other=0.0, cache_modifier=".cg")), mask=mk)
        tl.store(e_ptr + off, wm.sigmoid(tl.load(ep_ptr + off, mask=mk, other=0.0, cache_modifier=".cg")), mask=mk)
    tl.debug_barrier()
    slots = tl.arange(0, BLOCK_S)
    attn = tl.load(attn_ptr + rows[:, None] * S + slots[None, :], mask=running[:, None] & (slots < S)[None, :],
                   other=0.0)
    write_forward(old_ptr, rows * S * D, D, new_ptr, rows * S * D, D, rows, running, attn, e_ptr, v_ptr, S, D,
                  BLOCK_S, BLOCK_D, active)
    copy_memory(old_ptr, new_ptr, rows, row_ok & ~running, S, D, BLOCK_S, BLOCK_D)


@triton.jit(do_not_specialize=["cap_step", "stage_begin", "stage_end"])
def _forward_kernel(xp_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, w_e_ptr, len_ptr, cap_ptr, cap_step, hs_ptr, cs_ptr,
                    act_ptr, q_ptr, r_ptr, attn_ptr, y_ptr, hx_ptr, mem_ptr, vp_ptr, ep_ptr, v_ptr, e_ptr, ck_ptr, T, B,
                    H, S, D, K_CK, scale, counter_ptr, stage_begin, stage_end, GATED: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr, GRID_SYNC: tl.constexpr,
                    REVERSED: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr):
    """Stages [stage_begin, stage_end) of T + 1. Stage s first finishes step
    s-1's write, then (s < T) runs step s: the read with q[s], the gates and
    the cell on this program's units, and its shares of vp[s] (gated: ep[s])
    and q[s+1]. q [T, B, D] arrives holding b_q (q[0] the whole query of h0),
    vp, ep [T, B, D] holding b_v, b_e. The programs exchange h through
    ``hx [2, B, H + D]`` in w_hh's dtype (h_t in slot t % 2, columns < H), as
    lstm_sequence's do. With ``BLOCK_H`` (> 0, ≥ H; ``BLOCK_R`` ≥ D) a program
    keeps its rows of w_hh and w_rh resident and reads the cell's input
    [h_{t-1}, r_t] from slot t % 2: every program puts r_t (the same values)
    in its last D columns first.

    fifo: mem is the tape [S+T, B, D] (step s-1's write puts tanh(vp) in slot
    S+s-1). gated: mem [2, B, S, D] holds M_t in slot t % 2, both slots
    written with the same values by every program of a tile (in place, a
    program could write M_{t+1} over an M_t another still reads); v, e
    [T, B, D] are saved, and ck [⌈T/K⌉, B, S, D] the checkpoints (every K_CK steps).
    cap [T, B] (int64, ``cap_step`` elements from one step to the next: 0 for one
    capacity per row) the active slots of each row and step (``active_slots``):
    the read sees only those, the gated write touches only those."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    BD = B * D
    BSD = B * S * D
    if BLOCK_H > 0:
        own = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        w_i, w_f, w_g, w_o = load_gate_tiles(w_hh_ptr, own, own < H, H, H * H, 1, H, BLOCK_H)  # rows
        u_i, u_f, u_g, u_o = load_gate_tiles(w_rh_ptr, own, own < H, D, H * D, 1, D, BLOCK_R)
    for stage in range(stage_begin, stage_end):
        if stage > 0:
            done = stage - 1
            if GATED:
                written = active_slots(cap_ptr + done * cap_step, rows, row_ok, S, BLOCK_S, GATED)
                _finish_gated_write(vp_ptr + done * BD, ep_ptr + done * BD, v_ptr + done * BD, e_ptr + done * BD,
                                    attn_ptr + done * B * S, mem_ptr + (done % 2) * BSD, mem_ptr + (stage % 2) * BSD,
                                    rows, row_ok, row_ok & (done < lengths), S, D, BLOCK_S, BLOCK_DM, written)
            else:
                _finish_written_vector(vp_ptr + done * BD, mem_ptr + (S + done) * BD, rows,
                                       row_ok & (done < lengths), D, BLOCK_DM)
            tl.debug_barrier()
        if stage < T:
            t = stage
            running = row_ok & (t < lengths)
            valid = running[:, None]
            if GATED:
                m_ptr = mem_ptr + (t % 2) * BSD
                m_off = rows * S * D
                m_stride = D
                if (t % K_CK == 0) & (pid_n == 0):
                    copy_memory(m_ptr, ck_ptr + (t // K_CK) * BSD, rows, row_ok, S, D, BLOCK_S, BLOCK_DM)
            else:
                m_ptr = mem_ptr
                m_off = tl.minimum(lengths, t) * BD + rows * D
                m_stride = BD
            allowed = valid & active_slots(cap_ptr + t * cap_step, rows, row_ok, S, BLOCK_S, GATED)
            read_forward(m_ptr, m_off, m_stride, rows, running, allowed, q_ptr + t * BD, r_ptr + t * BD,
                         attn_ptr + t * B * S, S, D, scale, BLOCK_B, BLOCK_S, BLOCK_DM, ".cg", True)
            tl.debug_barrier()
            if (pid_n == 0) | (BLOCK_H > 0):
                for d0 in range(0, D, BLOCK_DM):
                    ds = d0 + tl.arange(0, BLOCK_DM)
                    d_ok = ds < D
                    r = tl.load(r_ptr + t * BD + rows[:, None] * D + ds[None, :], mask=valid & d_ok[None, :],
                                other=0.0)
                    if pid_n == 0:
                        tl.store(y_ptr + t * B * (H + D) + rows[:, None] * (H + D) + H + ds[None, :],
                                 r.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
                    if BLOCK_H > 0:
                        tl.store(hx_ptr + (t % 2) * B * (H + D) + rows[:, None] * (H + D) + H + ds[None, :],
                                 r.to(hx_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
                tl.debug_barrier()
            for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
                cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
                pre_i, pre_f, pre_g, pre_o = load_preacts(xp_ptr, t, rows, cols, tile, B, H)
                x_prev = hx_ptr + (t % 2) * B * (H + D)  # [h_{t-1}, r_t]
                if BLOCK_H > 0:
                    pre_i, pre_f, pre_g, pre_o = add_resident_products(pre_i, pre_f, pre_g, pre_o, x_prev, H + D,
                                                                       rows, running, w_i, w_f, w_g, w_o, H,
                                                                       BLOCK_H, PRECISION)
                    pre_i, pre_f, pre_g, pre_o = add_resident_products(pre_i, pre_f, pre_g, pre_o, x_prev + H,
                                                                       H + D, rows, running, u_i, u_f, u_g, u_o, D,
                                                                       BLOCK_R, PRECISION)
                else:
                    pre_i, pre_f, pre_g, pre_o = add_recurrent_products(pre_i, pre_f, pre_g, pre_o, x_prev, H + D,
                                                                        rows, running, w_hh_ptr, cols, col_ok, H,
                                                                        BLOCK_K, PRECISION)
                    pre_i, pre_f, pre_g, pre_o = add_gate_products(pre_i, pre_f, pre_g, pre_o, r_ptr + t * BD, rows,
                                                                   running, D, w_rh_ptr, cols, col_ok, H, BLOCK_K,
                                                                   PRECISION)
                h = cell_step(pre_i, pre_f, pre_g, pre_o, t, rows, cols, tile, valid, hs_ptr, cs_ptr, act_ptr,
                              y_ptr, H + D, B, H)
                tl.store(hx_ptr + ((t + 1) % 2) * B * (H + D) + rows[:, None] * (H + D) + cols[None, :],
                         h.to(hx_ptr.dtype.element_ty), mask=tile)
                _add_hidden_shares(h, rows, running, cols, col_ok, w_v_ptr, vp_ptr + t * BD, D, H, BLOCK_D,
                                   PRECISION)
                if GATED:
                    _add_hidden_shares(h, rows, running, cols, col_ok, w_e_ptr, ep_ptr + t * BD, D, H, BLOCK_D,
                                       PRECISION)
                if t + 1 < T:
                    _add_hidden_shares(h, rows, running & (t + 1 < lengths), cols, col_ok, w_q_ptr,
                                       q_ptr + (t + 1) * BD, D, H, BLOCK_D, PRECISION)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (stage + 1 - stage_begin), GRID_SYNC)


@triton.jit
def recompute_segment(ck_ptr, seg_ptr, attn_ptr, e_ptr, v_ptr, t0, steps, rows, row_ok, lengths, B, S, D,
                      BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """Gated backward: seg[j] = M_{t0+j} for j < steps ([B, S, D] each) from the
    checkpoint M_{t0} at ck_ptr, by the erase/add writes of the saved attn, e
    and v [T, B, *] (no matrix products); rows past their length keep their memory.
    With a capacity the writes are not masked: an inactive slot's weight is
    exactly 0, which leaves it as it is (a zero's sign aside, which no gradient
    sees), and the mask would cost the backward kernels 20-30 B of spills a
    thread at S = 128 (sm_80, gated, 16-bit)."""
    BSD = B * S * D
    slots = tl.arange(0, BLOCK_S)
    copy_memory(ck_ptr, seg_ptr, rows, row_ok, S, D, BLOCK_S, BLOCK_D)
    tl.debug_barrier()
    for j in range(1, steps):
        t = t0 + j - 1
        running = row_ok & (t < lengths)
        w = tl.load(attn_ptr + t * B * S + rows[:, None] * S + slots[None, :],
                    mask=running[:, None] & (slots < S)[None, :], other=0.0)
        write_forward(seg_ptr + (j - 1) * BSD, rows * S * D, D, seg_ptr + j * BSD, rows * S * D, D, rows, running, w,
                      e_ptr + t * B * D, v_ptr + t * B * D, S, D, BLOCK_S, BLOCK_D, None)
        copy_memory(seg_ptr + (j - 1) * BSD, seg_ptr + j * BSD, rows, row_ok & (t >= lengths), S, D, BLOCK_S,
                    BLOCK_D)
        tl.debug_barrier()


@triton.jit
def _read_scores_grad(m_ptr, m_off, m_stride, rows, running, active, attn_ptr, d_attn_ptr, dr_ptr, S, D, scale,
                      HAS_D_ATTN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    """First half of a read's backward (rows ``running``, slots ``active`` [BLOCK_B, BLOCK_S];
    attn, d_attn [B, S] and dr [B, D] rows at their pointers, d_attn the gradient
    attn got from elsewhere where ``HAS_D_ATTN``): (attn, the gradient of the
    scores, the allowed (row, slot) mask). The memory outside it is not read."""
    slots = tl.arange(0, BLOCK_S)
    allowed = running[:, None] & active  # active: slots below S only
    offs = rows[:, None] * S + slots[None, :]
    attn = tl.load(attn_ptr + offs, mask=allowed, other=0.0)
    if HAS_D_ATTN:
        d_attn = tl.load(d_attn_ptr + offs, mask=allowed, other=0.0)
    else:
        d_attn = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :],
                    other=0.0)
        dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=running[:, None] & d_ok[None, :], other=0.0,
                     cache_modifier=".cg")
        d_attn += tl.sum(m * dr[:, None, :], axis=2)
    return attn, softmax_backward(attn, d_attn, allowed, slots) * scale, allowed


@triton.jit
def _read_memory_grad(m, attn, d_scores, rows, row_d, q_ptr, dr_ptr, dq_ptr, D, ds):
    """Second half of a read's backward, one slot-width chunk ``ds`` of it:
    stores the dq rows, returns the memory's gradient [BLOCK_B, BLOCK_S, BLOCK_D]."""
    dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0, cache_modifier=".cg")
    q = tl.load(q_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0)
    tl.store(dq_ptr + rows[:, None] * D + ds[None, :], tl.sum(d_scores[:, :, None] * m, axis=1), mask=row_d)
    return attn[:, :, None] * dr[:, None, :] + d_scores[:, :, None] * q[:, None, :]


@triton.jit
def _fifo_read_backward_then_dv(tape_ptr, dtape_ptr, window, BD, rows, running_n, valid_t, designated, last_kept,
                                attn, d_scores, allowed, q_ptr, dr_ptr, dq_ptr, v_off, dpv_ptr, S, D,
                                BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """fifo: the rest of step t+1's read backward (rows ``running_n``), then the
    written vector's gradient of step t (rows ``valid_t``). Stores dq rows;
    ``designated`` adds the memory gradient of the window's slots below
    ``last_kept`` to the tape's gradient; the newest slot's goes into dv_t with
    the tape gradient of v_t's slot (``v_off``), and dpv = dv_t (1 − v_t²) is stored."""
    slots = tl.arange(0, BLOCK_S)
    newest = (slots == S - 1)[None, :, None]
    kept = allowed & (slots < last_kept)[None, :] & designated
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(tape_ptr, window, BD, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :], other=0.0)
        dm = _read_memory_grad(m, attn, d_scores, rows, running_n[:, None] & d_ok[None, :], q_ptr, dr_ptr, dq_ptr,
                               D, ds)
        dm_ptrs = view(dtape_ptr, window, BD, slots, ds)
        dm_mask = kept[:, :, None] & d_ok[None, None, :]
        tl.store(dm_ptrs, dm + tl.load(dm_ptrs, mask=dm_mask, other=0.0), mask=dm_mask)
        v_mask = valid_t[:, None] & d_ok[None, :]
        v_rows = v_off + rows[:, None] * D + ds[None, :]
        dv = tl.load(dtape_ptr + v_rows, mask=v_mask, other=0.0, cache_modifier=".cg")
        dv += tl.sum(tl.where(newest, dm, 0.0), axis=1)
        v = tl.load(tape_ptr + v_rows, mask=v_mask, other=0.0)
        tl.store(dpv_ptr + rows[:, None] * D + ds[None, :], dv * (1.0 - v * v), mask=v_mask)


@triton.jit
def _gated_read_then_write_backward(next_ptr, now_ptr, grad_in_ptr, grad_out_ptr, rows, row_ok, running_n, valid_t,
                                    attn, d_scores, allowed, q_ptr, dr_ptr, dq_ptr, w_ptr, e_ptr, v_ptr, dw_ptr,
                                    dpe_ptr, dpv_ptr, S, D, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
                                    BLOCK_D: tl.constexpr, written):
    """gated: the rest of step t+1's read backward (rows ``running_n``, memory
    M_{t+1} at next_ptr), which completes the gradient of M_{t+1} (grad_in holds
    the rest of it), then step t's write backward (rows ``valid_t``, M_t at
    now_ptr; its attn, e, v rows at w_ptr, e_ptr, v_ptr): stores dq rows, the
    gradient of M_t but for step t's read at grad_out, the write's gradient of
    attn (dw rows), and dpe = de e (1 − e), dpv = dv (1 − v²). All [B, S, D]
    memories are contiguous; rows of the tile not valid at t pass the gradient through.
    ``written`` the slots step t's write touched: M_t outside them is not
    read (taken as 0), their gradient passes through (w is 0 there), and their dw,
    that of a zero slot, is dropped by step t's read backward (no score gradient there)."""
    slots = tl.arange(0, BLOCK_S)
    slot_ok = (slots < S)[None, :]
    w = tl.load(w_ptr + rows[:, None] * S + slots[None, :], mask=valid_t[:, None] & slot_ok, other=0.0)
    whole = row_ok[:, None, None] & slot_ok[:, :, None]
    dw = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m_next = tl.load(view(next_ptr, rows * S * D, D, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :],
                         other=0.0)
        g = _read_memory_grad(m_next, attn, d_scores, rows, running_n[:, None] & d_ok[None, :], q_ptr, dr_ptr,
                              dq_ptr, D, ds)
        mk = whole & d_ok[None, None, :]
        g += tl.load(view(grad_in_ptr, rows * S * D, D, slots, ds), mask=mk, other=0.0)
        row_d = valid_t[:, None] & d_ok[None, :]
        now_mask = mk & valid_t[:, None, None] & written[:, :, None]
        m_now = tl.load(view(now_ptr, rows * S * D, D, slots, ds), mask=now_mask, other=0.0)
        e = tl.load(e_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0)
        v = tl.load(v_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0)
        tl.store(view(grad_out_ptr, rows * S * D, D, slots, ds), g * (1.0 - w[:, :, None] * e[:, None, :]), mask=mk)
        dw += tl.sum(g * (v[:, None, :] - m_now * e[:, None, :]), axis=2)
        de = -tl.sum(g * m_now * w[:, :, None], axis=1)
        dv = tl.sum(g * w[:, :, None], axis=1)
        tl.store(dpe_ptr + rows[:, None] * D + ds[None, :], de * e * (1.0 - e), mask=row_d)
        tl.store(dpv_ptr + rows[:, None] * D + ds[None, :], dv * (1.0 - v * v), mask=row_d)
    tl.store(dw_ptr + rows[:, None] * S + slots[None, :], dw, mask=valid_t[:, None] & slot_ok)


@triton.jit(do_not_specialize=["cap_step", "stage_begin", "stage_end"])
def _backward_kernel(dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, w_e_ptr, len_ptr, cap_ptr,
                     cap_step, q_ptr, attn_ptr, mem_ptr, v_ptr, e_ptr, ck_ptr, seg_ptr, dmem_ptr, dh_ptr, dc_ptr,
                     dr_ptr, dg_ptr, dpv_ptr, dpe_ptr, dq_ptr, da_ptr, T, B, H, S, D, K_CK, scale, counter_ptr,
                     stage_begin, stage_end, GATED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DM: tl.constexpr,
                     PRECISION: tl.constexpr,
                     GRID_SYNC: tl.constexpr, REVERSED: tl.constexpr, BLOCK_H: tl.constexpr):
    """Stages [stage_begin, stage_end) of T + 1; stage s is step t = T - 1 - s.

    A stage finishes step t+1 (dr[t+1] is whole: its shares were added the
    stage before): its read backward, dq[t+1], and from dg[t+1] and dq[t+1] the
    gradient of h_t on this program's units; then runs step t: dpv[t] (gated:
    the write backward, dpe[t] too), the cell backward on its units (dg[t])
    and its share of dr[t]. dr [T, B, D] arrives holding y's gradient of r;
    dh, dc [B, H] the gradients of h_T, c_T, and of h0, c0 after stage T.

    fifo: mem is the tape, dmem its gradient [S+T, B, D], arriving with that
    of the final memory's window (its first S rows hold dM0 at the end).
    gated: dmem [2, B, S, D] holds in slot t % 2 the gradient of M_t but for
    step t's read (slot T % 2 arrives with that of M_T; slot 1 holds dM0 at
    the end); seg [K, B, S, D] the memories of the segment of t, recomputed from
    the checkpoints ck at its last step; da [T, B, S] the write's gradient of attn.
    ``BLOCK_H`` (> 0): the program's columns of w_hh stay resident. cap and
    cap_step as forward (the reads and gated writes of the active slots only)."""
    pid_n, pid_b = program_ids(REVERSED)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    BD = B * D
    BSD = B * S * D
    if BLOCK_H > 0:
        own = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        w_i, w_f, w_g, w_o = load_gate_tiles(w_hh_ptr, own, own < H, H, H * H, H, 1, BLOCK_H)  # columns
    for stage in range(stage_begin, stage_end):
        t = T - 1 - stage
        nxt = tl.minimum(t + 1, T - 1)  # step t+1, clamped for the pointers (its rows are masked at t+1 = T)
        running_n = row_ok & (t + 1 < lengths)
        valid_t = row_ok & (t >= 0) & (t < lengths)
        read = active_slots(cap_ptr + nxt * cap_step, rows, row_ok, S, BLOCK_S, GATED)  # step t+1's
        if GATED:
            if (t >= 0) & ((t % K_CK == K_CK - 1) | (t == T - 1)):
                t0 = t - t % K_CK
                recompute_segment(ck_ptr + (t0 // K_CK) * BSD, seg_ptr, attn_ptr, e_ptr, v_ptr, t0, t - t0 + 1, rows,
                                  row_ok, lengths, B, S, D, BLOCK_S, BLOCK_DM)
            # M_{t+1} opens the next segment (its checkpoint) or lies in this one
            if nxt % K_CK == 0:
                next_ptr = ck_ptr + (nxt // K_CK) * BSD
            else:
                next_ptr = seg_ptr + (nxt % K_CK) * BSD
            attn, d_scores, allowed = _read_scores_grad(next_ptr, rows * S * D, D, rows, running_n, read,
                                                        attn_ptr + nxt * B * S, da_ptr + nxt * B * S,
                                                        dr_ptr + nxt * BD, S, D, scale, True, BLOCK_B, BLOCK_S,
                                                        BLOCK_DM)
            now = tl.maximum(t, 0)
            written = active_slots(cap_ptr + now * cap_step, rows, row_ok, S, BLOCK_S, GATED)  # step t's
            _gated_read_then_write_backward(next_ptr, seg_ptr + (now % K_CK) * BSD, dmem_ptr + ((t + 1) % 2) * BSD,
                                            dmem_ptr + ((t + 2) % 2) * BSD, rows, row_ok, running_n, valid_t, attn,
                                            d_scores, allowed, q_ptr + nxt * BD, dr_ptr + nxt * BD, dq_ptr + nxt * BD,
                                            attn_ptr + now * B * S, e_ptr + now * BD, v_ptr + now * BD,
                                            da_ptr + now * B * S, dpe_ptr + now * BD, dpv_ptr + now * BD, S, D,
                                            BLOCK_B, BLOCK_S, BLOCK_DM, written)
        else:
            window = tl.minimum(lengths, nxt) * BD + rows * D
            attn, d_scores, allowed = _read_scores_grad(mem_ptr, window, BD, rows, running_n, read,
                                                        attn_ptr + nxt * B * S, None, dr_ptr + nxt * BD, S, D, scale,
                                                        False, BLOCK_B, BLOCK_S, BLOCK_DM)
            # v_t's slot (the window's newest) stays out of the shared sum while a dv_t takes it
            _fifo_read_backward_then_dv(mem_ptr, dmem_ptr, window, BD, rows, running_n, valid_t, pid_n == 0,
                                        tl.where(t >= 0, S - 1, S), attn, d_scores, allowed, q_ptr + nxt * BD,
                                        dr_ptr + nxt * BD, dq_ptr + nxt * BD, (S + t) * BD, dpv_ptr + t * BD, S, D,
                                        BLOCK_S, BLOCK_DM)
        tl.debug_barrier()
        for n0 in range(pid_n * BLOCK_N, H, tl.num_programs(0) * BLOCK_N):
            cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
            s_off = rows[:, None] * H + cols[None, :]
            grad_h = tl.load(dh_ptr + s_off, mask=tile, other=0.0)
            if t + 1 < T:
                if BLOCK_H > 0:
                    through = resident_product(dg_ptr + nxt * B * 4 * H, 4 * H, rows, running_n, H, w_i, w_f, w_g,
                                               w_o, tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), BLOCK_H,
                                               PRECISION)
                else:
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
                if GATED:
                    grad_h = matmul_w(grad_h, dpe_ptr + t * BD, D, rows, valid_t, D, w_e_ptr, H, cols, col_ok,
                                      BLOCK_K, PRECISION)
                d_i, d_f, d_g, d_o = cell_step_backward(grad_h, t, rows, cols, tile, valid, act_ptr, cs_ptr, dc_ptr,
                                                        dg_ptr, B, H)
                _add_read_grad_shares(d_i, d_f, d_g, d_o, rows, valid_t, cols, col_ok, w_rh_ptr, dr_ptr + t * BD, D,
                                      H, BLOCK_D, PRECISION)
        step_barrier(counter_ptr + pid_b, tl.num_programs(0) * (stage + 1 - stage_begin), GRID_SYNC)


# Reduction tiles of the split WM kernels' gate products on a GPU: the read's
# memory tiles are live beside them, and the ahead-of-time compile shows the
# forward spilling at 64 (fp16/bf16, S = 32) and not at 32.
SPLIT_BLOCK_K = 32
GATED_BACKWARD_STREAMS_FROM_SLOTS = 128  # see split_config


def split_config(B: int, H: int, S: int, D: int, like: Tensor, programs: Optional[int], gated: bool,
                 backward: bool, tile: dict) -> dict:
    """Blocks of the split grid (the ``backward`` kernel's, else the
    forward's; at most ``programs`` programs where possible): the tile
    kernels' batch and slot tiles (``tile``, their launch config), the smallest hidden-unit block that fits;
    resident weights (``BLOCK_H``; forward w_hh's and w_rh's rows, ``BLOCK_R``
    for w_rh, backward w_hh's columns) where ``schedule.keeps_resident`` says
    so, but for the ``gated`` backward at 128 slots and more, whose memory
    tiles live beside the product (resident, it spills 120-204 B a thread on
    sm_80/sm_90; streamed 36-60 B); 8 warps for float32, whose ieee products
    spill at 4 (the ahead-of-time compile, T = B = H = S = D = 1), and
    ``schedule.RESIDENT_BACKWARD_WARPS`` for the resident backward; memory
    tiles at least 2 slot columns wide (gated, S = 128: 1-wide tiles spill
    120-180 B a thread backward on sm_80, 2-wide 40-60 B and none on sm_90)."""
    block_n = schedule.fitting_block_n(B, H, tile["BLOCK_B"], programs)
    block_k = tiles.gate_reduction_block(max(H, D), block_n, like)
    block_h, block_r = tiles.pow2(H, tiles.DOT_MIN), 0 if backward else tiles.pow2(D, tiles.DOT_MIN)
    resident = (schedule.keeps_resident(block_h + block_r, block_h, block_n, tile["BLOCK_B"], like)
                and not (gated and backward and tile["BLOCK_S"] >= GATED_BACKWARD_STREAMS_FROM_SLOTS))
    return dict(tile, BLOCK_N=block_n, BLOCK_K=block_k if tiles.interpreted(like) else min(block_k, SPLIT_BLOCK_K),
                BLOCK_D=tiles.block(D, 32, like, lo=tiles.DOT_MIN),
                BLOCK_DM=max(tile["BLOCK_DM"], min(2, tiles.pow2(D))), BLOCK_H=block_h if resident else 0,
                **({} if backward else {"BLOCK_R": block_r if resident else 0}),
                num_warps=(8 if like.dtype == torch.float32 else
                           schedule.RESIDENT_BACKWARD_WARPS if resident and backward else tile["num_warps"]))


def capacity_argument(capacity: Optional[Tensor], B: int, S: int, device: torch.device) -> tuple:
    """The kernels' (cap_ptr, cap_step) of ``capacity`` (int64 [T, B], or None):
    the capacity and its step stride (0 where a [B] one was expanded over the
    steps), or without one every row's capacity S in a [B] tensor read at
    every step (one small fill, as ``tiles.lengths_argument`` does for lengths):
    one compiled kernel either way, the mask then every slot."""
    if capacity is None:
        return torch.full((B,), S, dtype=torch.int64, device=device), 0
    if capacity.stride(1) != 1:
        capacity = capacity.contiguous()
    return capacity, capacity.stride(0)


def forward(plan: schedule.Plan, xp: Tensor, h0: Tensor, w_hh: Tensor, w_rh: Tensor, w_q: Tensor, b_q: Tensor,
            w_v: Tensor, b_v: Tensor, w_e: Optional[Tensor], b_e: Optional[Tensor], lengths: Optional[Tensor],
            capacity: Optional[Tensor], hs: Tensor, cs: Tensor, act: Tensor, Q: Tensor, R: Tensor, A: Tensor,
            y: Tensor, mem: Tensor,
            V: Optional[Tensor], E: Optional[Tensor], ck: Optional[Tensor], K: int, scale: float) -> Tensor:
    """Fill the tile forward's outputs and saved buffers (shapes as there) with
    the split grid. fifo: ``mem`` is the tape; gated (w_e given): ``mem`` holds
    M0 and the final memory is returned (else ``mem``). ``capacity``: int64
    [T, B], contiguous (contract §1.5), or None."""
    T, B, D = Q.shape
    H, S = hs.shape[2], A.shape[2]
    gated = w_e is not None
    f32 = dict(dtype=torch.float32)
    Q.copy_(b_q.to(**f32).expand(T, B, D))
    Q[0] += h0.to(**f32) @ w_q.to(**f32).t()
    vp = b_v.to(**f32).expand(T, B, D).contiguous()
    ep = b_e.to(**f32).expand(T, B, D).contiguous() if gated else None
    memories = torch.stack([mem, torch.empty_like(mem)]) if gated else mem  # M_t in slot t % 2
    h_exchange = torch.empty(2, B, H + D, device=xp.device, dtype=w_hh.dtype)
    h_exchange[0, :, :H] = h0
    plan.config.update(GATED=gated)
    schedule.run(_forward_kernel, plan, T + 1, (xp, w_hh.contiguous(), w_rh.contiguous(), w_q.contiguous(),
                                                w_v.contiguous(), w_e.contiguous() if gated else None,
                                                tiles.lengths_argument(lengths, B, T, xp.device),
                                                *capacity_argument(capacity, B, S, xp.device), hs, cs, act, Q, R, A,
                                                y, h_exchange, memories, vp, ep, V, E, ck, T, B, H, S, D, K, scale),
                 xp.device)
    return memories[T % 2] if gated else mem


def backward(plan: schedule.Plan, grad_y: Tensor, act: Tensor, cs: Tensor, w_hh: Tensor, w_rh: Tensor,
             w_q: Tensor, w_v: Tensor, w_e: Optional[Tensor], lengths: Optional[Tensor],
             capacity: Optional[Tensor], Q: Tensor, A: Tensor,
             mem: Tensor, V: Optional[Tensor], E: Optional[Tensor], ck: Optional[Tensor], K: int, dmem: Tensor,
             dh: Tensor, dc: Tensor, dg: Tensor, dpv: Tensor, dpe: Optional[Tensor], dq: Tensor,
             scale: float) -> Tensor:
    """Fill the tile backward's buffers (shapes as there; dpv, dpe, dq zeroed)
    with the split grid. fifo: ``mem``, ``dmem`` are the tape and its gradient;
    gated (w_e given): ``dmem`` holds the gradient of the final memory, and the
    gradient of M0 is returned (else ``dmem``). ``capacity`` as forward's."""
    T, B, D = Q.shape
    H, S = dh.shape[1], A.shape[2]
    gated = w_e is not None
    f32 = dict(device=grad_y.device, dtype=torch.float32)
    dr = grad_y[:, :, H:].to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    seg = da = None
    if gated:
        grads = torch.empty(2, B, S, D, **f32)  # slot t % 2: the gradient of M_t (see _backward_kernel)
        grads[T % 2] = dmem
        dmem = grads
        seg, da = torch.empty(min(K, T), B, S, D, **f32), torch.empty(T, B, S, **f32)
    plan.config.update(GATED=gated)
    schedule.run(_backward_kernel, plan, T + 1, (grad_y.contiguous(), act, cs, w_hh.contiguous(), w_rh.contiguous(),
                                                 w_q.contiguous(), w_v.contiguous(),
                                                 w_e.contiguous() if gated else None,
                                                 tiles.lengths_argument(lengths, B, T, grad_y.device),
                                                 *capacity_argument(capacity, B, S, grad_y.device), Q, A,
                                                 None if gated else mem, V, E, ck, seg, dmem, dh, dc, dr, dg, dpv, dpe,
                                                 dq, da, T, B, H, S, D, K, scale), grad_y.device)
    return dmem[1] if gated else dmem

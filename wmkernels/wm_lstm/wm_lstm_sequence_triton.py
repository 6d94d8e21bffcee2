"""wm_lstm_sequence (contract §1.4) in Triton, fifo and gated, the time loop inside one launch.

Forward: ``xp = x w_ihᵀ + b`` for all steps is one matrix product up front;
then one launch walks time, each program owning a block of batch rows. Per
step: the query (``tl.dot``), the read (scores, masked softmax, weighted sum:
the helpers of ``memory.py``), the gates (``tl.dot`` with w_hh and w_rh), the
cell, the written vector, the memory update. Per-step vectors go to fp32
buffers the next stages read back (from L2, behind a CTA barrier); they are
what backward keeps: ``hs, cs [T+1, B, H]``, ``act [T, B, 4H]``, ``Q, R [T, B, D]``,
``A [T, B, S]``.

The memory, kept small as contract §1.4 asks:

* fifo: a *tape* ``[S+T, B, D]`` holding M0 then every written vector v_t
  (slot ``S+t``); the memory before step t of row b is the window of S tape
  rows starting at ``min(t, length_b)``. No M_t is stored, only the v_t.
* gated: one ``[B, S, D]`` memory updated in place, checkpointed every K ≈ √T
  steps; backward recomputes the K memories of a segment from its checkpoint
  (the updates need only the saved attn, e and v: no matrix products) and
  walks the segment in reverse.

Backward walks time in reverse in one launch and writes the per-step
gradients of the pre-activations (gates, query, written and erase vectors);
the weight gradients are then matrix products over all steps at once.

These are the ``tile`` schedule's kernels; the ``steps`` and ``persistent``
schedules (``WMKERNELS_TRITON_SCHEDULE``) run ``wm_lstm_sequence_split_triton.py``'s on the same
buffers.
"""
import functools
import math
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.contract import Impl, checkpoint_interval, empty_outputs
from wmkernels.memory.memory_ops_triton import copy_memory, read_backward, read_forward, write_backward, write_forward
from wmkernels.triton import lstm_math as wm
from wmkernels.triton import schedule, tiles
from wmkernels.triton.launch import launch
from wmkernels.triton.lstm_gates import (add_gate_products, cell_step, cell_step_backward, column_tile,
                                         hidden_grad_through_gates, load_preacts, row_lengths)
from wmkernels.triton.tiles import matmul_w, matmul_wt
from wmkernels.wm_lstm import wm_lstm_sequence_split_triton as wm_split
from wmkernels.wm_lstm.wm_lstm_sequence_split_triton import active_slots, capacity_argument, recompute_segment


@triton.jit(do_not_specialize=["cap_step"])
def _forward_kernel(xp_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, b_q_ptr, w_v_ptr, b_v_ptr, w_e_ptr, b_e_ptr, len_ptr,
                    cap_ptr, cap_step, hs_ptr, cs_ptr, act_ptr, q_ptr, r_ptr, attn_ptr, y_ptr, mem_ptr, v_ptr, e_ptr,
                    ck_ptr, T, B, H, S, D, K_CK, scale, GATED: tl.constexpr, BLOCK_B: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr):
    """fifo: mem is the tape [S+T, B, D] (v, e, ck unused). gated: mem [B, S, D]
    is updated in place, v, e [T, B, D] are saved, ck [ceil(T/K), B, S, D] the checkpoints.
    cap [T, B] (int64, ``cap_step`` elements between steps) the active slots of each
    row and step (contract §1.5): the read sees only those, the gated write touches
    only those."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    BD = B * D
    for t in range(0, T):
        running = row_ok & (t < lengths)
        valid = running[:, None]
        h_prev = hs_ptr + t * B * H
        if GATED:
            m_off = rows * S * D
            m_stride = D
            if t % K_CK == 0:
                copy_memory(mem_ptr, ck_ptr + (t // K_CK) * B * S * D, rows, row_ok, S, D, BLOCK_S, BLOCK_DM)
        else:
            m_off = tl.minimum(lengths, t) * BD + rows * D
            m_stride = BD
        # the query q_t = w_q h_{t-1} + b_q
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            q = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
            q += tl.load(b_q_ptr + ds, mask=d_ok, other=0.0).to(tl.float32)[None, :]
            q = matmul_wt(q, h_prev, H, rows, running, H, w_q_ptr, ds, d_ok, BLOCK_K, PRECISION)
            tl.store(q_ptr + t * BD + rows[:, None] * D + ds[None, :], q, mask=valid & d_ok[None, :])
        tl.debug_barrier()
        active = active_slots(cap_ptr + t * cap_step, rows, row_ok, S, BLOCK_S, GATED)
        allowed = valid & active  # active: slots below S only
        attn = read_forward(mem_ptr, m_off, m_stride, rows, running, allowed, q_ptr + t * BD, r_ptr + t * BD,
                            attn_ptr + t * B * S, S, D, scale, BLOCK_B, BLOCK_S, BLOCK_DM, "", True)
        tl.debug_barrier()
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            r = tl.load(r_ptr + t * BD + rows[:, None] * D + ds[None, :], mask=valid & d_ok[None, :], other=0.0)
            tl.store(y_ptr + t * B * (H + D) + rows[:, None] * (H + D) + H + ds[None, :],
                     r.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
        # the gates and the cell
        for n0 in range(0, H, BLOCK_N):
            cols, col_ok, tile = column_tile(n0, row_ok, H, BLOCK_N)
            pre_i, pre_f, pre_g, pre_o = load_preacts(xp_ptr, t, rows, cols, tile, B, H)
            pre_i, pre_f, pre_g, pre_o = add_gate_products(pre_i, pre_f, pre_g, pre_o, h_prev, rows, running, H,
                                                           w_hh_ptr, cols, col_ok, H, BLOCK_K, PRECISION)
            pre_i, pre_f, pre_g, pre_o = add_gate_products(pre_i, pre_f, pre_g, pre_o, r_ptr + t * BD, rows,
                                                           running, D, w_rh_ptr, cols, col_ok, H, BLOCK_K, PRECISION)
            cell_step(pre_i, pre_f, pre_g, pre_o, t, rows, cols, tile, valid, hs_ptr, cs_ptr, act_ptr, y_ptr, H + D,
                      B, H)
        tl.debug_barrier()
        # the written vector v_t = tanh(w_v h_t + b_v) (gated: and e_t = σ(w_e h_t + b_e))
        h_new = hs_ptr + (t + 1) * B * H
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            store_ok = valid & d_ok[None, :]
            v = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
            v += tl.load(b_v_ptr + ds, mask=d_ok, other=0.0).to(tl.float32)[None, :]
            v = wm.tanh(matmul_wt(v, h_new, H, rows, running, H, w_v_ptr, ds, d_ok, BLOCK_K, PRECISION))
            if GATED:
                tl.store(v_ptr + t * BD + rows[:, None] * D + ds[None, :], v, mask=store_ok)
                e = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
                e += tl.load(b_e_ptr + ds, mask=d_ok, other=0.0).to(tl.float32)[None, :]
                e = wm.sigmoid(matmul_wt(e, h_new, H, rows, running, H, w_e_ptr, ds, d_ok, BLOCK_K, PRECISION))
                tl.store(e_ptr + t * BD + rows[:, None] * D + ds[None, :], e, mask=store_ok)
            else:
                tl.store(mem_ptr + (S + t) * BD + rows[:, None] * D + ds[None, :], v, mask=store_ok)
        tl.debug_barrier()
        if GATED:
            write_forward(mem_ptr, m_off, m_stride, mem_ptr, m_off, m_stride, rows, running, attn,
                          e_ptr + t * BD, v_ptr + t * BD, S, D, BLOCK_S, BLOCK_DM, active)
            tl.debug_barrier()


@triton.jit
def _backward_step(t, rows, row_ok, lengths, cap_ptr, cap_step, m_ptr, m_off, m_stride, dm_ptr, dm_off, dm_stride,
                   dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, w_e_ptr, q_ptr, attn_ptr,
                   tape_ptr, dtape_ptr, v_ptr, e_ptr, dh_ptr, dc_ptr, dr_ptr, dg_ptr, dpv_ptr, dpe_ptr, dq_ptr,
                   T, B, H, S, D, scale, GATED: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr):
    """One step t of the reverse walk. The memory before step t is the view
    (m_ptr, m_off, m_stride); the gradient of the memory the view (dm_ptr, ...).
    On entry dh, dc and the memory gradient belong to step t's outputs; on exit
    to step t-1's. The step reads and (gated) writes the active slots of cap
    [T, B] (``cap_step`` between steps) only (``active_slots``)."""
    running = row_ok & (t < lengths)
    valid = running[:, None]
    slots = tl.arange(0, BLOCK_S)
    allowed = valid & (slots < S)[None, :]
    active = active_slots(cap_ptr + t * cap_step, rows, row_ok, S, BLOCK_S, GATED)
    BD = B * D
    attn = tl.load(attn_ptr + t * B * S + rows[:, None] * S + slots[None, :], mask=allowed, other=0.0)
    allowed = valid & active  # active: slots below S only
    # 1. gradients of the pre-activations of v_t (and e_t), and of attn through the write
    if GATED:
        d_attn = write_backward(dm_ptr, dm_off, dm_stride, m_ptr, m_off, m_stride, dm_ptr, dm_off, dm_stride,
                                rows, running, attn, e_ptr + t * BD, v_ptr + t * BD, dpe_ptr + t * BD,
                                dpv_ptr + t * BD, S, D, BLOCK_B, BLOCK_S, BLOCK_DM, active)
        tl.debug_barrier()
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            mk = valid & (ds < D)[None, :]
            off = t * BD + rows[:, None] * D + ds[None, :]
            v = tl.load(v_ptr + off, mask=mk, other=0.0)
            e = tl.load(e_ptr + off, mask=mk, other=0.0)
            tl.store(dpv_ptr + off, tl.load(dpv_ptr + off, mask=mk, other=0.0) * (1.0 - v * v), mask=mk)
            tl.store(dpe_ptr + off, tl.load(dpe_ptr + off, mask=mk, other=0.0) * e * (1.0 - e), mask=mk)
    else:
        d_attn = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            mk = valid & (ds < D)[None, :]
            tape_off = (S + t) * BD + rows[:, None] * D + ds[None, :]
            v = tl.load(tape_ptr + tape_off, mask=mk, other=0.0)
            dv = tl.load(dtape_ptr + tape_off, mask=mk, other=0.0)
            tl.store(dpv_ptr + t * BD + rows[:, None] * D + ds[None, :], dv * (1.0 - v * v), mask=mk)
    tl.debug_barrier()
    # 2. the cell: gradients of the gate pre-activations and of c_{t-1}
    for n0 in range(0, H, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < H
        tile = row_ok[:, None] & col_ok[None, :]
        s_off = rows[:, None] * H + cols[None, :]
        grad_h = tl.load(dh_ptr + s_off, mask=tile, other=0.0)
        grad_h += tl.load(dy_ptr + t * B * (H + D) + rows[:, None] * (H + D) + cols[None, :],
                          mask=tile & valid, other=0.0).to(tl.float32)
        grad_h = matmul_w(grad_h, dpv_ptr + t * BD, D, rows, running, D, w_v_ptr, H, cols, col_ok, BLOCK_K,
                          PRECISION)
        if GATED:
            grad_h = matmul_w(grad_h, dpe_ptr + t * BD, D, rows, running, D, w_e_ptr, H, cols, col_ok, BLOCK_K,
                              PRECISION)
        cell_step_backward(grad_h, t, rows, cols, tile, valid, act_ptr, cs_ptr, dc_ptr, dg_ptr, B, H)
    tl.debug_barrier()
    # 3. the gradient of r_t: from y and from the gates
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        dr = tl.load(dy_ptr + t * B * (H + D) + rows[:, None] * (H + D) + H + ds[None, :],
                     mask=valid & d_ok[None, :], other=0.0).to(tl.float32)
        dr = matmul_w(dr, dg_ptr + t * B * 4 * H, 4 * H, rows, running, 4 * H, w_rh_ptr, D, ds, d_ok, BLOCK_K,
                      PRECISION)
        tl.store(dr_ptr + rows[:, None] * D + ds[None, :], dr, mask=valid & d_ok[None, :])
    tl.debug_barrier()
    # 4. the read: gradients of the memory (accumulated) and of q_t
    read_backward(m_ptr, m_off, m_stride, dm_ptr, dm_off, dm_stride, rows, running, allowed, attn, d_attn,
                  q_ptr + t * BD, dr_ptr, dq_ptr + t * BD, S, D, scale, True, BLOCK_B, BLOCK_S, BLOCK_DM, True)
    tl.debug_barrier()
    # 5. the gradient of h_{t-1}: through the gates and the query
    for k0 in range(0, H, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        col_ok = cols < H
        tile = row_ok[:, None] & col_ok[None, :]
        s_off = rows[:, None] * H + cols[None, :]
        acc = hidden_grad_through_gates(t, rows, running, cols, col_ok, dg_ptr, w_hh_ptr, B, H,
                                        BLOCK_B, BLOCK_N, BLOCK_K, PRECISION, "")
        acc = matmul_w(acc, dq_ptr + t * BD, D, rows, running, D, w_q_ptr, H, cols, col_ok, BLOCK_K, PRECISION)
        carried = tl.load(dh_ptr + s_off, mask=tile, other=0.0)
        tl.store(dh_ptr + s_off, tl.where(valid, acc, carried), mask=tile)
    tl.debug_barrier()


@triton.jit(do_not_specialize=["cap_step"])
def _backward_kernel(dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, w_e_ptr, len_ptr, cap_ptr,
                     cap_step, q_ptr, attn_ptr, mem_ptr, v_ptr, e_ptr, ck_ptr, seg_ptr, dh_ptr, dc_ptr, dmem_ptr,
                     dr_ptr, dg_ptr, dpv_ptr, dpe_ptr, dq_ptr, T, B, H, S, D, K_CK, scale, GATED: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DM: tl.constexpr, PRECISION: tl.constexpr):
    """fifo: mem/dmem are the tape and its gradient [S+T, B, D]. gated: dmem [B, S, D]
    is the gradient of the memory, seg [K, B, S, D] the recomputed memories of a segment."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    lengths = row_lengths(len_ptr, rows, row_ok)
    BD = B * D
    BSD = B * S * D
    if GATED:
        for seg_back in range(0, tl.cdiv(T, K_CK)):
            t0 = (tl.cdiv(T, K_CK) - 1 - seg_back) * K_CK
            steps = tl.minimum(T - t0, K_CK)
            recompute_segment(ck_ptr + (t0 // K_CK) * BSD, seg_ptr, attn_ptr, e_ptr, v_ptr, t0, steps, rows, row_ok,
                              lengths, B, S, D, BLOCK_S, BLOCK_DM)
            for back in range(0, steps):
                j = steps - 1 - back
                _backward_step(t0 + j, rows, row_ok, lengths, cap_ptr, cap_step, seg_ptr + j * BSD, rows * S * D, D,
                               dmem_ptr, rows * S * D, D, dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr,
                               w_v_ptr, w_e_ptr, q_ptr, attn_ptr, mem_ptr, dmem_ptr, v_ptr, e_ptr, dh_ptr,
                               dc_ptr, dr_ptr, dg_ptr, dpv_ptr, dpe_ptr, dq_ptr, T, B, H, S, D, scale, GATED,
                               BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_S, BLOCK_D, BLOCK_DM, PRECISION)
    else:
        for back in range(0, T):
            t = T - 1 - back
            window = tl.minimum(lengths, t) * BD + rows * D
            _backward_step(t, rows, row_ok, lengths, cap_ptr, cap_step, mem_ptr, window, BD, dmem_ptr, window, BD,
                           dy_ptr, act_ptr, cs_ptr, w_hh_ptr, w_rh_ptr, w_q_ptr, w_v_ptr, w_e_ptr, q_ptr,
                           attn_ptr, mem_ptr, dmem_ptr, v_ptr, e_ptr, dh_ptr, dc_ptr, dr_ptr, dg_ptr, dpv_ptr,
                           dpe_ptr, dq_ptr, T, B, H, S, D, scale, GATED, BLOCK_B, BLOCK_N, BLOCK_K,
                           BLOCK_S, BLOCK_D, BLOCK_DM, PRECISION)


# Elements of one [BLOCK_B, BLOCK_S, BLOCK_DM] memory tile on a GPU: the read and
# write helpers keep a few such fp32 tiles live at once, so larger tiles spill
# (checked for every launched variant by wmkernels.tools.aot).
MEMORY_TILE = 2048


def launch_config(B: int, H: int, S: int, D: int, like: Tensor) -> dict:
    """Tiles of the WM-LSTM kernels: batch rows, hidden, reduction, slots, slot
    width of the query/write products (BLOCK_D, ≥ 16 for tl.dot) and of the
    memory tiles (BLOCK_DM). One program per batch tile walks the whole
    sequence, so occupancy buys nothing: one software-pipelining stage (deeper
    pipelines only add live registers) and the full register file
    (``maxnreg=255``: ptxas would otherwise cap registers for occupancy and spill)."""
    block_b, block_s = tiles.batch_tile(B, like), tiles.pow2(S)
    return dict(BLOCK_B=block_b,
                BLOCK_N=tiles.block(H, 64, like, lo=tiles.DOT_MIN),
                BLOCK_K=tiles.block(max(H, D), 64, like, lo=tiles.DOT_MIN),
                BLOCK_S=block_s,
                BLOCK_D=tiles.block(D, 16, like, lo=tiles.DOT_MIN),
                BLOCK_DM=tiles.block(D, max(1, MEMORY_TILE // (block_b * block_s)), like),
                PRECISION=tiles.precision(like.dtype), num_warps=8 if block_s >= 64 else 4, num_stages=1,
                maxnreg=tiles.MAX_REGISTERS)


def split_plan(B: int, H: int, S: int, D: int, like: Tensor, gated: bool,
               backward: bool = False) -> Optional[schedule.Plan]:
    """The split grid's launches (``wm_lstm_sequence_split_triton.py``; the ``backward`` kernel's, else
    the forward's) where ``WMKERNELS_TRITON_SCHEDULE`` asks for a split
    schedule, else None: the one-program-per-tile kernels here."""
    if schedule.requested().kind == "tile":
        return None
    return schedule.plan(B, H, like, lambda B, H, like: launch_config(B, H, S, D, like),
                         lambda B, H, like, programs: wm_split.split_config(
                             B, H, S, D, like, programs, gated, backward, launch_config(B, H, S, D, like)))


def _window_index(lengths: Optional[Tensor], T: int, B: int, S: int, device) -> Tuple[Tensor, Tensor]:
    """Tape rows and batch columns of the final FIFO memory: row b's last S tape rows."""
    start = tiles.lengths_argument(lengths, B, T, device)
    return start[:, None] + torch.arange(S, device=device), torch.arange(B, device=device)[:, None]


def _scale(D: int) -> float:
    return 1.0 / math.sqrt(D)


@torch.library.custom_op("wmkernels_triton::wm_lstm_sequence_forward", mutates_args=())
def wm_lstm_sequence_forward(x: Tensor, h0: Tensor, c0: Tensor, M0: Tensor, w_ih: Tensor, w_hh: Tensor,
                             w_rh: Tensor, b: Tensor, w_q: Tensor, b_q: Tensor, w_v: Tensor, b_v: Tensor,
                             w_e: Optional[Tensor], b_e: Optional[Tensor], lengths: Optional[Tensor],
                             capacity: Optional[Tensor], write_mode: str, K: int) -> List[Tensor]:
    """Shapes of contract §1.4, capacity int64 [T, B] (contract §1.5; a [B] one
    expanded over the steps) or None, a memory checkpoint every K steps (gated) -> (y, h_T, c_T, M_T,
    then what backward keeps: h_all, c_all [T+1, B, H], act [T, B, 4H], q_all, r_all [T, B, D],
    attn [T, B, S], mem, v_all, e_all, ckpt; all float32). fifo: mem is the tape [S+T, B, D]
    (M0's slots, then every written vector); v_all, e_all, ckpt are empty. gated: mem is empty,
    v_all, e_all [T, B, D] and ckpt [ceil(T/K), B, S, D] are kept."""
    gated = write_mode == "gated"
    T, B, _ = x.shape
    H, (S, D) = h0.shape[1], M0.shape[1:]
    tiles.check_int32_indexing("wm_lstm_sequence", gates=(T + 1) * B * 4 * H, y=T * B * (H + D),
                               memory=(S + T) * B * D, checkpoints=(T + 1) * B * S * D)
    f32 = dict(device=x.device, dtype=torch.float32)
    xp = torch.addmm(b, x.reshape(T * B, x.shape[2]), w_ih.t())
    h_all, c_all = torch.empty(T + 1, B, H, **f32), torch.empty(T + 1, B, H, **f32)
    h_all[0], c_all[0] = h0, c0
    act = torch.empty(T, B, 4 * H, **f32)
    q_all, r_all, attn = torch.empty(T, B, D, **f32), torch.zeros(T, B, D, **f32), torch.empty(T, B, S, **f32)
    y = x.new_empty(T, B, H + D)
    k = K
    if gated:
        mem = M0.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        v_all, e_all = torch.empty(T, B, D, **f32), torch.empty(T, B, D, **f32)
        ckpt = torch.empty(triton.cdiv(T, k), B, S, D, **f32)
    else:
        mem = torch.empty(S + T, B, D, **f32)
        mem[:S] = M0.transpose(0, 1)
        v_all, e_all, ckpt = (torch.empty(0, **f32) for _ in range(3))
    split = split_plan(B, H, S, D, x, gated) if T and B else None
    if split is not None:
        mem = wm_split.forward(split, xp, h0, w_hh, w_rh, w_q, b_q, w_v, b_v, w_e if gated else None,
                                b_e if gated else None, lengths, capacity, h_all, c_all, act, q_all, r_all, attn,
                                y, mem, v_all if gated else None, e_all if gated else None, ckpt if gated else None,
                                k, _scale(D))
    elif T and B:
        config = launch_config(B, H, S, D, x)
        launch(
            _forward_kernel, (triton.cdiv(B, config["BLOCK_B"]),), xp, w_hh.contiguous(), w_rh.contiguous(), w_q.contiguous(), b_q.contiguous(), w_v.contiguous(),
            b_v.contiguous(), w_e.contiguous() if gated else None, b_e.contiguous() if gated else None,
            tiles.lengths_argument(lengths, B, T, x.device), *capacity_argument(capacity, B, S, x.device),
            h_all, c_all, act, q_all, r_all, attn, y, mem, v_all if gated else None, e_all if gated else None,
            ckpt if gated else None,
            T, B, H, S, D, k, _scale(D), device=x.device, GATED=gated, **config)
    if gated:
        M_T = mem.to(x.dtype, copy=True)
        mem = torch.empty(0, **f32)  # backward starts from the checkpoints, not from M_T
    else:
        M_T = mem[_window_index(lengths, T, B, S, x.device)].to(x.dtype)
    return [y, h_all[T].to(x.dtype, copy=True), c_all[T].to(x.dtype, copy=True), M_T,
            h_all, c_all, act, q_all, r_all, attn, mem, v_all, e_all, ckpt]


@wm_lstm_sequence_forward.register_fake
def _(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e, lengths, capacity, write_mode, K):
    gated = write_mode == "gated"
    T, B, _ = x.shape
    H, (S, D) = h0.shape[1], M0.shape[1:]
    f32 = dict(device=x.device, dtype=torch.float32)
    if gated:
        mem, v_all, e_all = x.new_empty(0, **f32), x.new_empty(T, B, D, **f32), x.new_empty(T, B, D, **f32)
        ckpt = x.new_empty(triton.cdiv(T, K), B, S, D, **f32)
    else:
        mem, v_all, e_all, ckpt = x.new_empty(S + T, B, D, **f32), x.new_empty(0, **f32), x.new_empty(0, **f32), x.new_empty(0, **f32)
    return [*empty_outputs("wm_lstm_sequence", x, x=x, h0=h0, M0=M0), x.new_empty(T + 1, B, H, **f32),
            x.new_empty(T + 1, B, H, **f32), x.new_empty(T, B, 4 * H, **f32), x.new_empty(T, B, D, **f32),
            x.new_empty(T, B, D, **f32), x.new_empty(T, B, S, **f32), mem, v_all, e_all, ckpt]


@torch.library.custom_op("wmkernels_triton::wm_lstm_sequence_backward", mutates_args=())
def wm_lstm_sequence_backward(grad_y: Tensor, grad_h: Tensor, grad_c: Tensor, grad_M: Tensor, x: Tensor,
                              w_ih: Tensor, w_hh: Tensor, w_rh: Tensor, w_q: Tensor, w_v: Tensor,
                              w_e: Optional[Tensor], h_all: Tensor, c_all: Tensor, act: Tensor, q_all: Tensor,
                              r_all: Tensor, attn: Tensor, mem: Tensor, v_all: Tensor, e_all: Tensor, ckpt: Tensor,
                              lengths: Optional[Tensor], capacity: Optional[Tensor], write_mode: str,
                              K: int) -> List[Tensor]:
    """Gradients of (y, h_T, c_T, M_T) and what forward kept -> gradients of
    (x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e, b_e); fifo: the
    last two are empty."""
    gated = write_mode == "gated"
    T, B, I = x.shape
    H, (S, D) = h_all.shape[2], grad_M.shape[1:]
    f32 = dict(device=x.device, dtype=torch.float32)
    copy = dict(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    dh, dc = grad_h.to(**copy), grad_c.to(**copy)  # updated in place by the kernel
    k = K
    if gated:
        dmem, seg = grad_M.to(**copy), torch.empty(min(k, T), B, S, D, **f32)
    else:
        dmem, seg = torch.zeros(S + T, B, D, **f32), None
        dmem[_window_index(lengths, T, B, S, x.device)] = grad_M.to(torch.float32)
    dr = torch.empty(B, D, **f32)
    split = split_plan(B, H, S, D, x, gated, backward=True) if T and B else None
    # dg: on the split grid every program gathers all of it each step, so it is
    # kept in the products' dtype (as lstm_sequence keeps it: half the bytes in
    # 16-bit); the tile kernel keeps fp32 (16-bit there spills more on sm_80)
    dg = torch.empty(T, B, 4 * H, device=x.device,
                     dtype=torch.float32 if split is None else tiles.product_dtype(x.dtype))
    dpv, dq = torch.zeros(T, B, D, **f32), torch.zeros(T, B, D, **f32)
    dpe = torch.zeros(T, B, D, **f32) if gated else None
    if split is not None:
        dmem = wm_split.backward(split, grad_y, act, c_all, w_hh, w_rh, w_q, w_v, w_e if gated else None, lengths,
                                 capacity, q_all, attn, mem, v_all if gated else None, e_all if gated else None,
                                 ckpt if gated else None, k, dmem,
                                 dh, dc, dg, dpv, dpe, dq, _scale(D))
    elif T and B:
        config = launch_config(B, H, S, D, x)
        launch(
            _backward_kernel, (triton.cdiv(B, config["BLOCK_B"]),), grad_y.contiguous(), act, c_all, w_hh.contiguous(), w_rh.contiguous(), w_q.contiguous(),
            w_v.contiguous(), w_e.contiguous() if gated else None, tiles.lengths_argument(lengths, B, T, x.device),
            *capacity_argument(capacity, B, S, x.device), q_all, attn, None if gated else mem,
            v_all if gated else None, e_all if gated else None, ckpt if gated else None, seg,
            dh, dc, dmem, dr, dg, dpv, dpe, dq, T, B, H, S, D, k, _scale(D),
            device=x.device, GATED=gated, **config)
    dtype = x.dtype
    G, dpv2, dq2 = dg.reshape(T * B, 4 * H), dpv.reshape(T * B, D), dq.reshape(T * B, D)
    op = functools.partial(tiles.product_operand, dtype=dtype)
    # the state a step reads and writes; zeros past each row's length (a padded row's rows of G, dq, dpv
    # are zero there, and its kept state, even h0 of a row of length 0, must not meet them: 0 · NaN is NaN)
    h_prev = op(tiles.without_padding(h_all[:T], lengths).reshape(T * B, H))
    h_next = op(tiles.without_padding(h_all[1:], lengths).reshape(T * B, H))
    G_op = op(G)
    grads = [tiles.without_padding((G_op @ op(w_ih)).reshape(T, B, I), lengths), dh, dc,
             dmem if gated else dmem[:S].transpose(0, 1),
             G_op.t() @ op(tiles.without_padding(x, lengths).reshape(T * B, I)), G_op.t() @ h_prev,
             G_op.t() @ op(r_all.reshape(T * B, D)), G.sum(0, dtype=torch.float32),
             op(dq2).t() @ h_prev, dq2.sum(0), op(dpv2).t() @ h_next, dpv2.sum(0)]
    if gated:
        dpe2 = dpe.reshape(T * B, D)
        grads += [op(dpe2).t() @ h_next, dpe2.sum(0)]
    else:
        grads += [x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)]
    return [g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grads]


@wm_lstm_sequence_backward.register_fake
def _(grad_y, grad_h, grad_c, grad_M, x, w_ih, w_hh, w_rh, w_q, w_v, w_e, h_all, c_all, act, q_all, r_all, attn,
      mem, v_all, e_all, ckpt, lengths, capacity, write_mode, K):
    gated = write_mode == "gated"
    D = grad_M.shape[2]
    extra = [w_e.new_empty(w_e.shape), w_e.new_empty(D)] if gated else [x.new_empty(0), x.new_empty(0)]
    return [x.new_empty(x.shape), grad_h.new_empty(grad_h.shape), grad_c.new_empty(grad_c.shape), grad_M.new_empty(grad_M.shape),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_rh.new_empty(w_rh.shape), w_ih.new_empty(w_ih.shape[0]),
            w_q.new_empty(w_q.shape), w_q.new_empty(D), w_v.new_empty(w_v.shape), w_v.new_empty(D), *extra]


# The op's implementation on the triton backend (contract §3.1): the argument
# order, extras (write_mode, K) and saved names of the cpu backend's
# (wmkernels.wm_lstm.cpu), where the two keep the same tensor.

def _forward(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v, w_e=None, b_e=None,
             write_mode="fifo", lengths=None, capacity=None):
    K = checkpoint_interval(x.shape[0])
    lengths = lengths.contiguous() if lengths is not None else None
    y, h, c, M, *kept = wm_lstm_sequence_forward(x, h0, c0, M0, w_ih, w_hh, w_rh, b, w_q, b_q, w_v, b_v,
                                                 w_e, b_e, lengths, capacity, write_mode, K)
    return (y, h, c, M), (x, w_ih, w_hh, w_rh, w_q, w_v, w_e, *kept, lengths, capacity), (write_mode, K)


def _backward(saved, info, grad_y, grad_h, grad_c, grad_M):
    write_mode, K = info
    grads = wm_lstm_sequence_backward(grad_y, grad_h, grad_c, grad_M, *saved, write_mode, K)
    return tuple(grads) if write_mode == "gated" else (*grads[:-2], None, None)


WM_LSTM_SEQUENCE = Impl(_forward, _backward)
